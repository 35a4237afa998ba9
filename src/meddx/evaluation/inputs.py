"""Which files an inference command reads: a file, a DICOM series folder, or every image under a
folder (``meddx predict`` and ``explain``, and the torch-free edge runtime)."""

from __future__ import annotations

import sys
from pathlib import Path

from meddx.data.segsources import masks_beside_images
from meddx.errors import InputError
from meddx.io import is_readable_path


def _is_dicom_series(folder: Path) -> bool:
    entries = list(folder.iterdir())
    files = [p for p in entries if p.is_file() and not p.name.startswith(".")]
    if not files or any(p.is_dir() for p in entries):
        return False
    try:
        for p in files:
            with open(p, "rb") as fh:
                if fh.read(132)[128:132] != b"DICM":
                    return False
        return True
    except OSError:
        return False


def _first_channels(paths: list[Path]) -> list[Path]:
    """``paths`` less the channel files after a case's first (``x_0001`` ... where ``x_0000`` is there)."""
    from meddx.io.formats import nnunet_channel

    firsts = {(p.parent, named[0]) for p in paths if (named := nnunet_channel(p)) and named[1] == 0}
    return [p for p in paths if not ((named := nnunet_channel(p)) and named[1] > 0 and (p.parent, named[0]) in firsts)]


def inputs_and_out_dir(target, spatial_dims: int, out_dir, default: Path,
                       channel_files: int = 1) -> tuple[Path, list[Path], bool]:
    """The output folder (``out_dir``, else ``default``), created, the input files under ``target``, and
    whether this call created the folder (so that a failure part-way can remove it)."""
    out_dir = Path(out_dir) if out_dir is not None else default
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("the output path exists and is not a folder", path=out_dir, fix="choose a folder for --out")
    paths = collect_inputs(Path(target), spatial_dims, channel_files)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir, paths, created


def collect_inputs(target: Path, spatial_dims: int, channel_files: int = 1) -> list[Path]:
    """A file, a DICOM series folder (3D models), or every readable file under a folder; for 3D
    models every DICOM series folder under it is one volume (one folder per patient or study). For a
    model trained on cases of several ``channel_files`` (nnU-Net's ``x_0000``, ``x_0001`` ...), such a
    case is one input, its first file (``meddx.io.read_input`` reads the others beside it)."""
    if not target.exists():
        raise InputError("no such file or folder", path=target, fix="check the path")
    if target.is_file():
        if target.suffix.lower() in (".csv", ".tsv", ".npz"):
            raise InputError("this is a dataset, not an image: predict takes image files or folders", path=target,
                             fix=f"score a labelled dataset with `meddx evaluate RUN {target.name}`, or give "
                                 "the images themselves")
        return [target]
    if spatial_dims == 3 and _is_dicom_series(target):
        return [target]
    entries = list(target.rglob("*"))  # one walk of the tree
    series = {d for d in entries if d.is_dir() and _is_dicom_series(d)} if spatial_dims == 3 else set()
    found = sorted([p for p in entries if p.is_file() and not p.name.startswith(".")
                    and p.parent not in series and is_readable_path(p)] + list(series))
    found, masks = masks_beside_images(found)
    if channel_files > 1:
        found = _first_channels(found)
    if masks:
        # a labelled folder (BUSI, LGG: NAME.png + NAME_mask.png) is not twice as many cases; training
        # ignores these masks too, and a blank mask would otherwise stop the run as a "constant image"
        print(f"note: skipped {len(masks)} mask file(s) beside their images (e.g. {masks[0]})", file=sys.stderr)
    if not found:
        raise InputError("no readable images in the folder", path=target,
                         fix="PNG, JPEG, TIFF, DICOM and NIfTI files are read")
    return found
