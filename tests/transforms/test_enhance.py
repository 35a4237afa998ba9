"""CT window, percentile clip, z-score, CLAHE and histogram equalisation."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.errors import ImageContentError, ParameterError
from meddx.transforms.enhance import CT_WINDOWS, clahe, ct_window, hist_equalise, percentile_clip, zscore


def test_ct_window_maps_edges_to_0_and_1():
    hu = np.array([[[-2000.0, -160.0, 40.0, 240.0, 3000.0]]], np.float32)  # (1, 1, 5)
    out = ct_window(hu, center=40, width=400)
    np.testing.assert_allclose(out[0, 0], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    lung = ct_window(np.array([[[-1350.0, -600.0, 150.0]]], np.float32), preset="lung")
    np.testing.assert_allclose(lung[0, 0], [0.0, 0.5, 1.0], atol=1e-6)
    for name, (c, w) in CT_WINDOWS.items():
        edges = np.array([[[c - w / 2, c + w / 2]]], np.float32)
        np.testing.assert_allclose(ct_window(edges, preset=name)[0, 0], [0.0, 1.0], atol=1e-6)
    vol = np.random.default_rng(0).normal(0, 500, (1, 4, 5, 6)).astype(np.float32)
    out3 = ct_window(vol, preset="abdomen")
    assert out3.shape == vol.shape and out3.dtype == np.float32 and 0 <= out3.min() and out3.max() <= 1
    with pytest.raises(ParameterError, match="unknown preset"):
        ct_window(hu, preset="liver")
    with pytest.raises(ParameterError, match="width"):
        ct_window(hu, width=0)


def test_percentile_clip_per_channel_keeps_units():
    rng = np.random.default_rng(1)
    a = np.stack([rng.normal(0, 1, (40, 40)), rng.normal(1000, 100, (40, 40))]).astype(np.float32)
    a[0, 0, 0], a[1, 0, 0] = 1e4, -1e5  # outliers
    out = percentile_clip(a, 1, 99)
    for c in range(2):
        lo, hi = np.percentile(a[c], [1, 99])
        assert out[c].min() == pytest.approx(lo) and out[c].max() == pytest.approx(hi)
    inside = (a[1] > np.percentile(a[1], 1)) & (a[1] < np.percentile(a[1], 99))
    np.testing.assert_array_equal(out[1][inside], a[1][inside])
    with pytest.raises(ParameterError, match="lo < hi"):
        percentile_clip(a, 99, 1)


def test_zscore_whole_and_masked():
    rng = np.random.default_rng(2)
    a = np.stack([rng.normal(5, 3, (8, 10, 12)), rng.normal(-2, 0.5, (8, 10, 12))]).astype(np.float32)
    z = zscore(a)
    np.testing.assert_allclose(z.reshape(2, -1).mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(z.reshape(2, -1).std(1), 1, atol=1e-4)
    mask = np.zeros(a.shape[1:], bool)
    mask[2:6, 3:7, 4:9] = True
    a[:, ~mask] = 0.0  # background that must not enter the statistics
    zm = zscore(a, mask=mask)
    np.testing.assert_allclose([zm[c][mask].mean() for c in range(2)], 0, atol=1e-5)
    np.testing.assert_allclose([zm[c][mask].std() for c in range(2)], 1, atol=1e-4)
    assert zscore(np.full((1, 4, 4), 3.0, np.float32)).max() == 0.0  # constant: centred, not divided by 0
    with pytest.raises(ImageContentError, match="mask shape"):
        zscore(a, mask=np.ones((8, 10), bool))
    with pytest.raises(ImageContentError, match="empty"):
        zscore(a, mask=np.zeros(a.shape[1:], bool))


def local_contrast(a: np.ndarray, k: int = 8) -> float:
    """Mean standard deviation over non-overlapping k x k tiles."""
    h, w = (a.shape[0] // k) * k, (a.shape[1] // k) * k
    t = a[:h, :w].reshape(h // k, k, w // k, k)
    return float(t.std(axis=(1, 3)).mean())


def low_contrast_image(size=64, seed=3) -> np.ndarray:
    """A dim textured image in a narrow intensity band, plus one bright region."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    tex = 100 + 5 * np.sin(xx / 2.0) * np.cos(yy / 3.0) + rng.normal(0, 0.5, (size, size))
    tex[:8, :8] = 250  # a small bright area squeezes the rest of the range
    return tex[None].astype(np.float32)


def test_clahe_raises_local_contrast_2d_and_3d():
    a = low_contrast_image()
    unit = (a - a.min()) / (a.max() - a.min())
    out = clahe(a, clip_limit=0.02)
    assert out.shape == a.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert local_contrast(out[0][16:, 16:]) > 3 * local_contrast(unit[0][16:, 16:])
    vol = np.stack([low_contrast_image(32, seed=s)[0] for s in range(8)])[None]
    out3 = clahe(vol, kernel_size=8)
    uvol = (vol - vol.min()) / (vol.max() - vol.min())
    assert out3.shape == vol.shape
    assert local_contrast(out3[0, 4][8:, 8:]) > 2 * local_contrast(uvol[0, 4][8:, 8:])
    with pytest.raises(ParameterError, match="clip_limit"):
        clahe(a, clip_limit=2)
    with pytest.raises(ParameterError, match="kernel_size"):
        clahe(a, kernel_size=(8, 8, 8))


def test_clahe_rgb_per_channel_or_luminance():
    g = low_contrast_image()[0]
    rgb = np.stack([g, g * 0.8, g * 0.5]).astype(np.float32)
    per = clahe(rgb)
    lum = clahe(rgb, luminance=True)
    assert per.shape == lum.shape == rgb.shape
    # per channel: every channel is stretched to [0, 1] on its own (colour ratios not kept)
    np.testing.assert_allclose(per.reshape(3, -1).max(1), 1.0, atol=1e-6)
    # luminance: hue kept, so the channel order of brightness stays red > green > blue
    mid = (slice(None), slice(16, None), slice(16, None))
    assert lum[mid][0].mean() > lum[mid][1].mean() > lum[mid][2].mean()
    with pytest.raises(ParameterError, match="3-channel"):
        clahe(rgb[:1], luminance=True)


def test_hist_equalise_flattens_histogram():
    rng = np.random.default_rng(4)
    a = rng.exponential(10, (1, 64, 64)).astype(np.float32)  # skewed histogram
    out = hist_equalise(a)
    assert 0 <= out.min() and out.max() <= 1
    counts, _ = np.histogram(out, bins=8, range=(0, 1))
    raw_counts, _ = np.histogram((a - a.min()) / (a.max() - a.min()), bins=8, range=(0, 1))
    assert counts.std() < 0.2 * raw_counts.std()
    order = np.argsort(a.ravel())
    assert np.all(np.diff(out.ravel()[order]) >= -1e-7)  # monotone: no intensity order swapped
    assert hist_equalise(np.zeros((1, 3, 3, 3), np.float32)).max() == 0.0


def test_nan_and_dims_errors():
    bad = np.zeros((1, 8, 8), np.float32)
    bad[0, 1, 1] = np.nan
    for fn in (ct_window, percentile_clip, zscore, clahe, hist_equalise):
        with pytest.raises(ImageContentError, match="NaN"):
            fn(bad)
        with pytest.raises(ImageContentError, match="channel-first"):
            fn(np.zeros((8,), np.float32))
