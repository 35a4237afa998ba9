"""Knowledge distillation loss (Hinton, Vinyals and Dean, 2015).

Ours: MONAI has no distillation loss. The student matches the teacher's softened class
distribution (temperature ``T``) and the labels::

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

``T^2`` keeps the gradient scale of the soft term independent of ``T``. Works for
classifier logits ``(N, K)`` and per-voxel logits ``(N, K, *S)`` alike (the KL is summed
over classes and averaged over cases and voxels).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over cases (and voxels) of KL(teacher || student) at ``temperature``, times ``T^2``."""
    t = float(temperature)
    log_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_t = F.log_softmax(teacher_logits.float() / t, dim=1)
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=1)
    return kl.mean() * t * t


class DistillationLoss(nn.Module):
    """Hinton's distillation loss.

    Args:
        temperature: softening temperature ``T`` (> 0; 4 is a common choice for CNNs).
        alpha: weight of the soft (teacher) term in [0, 1]; ``1 - alpha`` goes to the hard labels.
        hard_loss: the label loss (default cross-entropy); e.g. the trainer's weighted CE.
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9,
                 hard_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"distillation temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"distillation alpha must be in [0, 1], got {alpha}")
        self.temperature, self.alpha = float(temperature), float(alpha)
        self.hard_loss = hard_loss or nn.CrossEntropyLoss()

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
                hard_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """``hard_loss`` overrides the label loss for this call (a trainer's class-weighted CE)."""
        soft = soft_kl(student_logits, teacher_logits.detach(), self.temperature)
        if self.alpha >= 1.0:
            return soft
        return self.alpha * soft + (1.0 - self.alpha) * (hard_loss or self.hard_loss)(student_logits, target)
