"""DICOM files (single- and multi-frame) and series folders, via pydicom.

Pixel values get the modality LUT (RescaleSlope/Intercept, i.e. Hounsfield units
for CT); MONOCHROME1 is inverted so that bright always means high signal; palette
colour is expanded to RGB. Geometry is kept in ``meta["affine"]``: a 4x4 LPS
matrix mapping a (slice, row, column) voxel index to millimetres. Only technical
attributes go into ``meta``: never names, IDs, dates or UIDs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from meddx.errors import CorruptFileError, DatasetError, InputError, MissingCodecError
from meddx.io.base import ImageData, too_big
from meddx.io.formats import DEFAULT_MAX_PIXELS, check_file, is_hidden, path_suffix, short_reason, sniff_magic

log = logging.getLogger(__name__)

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_OBLIQUE_TOL = 1e-3
_POSITION_TOL = 1e-4  # mm: closer slice positions count as the same position

_JPEG_LS = "pylibjpeg pylibjpeg-libjpeg (or pyjpegls)"
_JPEG = "pylibjpeg pylibjpeg-libjpeg"
_J2K = "pylibjpeg pylibjpeg-openjpeg"
_CODEC_PACKAGES = {
    "1.2.840.10008.1.2.4.80": _JPEG_LS, "1.2.840.10008.1.2.4.81": _JPEG_LS,
    "1.2.840.10008.1.2.4.50": _JPEG, "1.2.840.10008.1.2.4.51": _JPEG, "1.2.840.10008.1.2.4.57": _JPEG,
    "1.2.840.10008.1.2.4.70": _JPEG,
    "1.2.840.10008.1.2.4.90": _J2K, "1.2.840.10008.1.2.4.91": _J2K, "1.2.840.10008.1.2.4.92": _J2K,
    "1.2.840.10008.1.2.4.93": _J2K, "1.2.840.10008.1.2.4.201": _J2K, "1.2.840.10008.1.2.4.202": _J2K,
    "1.2.840.10008.1.2.4.203": _J2K,
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle",
}


# --------------------------------------------------------------------------------------------- reading


def _dcmread(p: Path, *, allow_force: bool = True):
    """Parse a DICOM file (pixel data deferred). Files without the 128-byte preamble are accepted."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    fix = "check that this is a DICOM file; export it again from the PACS or scanner"
    try:
        return pydicom.dcmread(p, defer_size="256 KB")
    except InvalidDicomError as e:
        if not allow_force:
            raise CorruptFileError("not a DICOM file", path=p, fix=fix) from e
    except Exception as e:  # noqa: BLE001 - pydicom raises many types for damaged files
        raise CorruptFileError(f"cannot parse the DICOM header ({type(e).__name__})", path=p, fix=fix) from e
    # No preamble/"DICM": a bare dataset. Accept it only if it looks like an image.
    try:
        ds = pydicom.dcmread(p, force=True, defer_size="256 KB")
        plausible = "SOPClassUID" in ds or ("Rows" in ds and "Columns" in ds)
    except Exception as e:  # noqa: BLE001
        raise CorruptFileError("not a DICOM file", path=p, fix=fix) from e
    if not plausible:
        raise CorruptFileError("not a DICOM file (no DICOM header found)", path=p, fix=fix)
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    return ds


def _has_pixels(ds) -> bool:
    return any(k in ds for k in _PIXEL_KEYWORDS)


def _sop_class(ds):
    """The SOP class UID, from the dataset or else the file meta (a DICOMDIR has it only there)."""
    sop = ds.get("SOPClassUID")
    if sop is None:
        sop = getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    return sop


def _is_image_header(ds) -> bool:
    """True if the header announces an image: Rows, an image storage SOP class, or no SOP class at all."""
    sop = _sop_class(ds)
    return "Rows" in ds or sop is None or "Image Storage" in (_uid_name(sop) or "")


def _no_pixels_error(p: Path, ds) -> InputError:
    if _is_image_header(ds):
        # An image header without pixels, or a header cut short: the file is truncated.
        return CorruptFileError("DICOM file ends before its pixel data (truncated?)", path=p,
                                fix="copy or export the file again")
    sop = (_uid_name(_sop_class(ds)) or "").strip() or "unknown SOP class"  # a blank UID in a damaged header
    modality = str(ds.get("Modality", "") or "").strip() or "?"
    return InputError(f"DICOM object has no pixel data ({sop}, modality {modality})",
                      path=p, fix="point at a DICOM image file, not a report, presentation state or DICOMDIR")


