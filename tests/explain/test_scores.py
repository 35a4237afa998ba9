"""Deletion / insertion curves, pointing game and energy inside the lesion, on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meddx.errors import MeddxError
from meddx.explain.scores import auc, deletion_insertion, energy_inside, pointing_game, resize_map


def _region_model(region):
    """p(class 1) = sigmoid(8 (mean of the pixels in ``region`` - 1.5)): only that region matters, and only
    its sharp, full-strength signal (a blurred copy scores low)."""

    def predict(x):
        s = (x[:, 0][(slice(None), *region)].flatten(1).mean(1) - 1.5) * 8.0
        p1 = torch.sigmoid(s)
        return torch.stack([1 - p1, p1], 1)

    return predict


def test_auc_is_the_trapezoid_area():
    assert auc(np.array([0, 0.5, 1.0]), np.array([1.0, 1.0, 0.0])) == pytest.approx(0.75)


def test_a_faithful_map_deletes_fast_and_inserts_fast():
    region = (slice(4, 12), slice(4, 12))
    x = torch.zeros(1, 1, 24, 24)
    x[0, 0][region] = 2.0
    good = np.zeros((24, 24), np.float32)
    good[region] = 1.0
    bad = 1.0 - good
    pred = _region_model(region)
    g = deletion_insertion(pred, x, good, 1, steps=12)
    b = deletion_insertion(pred, x, bad, 1, steps=12)
    assert len(g["deletion"]) == 13 and g["fractions"][0] == 0 and g["fractions"][-1] == 1
    assert g["deletion"][0] == pytest.approx(g["insertion"][-1])  # both ends are the original image
    assert g["deletion_auc"] < b["deletion_auc"] - 0.2
    assert g["insertion_auc"] > b["insertion_auc"] + 0.2


def test_flat_maps_are_scored_like_random_orders():
    x = torch.randn(1, 1, 16, 16)
    pred = _region_model((slice(0, 16), slice(0, 16)))
    r1 = deletion_insertion(pred, x, np.zeros((16, 16)), 1, seed=1)
    r2 = deletion_insertion(pred, x, np.zeros((16, 16)), 1, seed=2)
    assert r1["deletion"] != r2["deletion"]  # ties are broken at random, not in raster order


def test_pointing_game_and_energy():
    mask = np.zeros((10, 10), bool)
    mask[2:5, 2:5] = True
    h = np.zeros((10, 10))
    h[3, 3] = 1.0
    h[8, 8] = 0.5
    assert pointing_game(h, mask)
    assert energy_inside(h, mask) == pytest.approx(1.0 / 1.5)
    h[8, 8] = 2.0
    assert not pointing_game(h, mask)
    assert np.isnan(energy_inside(np.zeros((10, 10)), mask))
    with pytest.raises(MeddxError, match="differs"):
        pointing_game(h, mask[:5])


def test_resize_map_keeps_range():
    h = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    r = resize_map(h, (20, 30))
    assert r.shape == (20, 30) and r.min() >= 0 and r.max() <= 1
