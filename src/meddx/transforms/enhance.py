"""Intensity enhancement of one ``(C, *spatial)`` image, 2D or 3D.

    ``ct_window``: CT window (level/width in HU) mapped to [0, 1] with clipping (MONAI
        ``ScaleIntensityRange``); named presets in ``CT_WINDOWS``.
    ``percentile_clip``: clip each channel to its own [lo, hi] percentiles (units kept).
    ``zscore``: per-channel z-score (MONAI ``NormalizeIntensity``), statistics optionally
        from a mask (e.g. the body or brain) and applied to the whole image.
    ``clahe``: contrast-limited adaptive histogram equalisation (scikit-image
        ``equalize_adapthist``, 2D and 3D), per channel; output in [0, 1].
    ``hist_equalise``: global histogram equalisation (scikit-image ``equalize_hist``),
        per channel; output in [0, 1].

Colour images: ``clahe`` and ``hist_equalise`` work on each channel independently (the only
choice that also fits multi-sequence MRI, whose channels are not colours). For RGB this can
shift hues; ``clahe(..., luminance=True)`` instead equalises the HSV value channel of a
3-channel image (scikit-image's colour path) and keeps hue and saturation.

``ct_window``, ``clahe`` and ``hist_equalise`` return values in [0, 1]; the plan's 8-bit
intensity scheme (``scale255``) must not be applied after them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from meddx.errors import ImageContentError, ParameterError
from meddx.transforms._checks import check_image, integer, positive

CT_WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "lung": (-600.0, 1500.0),
    "abdomen": (50.0, 400.0),
    "bone": (400.0, 1800.0),
}
"""Named CT windows as (level / center, width) in HU: the usual radiology presets
(Radiopaedia "Windowing (CT)": brain W80 L40, lungs W1500 L-600, soft tissue/abdomen
W400 L50, bone W1800 L400)."""


def _keep_dtype(out: np.ndarray, a) -> np.ndarray:
    dt = np.asarray(a).dtype
    return out.astype(dt if np.issubdtype(dt, np.floating) else np.float32, copy=False)


def ct_window(a: np.ndarray, center: float = 50.0, width: float = 400.0, preset: str | None = None) -> np.ndarray:
    """Map the window ``[center - width/2, center + width/2]`` (HU) to [0, 1], clipping outside.

    Args:
        a: CT image in HU, ``(C, *spatial)``.
        center: window level, HU (ignored when ``preset`` is given).
        width: window width, HU (> 0).
        preset: one of ``CT_WINDOWS`` (brain, lung, abdomen, bone).
    """
    from monai.transforms import ScaleIntensityRange

    x = check_image(a, "ct_window")
    if preset is not None:
        if preset not in CT_WINDOWS:
            raise ParameterError(f"ct_window: unknown preset {preset!r}; known: {', '.join(CT_WINDOWS)}")
        center, width = CT_WINDOWS[preset]
    try:
        c = float(center)
    except (TypeError, ValueError):
        raise ParameterError(f"ct_window: center must be a number, got {center!r}") from None
    if not np.isfinite(c):
        raise ParameterError(f"ct_window: center must be finite, got {center!r}")
    w = positive("ct_window", "width", width)
    tf = ScaleIntensityRange(a_min=c - w / 2, a_max=c + w / 2, b_min=0.0, b_max=1.0, clip=True)
    return _keep_dtype(np.asarray(tf(x.copy())), a)  # never modify the caller's array


def percentile_clip(a: np.ndarray, lo: float = 0.5, hi: float = 99.5) -> np.ndarray:
    """Clip each channel to its own ``[p_lo, p_hi]`` intensity percentiles (units kept).

    Why not a library call: clipping at percentiles is two numpy calls; MONAI's
    ``ScaleIntensityRangePercentiles`` also rescales, which this one must not.
    """
    x = check_image(a, "percentile_clip")
    lo_, hi_ = positive("percentile_clip", "lo", lo, allow_zero=True), positive("percentile_clip", "hi", hi)
    if not lo_ < hi_ <= 100:
        raise ParameterError(f"percentile_clip: need 0 <= lo < hi <= 100, got lo={lo!r}, hi={hi!r}")
    out = np.empty_like(x)
    for i, c in enumerate(x):
        p_lo, p_hi = np.percentile(c, [lo_, hi_])
        out[i] = np.clip(c, p_lo, p_hi)
    return _keep_dtype(out, a)


def zscore(a: np.ndarray, mask: np.ndarray | None = None, eps: float = 1e-8) -> np.ndarray:
    """Per-channel ``(a - mean) / std``; with ``mask``, mean and std come from the masked voxels only.

    Args:
        a: ``(C, *spatial)`` image.
        mask: boolean ``(*spatial)`` or ``(1, *spatial)`` foreground (e.g. nnU-Net's non-zero mask).
        eps: a channel with std below this is only centred (no division by ~0).
    """
    from monai.transforms import NormalizeIntensity

    x = check_image(a, "zscore")
    if mask is None:
        out = np.asarray(NormalizeIntensity(channel_wise=True)(x.copy()))  # MONAI works in place
        return _keep_dtype(out, a)
    m = np.asarray(mask)
    if m.shape == (1,) + x.shape[1:]:
        m = m[0]
    if m.shape != x.shape[1:]:
        raise ImageContentError(f"zscore: mask shape {tuple(m.shape)} does not match the image's spatial shape "
                                f"{tuple(x.shape[1:])}", fix="pass a (*spatial) boolean mask of the same image")
    m = m.astype(bool)
    if not m.any():
        raise ImageContentError("zscore: the mask is empty", fix="pass a mask with at least one foreground voxel")
    out = np.empty_like(x)
    for i, c in enumerate(x):
        v = c[m]
        sd = float(v.std())
        out[i] = (c - float(v.mean())) / (sd if sd > eps else 1.0)
    return _keep_dtype(out, a)


def _unit(c: np.ndarray) -> np.ndarray:
    lo, hi = float(c.min()), float(c.max())
    return (c - lo) / (hi - lo) if hi > lo else np.zeros_like(c)


def clahe(a: np.ndarray, clip_limit: float = 0.01, kernel_size: int | Sequence[int] | None = None,
          nbins: int = 256, luminance: bool = False) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation, per channel (2D and 3D); output in [0, 1].

    Each channel is first min-max scaled to [0, 1] (scikit-image needs that range).

    Args:
        clip_limit: contrast limit in (0, 1]; higher gives more contrast.
        kernel_size: context region in pixels (int or per axis); None = 1/8 of each axis.
        nbins: grey-level bins.
        luminance: for a 3-channel 2D image, equalise the HSV value channel instead of each channel.
    """
    from skimage.exposure import equalize_adapthist

    x = check_image(a, "clahe")
    cl = positive("clahe", "clip_limit", clip_limit)
    if cl > 1:
        raise ParameterError(f"clahe: clip_limit must be in (0, 1], got {clip_limit!r}")
    nb = integer("clahe", "nbins", nbins, 2, 65536)
    ks = kernel_size
    if ks is not None:
        ks_list = [ks] * (x.ndim - 1) if np.isscalar(ks) else list(ks)
        if len(ks_list) != x.ndim - 1:
            raise ParameterError(f"clahe: kernel_size needs 1 or {x.ndim - 1} values, got {kernel_size!r}")
        ks = [integer("clahe", "kernel_size", k, 2) for k in ks_list]
    if luminance:
        if x.shape[0] != 3 or x.ndim != 3:
            raise ParameterError(f"clahe: luminance=True needs a 3-channel 2D image, got shape {tuple(x.shape)}")
        rgb = np.moveaxis(_unit(x), 0, -1).astype(np.float64)  # one scale for all channels keeps the colours
        out = equalize_adapthist(rgb, kernel_size=ks, clip_limit=cl, nbins=nb)
        return _keep_dtype(np.moveaxis(out, -1, 0), a)
    out = np.stack([equalize_adapthist(_unit(c).astype(np.float64), kernel_size=ks, clip_limit=cl, nbins=nb)
                    if c.max() > c.min() else np.zeros_like(c) for c in x])
    return _keep_dtype(out, a)


def hist_equalise(a: np.ndarray, nbins: int = 256) -> np.ndarray:
    """Global histogram equalisation per channel (2D and 3D); output in [0, 1] (the intensity CDF)."""
    from skimage.exposure import equalize_hist

    x = check_image(a, "hist_equalise")
    nb = integer("hist_equalise", "nbins", nbins, 2, 65536)
    out = np.stack([equalize_hist(c, nbins=nb) if c.max() > c.min() else np.zeros_like(c) for c in x])
    return _keep_dtype(out, a)
