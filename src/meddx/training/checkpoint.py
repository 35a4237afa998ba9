"""Checkpoints: written atomically, read with ``weights_only=True``."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from meddx.errors import RunError


def save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    if not path.exists():
        raise RunError("checkpoint not found", path=path,
                       fix="train the run first, or point at a run directory that has checkpoints/")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a truncated or foreign file: say so in one line
        raise RunError(f"checkpoint cannot be read ({type(e).__name__})", path=path,
                       fix="the file is damaged: re-train, or resume from an intact run") from None
