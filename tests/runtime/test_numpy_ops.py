"""The runtime's numpy resize, sliding window and post-processing equal their torch/MONAI originals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from meddx.runtime.postprocess import postprocess as np_postprocess
from meddx.runtime.resize import resize as np_resize
from meddx.runtime.sliding import importance_map, sliding_window, window_starts
from meddx.transforms.postprocess import postprocess as monai_postprocess
from meddx.transforms.spatial import resize as torch_resize


@pytest.mark.parametrize("shape,size", [
    ((1, 256, 256), (28, 28)), ((3, 100, 37), (28, 28)), ((1, 20, 20), (28, 28)), ((1, 50, 20), (28, 28)),
    ((1, 7, 300), (64, 64)), ((1, 28, 28), (28, 28)), ((1, 35, 50, 35), (32, 32, 32)), ((2, 10, 10, 10), (16, 8, 31)),
])
def test_resize_matches_torch(shape, size):
    a = np.random.default_rng(0).random(shape).astype(np.float32)
    got, ref = np_resize(a, size), torch_resize(a, size)
    assert got.dtype == np.float32 and got.shape == ref.shape == (shape[0], *size)
    assert np.abs(got - ref).max() < 1e-5


def test_resize_plain_linear_when_asked():
    a = np.random.default_rng(1).random((3, 40, 30)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(a)[None], size=(17, 45), mode="bilinear",
                                          align_corners=False)[0].numpy()
    assert np.abs(np_resize(a, (17, 45), antialias_when_shrinking=False) - ref).max() < 1e-5
    assert np.abs(np_resize(a, (17, 45)) - ref).max() > 1e-3  # the antialiased default differs when shrinking


@pytest.mark.parametrize("shape,roi,overlap,mode", [
    ((35, 50, 35), (40, 56, 40), 0.5, "gaussian"),   # smaller than the window: padded, one window
    ((70, 50, 100), (40, 56, 40), 0.5, "gaussian"),
    ((64, 64, 64), (32, 32, 32), 0.25, "constant"),
    ((33, 17, 90), (16, 16, 32), 0.5, "gaussian"),
])
def test_sliding_window_matches_monai(shape, roi, overlap, mode):
    from monai.inferers import sliding_window_inference

    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 3, 3, padding=1).eval()

    def pred(t):
        return conv(t) * 3 + t.mean()

    x = torch.randn(1, 1, *shape)
    with torch.no_grad():
        ref = sliding_window_inference(x, roi, 4, pred, overlap=overlap, mode=mode, padding_mode="constant")[0].numpy()
        got = sliding_window(x[0].numpy(), roi, lambda b: pred(torch.from_numpy(b)).numpy(), overlap=overlap, mode=mode)
    assert got.shape == ref.shape == (3, *shape)
    assert np.abs(got - ref).max() < 1e-5


def test_importance_map_and_starts_match_monai():
    from monai.data.utils import compute_importance_map, dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    for roi in [(40, 56, 40), (16, 7), (5, 5, 9)]:
        assert np.allclose(importance_map(roi), compute_importance_map(roi, mode="gaussian").numpy(), atol=1e-7)
    for image, roi in [((70, 50, 100), (40, 56, 40)), ((100, 31), (32, 32))]:
        image = tuple(max(i, r) for i, r in zip(image, roi))
        sl = dense_patch_slices(image, roi, _get_scan_interval(image, roi, len(roi), (0.5,) * len(roi)))
        assert window_starts(image, roi, 0.5) == [tuple(s.start for s in t) for t in sl]


def _blobs(shape, seed):
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.random(shape), 1.5)
    lab = np.zeros(shape, np.uint8)
    lab[x > np.quantile(x, 0.7)] = 1
    lab[x > np.quantile(x, 0.9)] = 2
    lab[rng.random(shape) > 0.97] = 1
    return lab


@pytest.mark.parametrize("ops", [["largest_component"], ["fill_holes"], ["remove_small"],
                                 ["largest_component", "fill_holes", "remove_small"]])
def test_postprocess_matches_monai(ops):
    for seed in range(12):
        lab = _blobs((24, 30, 20) if seed % 2 else (40, 36), seed)
        got, ref = np_postprocess(lab, ops, 3, 5), monai_postprocess(lab, ops, 3, 5)
        assert np.array_equal(got, ref), (ops, seed, int((got != ref).sum()))
    assert not np.array_equal(np_postprocess(_blobs((40, 36), 0), ops, 3, 5), _blobs((40, 36), 0))  # it did act


def test_a_shrinking_3d_resize_filters_with_antialias_3d_and_samples_without():
    """A one-voxel-thick bright slice in 64 slices brought to 8: trilinear reads 2 of every 8 slices and
    misses it (the volume comes out empty); the antialiased resize spreads it over its neighbours and
    keeps its mass. Training (torch side) and the runtime give the same array."""
    a = np.zeros((1, 64, 12, 12), np.float32)
    a[0, 10] = 1.0
    plain = torch_resize(a, (8, 12, 12))
    filtered = torch_resize(a, (8, 12, 12), antialias_3d=True)
    assert plain.max() == 0.0
    assert filtered.max() > 0.05 and abs(filtered.sum() * 8 - a.sum()) / a.sum() < 0.05
    assert np.array_equal(filtered, np_resize(a, (8, 12, 12), antialias_when_shrinking=True))
    grown = np.random.default_rng(2).random((1, 6, 7, 8)).astype(np.float32)  # enlarging: trilinear either way
    assert np.array_equal(torch_resize(grown, (12, 14, 16), antialias_3d=True), torch_resize(grown, (12, 14, 16)))
