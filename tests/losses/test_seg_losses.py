"""Segmentation losses by name, with class weights and deep supervision."""

from __future__ import annotations

import pytest
import torch

from meddx.errors import PlanError
from meddx.losses.segmentation import SEG_LOSSES, SegLoss


@pytest.mark.parametrize("name", sorted(SEG_LOSSES))
def test_losses_are_lower_for_the_right_answer(name):
    y = torch.zeros(2, 8, 8, dtype=torch.long)
    y[:, 2:6, 2:6] = 1
    good = torch.nn.functional.one_hot(y, 2).permute(0, 3, 1, 2).float() * 10 - 5
    loss = SegLoss(name)
    assert float(loss(good, y)) < float(loss(-good, y))


def test_deep_supervision_heads_and_class_weights():
    y = torch.zeros(2, 8, 8, dtype=torch.long)
    y[:, :4] = 1
    heads = torch.randn(2, 3, 2, 8, 8)  # (N, heads, C, H, W)
    assert torch.isfinite(SegLoss("dice_ce", class_weights=[0.2, 0.8])(heads, y))
    with pytest.raises(PlanError, match="unknown segmentation loss"):
        SegLoss("bce")