def _stored_text(ds, keyword: str) -> str:
    """A tag's value as stored, only to tell files apart. Not through ``ds.get``: pydicom validates a
    value as it converts it, and one that does not conform (a UID over 64 characters, with a letter
    or a component with a leading zero: common in clinical files) gives a warning on stderr and in
    pydicom's log that quotes it, and these values identify the patient."""
    elem = ds.get_item(keyword)
    v = None if elem is None else elem.value
    if isinstance(v, bytes):
        v = v.decode("ascii", "replace")
    return str(v or "").rstrip("\0 ").strip()


def _series_uid(ds) -> str:
    """The SeriesInstanceUID as stored (see :func:`_stored_text`)."""
    return _stored_text(ds, "SeriesInstanceUID")


GROUP_TAGS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID")


def dicom_group_keys(paths) -> tuple[dict[Path, str], str | None]:
    """``(path -> value, tag)``: what keeps one patient's DICOM images on one side of a split.

    Each path is a DICOM file or a series folder (its first DICOM file is read, header only). The tag
    is the first of PatientID, StudyInstanceUID and SeriesInstanceUID that takes two or more values
    over the files (an anonymised PatientID is often blank, or one value for everyone); a file where it
    is blank is left ungrouped. ``({}, None)`` when no tag tells the files apart, e.g. one series.
    The values identify patients: callers keep them in memory only, as pseudonyms."""
    import pydicom

    found: dict[Path, dict[str, str]] = {}
    for p in paths:
        p = Path(p)
        f = p if p.is_file() else next(iter(_series_candidates(p)[0]), None)
        if f is None:
            continue
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=list(GROUP_TAGS), force=True)
        except Exception:  # noqa: BLE001 - a damaged file is named when its pixels are read
            continue
        found[p] = {k: _stored_text(ds, k) for k in GROUP_TAGS}
    for tag in GROUP_TAGS:
        if len({t[tag] for t in found.values() if t[tag]}) >= 2:
            return {p: t[tag] for p, t in found.items() if t[tag]}, tag
    return {}, None


def _uid_name(uid) -> str | None:
    if uid is None:
        return None
    try:
        return str(uid.name)
    except AttributeError:
        return str(uid)


def _transfer_syntax(ds):
    return getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)


def _n_frames(ds) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _out_channels(ds) -> int:
    if str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
        return 3
    try:
        return 3 if int(ds.get("SamplesPerPixel", 1) or 1) >= 3 else 1
    except (TypeError, ValueError):
        return 1


