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


class _FocalCE(nn.Module):
    """MONAI's softmax focal loss on ``(N, K)`` logits, scaled to the per-case definition
    ``-w_y (1 - p_y)^gamma log p_y`` (MONAI's mean also averages over the K classes)."""

    def __init__(self, gamma: float, class_weights: torch.Tensor | None):
        super().__init__()
        from monai.losses import FocalLoss

        self.focal = FocalLoss(to_onehot_y=True, use_softmax=True, gamma=gamma, weight=class_weights)

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.focal(logits, y.view(-1, 1)) * logits.shape[1]


@register_loss("focal")
def focal(*, gamma: float = 2.0, label_smoothing: float = 0.0, class_weights: torch.Tensor | None = None) -> nn.Module:
    """Focal loss (Lin et al., 2017) via MONAI: down-weights cases the model already gets right.

    ``label_smoothing`` is not defined for it and must be 0.
    """
    if label_smoothing:
        raise PlanError("label smoothing is not available with the focal loss",
                        fix="set train.label_smoothing: 0 or train.loss: ce")
    return _FocalCE(gamma, class_weights)


class LogitAdjusted(nn.Module):
    """Logit-adjusted loss (Menon et al., ICLR 2021): the base loss on ``logits + tau * log(prior)``.

    Training sees the class prior added to the logits, so the raw logits used at inference are
    pushed towards balanced error (rare classes get larger margins). Ours: MONAI has none.
    """

    def __init__(self, base: nn.Module, prior: torch.Tensor, tau: float):
        super().__init__()
        self.base = base
        self.register_buffer("offset", tau * torch.log(prior.clamp_min(1e-12)))

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.base(logits + self.offset.to(logits.dtype), y)


def create_loss(name: str, **kwargs) -> nn.Module:
    if name not in LOSSES:
        raise PlanError(f"unknown loss '{name}'", fix=f"use one of {sorted(LOSSES)}")
    return LOSSES[name](**kwargs)
