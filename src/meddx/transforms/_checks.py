"""Validation shared by the preprocessing components (one ``(C, *spatial)`` image each)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from meddx.errors import ImageContentError, ParameterError


def check_image(a, what: str, dims: Sequence[int] = (2, 3), where: str | None = None) -> np.ndarray:
    """Return ``a`` as a float32 ``(C, *spatial)`` array after checking its shape and values.

    Args:
        a: the image, channel first.
        what: the component's name, used in messages.
        dims: allowed spatial dimensionalities.
        where: file or case the image came from (named in the message).

    Raises:
        ImageContentError: wrong number of axes, an empty axis, or NaN / Inf values.
    """
    arr = np.asarray(a)
    if arr.ndim - 1 not in dims:
        want = " or ".join(f"(C, {', '.join(['size'] * d)})" for d in dims)
        raise ImageContentError(
            f"{what}: expected one channel-first image {want}, got shape {tuple(arr.shape)}", path=where,
            fix="add the channel axis (a[None]) for a grey image, or pass one image at a time")
    if min(arr.shape) == 0:
        raise ImageContentError(f"{what}: the image has an empty axis (shape {tuple(arr.shape)})", path=where)
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ImageContentError(f"{what}: expected real numbers, got dtype {arr.dtype}", path=where)
    arr = arr.astype(np.float32, copy=False)
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise ImageContentError(f"{what}: {bad} value(s) are NaN or infinite", path=where,
                                fix="replace or drop them before preprocessing")
    return arr


def positive(what: str, name: str, value, allow_zero: bool = False) -> float:
    """``value`` as a float, > 0 (or >= 0); ParameterError otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{what}: {name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ParameterError(f"{what}: {name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return v


def integer(what: str, name: str, value, lo: int, hi: int | None = None) -> int:
    """``value`` as an int in ``[lo, hi]``; ParameterError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo or (hi is not None and value > hi):
        rng = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
        raise ParameterError(f"{what}: {name} must be an integer {rng}, got {value!r}")
    return int(value)
