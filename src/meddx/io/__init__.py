"""Readers: one entry point, ``read_image``, for every image format meddx accepts.

Datasets have their own readers: ``npz.read_medmnist_npz``, ``folder.scan_class_folder``,
``manifest.read_manifest`` and ``medmnist.locate_medmnist``.
"""

from __future__ import annotations

from pathlib import Path

from meddx.errors import InputError
from meddx.io.base import ImageData
from meddx.io.formats import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    SUPPORTED_FORMATS,
    check_file,
    detect_format,
    is_readable_path,
)

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "ImageData", "is_readable_path", "read_image"]


def read_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageData:
    """Read any supported image: PNG/JPEG/TIFF/BMP, DICOM file, DICOM series folder, NIfTI.

    The format is chosen from the magic bytes, then the file name.

    Args:
        path: a file, or a folder holding one DICOM series.
        max_pixels: refuse images that would decode to more voxels x channels than this
            (checked from the header, before decoding).

    Returns:
        ImageData with a float32 channel-first array (see ``meddx.io.base``).

    Raises:
        InputError: missing path or unknown format; its subclasses CorruptFileError,
            MissingCodecError and ImageContentError for damaged, undecodable or oversized
            images. DatasetError for unusable DICOM series folders.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        from meddx.io.dicom import read_dicom_series

        return read_dicom_series(p, max_pixels=max_pixels)
    p = check_file(p)
    kind = detect_format(p)
    if kind == "raster":
        from meddx.io.image import read_raster

        return read_raster(p, max_pixels=max_pixels)
    if kind == "dicom":
        from meddx.io.dicom import read_dicom_file

        return read_dicom_file(p, max_pixels=max_pixels)
    if kind == "nifti":
        from meddx.io.nifti import read_nifti

        return read_nifti(p, max_pixels=max_pixels)
    raise InputError("unknown image format (neither the content nor the file name is recognised)", path=p,
                     fix=f"use one of: {SUPPORTED_FORMATS}")
