"""Which reader handles a path: magic bytes first, then the file name."""

from __future__ import annotations

import re
from pathlib import Path

#: Default cap on voxels x channels one image may decode to (a 2**28 float32 array is 1 GiB).
DEFAULT_MAX_PIXELS = 2**28

#: Lower-case suffixes ``read_image`` understands (``.nii.gz`` is one suffix here).
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom", ".nii", ".nii.gz"}
)

SUPPORTED_FORMATS = "PNG, JPEG, TIFF, BMP, DICOM (.dcm file or series folder), NIfTI (.nii, .nii.gz)"

_BMP_DIB_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}
_RASTER_EXT = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff", ".bmp": "bmp"}


def path_suffix(path: str | Path) -> str:
    """Lower-case suffix, with ``.nii.gz`` kept whole."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def file_stem(path: str | Path) -> str:
    """The file name without its image suffix (``scan.nii.gz`` -> ``scan``), for naming outputs."""
    name = Path(path).name
    for suf in (".nii.gz", ".nii", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name


#: nnU-Net v2's name for one channel of a case: ``x_0000.nii.gz`` is channel 0 of case ``x``.
NNUNET_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def nnunet_channel(path: str | Path) -> tuple[str, int] | None:
    """``(case, channel)`` of a file named as nnU-Net v2 names channel files, else None."""
    m = NNUNET_CHANNEL.match(file_stem(path))
    return (m["case"], int(m["channel"])) if m else None


def channel_file(path: str | Path, k: int) -> Path:
    """Channel ``k``'s file beside an nnU-Net channel file (``x_0000.nii.gz`` -> ``x_000k.nii.gz``)."""
    p = Path(path)
    named = nnunet_channel(p)
    if named is None:
        raise ValueError(f"{p.name} is not named as an nnU-Net channel file")
    return p.with_name(f"{named[0]}_{k:04d}{p.name[len(file_stem(p)):]}")


def output_stems(paths: list[Path], channel_files: int = 1) -> dict[Path, str]:
    """A distinct output name per input, for writing ``NAME_mask.png``, ``NAME_overlay.png`` ... into one
    folder: the file stem where it is unique, else (``a/x.png`` and ``b/x.png``, or the ``000001.dcm`` of
    every DICOM series) the folders from the inputs' common folder down, joined by ``_``, then the suffix
    (``x.png`` beside ``x.jpg``), then a counter. Without this, one input's outputs overwrite another's.
    For a model trained on cases of several ``channel_files``, an input named as nnU-Net's first channel
    file (``x_0000``) stands for its case, and is named ``x``."""
    import os
    from collections import Counter

    paths = list(paths)

    def stem(p) -> str:
        named = nnunet_channel(p) if channel_files > 1 else None
        return named[0] if named and named[1] == 0 else file_stem(p)

    names = {p: stem(p) for p in paths}
    if len(set(names.values())) == len(paths):
        return names
    try:
        common = Path(os.path.commonpath([str(Path(p).resolve().parent) for p in paths]))
    except ValueError:  # different drives
        common = None

    def clashing() -> set[str]:
        return {n for n, k in Counter(names.values()).items() if k > 1}

    dup = clashing()
    for p in paths:
        if names[p] in dup and common is not None:
            parts = Path(p).resolve().parent.relative_to(common).parts
            names[p] = "_".join([*parts, stem(p)])
    dup = clashing()
    for p in paths:
        suf = path_suffix(p).lstrip(".").replace(".", "_")
        if names[p] in dup and suf:
            names[p] = f"{names[p]}_{suf}"
    seen: Counter = Counter()
    for p in paths:  # anything still shared (``a_b/x`` against ``a/b_x``): numbered in input order
        n = names[p]
        seen[n] += 1
        if seen[n] > 1:
            while f"{n}_{seen[n]}" in names.values():
                seen[n] += 1
            names[p] = f"{n}_{seen[n]}"
    return names


def is_hidden(path: str | Path) -> bool:
    """Dot-files and macOS resource forks (``._x``), which are never images."""
    return Path(path).name.startswith(".")


def sniff_magic(head: bytes) -> str | None:
    """Format name from the first 352 bytes of a file, or None if unrecognised.

    Returns one of ``png``, ``jpeg``, ``tiff``, ``bmp``, ``dicom``, ``nifti``, ``gzip``.
    """
    # First: a DICOM file's 128-byte preamble is free for applications, and some fill it with a TIFF
    # header (a "dual-personality" file, e.g. pydicom's CT_small.dcm); "DICM" after it settles it.
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    # "BM" alone is too weak (a CSV may start with it): also require a known DIB header size.
    if head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_DIB_SIZES:
        return "bmp"
    # NIfTI-1 single file: magic at byte 344; NIfTI-2: magic at byte 4.
    if head[344:348] == b"n+1\x00" or head[4:8] in (b"n+2\x00", b"ni2\x00"):
        return "nifti"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    return None


def _read_head(path: Path, n: int = 352) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def detect_format(path: str | Path) -> str | None:
    """Reader name for an existing file: ``raster`` / ``dicom`` / ``nifti``, or None.

    Magic bytes decide when they are recognised; otherwise the suffix does, so a
    corrupt ``x.png`` still goes to the image reader (which reports it as corrupt).
    """
    p = Path(path)
    suffix = path_suffix(p)
    try:
        magic = sniff_magic(_read_head(p))
    except OSError:
        magic = None
    if magic in ("png", "jpeg", "tiff", "bmp"):
        return "raster"
    if magic in ("dicom", "nifti"):
        return magic
    if suffix in _RASTER_EXT:
        return "raster"
    if suffix in (".dcm", ".dicom"):
        return "dicom"
    if suffix in (".nii", ".nii.gz"):
        return "nifti"
    return None


def folder_has_dicom(folder: str | Path) -> bool:
    """True if a folder directly holds at least one (non-hidden) DICOM file."""
    try:
        entries = sorted(Path(folder).iterdir())
    except OSError:
        return False
    for e in entries:
        if is_hidden(e) or not e.is_file():
            continue
        if path_suffix(e) in (".dcm", ".dicom"):
            return True
        try:
            if sniff_magic(_read_head(e, 132)) == "dicom":
                return True
        except OSError:
            continue
    return False


def is_readable_path(path: str | Path) -> bool:
    """Cheap check (name and magic bytes, no decoding) that ``read_image`` accepts a path.

    A folder counts when it directly holds DICOM files (read as one series).
    """
    p = Path(path)
    if is_hidden(p):
        return False
    if p.is_dir():
        return folder_has_dicom(p)
    if not p.is_file():
        return False
    if path_suffix(p) in IMAGE_EXTENSIONS:
        return True
    return detect_format(p) is not None


def check_file(path: str | Path) -> Path:
    """Return ``path`` as a Path if it is a non-empty regular file, else raise the right error."""
    from meddx.errors import CorruptFileError, InputError

    p = Path(path)
    if not p.exists():
        raise InputError("no such file", path=p, fix="check the path")
    if not p.is_file():
        raise InputError("not a regular file", path=p, fix="point at an image file")
    if p.stat().st_size == 0:
        raise CorruptFileError("the file is empty (0 bytes)", path=p, fix="copy or export the file again")
    return p


def short_reason(exc: BaseException, path: str | Path | None = None) -> str:
    """First line of an exception message, clipped, for a one-line error message.

    If ``path`` is given, its full spelling in the message is shortened to the file name
    (our message already starts with the full path).
    """
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if path is not None:
        text = text.replace(str(path), Path(path).name)
    text = text[:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
