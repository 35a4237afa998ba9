"""Noise estimation: tracks known added noise, relative scale, dataset summary for the planner."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.errors import DatasetError, ImageContentError
from meddx.transforms.noise import DENOISE_RELATIVE_THRESHOLD, dataset_noise, estimate_noise


def smooth_image(size=64, dims=2, seed=0) -> np.ndarray:
    yy = np.indices((size,) * dims).astype(np.float32) / size
    a = 100 + 80 * np.sin(3 * yy[0]) * np.cos(2 * yy[-1])
    return a[None].astype(np.float32)


@pytest.mark.parametrize("dims", [2, 3])
def test_estimate_tracks_added_noise(dims):
    clean = smooth_image(64 if dims == 2 else 24, dims)
    rng = np.random.default_rng(0)
    assert estimate_noise(clean) < 0.5
    for sigma in (2.0, 5.0, 10.0, 20.0):
        est = estimate_noise(clean + rng.normal(0, sigma, clean.shape))
        assert est == pytest.approx(sigma, rel=0.15)


def test_relative_is_scale_free_and_channels_averaged():
    clean = smooth_image()
    noisy = clean + np.random.default_rng(1).normal(0, 8, clean.shape)
    r1 = estimate_noise(noisy, relative=True)
    r2 = estimate_noise(noisy * 10 + 500, relative=True)
    assert r1 == pytest.approx(r2, rel=1e-4)
    two = np.concatenate([noisy, clean])
    assert estimate_noise(two) == pytest.approx((estimate_noise(noisy) + estimate_noise(clean)) / 2, rel=1e-6)
    assert estimate_noise(np.zeros((1, 8, 8), np.float32)) == 0.0


def test_dataset_noise_summary_and_rule():
    rng = np.random.default_rng(2)
    clean = smooth_image(32)
    quiet = [clean + rng.normal(0, 0.5, clean.shape) for _ in range(20)]
    loud = [clean + rng.normal(0, 30, clean.shape) for _ in range(20)]
    q, lo = dataset_noise(quiet), dataset_noise(np.stack(loud))
    assert q["n"] == 20 and not q["denoise_recommended"]
    assert lo["denoise_recommended"] and lo["relative_median"] > DENOISE_RELATIVE_THRESHOLD
    assert lo["sigma_median"] == pytest.approx(30, rel=0.2) and lo["sigma_p90"] >= lo["sigma_median"]
    assert str(DENOISE_RELATIVE_THRESHOLD) in lo["rule"]
    sub = dataset_noise(loud, max_images=5, seed=3)
    assert sub["n"] == 5 and sub == dataset_noise(loud, max_images=5, seed=3)


def test_errors():
    with pytest.raises(DatasetError, match="no images"):
        dataset_noise([])
    bad = [smooth_image(16), np.full((1, 16, 16), np.inf, np.float32)]
    with pytest.raises(ImageContentError, match="image 1"):
        dataset_noise(bad)
    with pytest.raises(ImageContentError, match="channel-first"):
        estimate_noise(np.zeros(16))