def _decode(p: Path, ds) -> tuple[np.ndarray, dict[str, Any]]:
    """Pixel data -> float32 ``(C, H, W)`` or ``(C, F, H, W)`` plus value meta."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut, pixel_array

    ts = _transfer_syntax(ds)
    try:
        arr = pixel_array(ds)
    except (RuntimeError, NotImplementedError) as e:
        msg = str(e).lower()
        if any(w in msg for w in ("missing dependencies", "plugin", "handler", "no decoders")):
            pkgs = _CODEC_PACKAGES.get(str(ts), "pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg (or python-gdcm)")
            raise MissingCodecError(
                f"pixel data is compressed as '{_uid_name(ts)}' and no installed decoder handles it",
                path=p, fix=f"pip install {pkgs}, then read it again") from e
        if isinstance(e, NotImplementedError):  # e.g. MPEG-2/4 video: no Python decoder exists at all
            raise MissingCodecError(f"pixel data is compressed as '{_uid_name(ts)}', which pydicom has no decoder "
                                    "for", path=p, fix="convert it to an uncompressed or JPEG transfer syntax "
                                    "(e.g. gdcmconv --raw IN OUT) and read it again") from e
        raise CorruptFileError(f"cannot decode the '{_uid_name(ts)}' pixel data ({short_reason(e, p)})",
                               path=p, fix="the file is probably truncated or damaged; export it again") from e
    except Exception as e:  # noqa: BLE001 - truncated data gives ValueError, EOFError, OSError, ...
        raise CorruptFileError(f"cannot decode the pixel data ({short_reason(e, p)})", path=p,
                               fix="the file is probably truncated or damaged; export it again") from e

    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    frames = _n_frames(ds)
    info: dict[str, Any] = {"source_dtype": np.dtype(arr.dtype).name}
    if photometric == "PALETTE COLOR":
        try:
            arr = apply_color_lut(arr, ds)
        except Exception as e:  # noqa: BLE001
            raise CorruptFileError(f"palette colour lookup table is unusable ({short_reason(e, p)})", path=p,
                                   fix="export the image as RGB or greyscale") from e
        info["palette_applied"] = True
    color = arr.ndim == (4 if frames > 1 else 3)
    if not color:
        arr, lut_info = _modality_lut(arr, ds, frames, apply_modality_lut)
        lo, hi = lut_info.pop("_range")
        info.update(lut_info)
        if photometric == "MONOCHROME1":
            # Mirror within the representable range so values stay in the same interval.
            arr = (lo + hi) - arr
            info["monochrome1_inverted"] = True
        out = arr[None]
    else:
        if photometric.startswith("YBR"):
            info["converted_to_rgb"] = True
        out = np.moveaxis(arr[..., :3], -1, 0)
    return np.ascontiguousarray(out, dtype=np.float32), info


def _modality_lut(arr: np.ndarray, ds, frames: int, apply_modality_lut) -> tuple[np.ndarray, dict[str, Any]]:
    """Stored values -> modality values; also returns the output value range (for MONOCHROME1)."""
    info: dict[str, Any] = {}
    try:
        bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    except (TypeError, ValueError):
        bits = 16
    signed = ds.get("PixelRepresentation", 0) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if arr.dtype.kind == "f":
        lo, hi = float(np.min(arr)), float(np.max(arr))
    if "ModalityLUTSequence" in ds:
        out = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
        info["modality_lut"] = "lut_sequence"
        info["_range"] = (float(out.min()), float(out.max()))
        return out, info
    slopes, intercepts = _rescale(ds, frames)
    out = arr.astype(np.float64)
    if slopes is not None:
        if len(slopes) == 1:
            out = out * slopes[0] + intercepts[0]
        else:
            out = out * np.asarray(slopes)[:, None, None] + np.asarray(intercepts)[:, None, None]
        if len(set(slopes)) == 1 and len(set(intercepts)) == 1:
            info["rescale_slope"], info["rescale_intercept"] = slopes[0], intercepts[0]
        else:
            info["rescale"] = "per_frame"
        ends = [lo * s + i for s, i in zip(slopes, intercepts)] + [hi * s + i for s, i in zip(slopes, intercepts)]
        lo, hi = min(ends), max(ends)
    info["_range"] = (float(lo), float(hi))
    return out, info


def _rescale(ds, frames: int) -> tuple[list[float] | None, list[float] | None]:
    """RescaleSlope/Intercept from the top level or the (enhanced) functional groups."""

    def pair(item) -> tuple[float, float] | None:
        try:
            if "RescaleSlope" in item or "RescaleIntercept" in item:
                return float(item.get("RescaleSlope", 1) or 1), float(item.get("RescaleIntercept", 0) or 0)
        except (TypeError, ValueError):
            return None
        return None

    top = pair(ds)
    if top is not None:
        return [top[0]], [top[1]]
    shared = _fg_item(ds, None, "PixelValueTransformationSequence")
    if shared is not None and pair(shared) is not None:
        s, i = pair(shared)
        return [s], [i]
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per is not None and len(per) == frames and frames > 1:
        vals = []
        for k in range(frames):
            item = _fg_item(ds, k, "PixelValueTransformationSequence")
            v = pair(item) if item is not None else None
            if v is None:
                return None, None
            vals.append(v)
        return [v[0] for v in vals], [v[1] for v in vals]
    return None, None


# --------------------------------------------------------------------------------------------- geometry


def _fg_item(ds, frame: int | None, seq: str):
    """First item of ``seq`` in the shared (frame None) or a per-frame functional group."""
    try:
        if frame is None:
            groups = ds.get("SharedFunctionalGroupsSequence")
            group = groups[0] if groups else None
        else:
            groups = ds.get("PerFrameFunctionalGroupsSequence")
            group = groups[frame] if groups is not None and frame < len(groups) else None
        if group is None or seq not in group or not group[seq].value:
            return None
        return group[seq][0]
    except (IndexError, KeyError, TypeError, AttributeError):
        return None


def _floats(value, n: int) -> np.ndarray | None:
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and np.all(np.isfinite(out)) else None


def _positive(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None


def _lookup(ds, keyword: str, seq: str):
    """A value from the top level, else the shared, else the first per-frame functional group."""
    if keyword in ds and ds[keyword].value not in (None, "", b""):
        return ds[keyword].value
    for frame in (None, 0):
        item = _fg_item(ds, frame, seq)
        if item is not None and keyword in item and item[keyword].value not in (None, ""):
            return item[keyword].value
    return None


def _geometry(ds) -> dict[str, Any]:
    """Orientation, in-plane spacing, slice spacing hints and per-frame positions of one file."""
    g: dict[str, Any] = {}
    g["iop"] = _floats(_lookup(ds, "ImageOrientationPatient", "PlaneOrientationSequence"), 6)
    ps = _floats(_lookup(ds, "PixelSpacing", "PixelMeasuresSequence"), 2)
    g["pixel_spacing_source"] = "PixelSpacing" if ps is not None else None
    if ps is None:
        ps = _floats(ds.get("ImagerPixelSpacing"), 2)
        g["pixel_spacing_source"] = "ImagerPixelSpacing" if ps is not None else None
    if ps is not None and not np.all(ps > 0):
        ps, g["pixel_spacing_source"] = None, None
    g["pixel_spacing"] = ps
    g["slice_thickness"] = _positive(_lookup(ds, "SliceThickness", "PixelMeasuresSequence"))
    g["spacing_between_slices"] = _positive(_lookup(ds, "SpacingBetweenSlices", "PixelMeasuresSequence"))
    frames = _n_frames(ds)
    positions = None
    if frames > 1 and "PerFrameFunctionalGroupsSequence" in ds:
        pos = [_floats(getattr(_fg_item(ds, k, "PlanePositionSequence"), "ImagePositionPatient", None), 3)
               for k in range(frames)]
        if all(p is not None for p in pos):
            positions = np.stack(pos)
    if positions is None:
        ipp = _floats(ds.get("ImagePositionPatient"), 3)
        if ipp is not None:
            positions = ipp[None]
    g["positions"] = positions
    return g


def _normal(iop: np.ndarray) -> np.ndarray:
    n = np.cross(iop[:3], iop[3:])
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else n


def _is_oblique(iop: np.ndarray) -> bool:
    a = np.abs(iop)
    return bool(np.any(np.minimum(a, np.abs(a - 1.0)) > _OBLIQUE_TOL))


def _affine(iop: np.ndarray | None, origin: np.ndarray | None, pixel_spacing: np.ndarray | None,
            slice_vec: np.ndarray | None) -> list[list[float]] | None:
    """4x4 LPS affine for voxel index (slice, row, column); None without orientation/position."""
    if iop is None or origin is None:
        return None
    row_sp, col_sp = pixel_spacing if pixel_spacing is not None else (1.0, 1.0)
    a = np.eye(4)
    a[:3, 0] = slice_vec if slice_vec is not None else _normal(iop)
    a[:3, 1] = iop[3:] * row_sp  # moving down one row follows the column direction cosines
    a[:3, 2] = iop[:3] * col_sp
    a[:3, 3] = origin
    return a.tolist()


def _slice_axis(positions: np.ndarray, normal: np.ndarray) -> tuple[float | None, np.ndarray | None, bool]:
    """Median slice step, slice vector and irregularity from ordered slice positions."""
    proj = positions @ normal
    steps = np.diff(proj)
    if len(steps) == 0 or np.any(np.abs(steps) < _POSITION_TOL):
        return None, None, len(steps) > 0
    step = float(np.median(np.abs(steps)))
    irregular = bool(np.any(np.abs(np.abs(steps) - step) > max(1e-3, 0.01 * step))
                     or not (np.all(steps > 0) or np.all(steps < 0)))
    extent = proj[-1] - proj[0]
    if abs(extent) < _POSITION_TOL:
        return step, None, True
    # Follows the real slice direction (gantry tilt) and has the median step along the normal.
    vec = (positions[-1] - positions[0]) * (step / abs(extent))
    return step, vec, irregular


def _common_meta(ds) -> dict[str, Any]:
    return {
        "format": "dicom",
        "modality": str(ds.get("Modality", "")) or None,
        "sop_class": _uid_name(ds.get("SOPClassUID")),
        "transfer_syntax": _uid_name(_transfer_syntax(ds)),
        "photometric": str(ds.get("PhotometricInterpretation", "")) or None,
        "bits_stored": int(ds.get("BitsStored", 0) or 0) or None,
    }


def _check_pixels(p: Path, n: int, max_pixels: int, what: str) -> None:
    if n > max_pixels:
        raise too_big(p, n, max_pixels, what, "voxels")


def _rows_cols(p: Path, ds) -> tuple[int, int]:
    try:
        return int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as e:
        raise CorruptFileError("DICOM image has no valid Rows/Columns", path=p, fix="export the file again") from e


# --------------------------------------------------------------------------------------------- public


def read_dicom_file(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageData:
    """Read one DICOM file.

    Single frame: ``(C, H, W)`` with spacing (row, col) or None. Multi-frame:
    ``(C, F, H, W)`` with spacing (frame, row, col); unknown parts are 1.0 and
    flagged in meta (``frame_spacing_unknown``, ``pixel_spacing_unknown``). Frames
    with distinct per-frame positions are ordered along the slice normal
    (``meta["sort_key"] == "position"``); otherwise, e.g. cine or multi-phase frames
    that repeat positions, they keep the file's order (``"frame_order"``).

    Raises:
        CorruptFileError: not DICOM, truncated or undecodable.
        MissingCodecError: compressed with a codec that needs an optional package (named).
        InputError: no pixel data (e.g. a structured report).
        ImageContentError: more than ``max_pixels`` voxels x channels.
    """
    p = check_file(path)
    ds = _dcmread(p)
    return _read_dataset(p, ds, max_pixels)


def _read_dataset(p: Path, ds, max_pixels: int) -> ImageData:
    if not _has_pixels(ds):
        raise _no_pixels_error(p, ds)
    rows, cols = _rows_cols(p, ds)
    frames = _n_frames(ds)
    _check_pixels(p, rows * cols * frames * _out_channels(ds), max_pixels, f"{frames}x{rows}x{cols} DICOM image")
    arr, info = _decode(p, ds)
    g = _geometry(ds)
    meta = _common_meta(ds)
    meta["n_frames"] = frames
    meta.update(info)
    iop = g["iop"]
    meta["image_orientation_patient"] = iop.tolist() if iop is not None else None
    meta["oblique"] = _is_oblique(iop) if iop is not None else None
    meta["pixel_spacing_source"] = g["pixel_spacing_source"]
    meta["slice_thickness"] = g["slice_thickness"]
    ps = g["pixel_spacing"]
    positions = g["positions"]
    if frames > 1:
        arr, positions, meta["sort_key"] = _sort_frames(arr, positions, iop, frames)
    origin = positions[0] if positions is not None else None
    if frames == 1:
        thick = g["slice_thickness"] or 1.0
        meta["affine"] = _affine(iop, origin, ps, _normal(iop) * thick if iop is not None else None)
        spacing = (float(ps[0]), float(ps[1])) if ps is not None else None
        return ImageData(arr, spacing=spacing, meta=meta)

    step, vec = None, None
    if iop is not None and positions is not None and len(positions) == frames:
        step, vec, irregular = _slice_axis(positions, _normal(iop))
        meta["irregular_slices"] = irregular
    if step is None:
        step = g["spacing_between_slices"] or g["slice_thickness"]
    if step is None:
        meta["frame_spacing_unknown"] = True
        step = 1.0
    if vec is None and iop is not None:
        vec = _normal(iop) * step
    if ps is None:
        meta["pixel_spacing_unknown"] = True
    meta["affine"] = _affine(iop, origin, ps, vec)
    spacing = (float(step),) + ((float(ps[0]), float(ps[1])) if ps is not None else (1.0, 1.0))
    return ImageData(arr, spacing=spacing, meta=meta)


def _sort_frames(arr: np.ndarray, positions: np.ndarray | None, iop: np.ndarray | None,
                 frames: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Order multi-frame frames by position along the slice normal, as a series' slices are.

    Only when every frame has a distinct position: repeated positions (cine, multi-phase)
    keep the file's frame order, and ``_slice_axis`` flags them as irregular.
    """
    if iop is None or positions is None or len(positions) != frames:
        return arr, positions, "frame_order"
    proj = positions @ _normal(iop)
    order = np.argsort(proj, kind="stable")
    if np.any(np.abs(np.diff(proj[order])) < _POSITION_TOL):
        return arr, positions, "frame_order"
    return np.ascontiguousarray(arr[:, order]), positions[order], "position"


