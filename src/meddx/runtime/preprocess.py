"""A decoded image to the model input with numpy only, as ``meddx.data.preprocess`` does in training.

The steps and their order are those of ``meddx.data.preprocess.prepare`` followed by
``standardise``: refuse NaN/Inf and constant images, squeeze extra singleton axes, convert
channels and apply the intensity scheme (the same torch-free functions from
``meddx.transforms.intensity``), resize (``meddx.runtime.resize``, a numpy copy of the
torch resize), then subtract the training mean and divide by its std. A test runs both
on real PNG, DICOM and NIfTI files and requires equal outputs.
"""

from __future__ import annotations

import numpy as np

from meddx.errors import ImageContentError
from meddx.io.base import ImageData, check_pixels
from meddx.runtime.resize import resize
from meddx.runtime.spec import Preprocessing
from meddx.transforms.intensity import apply_scheme, channel_mismatch, to_channels
from meddx.transforms.orientation import oriented


def _squeeze_to(a: np.ndarray, spatial_dims: int, where: str) -> np.ndarray:
    if a.ndim - 1 == spatial_dims:
        return a
    squeezed = a
    while squeezed.ndim - 1 > spatial_dims and 1 in squeezed.shape[1:]:
        ax = 1 + list(squeezed.shape[1:]).index(1)
        squeezed = np.squeeze(squeezed, axis=ax)
    if squeezed.ndim - 1 != spatial_dims:
        raise ImageContentError(
            f"has {a.ndim - 1} spatial dimensions (shape {tuple(a.shape[1:])}) but the model expects "
            f"{spatial_dims}D input", path=where, fix="keep 2D and 3D images in separate datasets")
    return squeezed


def target_size(spec: Preprocessing, img: ImageData) -> tuple[int, ...]:
    """The resize target: the spec's size, or for 3D segmentation the volume's own grid (scaled by
    spacing / target spacing when the spec has one, as ``meddx.data.segprep.image_spec``)."""
    if spec.size is not None:
        return tuple(int(s) for s in spec.size)
    size = tuple(img.spatial_shape[-spec.spatial_dims:])
    ts = spec.target_spacing
    if ts and img.spacing is not None and len(img.spacing) >= 3:
        sp = tuple(float(v) for v in img.spacing[-3:])
        size = tuple(max(1, int(round(n * s / t))) for n, s, t in zip(size, sp, ts))
    return size


def apply_steps(a: np.ndarray, steps, where: str) -> np.ndarray:
    """The plan's preprocessing steps, by name from ``meddx.transforms.PREPROCESSORS`` (as training's
    ``meddx.data.preprocess.apply_steps``; the export refuses steps that need torch)."""
    if not steps:
        return a
    from meddx.runtime.spec import BundleError
    from meddx.transforms import PREPROCESSORS

    for name, params in steps:
        if name not in PREPROCESSORS:
            raise BundleError(f"unknown preprocessing step '{name}' in the bundle", path=where,
                              fix="install the meddx version that exported the bundle")
        a = PREPROCESSORS[name](a.astype(np.float32, copy=False), **params)
    return np.asarray(a, dtype=np.float32)


def prepare(img: ImageData, spec: Preprocessing, where: str) -> np.ndarray:
    """Decoded image -> standardised model input ``(C, *size)`` float32 (a volume reoriented to the
    spec's orientation first, as training's ``prepare``)."""
    img = oriented(img, spec.orientation)
    a = img.array
    check_pixels(a, where)
    a = _squeeze_to(a, spec.spatial_dims, where)
    conv = to_channels(a, spec.channels)
    if conv is None:
        raise channel_mismatch(a.shape[0], spec.channels, where)
    a = apply_scheme(apply_steps(conv, spec.steps, where), spec.intensity, tuple(spec.clip) if spec.clip else None)
    a = resize(a, target_size(spec, img), antialias_when_shrinking=True if spec.antialias_3d else None)
    return ((a - np.float32(spec.mean)) / np.float32(spec.std)).astype(np.float32)
