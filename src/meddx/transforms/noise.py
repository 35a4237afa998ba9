"""Noise level of an image and of a dataset, which the planner reads to decide on denoising.

The estimator is scikit-image's ``estimate_sigma``: the median absolute deviation of the
finest diagonal wavelet (Daubechies-2) coefficients divided by 0.6745 (Donoho & Johnstone),
which measures additive white Gaussian noise in the image's own units and is insensitive to
smooth structure. It works on 2D and 3D images (needs PyWavelets). ``relative`` divides it
by the image's robust intensity range (p0.5 to p99.5), so 8-bit photographs, CT in HU and
MRI in scanner units compare on one scale.

Rule the planner applies (``DENOISE_RELATIVE_THRESHOLD``): denoise when the dataset's median
relative noise is above the threshold. ``python benchmarks/denoise.py`` is the measurement
that sets it: it adds known Gaussian noise to real images and finds the estimated relative
noise above which the best classical denoiser brings the images closer to the originals
(PSNR and SSIM both gain) instead of blurring real structure (``benchmarks/results/denoise.md``).
It is an image-fidelity threshold: whether denoising also raises a classifier's accuracy is
measured by the ablation, not here.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from meddx.errors import DatasetError
from meddx.transforms._checks import check_image

DENOISE_RELATIVE_THRESHOLD = 0.041
"""Median relative noise (sigma / robust range) above which denoising is worth it, measured by
``python benchmarks/denoise.py`` (2026-12-02, commit 8a57840; results/denoise.md, section 2):
the largest estimated relative noise, over six real datasets (BreastMNIST, PneumoniaMNIST,
paediatric CXR, LGG FLAIR, BUSI, hippocampus MRI in 3D) and seven added noise levels, at which
no classical denoiser brought the images closer to the originals on both PSNR and SSIM. It was
0.041 on the hippocampus volumes; the 2D sets already gained from 0.011-0.035. It replaces the
earlier unmeasured prior of 0.03. Without added noise these datasets measure 0.004-0.029."""


LABEL_LIKE_MAX_VALUES = 4
"""Images with at most this many distinct values (binary masks such as AdrenalMNIST3D and
VesselMNIST3D, label maps) have no additive noise to measure: they get 0. Without this rule
the estimator, which ignores zero wavelet coefficients (so that flat padding does not hide
noise), measures nothing but the masks' edges (sigma about 20 on the 0/255 masks)."""


def _robust_range(c: np.ndarray) -> float:
    lo, hi = np.percentile(c, [0.5, 99.5])
    if hi <= lo:  # mostly-constant images (masks, padded scans): fall back to the full range
        lo, hi = float(c.min()), float(c.max())
    return float(hi - lo)


def estimate_noise(a: np.ndarray, relative: bool = False) -> float:
    """Noise standard deviation of one ``(C, *spatial)`` image (mean over channels).

    Args:
        a: 2D or 3D channel-first image, raw intensities.
        relative: divide each channel's sigma by its p0.5-p99.5 intensity range.

    Returns:
        Sigma in the image's units, or as a fraction of its range; 0 for a constant or
        label-like image (at most ``LABEL_LIKE_MAX_VALUES`` distinct values).

    Raises:
        ImageContentError: wrong number of axes, NaN / Inf.
    """
    from skimage.restoration import estimate_sigma

    x = check_image(a, "estimate_noise")
    sig = []
    for c in x:
        if min(c.shape) < 2 or np.unique(c).size <= LABEL_LIKE_MAX_VALUES:
            sig.append(0.0)
            continue
        s = float(estimate_sigma(c.astype(np.float64)))
        if not np.isfinite(s):  # scikit-image returns NaN when every detail coefficient is 0
            s = 0.0
        if relative:
            rng = _robust_range(c)
            s = s / rng if rng > 0 else 0.0
        sig.append(s)
    return float(np.mean(sig))


def dataset_noise(arrays: Iterable[np.ndarray], max_images: int | None = 500, seed: int = 0,
                  threshold: float = DENOISE_RELATIVE_THRESHOLD) -> dict:
    """Noise summary of a dataset for the planner.

    Args:
        arrays: ``(C, *spatial)`` images (a list, an array ``(N, C, ...)`` or any iterable).
        max_images: estimate on at most this many images, drawn with ``seed`` (None = all).
        seed: seed of that draw.
        threshold: relative noise above which ``denoise_recommended`` is True.

    Returns:
        ``n``, ``sigma_median`` and ``sigma_p90`` (image units), ``relative_median`` and
        ``relative_p90``, ``threshold`` and ``denoise_recommended`` (relative median > threshold),
        and ``rule`` (the sentence the plan records).

    Raises:
        DatasetError: no images.
        ImageContentError: an image with the wrong axes or NaN / Inf (its index is named).
    """
    items = list(arrays)
    if not items:
        raise DatasetError("dataset_noise: no images given", fix="pass at least one (C, *spatial) image")
    idx = np.arange(len(items))
    if max_images is not None and len(items) > max_images:
        idx = np.sort(np.random.default_rng(seed).choice(len(items), size=max_images, replace=False))
    sig, rel = [], []
    for i in idx:
        x = check_image(items[i], "dataset_noise", where=f"image {int(i)}")
        sig.append(estimate_noise(x))
        rel.append(estimate_noise(x, relative=True))
    return summarise_noise(sig, rel, threshold)


def summarise_noise(sig: list[float], rel: list[float], threshold: float = DENOISE_RELATIVE_THRESHOLD) -> dict:
    """The summary ``dataset_noise`` returns, from per-image estimates (absolute and relative)."""
    rel_med = float(np.median(rel))
    return {
        "n": int(len(rel)),
        "sigma_median": float(np.median(sig)),
        "sigma_p90": float(np.percentile(sig, 90)),
        "relative_median": rel_med,
        "relative_p90": float(np.percentile(rel, 90)),
        "threshold": float(threshold),
        "denoise_recommended": bool(rel_med > threshold),
        "rule": f"denoise when the median relative noise (wavelet-MAD sigma / p0.5-p99.5 range) > {threshold:g}",
    }
