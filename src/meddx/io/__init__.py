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
    channel_file,
    check_file,
    detect_format,
    is_readable_path,
    nnunet_channel,
)

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "ImageData", "is_readable_path", "read_channels", "read_image",
           "read_input"]


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


def read_channels(paths: list[Path], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageData:
    """One image from several files, one per channel (or group of channels), as nnU-Net v2 stores a
    multi-modal case (``x_0000.nii.gz`` T1, ``x_0001.nii.gz`` FLAIR, ...): their channels are stacked in
    the order given. Every file must have the first file's spatial shape and, where both have one,
    its geometry; the image keeps the first file's spacing and geometry.

    Raises:
        ImageContentError: a file whose grid differs from the first file's, or the channels together
            over ``max_pixels``; and whatever ``read_image`` raises for each file.
    """
    import numpy as np

    from meddx.errors import ImageContentError
    from meddx.io.base import check_finite, same_geometry, too_big

    paths = [Path(p) for p in paths]
    per_file = max(1, max_pixels // len(paths))  # the stacked image is what must fit the limit
    first = read_image(paths[0], max_pixels=per_file)
    arrays = [first.array]
    for p in paths[1:]:
        img = read_image(p, max_pixels=per_file)
        if img.spatial_shape != first.spatial_shape:
            raise ImageContentError(f"channel file is {list(img.spatial_shape)} but {paths[0].name} is "
                                    f"{list(first.spatial_shape)}: one case's channels must share one grid", path=p,
                                    fix=f"resample it onto {paths[0].name}'s grid (nnU-Net too needs a case's channels "
                                        "co-registered on one grid)")
        if not same_geometry(first, img):
            raise ImageContentError(f"channel file lies elsewhere in space than {paths[0].name} (different affine): "
                                    "one case's channels must be co-registered", path=p,
                                    fix=f"resample it onto {paths[0].name}'s grid, or correct its header")
        arrays.append(img.array)
    for p, a in zip(paths, arrays):  # checked per file here: on the stack, the error would name the first file
        check_finite(a, p, "voxel(s) of this channel file are")
    n = sum(a.size for a in arrays)
    if n > max_pixels:
        raise too_big(paths[0], n, max_pixels, f"case of {len(paths)} channel files", "voxels")
    meta = dict(first.meta, channel_files=len(paths))
    return ImageData(np.concatenate(arrays, axis=0), first.spacing, meta)


def read_input(path: str | Path, channel_files: int = 1, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageData:
    """What a model reads for one input: ``read_image``; for a model trained on cases of
    ``channel_files`` > 1 files (nnU-Net's ``x_0000``, ``x_0001`` ...: the plan's ``data.channel_files``)
    given a case's first file (``x_0000.nii.gz``), that case's files beside it, stacked (``read_channels``).

    Raises:
        InputError: a channel file of the case is missing (named, with the fix).
    """
    p = Path(path).expanduser()
    named = nnunet_channel(p) if channel_files > 1 and p.is_file() else None
    if named is None or named[1] != 0:
        return read_image(p, max_pixels=max_pixels)
    files = [channel_file(p, k) for k in range(channel_files)]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise InputError(f"the model takes {channel_files} channel files per case, as nnU-Net names them, and "
                         f"{missing[0].name} is missing", path=p,
                         fix=f"put {', '.join(f.name for f in missing)} beside {p.name}, or give the case as one "
                             "4D NIfTI with the channels on its 4th axis")
    return read_channels(files, max_pixels=max_pixels)
