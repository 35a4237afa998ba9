"""Segmentation losses (MONAI), chosen by name in the plan (``segment.loss``).

Targets are class-index maps ``(N, 1, *spatial)``; predictions are logits
``(N, C, *spatial)``. With deep supervision the network returns ``(N, heads, C, ...)``
and MONAI's ``DeepSupervisionLoss`` weights the heads (1, 1/2, 1/4 ...), down-sampling
the target to each head by nearest neighbour.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
from monai.losses import DeepSupervisionLoss, DiceCELoss, DiceFocalLoss, DiceLoss, TverskyLoss

from meddx.errors import PlanError

SEG_LOSSES: dict[str, Callable[..., nn.Module]] = {}


def _register(name: str):
    def deco(fn):
        SEG_LOSSES[name] = fn
        return fn
    return deco


@_register("dice")
def dice(*, class_weights: torch.Tensor | None = None) -> nn.Module:
    """Soft Dice over all classes (background included, as nnU-Net does in its compound)."""
    return DiceLoss(to_onehot_y=True, softmax=True, batch=True, weight=class_weights)


@_register("dice_ce")
def dice_ce(*, class_weights: torch.Tensor | None = None) -> nn.Module:
    """Dice + cross-entropy (nnU-Net's default); class weights go to the CE term."""
    return DiceCELoss(to_onehot_y=True, softmax=True, batch=True, weight=class_weights)


@_register("dice_focal")
def dice_focal(*, class_weights: torch.Tensor | None = None) -> nn.Module:
    """Dice + focal (gamma 2), for small foreground."""
    return DiceFocalLoss(to_onehot_y=True, softmax=True, batch=True, weight=class_weights)


@_register("tversky")
def tversky(*, class_weights: torch.Tensor | None = None) -> nn.Module:
    """Tversky (alpha 0.3 on false positives, beta 0.7 on false negatives): favours recall."""
    if class_weights is not None:
        raise PlanError("the tversky loss takes no class weights", fix="set segment.class_weights: null")
    return TverskyLoss(to_onehot_y=True, softmax=True, batch=True, alpha=0.3, beta=0.7)


class SegLoss(nn.Module):
    """A named loss, wrapped for deep supervision; accepts ``(N, *spatial)`` int targets."""

    def __init__(self, name: str, class_weights: Sequence[float] | None = None, ds_weight_mode: str = "exp"):
        super().__init__()
        if name not in SEG_LOSSES:
            raise PlanError(f"unknown segmentation loss '{name}'", fix=f"use one of {sorted(SEG_LOSSES)}")
        w = torch.tensor(list(class_weights), dtype=torch.float32) if class_weights is not None else None
        self.loss = DeepSupervisionLoss(SEG_LOSSES[name](class_weights=w), weight_mode=ds_weight_mode)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == logits.ndim - 1:
            target = target.unsqueeze(1)
        elif target.ndim == logits.ndim - 2:  # deep supervision: logits (N, heads, C, ...)
            target = target.unsqueeze(1)
        target = target.float()
        if logits.ndim == target.ndim + 1:
            return self.loss(list(torch.unbind(logits, dim=1)), target)
        return self.loss(logits, target)
