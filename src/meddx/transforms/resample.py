"""Resampling to a target voxel spacing (2D and 3D), and nnU-Net's rule for choosing it.

Interpolation is scipy.ndimage ``zoom`` with pixel-centre alignment (``grid_mode=True``,
edge values repeated), like nnU-Net's scikit-image resize: image order 3 (cubic B-spline),
label maps order 0 (nearest), so no label value is invented. For anisotropic 3D data
(coarsest spacing > 3x the finest, in the source or the target) the coarse axis is
resampled on its own with order 0 and the other axes with ``order`` (nnU-Net's
"separate z" resampling: cubic interpolation across thick slices rings).

The output shape is ``round(shape * spacing / target)`` per axis (at least 1) and the
returned spacing is the exact one of the output grid (``spacing * shape / new_shape``),
which differs from the target by the rounding.

``target_spacing(spacings, shapes)`` is nnU-Net v2's full-resolution rule: the per-axis
median spacing; if the data are anisotropic (the median's coarsest axis is more than 3x
the next coarsest and, when shapes are given, that axis has under a third of the voxels
of the others), the coarse axis takes the 10th percentile of its spacings instead (but at
least the finest other axis), so thick-slice cases are not over-interpolated.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from meddx.errors import ImageContentError, ParameterError
from meddx.transforms._checks import check_image, integer

ANISO_THRESHOLD = 3.0
"""nnU-Net's ``ANISO_THRESHOLD``: a spacing ratio above this counts as anisotropic."""


def _spacing(what: str, name: str, value, nsp: int) -> tuple[float, ...]:
    try:
        sp = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ParameterError(f"{what}: {name} must be a sequence of {nsp} numbers, got {value!r}") from None
    if len(sp) != nsp:
        raise ParameterError(f"{what}: {name} has {len(sp)} values for a {nsp}D image, got {value!r}",
                             fix="give one spacing per spatial axis, in the array's axis order")
    if not all(np.isfinite(s) and s > 0 for s in sp):
        raise ParameterError(f"{what}: {name} values must be finite and > 0, got {value!r}")
    return sp


def _new_shape(shape, spacing, target) -> tuple[int, ...]:
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def _zoom(c: np.ndarray, new_shape, order: int, separate_axis: int | None) -> np.ndarray:
    factors = [n / o for n, o in zip(new_shape, c.shape)]
    if separate_axis is None or factors[separate_axis] == 1.0:
        return ndimage.zoom(c, factors, order=order, mode="nearest", grid_mode=True)
    inplane = [1.0 if i == separate_axis else f for i, f in enumerate(factors)]
    along = [factors[i] if i == separate_axis else 1.0 for i in range(len(factors))]
    tmp = ndimage.zoom(c, inplane, order=order, mode="nearest", grid_mode=True)
    return ndimage.zoom(tmp, along, order=0, mode="nearest", grid_mode=True)


def _separate_axis(spacing, target, separate_z) -> int | None:
    if len(spacing) != 3 or separate_z is False:
        return None
    for sp in (spacing, target):
        if max(sp) / min(sp) > ANISO_THRESHOLD:
            return int(np.argmax(sp))
    return int(np.argmax(spacing)) if separate_z else None


def resample_to_spacing(a: np.ndarray, spacing: Sequence[float], target_spacing: Sequence[float], order: int = 3,
                        separate_z: bool | None = None) -> tuple[np.ndarray, tuple[float, ...]]:
    """Resample one ``(C, *spatial)`` image from ``spacing`` to ``target_spacing``.

    Args:
        a: 2D or 3D channel-first image.
        spacing: current spacing per spatial axis (array axis order), e.g. mm.
        target_spacing: wanted spacing, same order and units.
        order: spline order, 0-5 (3 for images, 0 for label maps).
        separate_z: 3D only: resample the coarsest axis separately with order 0; None = when
            anisotropic (ratio > 3), True = always, False = never.

    Returns:
        ``(resampled float32 image, its exact spacing)``.

    Raises:
        ImageContentError: wrong axes, NaN / Inf.
        ParameterError: spacings of the wrong length or not positive, order outside 0-5.
    """
    x = check_image(a, "resample_to_spacing")
    nsp = x.ndim - 1
    sp = _spacing("resample_to_spacing", "spacing", spacing, nsp)
    tg = _spacing("resample_to_spacing", "target_spacing", target_spacing, nsp)
    o = integer("resample_to_spacing", "order", order, 0, 5)
    new = _new_shape(x.shape[1:], sp, tg)
    if new == tuple(x.shape[1:]):
        return x.copy(), sp
    ax = _separate_axis(sp, tg, separate_z)
    out = np.stack([_zoom(c, new, o, ax) for c in x]).astype(np.float32, copy=False)
    return out, tuple(s * n / m for s, n, m in zip(sp, x.shape[1:], new))


