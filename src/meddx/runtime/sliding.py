"""Sliding-window inference with numpy, reproducing MONAI's ``sliding_window_inference``.

Written here because the edge runtime must not import torch (MONAI is torch). Same
rules as MONAI 1.x: the image is padded (constant, half on each side) up to the window
where smaller; windows start every ``int(roi * (1 - overlap))`` voxels, the last one
flush with the far edge; window outputs are blended with a Gaussian importance map
(sigma = 0.125 x window, floored at its minimum or 1e-3) or uniformly, then the padding
is cropped. ``tests/runtime`` checks it against MONAI.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np


def importance_map(roi: Sequence[int], mode: str = "gaussian", sigma_scale: float = 0.125) -> np.ndarray:
    """The per-voxel blending weight of one window."""
    if mode == "constant":
        return np.ones(tuple(roi), np.float32)
    if mode != "gaussian":
        raise ValueError(f"unknown blending mode {mode!r}; use gaussian or constant")
    w = None
    for n in roi:
        x = np.arange(-(n - 1) / 2.0, (n - 1) / 2.0 + 1, dtype=np.float32)
        g = np.exp(x ** 2 / np.float32(-2 * (n * sigma_scale) ** 2)).astype(np.float32)
        w = g if w is None else w[..., None] * g
    return np.maximum(w, max(float(w.min()), 1e-3)).astype(np.float32)


def window_starts(image: Sequence[int], roi: Sequence[int], overlap: float) -> list[tuple[int, ...]]:
    """Start corner of every window (MONAI's ``dense_patch_slices``), in C order."""
    per_axis = []
    for n, r in zip(image, roi):
        step = r if r == n else max(int(r * (1 - overlap)), 1)
        num = int(math.ceil(n / step))
        count = next((d + 1 for d in range(num) if d * step + r >= n), 1)
        per_axis.append([d * step - max(d * step + r - n, 0) for d in range(count)])
    grids = np.meshgrid(*per_axis, indexing="ij")
    return [tuple(int(v) for v in c) for c in np.stack([g.ravel() for g in grids], 1)]


def sliding_window(image: np.ndarray, roi: Sequence[int], predictor: Callable[[np.ndarray], np.ndarray], *,
                   overlap: float = 0.5, mode: str = "gaussian", batch_size: int = 4) -> np.ndarray:
    """Blend ``predictor`` outputs over windows of one image.

    Args:
        image: ``(C, *S)`` float32, already standardised.
        roi: window size per spatial axis.
        predictor: ``(B, C, *roi)`` -> ``(B, K, *roi)`` (logits).
        overlap: fraction of a window shared with the next, in [0, 1).
        mode: ``gaussian`` or ``constant`` blending.
        batch_size: windows per predictor call.

    Returns:
        ``(K, *S)`` float32 blended outputs.
    """
    roi = tuple(int(r) for r in roi)
    shape = tuple(image.shape[1:])
    pads = [(0, 0)] + [((max(r - n, 0)) // 2, max(r - n, 0) - max(r - n, 0) // 2) for n, r in zip(shape, roi)]
    x = np.pad(image, pads) if any(p for pr in pads for p in pr) else image
    padded = tuple(x.shape[1:])
    w = importance_map(roi, mode)
    starts = window_starts(padded, roi, overlap)
    acc = cnt = None
    for b in range(0, len(starts), batch_size):
        group = starts[b:b + batch_size]
        batch = np.stack([x[(slice(None), *(slice(s, s + r) for s, r in zip(st, roi)))] for st in group])
        out = np.asarray(predictor(np.ascontiguousarray(batch, dtype=np.float32)), dtype=np.float32)
        if acc is None:
            acc = np.zeros((out.shape[1], *padded), np.float32)
            cnt = np.zeros(padded, np.float32)
        for st, o in zip(group, out):
            sl = tuple(slice(s, s + r) for s, r in zip(st, roi))
            acc[(slice(None), *sl)] += o * w
            cnt[sl] += w
    acc /= cnt
    crop = tuple(slice(p[0], p[0] + n) for p, n in zip(pads[1:], shape))
    return np.ascontiguousarray(acc[(slice(None), *crop)])
