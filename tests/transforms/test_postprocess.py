"""Post-processing (MONAI transforms) and its choice on validation data."""

from __future__ import annotations

import numpy as np
import torch

from meddx.training.seg_engine import dice_per_class
from meddx.transforms.augment import BatchAugment
from meddx.transforms.postprocess import choose_postprocess, postprocess


def _scene():
    x = np.zeros((20, 20), np.uint8)
    x[2:5, 2:5] = 1
    x[10:18, 10:18] = 2
    x[12, 12] = 0
    x[0, 19] = 2
    return x


def test_each_option_does_what_it_says():
    x = _scene()
    assert postprocess(x, ["remove_small"], 3, min_size=10).sum() == 63 * 2  # 3x3 class-1 blob and 1 px gone
    lc = postprocess(x, ["largest_component"], 3)
    assert lc[0, 19] == 0 and lc[3, 3] == 1  # each class keeps its own largest component
    assert postprocess(x, ["fill_holes"], 3)[12, 12] == 2
    assert postprocess(x, [], 3) is x


def test_choice_keeps_only_what_helps_on_validation():
    truth = np.zeros((20, 20), np.uint8)
    truth[5:15, 5:15] = 1
    noisy = truth.copy()
    noisy[0, 0] = noisy[19, 19] = 1  # speckle that only largest_component removes
    ops, trace = choose_postprocess([noisy] * 3, [truth] * 3, 2, min_size=0,
                                    score=lambda p, t: float(dice_per_class(p, t, 2).mean()))
    assert ops == ["largest_component"] and trace["largest_component"] > trace["none"]
    ops, _ = choose_postprocess([truth] * 3, [truth] * 3, 2, min_size=0,
                                score=lambda p, t: float(dice_per_class(p, t, 2).mean()))
    assert ops == []


def test_label_maps_follow_the_image_geometry():
    aug = BatchAugment(spatial_dims=2, flip_axes=(0, 1), rotate_deg=30, scale=0.2, translate=0.1, brightness=0.2)
    x = torch.zeros(4, 1, 32, 32)
    x[:, :, 8:20, 6:14] = 1.0
    y = (x[:, 0] > 0.5).to(torch.uint8)
    params = aug.sample(4, torch.Generator().manual_seed(3))
    xa = aug.apply(x, params)
    ya = aug.apply_labels(y, params)
    assert ya.dtype == torch.uint8 and set(ya.unique().tolist()) <= {0, 1}
    # where the warped image is clearly inside / outside the box, the warped label agrees
    inside = (xa[:, 0] > xa.amax(dim=(1, 2, 3), keepdim=True)[:, 0] * 0.9)
    assert (ya[inside] == 1).float().mean() > 0.95
