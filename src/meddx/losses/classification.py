"""Classification losses, chosen by name in the plan (``train.loss``)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from meddx.errors import PlanError

LOSSES: dict[str, Callable[..., nn.Module]] = {}


def register_loss(name: str):
    def deco(fn):
        LOSSES[name] = fn
        return fn
    return deco


@register_loss("ce")
def cross_entropy(*, label_smoothing: float = 0.0, class_weights: torch.Tensor | None = None) -> nn.Module:
    """Cross-entropy with optional label smoothing and class weights."""
    return nn.CrossEntropyLoss(weight=class_weights, label_smoothing=label_smoothing)


def create_loss(name: str, **kwargs) -> nn.Module:
    if name not in LOSSES:
        raise PlanError(f"unknown loss '{name}'", fix=f"use one of {sorted(LOSSES)}")
    return LOSSES[name](**kwargs)
