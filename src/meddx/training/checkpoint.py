"""Checkpoints: written atomically, read with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path

from meddx.errors import RunError
from meddx.io.state import load_state, save_state


def save_checkpoint(path: Path, state: dict) -> None:
    save_state(state, path)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    return load_state(path, "checkpoint", "train the run first, or point at a run directory that has checkpoints/",
                      error=RunError, fix_damaged="the file is damaged: re-train, or resume from an intact run")