def _series_candidates(folder: Path) -> tuple[list[Path], int]:
    """Files that may be DICOM (magic or .dcm suffix) and the number of other files skipped."""
    files, skipped = [], 0
    for e in sorted(folder.iterdir()):
        if is_hidden(e) or not e.is_file():
            continue
        try:
            with open(e, "rb") as fh:
                head = fh.read(132)
        except OSError:
            skipped += 1
            continue
        if sniff_magic(head) == "dicom" or (path_suffix(e) in (".dcm", ".dicom") and head):
            files.append(e)
        else:
            skipped += 1
    return files, skipped


def read_dicom_series(folder: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageData:
    """Read a folder holding one DICOM series as a volume ``(C, S, H, W)``.

    Slices are ordered by their position along the slice normal (else InstanceNumber,
    else file name). Spacing is (median slice step, row, col). Hidden and non-DICOM
    files, and DICOM objects that are not images (reports, presentation states,
    DICOMDIR), are skipped (counted in ``meta["skipped_files"]``).

    Raises:
        DatasetError: no DICOM images, several series, mismatched slice sizes or
            orientations, or slices sharing one position.
        CorruptFileError / MissingCodecError: a slice cannot be decoded, or an image file
            ends before its pixel data (the file is named).
    """
    d = Path(folder)
    if not d.is_dir():
        raise InputError("not a folder", path=d, fix="point at a folder that holds one DICOM series")
    files, skipped = _series_candidates(d)
    images, no_pixels = [], 0
    for f in files:
        ds = _dcmread(f, allow_force=path_suffix(f) in (".dcm", ".dicom"))
        if _has_pixels(ds):
            images.append((f, ds))
        elif _is_image_header(ds):
            raise _no_pixels_error(f, ds)  # a truncated slice: dropping it would leave a silent gap
        else:
            no_pixels += 1  # a report, presentation state, DICOMDIR ... beside the images
    if not images:
        raise DatasetError(f"no DICOM images in this folder ({len(files)} DICOM files without pixel data, "
                           f"{skipped} other files)", path=d, fix="point at a folder that holds DICOM image files")
    if skipped or no_pixels:
        log.info("%s: skipped %d non-DICOM files and %d DICOM files without pixel data", d, skipped, no_pixels)
    groups: dict[str, list] = {}
    for f, ds in images:
        groups.setdefault(_series_uid(ds), []).append((f, ds))
    if len(groups) > 1:
        raise DatasetError(f"the folder holds {len(groups)} DICOM series; meddx reads one series per folder",
                           path=d, fix="move each series into its own sub-folder and point at one of them")
    if len(images) == 1:
        f, ds = images[0]
        out = _read_dataset(f, ds, max_pixels)
        out.meta.update(n_slices=out.meta["n_frames"], skipped_files=skipped + no_pixels)
        return out
    multi = [f for f, ds in images if _n_frames(ds) > 1]
    if multi:
        raise DatasetError(f"the series mixes {len(images)} files with multi-frame ones (e.g. {multi[0].name})",
                           path=d, fix="point at one multi-frame file, or a folder of single-frame slices")

    shapes = {(_rows_cols(f, ds)) for f, ds in images}
    if len(shapes) > 1:
        raise DatasetError(f"slices differ in size ({', '.join(f'{r}x{c}' for r, c in sorted(shapes))})",
                           path=d, fix="keep only slices of one acquisition in the folder")
    channels = {_out_channels(ds) for _, ds in images}
    if len(channels) > 1:
        raise DatasetError("slices mix greyscale and colour", path=d, fix="keep only one series in the folder")
    rows, cols = shapes.pop()
    n = len(images)
    _check_pixels(d, n * rows * cols * channels.pop(), max_pixels, f"{n}x{rows}x{cols} DICOM series")

    geoms = [_geometry(ds) for _, ds in images]
    have_geometry = all(g["iop"] is not None and g["positions"] is not None for g in geoms)
    if have_geometry:
        iop0 = geoms[0]["iop"]
        if any(np.max(np.abs(g["iop"] - iop0)) > _OBLIQUE_TOL for g in geoms):
            raise DatasetError("slices have different orientations (ImageOrientationPatient)", path=d,
                               fix="keep only slices of one acquisition in the folder")
        normal = _normal(iop0)
        proj = np.array([g["positions"][0] @ normal for g in geoms])
        inst = np.array([_instance_number(ds) or 0 for _, ds in images])
        order = np.lexsort((inst, proj))
        sorted_proj = proj[order]
        dup = np.abs(np.diff(sorted_proj)) < _POSITION_TOL
        if np.any(dup):
            raise DatasetError(
                f"{int(dup.sum()) + 1} or more slices share one position (a multi-echo, multi-phase or "
                f"repeated acquisition)", path=d, fix="split the series so each folder holds one volume")
        sort_key = "position"
    elif all(_instance_number(ds) is not None for _, ds in images):
        order = np.argsort([_instance_number(ds) for _, ds in images], kind="stable")
        sort_key = "instance_number"
    else:
        order = np.arange(n)
        sort_key = "file_name"
    images = [images[i] for i in order]
    geoms = [geoms[i] for i in order]

    slices, infos = [], []
    for f, ds in images:
        a, info = _decode(f, ds)
        slices.append(a)
        infos.append(info)
    arr = np.stack(slices, axis=1)

    first_ds, g0 = images[0][1], geoms[0]
    meta = _common_meta(first_ds)
    meta.update({k: v for k, v in infos[0].items() if k not in ("rescale_slope", "rescale_intercept")})
    slopes = {(i.get("rescale_slope"), i.get("rescale_intercept")) for i in infos}
    if len(slopes) == 1:
        s, i = slopes.pop()
        if s is not None:
            meta["rescale_slope"], meta["rescale_intercept"] = s, i
    else:
        meta["rescale"] = "per_slice"
    meta["n_slices"] = n
    meta["sort_key"] = sort_key
    meta["skipped_files"] = skipped + no_pixels
    iop = g0["iop"]
    meta["image_orientation_patient"] = iop.tolist() if iop is not None else None
    meta["oblique"] = _is_oblique(iop) if iop is not None else None
    meta["pixel_spacing_source"] = g0["pixel_spacing_source"]
    meta["slice_thickness"] = g0["slice_thickness"]
    meta["spacing_between_slices"] = g0["spacing_between_slices"]
    ps = g0["pixel_spacing"]
    step, vec, irregular = None, None, False
    if have_geometry:
        positions = np.stack([g["positions"][0] for g in geoms])
        step, vec, irregular = _slice_axis(positions, _normal(iop))
    meta["irregular_slices"] = irregular
    if step is None:
        step = g0["spacing_between_slices"] or g0["slice_thickness"]
    if step is None:
        meta["frame_spacing_unknown"] = True
        step = 1.0
    if ps is None:
        meta["pixel_spacing_unknown"] = True
    origin = g0["positions"][0] if g0["positions"] is not None else None
    meta["affine"] = _affine(iop, origin, ps, vec if vec is not None else
                             (_normal(iop) * step if iop is not None else None))
    spacing = (float(step),) + ((float(ps[0]), float(ps[1])) if ps is not None else (1.0, 1.0))
    return ImageData(arr, spacing=spacing, meta=meta)


def _instance_number(ds) -> int | None:
    try:
        v = ds.get("InstanceNumber")
        return int(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None
