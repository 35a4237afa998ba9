"""Classical denoising of one ``(C, *spatial)`` image, 2D or 3D, channel by channel.

Methods (the names a plan uses):
    ``median``: scipy.ndimage median filter, window ``2 * radius + 1`` (best on impulse /
        salt-and-pepper noise).
    ``gaussian``: scipy.ndimage Gaussian filter, ``sigma`` in pixels (scalar or per axis).
    ``bilateral``: scikit-image ``denoise_bilateral``. scikit-image implements it for 2D
        images only, so a 3D image is filtered slice by slice along its first spatial axis
        (no smoothing across slices). ``sigma_color`` defaults to twice the channel's
        estimated noise sigma (edges stronger than the noise survive), not to scikit-image's
        default (the image's standard deviation, which blurs edges like a Gaussian).
    ``nlm``: scikit-image ``denoise_nl_means`` (2D and 3D) in fast mode with the noise
        sigma estimated by ``meddx.transforms.noise.estimate_noise`` and ``h = 0.6 * sigma``
        (scikit-image's recommended setting when sigma is passed in fast mode).

Each works on raw intensities (after channel conversion, before the plan's intensity
scheme) and returns the same shape and dtype (float32 for integer input).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from meddx.errors import ParameterError
from meddx.transforms._checks import check_image, integer, positive

METHODS = ("median", "gaussian", "bilateral", "nlm")


def denoise(a: np.ndarray, method: str, **params) -> np.ndarray:
    """Denoise one channel-first image.

    Args:
        a: ``(C, H, W)`` or ``(C, D, H, W)`` image.
        method: ``median``, ``gaussian``, ``bilateral`` or ``nlm``.
        **params: the method's parameters (see ``median``, ``gaussian``, ``bilateral``, ``nlm``).

    Returns:
        The denoised image, same shape and dtype.

    Raises:
        ImageContentError: wrong number of axes, NaN / Inf.
        ParameterError: unknown method or bad parameter.
    """
    fns = {"median": median, "gaussian": gaussian, "bilateral": bilateral, "nlm": nlm}
    if method not in fns:
        raise ParameterError(f"denoise: unknown method {method!r}; known: {', '.join(METHODS)}")
    return fns[method](a, **params)


def _out_dtype(a) -> np.dtype:
    dt = np.asarray(a).dtype
    return dt if np.issubdtype(dt, np.floating) else np.dtype(np.float32)


def median(a: np.ndarray, radius: int = 1) -> np.ndarray:
    """Median filter with a cubic window of side ``2 * radius + 1`` pixels, per channel."""
    x = check_image(a, "median")
    r = integer("median", "radius", radius, 1, 10)
    out = np.stack([ndimage.median_filter(c, size=2 * r + 1, mode="reflect") for c in x])
    return out.astype(_out_dtype(a), copy=False)


def gaussian(a: np.ndarray, sigma: float | Sequence[float] = 1.0) -> np.ndarray:
    """Gaussian smoothing, ``sigma`` in pixels (one value, or one per spatial axis), per channel."""
    x = check_image(a, "gaussian")
    nsp = x.ndim - 1
    sig = [sigma] * nsp if np.isscalar(sigma) else list(sigma)
    if len(sig) != nsp:
        raise ParameterError(f"gaussian: sigma needs 1 or {nsp} values for a {nsp}D image, got {sigma!r}")
    sig = [positive("gaussian", "sigma", s, allow_zero=True) for s in sig]
    out = np.stack([ndimage.gaussian_filter(c, sigma=sig, mode="reflect") for c in x])
    return out.astype(_out_dtype(a), copy=False)


def bilateral(a: np.ndarray, sigma_color: float | None = None, sigma_spatial: float = 1.0) -> np.ndarray:
    """Edge-preserving bilateral filter (scikit-image), per channel; 3D slice by slice (first axis).

    Args:
        sigma_color: intensity scale in the image's units; None = 2 x the channel's estimated noise sigma.
        sigma_spatial: spatial scale in pixels.
    """
    from skimage.restoration import denoise_bilateral

    from meddx.transforms.noise import estimate_noise

    x = check_image(a, "bilateral")
    ss = positive("bilateral", "sigma_spatial", sigma_spatial)
    out = np.empty_like(x)
    for i, c in enumerate(x):
        lo, hi = float(c.min()), float(c.max())
        if hi == lo:
            out[i] = c
            continue
        if sigma_color is None:
            # A floor keeps a noise-free channel from getting a zero colour scale (no smoothing at all).
            sc = max(2.0 * estimate_noise(c[None]), 1e-3 * (hi - lo))
        else:
            sc = positive("bilateral", "sigma_color", sigma_color)
        # scikit-image sizes its colour table from the maximum before it shifts negative images,
        # so shift to a zero minimum here and back afterwards.
        c0 = (c - lo).astype(np.float64)
        slices = c0[None] if c0.ndim == 2 else c0
        den = np.stack([denoise_bilateral(s, sigma_color=sc, sigma_spatial=ss, mode="reflect") for s in slices])
        out[i] = (den.reshape(c.shape) + lo).astype(np.float32)
    return out.astype(_out_dtype(a), copy=False)


def nlm(a: np.ndarray, sigma: float | None = None, h_factor: float = 0.6, patch_size: int = 5,
        patch_distance: int = 6) -> np.ndarray:
    """Non-local means (scikit-image, fast mode), 2D and 3D, per channel.

    Args:
        sigma: noise standard deviation in the image's units; None = estimated per channel.
        h_factor: filter strength ``h = h_factor * sigma``.
        patch_size: side of the compared patches, pixels.
        patch_distance: search radius, pixels.
    """
    from skimage.restoration import denoise_nl_means

    from meddx.transforms.noise import estimate_noise

    x = check_image(a, "nlm")
    hf = positive("nlm", "h_factor", h_factor)
    ps = integer("nlm", "patch_size", patch_size, 1, 15)
    pd = integer("nlm", "patch_distance", patch_distance, 1, 30)
    out = np.empty_like(x)
    for i, c in enumerate(x):
        s = estimate_noise(c[None]) if sigma is None else positive("nlm", "sigma", sigma, allow_zero=True)
        if s == 0.0:
            out[i] = c  # nothing to remove; h = 0 would divide by zero inside scikit-image
            continue
        out[i] = denoise_nl_means(c.astype(np.float64), patch_size=ps, patch_distance=pd, h=hf * s, sigma=s,
                                  fast_mode=True, preserve_range=True)
    return out.astype(_out_dtype(a), copy=False)
