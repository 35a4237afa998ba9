"""Deterministic spatial preprocessing: resize to the plan's input size."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resize(array: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Resize a channel-first array ``(C, *spatial)`` to ``size`` (2D or 3D).

    Downsampling in 2D uses antialiased bilinear interpolation (no aliasing from thin
    structures); 3D uses trilinear. Returns float32.
    """
    spatial = tuple(array.shape[1:])
    size = tuple(int(s) for s in size)
    if spatial == size:
        return array.astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    if len(size) == 2:
        shrinking = any(s < o for s, o in zip(size, spatial))
        out = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=shrinking)
    elif len(size) == 3:
        out = F.interpolate(t, size=size, mode="trilinear", align_corners=False)
    else:
        raise ValueError(f"resize supports 2D and 3D, got size {size}")
    return out[0].numpy()


def resize_labels(labels: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Resize an integer label map ``(*spatial)`` to ``size`` by nearest neighbour."""
    size = tuple(int(s) for s in size)
    if tuple(labels.shape) == size:
        return labels
    t = torch.from_numpy(np.ascontiguousarray(labels).astype(np.float32))[None, None]
    out = F.interpolate(t, size=size, mode="nearest-exact")
    return out[0, 0].numpy().astype(labels.dtype)
