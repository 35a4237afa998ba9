"""Deterministic intensity preprocessing chosen by the plan.

Schemes (names used in ``plan.yaml``):
    ``scale255``: 8-bit data divided by 255 (photographs, X-ray PNGs, MedMNIST).
    ``clip_scale``: clip to the dataset's [p0.5, p99.5] and map to [0, 1] (CT: the
        nnU-Net rule of clipping to foreground percentiles, dataset-wide).
    ``image_zscore``: per-image z-score (MRI, whose units differ between scans), over all channels.
    ``channel_zscore``: the same, each channel on its own, as nnU-Net normalises each modality
        (T1 and FLAIR have unrelated scales); R4 picks it for images of several channels. A scheme of
        its own, not a change to ``image_zscore``, so that runs and bundles made before it keep the
        inputs they were trained on (and an older runtime refuses, rather than misreads, a bundle
        that uses it).
A dataset-level mean/std from the training split is applied after each of them.
"""

from __future__ import annotations

import numpy as np

SCHEMES = ("scale255", "clip_scale", "image_zscore", "channel_zscore")


def apply_scheme(array: np.ndarray, scheme: str, clip: tuple[float, float] | None = None) -> np.ndarray:
    a = array.astype(np.float32, copy=False)
    if scheme == "scale255":
        return a / 255.0
    if scheme == "clip_scale":
        lo, hi = clip if clip is not None else (float(a.min()), float(a.max()))
        return (np.clip(a, lo, hi) - lo) / max(hi - lo, 1e-6)
    if scheme == "image_zscore" or (scheme == "channel_zscore" and a.shape[0] == 1):
        return (a - a.mean()) / max(float(a.std()), 1e-6)
    if scheme == "channel_zscore":
        axes = tuple(range(1, a.ndim))
        return (a - a.mean(axis=axes, keepdims=True)) / np.maximum(a.std(axis=axes, keepdims=True), 1e-6)
    raise ValueError(f"unknown intensity scheme {scheme!r}; known: {SCHEMES}")


def to_channels(array: np.ndarray, channels: int) -> np.ndarray | None:
    """Convert ``(C, ...)`` to the wanted channel count; None when impossible."""
    c = array.shape[0]
    if c == channels:
        return array
    if channels == 1 and c == 3:
        w = np.array([0.299, 0.587, 0.114], dtype=np.float32).reshape((3,) + (1,) * (array.ndim - 1))
        return (array * w).sum(0, keepdims=True)
    if channels == 3 and c == 1:
        return np.repeat(array, 3, axis=0)
    return None


def channel_mismatch(have: int, want: int, where: str):
    """The error for an image whose channels the model cannot take (training, predict and the runtime)."""
    from meddx.errors import ImageContentError

    fix = ("give all its channels as the training cases had them: one 4D NIfTI with the channels on its 4th "
           "axis, or, for a model trained on nnU-Net channel files, the case's CASE_0000 file with CASE_0001 ... "
           "beside it"
           if want > 1 and have < want else "use images with the same channels as the training data")
    return ImageContentError(f"has {have} channel(s); the model expects {want}", path=where, fix=fix)
