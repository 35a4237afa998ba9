"""Deterministic spatial preprocessing: resize to the plan's input size."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resize(array: np.ndarray, size: tuple[int, ...], *, antialias_3d: bool = False) -> np.ndarray:
    """Resize a channel-first array ``(C, *spatial)`` to ``size`` (2D or 3D).

    Downsampling in 2D uses antialiased bilinear interpolation (no aliasing from thin
    structures). 3D uses trilinear, which when shrinking samples the volume rather than
    averaging it: a 512-slice CT brought to 32 reads 2 of every 16 slices per output
    voxel, and fine structures alias. With ``antialias_3d`` a shrinking 3D resize uses the
    same triangle filter as the 2D one, widened by the scale on each axis (what torch's
    antialiased bilinear does in 2D; torch has no 3D antialiasing, so this is the numpy
    separable filter the edge runtime uses, ``meddx.runtime.resize``). Returns float32.
    """
    spatial = tuple(array.shape[1:])
    size = tuple(int(s) for s in size)
    if spatial == size:
        return array.astype(np.float32, copy=False)
    if antialias_3d and len(size) == 3 and any(s < o for s, o in zip(size, spatial)):
        from meddx.runtime.resize import resize as separable

        return separable(array, size, antialias_when_shrinking=True)
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
