"""Classical denoisers: each removes the noise it is meant for, keeps shape and dtype, 2D and 3D."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.errors import ImageContentError, ParameterError
from meddx.transforms.denoise import denoise


def phantom(size: int = 48, dims: int = 2) -> np.ndarray:
    """A bright square (cube) on a dark background, one channel, values 0/200."""
    a = np.zeros((1,) + (size,) * dims, np.float32)
    lo, hi = size // 4, 3 * size // 4
    a[(slice(None),) + (slice(lo, hi),) * dims] = 200.0
    return a


def smooth(size: int, dims: int) -> np.ndarray:
    """A smooth one-channel image (values 20-180): smoothing filters can only help it."""
    g = np.indices((size,) * dims).astype(np.float32) / size
    return (100 + 80 * np.sin(4 * g[0]) * np.cos(3 * g[-1]))[None].astype(np.float32)


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - b) ** 2)))


def test_median_removes_salt_and_pepper():
    clean = phantom()
    rng = np.random.default_rng(0)
    noisy = clean.copy()
    hit = rng.random(clean.shape) < 0.05
    noisy[hit] = rng.choice([0.0, 255.0], size=int(hit.sum()))
    out = denoise(noisy, "median", radius=1)
    assert rmse(out, clean) < 0.3 * rmse(noisy, clean)
    # a Gaussian of similar reach only spreads the impulses
    assert rmse(out, clean) < 0.5 * rmse(denoise(noisy, "gaussian", sigma=1.0), clean)


@pytest.mark.parametrize("method", ["median", "gaussian", "bilateral", "nlm"])
@pytest.mark.parametrize("dims", [2, 3])
def test_each_method_reduces_gaussian_noise_and_keeps_shape_dtype(method, dims):
    clean = smooth(32 if dims == 2 else 16, dims)
    clean = np.concatenate([clean, clean * 0.5])  # two channels, filtered separately
    rng = np.random.default_rng(1)
    noisy = (clean + rng.normal(0, 20, clean.shape)).astype(np.float32)
    out = denoise(noisy, method)
    assert out.shape == noisy.shape and out.dtype == np.float32
    assert rmse(out, clean) < 0.7 * rmse(noisy, clean)
    # channels are independent: denoising channel 1 alone gives the same result
    np.testing.assert_allclose(denoise(noisy[1:], method)[0], out[1], rtol=1e-5, atol=1e-3)


def test_bilateral_keeps_edges_sharper_than_gaussian():
    clean = phantom(48)
    noisy = (clean + np.random.default_rng(2).normal(0, 10, clean.shape)).astype(np.float32)
    edge = (slice(None), slice(14, 34), slice(10, 14))  # columns across the square's left edge
    b = denoise(noisy, "bilateral", sigma_spatial=2.0)
    g = denoise(noisy, "gaussian", sigma=2.0)
    assert rmse(b[edge], clean[edge]) < 0.6 * rmse(g[edge], clean[edge])


def test_float64_kept_and_negative_intensities_ok():
    clean = phantom(32).astype(np.float64) - 1000.0  # CT-like HU values
    noisy = clean + np.random.default_rng(3).normal(0, 15, clean.shape)
    for m in ("bilateral", "nlm"):
        out = denoise(noisy, m)
        assert out.dtype == np.float64
        assert rmse(out, clean) < rmse(noisy, clean)


def test_constant_image_unchanged():
    a = np.full((1, 16, 16), 7.0, np.float32)
    for m in ("median", "gaussian", "bilateral", "nlm"):
        np.testing.assert_allclose(denoise(a, m), a, atol=1e-4)


def test_errors():
    a = phantom(16)
    with pytest.raises(ParameterError, match="unknown method"):
        denoise(a, "wavelet")
    with pytest.raises(ImageContentError, match="channel-first"):
        denoise(a[0], "median")  # no channel axis
    bad = a.copy()
    bad[0, 3, 3] = np.nan
    with pytest.raises(ImageContentError, match="NaN"):
        denoise(bad, "gaussian")
    with pytest.raises(ParameterError, match="radius"):
        denoise(a, "median", radius=0)
    with pytest.raises(ParameterError, match="sigma"):
        denoise(a, "gaussian", sigma=-1)
    with pytest.raises(ParameterError, match="sigma needs"):
        denoise(a, "gaussian", sigma=(1, 1, 1))
    with pytest.raises(ParameterError, match="h_factor"):
        denoise(a, "nlm", h_factor=0)
    with pytest.raises(TypeError):
        denoise(a, "median", size=3)  # unknown parameter names are not silently ignored
