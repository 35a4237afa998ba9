"""NIfTI volumes (.nii, .nii.gz) via nibabel, in voxel (i, j, k) order."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from meddx.errors import CorruptFileError, ImageContentError, InputError
from meddx.io.base import ImageData, too_big
from meddx.io.formats import DEFAULT_MAX_PIXELS, check_file, path_suffix, short_reason, sniff_magic

_FIX_CORRUPT = "the file is probably truncated or damaged; export or download it again"
_UNITS = {1: ("meter", 1000.0), 2: ("mm", 1.0), 3: ("micron", 1e-3)}  # xyzt_units bits 0-2 -> name, mm per unit


def read_nifti(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageData:
    """Read a NIfTI-1/2 image.

    3D ``(X, Y, Z)`` -> ``(1, X, Y, Z)``; 4D ``(X, Y, Z, T)`` -> ``(T, X, Y, Z)`` (the
    4th axis becomes channels); a single slice (Z = 1, or 2D) -> ``(C, X, Y)``.
    ``spacing`` holds the zooms of the spatial axes kept, converted to mm from the
    header's spatial unit (meter, mm, micron; an unknown unit is taken as mm, i.e. as
    is). ``meta["spatial_unit"]`` records that unit; ``meta["affine"]`` stays as
    stored, in it. Values have the header's scl_slope/scl_inter applied.

    Raises:
        CorruptFileError: not NIfTI, bad gzip, truncated data.
        ImageContentError: too many voxels (checked from the header before loading),
            more than 4 meaningful dimensions, RGB voxels with a 4th dimension, or complex voxels.
    """
    import nibabel as nib

    p = check_file(path)
    try:
        img = nib.load(str(p))
    except Exception as e:  # noqa: BLE001 - nibabel/gzip raise many types for damaged headers
        rename = _misnamed(p)
        if rename is not None:  # nibabel picks plain or gzip by the name alone
            raise InputError(f"the file name does not match its content ({short_reason(e, p)})", path=p,
                             fix=rename) from e
        raise CorruptFileError(f"cannot read the NIfTI header ({short_reason(e, p)})", path=p, fix=_FIX_CORRUPT) from e
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise CorruptFileError(f"not a NIfTI image (nibabel sees {type(img).__name__})", path=p,
                               fix="convert it to NIfTI (.nii or .nii.gz)")
    hdr = img.header
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 0 or any(s <= 0 for s in shape):
        raise CorruptFileError(f"NIfTI header gives an invalid shape {shape}", path=p, fix=_FIX_CORRUPT)
    dtype = hdr.get_data_dtype()
    n_fields = len(dtype.names) if dtype.names else 1
    n = int(np.prod(shape, dtype=np.float64)) * n_fields
    if n > max_pixels:
        raise too_big(p, n, max_pixels, f"NIfTI shape {'x'.join(map(str, shape))}", "voxels")
    # Keep the first 3 axes as space; squeeze singleton axes beyond them (5D vector images are X,Y,Z,1,C).
    spatial = list(shape[:3]) + [1] * (3 - min(3, len(shape)))
    extra = [s for s in shape[3:] if s > 1]
    if len(extra) > 1:
        raise ImageContentError(f"NIfTI has {len(shape)} dimensions {shape}; meddx reads 3D or 3D+channels",
                                path=p, fix="split the extra dimensions into separate files")
    if dtype.names and extra:  # RGB voxels already are the channels: a 4th axis would be a second one
        raise ImageContentError(f"NIfTI holds RGB voxels with a further {extra[0]}-long dimension {shape}; meddx "
                                "reads one RGB volume per file", path=p,
                                fix="save each volume of the 4th dimension as its own file")
    if dtype.kind == "c":  # complex (e.g. MR phase data): a cast would drop the imaginary part
        raise ImageContentError(f"NIfTI holds {dtype.name} voxels, not real numbers", path=p,
                                fix="save the magnitude (or one real component) as its own NIfTI")
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # noqa: BLE001 - EOFError, zlib.error, OSError, ValueError ...
        raise CorruptFileError(f"cannot read the NIfTI voxel data ({short_reason(e, p)})", path=p,
                               fix=_FIX_CORRUPT) from e
    if dtype.names:  # RGB24 / RGBA32: one field per colour channel
        data = np.stack([data[name] for name in dtype.names[:3]], axis=-1)
        extra = [data.shape[-1]]
    n_ch = extra[0] if extra else 1
    data = data.reshape(spatial + [n_ch])
    arr = np.moveaxis(data, -1, 0).astype(np.float32)
    unit, to_mm = _spatial_unit(hdr)
    zooms = [float(z) * to_mm for z in hdr.get_zooms()[:3]] + [1.0] * (3 - min(3, len(shape)))
    if spatial[2] == 1:
        arr = arr[..., 0]
        spacing = tuple(zooms[:2])
    else:
        spacing = tuple(zooms[:3])
    affine = np.asarray(img.affine, dtype=np.float64)
    try:
        axcodes = list(nib.aff2axcodes(affine))
    except Exception:  # noqa: BLE001 - degenerate affine
        axcodes = None
    meta = {
        "format": "nifti",
        "nifti_version": 2 if isinstance(img, nib.Nifti2Image) else 1,
        "affine": affine.tolist(),
        "axcodes": axcodes,
        "source_dtype": (dtype.name if not dtype.names else "rgb"),
        "shape": list(shape),
        "spatial_unit": unit,
    }
    if n_ch > 1 and not dtype.names:
        meta["channel_axis"] = "dim4" if len(shape) == 4 else f"dim{shape.index(n_ch, 3) + 1}"
    return ImageData(np.ascontiguousarray(arr), spacing=spacing, meta=meta)


def _misnamed(p: Path) -> str | None:
    """The rename that lets nibabel read a NIfTI whose name does not say what it holds, else None."""
    try:
        with open(p, "rb") as fh:
            kind = sniff_magic(fh.read(352))
    except OSError:
        return None
    if kind == "gzip" and path_suffix(p) != ".nii.gz":
        return "it is gzip-compressed: rename it to end in .nii.gz"
    if kind == "nifti" and path_suffix(p) != ".nii":
        return "it is an uncompressed NIfTI: rename it to end in .nii"
    return None


def _spatial_unit(hdr) -> tuple[str, float]:
    """The header's spatial unit and its size in mm; an unset or invalid code is "unknown" (1.0)."""
    try:
        code = int(hdr["xyzt_units"]) & 0x07
    except (KeyError, TypeError, ValueError):
        code = 0
    return _UNITS.get(code, ("unknown", 1.0))
