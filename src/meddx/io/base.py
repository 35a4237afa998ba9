"""The in-memory image every reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # DICOM's patient axes (LPS) to NIfTI's (RAS)


def ras_affine(img: "ImageData") -> np.ndarray | None:
    """The image's voxel-to-world affine in RAS (NIfTI's convention), or None where unknown:
    a DICOM reader's LPS affine is converted; any other stays as it is."""
    aff = img.meta.get("affine")
    if aff is None:
        return None
    aff = np.asarray(aff, float)
    return LPS_TO_RAS @ aff if img.meta.get("format") == "dicom" else aff


def same_geometry(a: "ImageData", b: "ImageData", unknown: bool = True) -> bool:
    """Same voxel-to-world mapping (both taken in RAS, so a DICOM's LPS affine compares with a NIfTI's);
    ``unknown`` where either has none."""
    fa, fb = ras_affine(a), ras_affine(b)
    if fa is None or fb is None:
        return unknown
    return bool(np.allclose(fa, fb, atol=1e-3, rtol=1e-4))


def axcodes_of(img) -> tuple[str, ...] | None:
    """Orientation letters of the spatial axes: NIfTI's own, or from a DICOM series' LPS affine."""
    codes = img.meta.get("axcodes")
    if codes:  # a degenerate NIfTI affine leaves an axis without a direction (None): unknown
        return None if None in codes[: img.spatial_dims] else tuple(codes[: img.spatial_dims])
    aff = img.meta.get("affine")
    if aff is None or img.meta.get("format") == "nifti" or img.spatial_dims != 3:
        return None
    import nibabel as nib

    try:
        codes = tuple(nib.aff2axcodes(ras_affine(img)))
    except Exception:  # noqa: BLE001 - degenerate geometry: orientation unknown
        return None
    return None if None in codes else codes


def known_spacing(img: "ImageData") -> tuple[float, ...] | None:
    """The image's spacing in mm, or None where the reader filled in 1.0 for a part it could not find
    (DICOM frames without positions or slice spacing, no pixel spacing): not a size in mm."""
    if img.meta.get("frame_spacing_unknown") or img.meta.get("pixel_spacing_unknown"):
        return None
    return img.spacing


@dataclass
class ImageData:
    """One decoded image or volume.

    Attributes:
        array: float32, channel-first: ``(C, H, W)`` for 2D, ``(C, D, H, W)`` for 3D.
            For 3D, axis order is the reader's voxel order (NIfTI i, j, k; DICOM slice,
            row, column) and ``spacing`` follows the same order.
        spacing: physical size of a pixel/voxel along each spatial axis (mm), or None.
        meta: geometry and provenance safe to log (affine, orientation, modality,
            transfer syntax, source format). Never patient identifiers.
    """

    array: np.ndarray
    spacing: tuple[float, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spatial_dims(self) -> int:
        return self.array.ndim - 1

    @property
    def channels(self) -> int:
        return int(self.array.shape[0])

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape[1:])


#: The fix an over-limit image gets (``meddx serve`` lowers the limit with --max-megapixels; the
#: training and prediction commands keep the default, 1 GiB as float32).
TOO_BIG_FIX = "downsample or crop it first: the limit keeps one image from exhausting memory"


def too_big(path, n: int, max_pixels: int, what: str, unit: str = "pixels"):
    """The error every reader raises for an image over the decode limit (the server turns its
    "would decode to N pixels|voxels x channels, above the limit" into HTTP 413)."""
    from meddx.errors import ImageContentError

    return ImageContentError(f"{what} would decode to {n} {unit} x channels, above the limit of {max_pixels}",
                             path=path, fix=TOO_BIG_FIX)


def check_finite(array: np.ndarray, where, what: str = "pixel(s) are") -> None:
    """Raise a one-line error naming ``where`` when ``array`` holds NaN or infinite values."""
    from meddx.errors import ImageContentError

    if not np.isfinite(array).all():
        raise ImageContentError(f"{int((~np.isfinite(array)).sum())} {what} NaN or infinite", path=where,
                                fix="re-export the image or remove it from the dataset")


def check_pixels(array: np.ndarray, where: str) -> None:
    """Raise a one-line error for NaN/Inf or constant images (training and the runtime share it)."""
    from meddx.errors import ImageContentError

    check_finite(array, where)
    if array.ndim >= 2 and sum(s > 1 for s in array.shape[1:]) < 2:
        raise ImageContentError(f"the image is {'x'.join(map(str, array.shape[1:]))} pixels: a line or a point, "
                                "not an image", path=where, fix="remove it from the dataset or re-export it")
    if array.size and float(array.max()) == float(array.min()):
        raise ImageContentError(f"the image is constant (every pixel = {float(array.min()):g})", path=where,
                                fix="remove the blank image or re-export it")