def resample_label(labels: np.ndarray, spacing: Sequence[float], target_spacing: Sequence[float]
                   ) -> tuple[np.ndarray, tuple[float, ...]]:
    """Resample an integer label map by nearest neighbour onto the grid ``resample_to_spacing`` gives.

    Args:
        labels: ``(*spatial)`` or ``(1, *spatial)`` integer (or boolean) label map; the number of
            spatial axes is ``len(spacing)``.
        spacing: current spacing per spatial axis.
        target_spacing: wanted spacing.

    Returns:
        ``(label map of the same dtype and layout, its exact spacing)``; no new label values.
    """
    lab = np.asarray(labels)
    try:
        nsp = len(spacing)
    except TypeError:
        raise ParameterError(f"resample_label: spacing must be a sequence of numbers, got {spacing!r}") from None
    if nsp not in (2, 3) or lab.ndim not in (nsp, nsp + 1) or (lab.ndim == nsp + 1 and lab.shape[0] != 1):
        raise ImageContentError(f"resample_label: expected a (*spatial) or (1, *spatial) label map matching a "
                                f"{nsp if nsp > 0 else '2D/3D'} spacing, got shape {tuple(lab.shape)}")
    if not (np.issubdtype(lab.dtype, np.integer) or lab.dtype == bool):
        raise ImageContentError(f"resample_label: labels must be integers, got dtype {lab.dtype}",
                                fix="resample intensities with resample_to_spacing, label maps as integers")
    if min(lab.shape) == 0:
        raise ImageContentError(f"resample_label: the label map has an empty axis (shape {tuple(lab.shape)})")
    sq = lab[0] if lab.ndim == nsp + 1 else lab
    sp = _spacing("resample_label", "spacing", spacing, nsp)
    tg = _spacing("resample_label", "target_spacing", target_spacing, nsp)
    new = _new_shape(sq.shape, sp, tg)
    if new == tuple(sq.shape):
        return lab.copy(), sp
    src = sq.astype(np.int32) if lab.dtype == bool else sq
    out = ndimage.zoom(src, [n / o for n, o in zip(new, sq.shape)], order=0, mode="nearest", grid_mode=True)
    out = out.astype(lab.dtype, copy=False)
    return (out[None] if lab.ndim == nsp + 1 else out), tuple(s * n / m for s, n, m in zip(sp, sq.shape, new))


def target_spacing_decision(spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]] | None = None,
                            threshold: float = ANISO_THRESHOLD) -> dict:
    """nnU-Net's target spacing with the values it read, for the plan's decision record.

    Args:
        spacings: one spacing per case (all of the same length, 2 or 3).
        shapes: the cases' spatial shapes (optional; adds nnU-Net's voxel-count condition).
        threshold: anisotropy ratio (nnU-Net: 3).

    Returns:
        ``spacing`` (tuple), ``median_spacing``, ``anisotropic`` (bool), ``coarse_axis`` (int or
        None), ``coarse_axis_p10`` and ``rule`` (a sentence).

    Raises:
        ParameterError: no spacings, mixed lengths, non-positive values, shapes not matching.
    """
    try:
        sp = np.asarray([[float(v) for v in s] for s in spacings], dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError("target_spacing: spacings must be one sequence of numbers per case, all of one length"
                             ) from None
    if sp.ndim != 2 or sp.shape[0] == 0 or sp.shape[1] not in (2, 3):
        raise ParameterError(f"target_spacing: expected one 2- or 3-value spacing per case, got array of shape "
                             f"{sp.shape}")
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ParameterError("target_spacing: every spacing must be finite and > 0",
                             fix="fix or drop the cases whose header gives a zero or missing spacing")
    target = np.percentile(sp, 50, axis=0)
    info = {"median_spacing": tuple(float(v) for v in target), "anisotropic": False, "coarse_axis": None,
            "coarse_axis_p10": None}
    worst = int(np.argmax(target))
    others = [i for i in range(sp.shape[1]) if i != worst]
    aniso_spacing = target[worst] > threshold * max(target[i] for i in others)
    aniso_voxels = True
    if shapes is not None:
        sh = np.asarray([list(s) for s in shapes], dtype=np.float64)
        if sh.shape != sp.shape:
            raise ParameterError(f"target_spacing: shapes {sh.shape} do not match spacings {sp.shape}")
        med_shape = np.percentile(sh, 50, axis=0)
        aniso_voxels = med_shape[worst] * threshold < min(med_shape[i] for i in others)
    if aniso_spacing and aniso_voxels:
        p10 = float(np.percentile(sp[:, worst], 10))
        next_coarsest = max(target[i] for i in others)
        # never finer than the other axes (nnU-Net adds 1e-5 so the coarse axis stays the coarse one)
        target[worst] = p10 if p10 >= next_coarsest else next_coarsest + 1e-5
        info.update(anisotropic=True, coarse_axis=worst, coarse_axis_p10=p10)
    info["spacing"] = tuple(float(v) for v in target)
    voxels = f" and under 1/{threshold:g} of their voxels" if shapes is not None else ""
    info["rule"] = (f"median spacing per axis; if the coarsest median spacing is > {threshold:g}x the next{voxels}, "
                    "that axis takes the 10th percentile of its spacings (nnU-Net v2)")
    return info


def target_spacing(spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]] | None = None,
                   threshold: float = ANISO_THRESHOLD) -> tuple[float, ...]:
    """nnU-Net's target spacing (see the module docstring); ``target_spacing_decision`` gives the details."""
    return target_spacing_decision(spacings, shapes, threshold)["spacing"]
