"""Resampling to a spacing and nnU-Net's target-spacing rule."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.errors import ImageContentError, ParameterError
from meddx.transforms.resample import resample_label, resample_to_spacing, target_spacing, target_spacing_decision


def test_shape_and_spacing_2d_3d():
    a = np.random.default_rng(0).random((2, 20, 30)).astype(np.float32)
    out, sp = resample_to_spacing(a, (1.0, 1.0), (0.5, 2.0))
    assert out.shape == (2, 40, 15) and sp == pytest.approx((0.5, 2.0))
    v = np.random.default_rng(1).random((1, 10, 33, 33)).astype(np.float32)
    out3, sp3 = resample_to_spacing(v, (3.0, 0.7, 0.7), (1.0, 1.0, 1.0))
    assert out3.shape == (1, 30, 23, 23)
    # the returned spacing is the output grid's exact one (33 * 0.7 / 23), not the request
    assert sp3 == pytest.approx((1.0, 33 * 0.7 / 23, 33 * 0.7 / 23))
    same, sp_same = resample_to_spacing(v, (1, 1, 1), (1, 1, 1))
    np.testing.assert_array_equal(same, v)


def test_smooth_image_is_preserved_by_up_and_down_sampling():
    g = np.indices((32, 32)).astype(np.float32) / 32
    a = np.sin(2 * g[0] + g[1])[None].astype(np.float32)
    up, sp = resample_to_spacing(a, (1, 1), (0.5, 0.5))
    back, sp2 = resample_to_spacing(up, sp, (1, 1))
    assert back.shape == a.shape and sp2 == pytest.approx((1, 1))
    assert np.abs(back - a)[0, 2:-2, 2:-2].max() < 0.01


def test_labels_keep_their_values_and_match_the_image_grid():
    lab = np.zeros((12, 17, 17), np.uint8)
    lab[3:9, 4:12, 5:10] = 2
    lab[5:7, 6:8, 6:8] = 7
    img = lab[None].astype(np.float32)
    out, sp = resample_label(lab, (2.5, 0.8, 0.8), (1.0, 1.0, 1.0))
    img_out, img_sp = resample_to_spacing(img, (2.5, 0.8, 0.8), (1.0, 1.0, 1.0))
    assert out.shape == img_out.shape[1:] and sp == pytest.approx(img_sp)
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 2, 7}
    # the large label's volume (mm^3) is kept within nearest-neighbour rounding
    before = (lab == 2).sum() * 2.5 * 0.8 * 0.8
    assert (out == 2).sum() * np.prod(sp) == pytest.approx(before, rel=0.15)
    ch, _ = resample_label(lab[None], (2.5, 0.8, 0.8), (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(ch[0], out)
    b, _ = resample_label(lab > 0, (1, 1, 1), (0.5, 0.5, 0.5))
    assert b.dtype == bool and b.shape == (24, 34, 34)
    with pytest.raises(ImageContentError, match="integers"):
        resample_label(lab.astype(np.float32), (1, 1, 1), (2, 2, 2))


def test_separate_z_uses_nearest_across_thick_slices():
    # slices alternate 0 / 100: cubic interpolation along z would ring and invent values
    v = np.zeros((1, 6, 16, 16), np.float32)
    v[0, ::2] = 100
    out, _ = resample_to_spacing(v, (5.0, 1.0, 1.0), (2.5, 1.0, 1.0))
    assert out.shape == (1, 12, 16, 16)
    assert set(np.unique(np.round(out, 3))) <= {0.0, 100.0}
    ring, _ = resample_to_spacing(v, (5.0, 1.0, 1.0), (2.5, 1.0, 1.0), separate_z=False)
    assert ring.min() < -1 or ring.max() > 101


def test_errors():
    a = np.zeros((1, 8, 8), np.float32)
    with pytest.raises(ParameterError, match="has 3 values"):
        resample_to_spacing(a, (1, 1, 1), (1, 1))
    with pytest.raises(ParameterError, match="> 0"):
        resample_to_spacing(a, (1, 0), (1, 1))
    with pytest.raises(ParameterError, match="order"):
        resample_to_spacing(a, (1, 1), (2, 2), order=7)
    with pytest.raises(ImageContentError, match="channel-first"):
        resample_to_spacing(np.zeros((8, 8)), (1, 1), (2, 2))


def test_target_spacing_median_and_anisotropic_rule():
    iso = [(1.0, 1.0, 1.0), (1.2, 0.8, 0.8), (0.9, 1.1, 1.0)]
    assert target_spacing(iso) == pytest.approx((1.0, 1.0, 1.0))
    # thick slices (5 mm median) against 0.8 mm in-plane: z takes its 10th percentile (2.0 mm here)
    aniso = [(5.0, 0.8, 0.8)] * 8 + [(2.0, 0.8, 0.8), (1.5, 0.8, 0.8)]
    d = target_spacing_decision(aniso, shapes=[(30, 512, 512)] * 10)
    assert d["anisotropic"] and d["coarse_axis"] == 0
    assert d["spacing"] == pytest.approx((np.percentile([5.0] * 8 + [2.0, 1.5], 10), 0.8, 0.8))
    assert d["median_spacing"] == pytest.approx((5.0, 0.8, 0.8))
    # the voxel condition: with as many slices as in-plane voxels it is not treated as anisotropic
    assert not target_spacing_decision(aniso, shapes=[(512, 512, 512)] * 10)["anisotropic"]
    # the coarse axis never becomes finer than the others
    low = [(5.0, 1.0, 1.0)] * 9 + [(0.5, 1.0, 1.0)] * 2
    assert target_spacing(low)[0] == pytest.approx(1.0, abs=1e-4) and target_spacing(low)[0] >= 1.0
    assert target_spacing([(0.5, 0.5), (0.7, 0.7)]) == pytest.approx((0.6, 0.6))
    with pytest.raises(ParameterError):
        target_spacing([])
    with pytest.raises(ParameterError, match="> 0"):
        target_spacing([(1, 0, 1)])
