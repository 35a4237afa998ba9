"""Hinton's distillation loss: its limits, scaling and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from meddx.losses.distill import DistillationLoss, soft_kl


def test_alpha_zero_is_cross_entropy():
    s, t, y = torch.randn(6, 3), torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.allclose(DistillationLoss(4.0, 0.0)(s, t, y), F.cross_entropy(s, y))


def test_kl_is_zero_only_when_student_matches_teacher():
    t = torch.randn(8, 4)
    assert soft_kl(t, t, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_kl(torch.randn(8, 4), t, 4.0).item() > 1e-3


def test_matches_the_textbook_formula():
    s, t = torch.randn(5, 3), torch.randn(5, 3)
    T = 3.0
    ref = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean") * T * T
    assert soft_kl(s, t, T).item() == pytest.approx(ref.item(), rel=1e-5)


def test_gradient_pulls_the_student_towards_the_teacher():
    t = torch.tensor([[3.0, -1.0]])
    s = torch.zeros(1, 2, requires_grad=True)
    DistillationLoss(2.0, 1.0)(s, t, torch.tensor([1])).backward()  # alpha 1: labels ignored
    assert s.grad[0, 0] < 0 < s.grad[0, 1]  # descent raises class 0, the teacher's choice


def test_teacher_gets_no_gradient_and_voxel_maps_work():
    s = torch.randn(2, 3, 4, 5, 6, requires_grad=True)
    t = torch.randn(2, 3, 4, 5, 6, requires_grad=True)
    y = torch.randint(0, 3, (2, 4, 5, 6))
    DistillationLoss(4.0, 0.5)(s, t, y).backward()
    assert s.grad is not None and t.grad is None


@pytest.mark.parametrize("kw", [dict(temperature=0.0), dict(alpha=1.5)])
def test_bad_settings(kw):
    with pytest.raises(ValueError):
        DistillationLoss(**kw)
