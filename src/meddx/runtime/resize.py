"""Resizing with numpy only, reproducing ``meddx.transforms.spatial.resize`` (torch) exactly.

Written here because the edge runtime must not import torch: PyTorch's
``F.interpolate`` (linear, ``align_corners=False``, and its antialiased 2D variant,
which is Pillow's triangle filter) is rebuilt as one weight matrix per axis, applied
separably. ``tests/runtime`` compares both on random arrays and real files.
"""

from __future__ import annotations

import numpy as np


def _linear_weights(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` weights of linear interpolation, ``align_corners=False`` (PyTorch's rule:
    source index ``scale * (i + 0.5) - 0.5`` clamped at 0, right neighbour clamped at the edge)."""
    scale = n_in / n_out
    w = np.zeros((n_out, n_in), np.float64)
    src = np.maximum(scale * (np.arange(n_out) + 0.5) - 0.5, 0.0)
    i0 = src.astype(np.int64)
    i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
    l1 = src - i0
    rows = np.arange(n_out)
    np.add.at(w, (rows, i0), 1.0 - l1)
    np.add.at(w, (rows, i1), l1)
    return w


def _triangle_weights(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` weights of PyTorch's antialiased bilinear resize (Pillow's algorithm):
    a triangle filter widened by the scale when shrinking, normalised over the pixels inside."""
    scale = n_in / n_out
    support = scale if scale >= 1.0 else 1.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    w = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        center = scale * (i + 0.5)
        xmin = max(int(center - support + 0.5), 0)  # int() truncates toward zero, as the C++ cast does
        xmax = min(int(center + support + 0.5), n_in)
        j = np.arange(xmin, xmax)
        t = np.clip(1.0 - np.abs((j - center + 0.5) * invscale), 0.0, None)
        total = t.sum()
        w[i, xmin:xmax] = t / total if total != 0 else t
    return w


def axis_weights(n_in: int, n_out: int, antialias: bool) -> np.ndarray:
    return _triangle_weights(n_in, n_out) if antialias else _linear_weights(n_in, n_out)


def resize(array: np.ndarray, size: tuple[int, ...], *, antialias_when_shrinking: bool | None = None) -> np.ndarray:
    """Resize a channel-first array ``(C, *spatial)`` to ``size`` (2D or 3D); float32 out.

    2D: bilinear, antialiased when any axis shrinks (as meddx's training preprocessing);
    3D: trilinear without antialiasing. ``antialias_when_shrinking=False`` forces plain
    linear interpolation (used to bring 2D segmentation probabilities back to the image).
    """
    spatial = tuple(int(s) for s in array.shape[1:])
    size = tuple(int(s) for s in size)
    if len(size) not in (2, 3) or len(size) != len(spatial):
        raise ValueError(f"resize supports 2D and 3D channel-first arrays, got shape {array.shape} -> {size}")
    if spatial == size:
        return array.astype(np.float32, copy=False)
    if antialias_when_shrinking is None:
        antialias_when_shrinking = len(size) == 2
    aa = antialias_when_shrinking and any(s < o for s, o in zip(size, spatial))
    out = array.astype(np.float64)
    for ax, (n_in, n_out) in enumerate(zip(spatial, size)):
        if n_in == n_out and not aa:
            continue
        w = axis_weights(n_in, n_out, aa)
        out = np.moveaxis(np.tensordot(w, np.moveaxis(out, ax + 1, 0), axes=(1, 0)), 0, ax + 1)
    return np.ascontiguousarray(out, dtype=np.float32)
