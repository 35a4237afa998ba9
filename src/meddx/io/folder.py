"""Class-folder datasets: ``root/<class>/<image>``."""

from __future__ import annotations

from pathlib import Path

from meddx.errors import DatasetError
from meddx.io.formats import SUPPORTED_FORMATS, folder_has_dicom, is_hidden, is_readable_path

_LAYOUT_FIX = "arrange the images as root/<class>/<image> (one sub-folder per class)"


def scan_class_folder(root: str | Path) -> list[tuple[Path, str]]:
    """List ``(image path, class name)`` for a folder with one sub-folder per class.

    Inside a class folder every readable image file counts (by suffix, or DICOM by its
    magic bytes even without a suffix), and every sub-folder holding DICOM files counts
    as one case (a series). Hidden entries are ignored; order is sorted by class then
    file name, so it is deterministic.

    Raises:
        DatasetError: root missing or empty, no class sub-folders, or a class folder
            without readable images (named in the message).
    """
    r = Path(root)
    if not r.exists():
        raise DatasetError("no such folder", path=r, fix="check the path")
    if not r.is_dir():
        raise DatasetError("not a folder", path=r, fix=_LAYOUT_FIX)
    entries = sorted(e for e in r.iterdir() if not is_hidden(e))
    if not entries:
        raise DatasetError("the folder is empty", path=r, fix=_LAYOUT_FIX)
    class_dirs = [e for e in entries if e.is_dir()]
    if not class_dirs:
        raise DatasetError(f"no class sub-folders, only {len(entries)} files", path=r, fix=_LAYOUT_FIX)
    out: list[tuple[Path, str]] = []
    for cdir in class_dirs:
        items = _class_items(cdir)
        if not items:
            raise DatasetError(f"class folder '{cdir.name}' holds no readable images", path=r,
                               fix=f"add images ({SUPPORTED_FORMATS}) to {cdir.name}/ or remove that folder")
        out.extend((p, cdir.name) for p in items)
    return out


def _class_items(cdir: Path) -> list[Path]:
    items = []
    for e in sorted(cdir.iterdir(), key=lambda x: x.name):
        if is_hidden(e):
            continue
        if e.is_dir():
            if folder_has_dicom(e):
                items.append(e)
            elif (img := _first_image_under(e)) is not None:
                # root/<class>/<patient>/<image>: these images would be dropped without a word (and,
                # read as cases, split across train and test with no patient grouping)
                raise DatasetError(f"class folder '{cdir.name}' has a sub-folder '{e.name}' with images "
                                   f"(e.g. {img.relative_to(cdir).as_posix()}), which a class folder does not read",
                                   path=e, fix=f"move the images up into {cdir.name}/, or list every image in a CSV "
                                   "manifest (path,label,patient_id), which also keeps a patient's images on "
                                   "one side of the split")
        elif is_readable_path(e):
            items.append(e)
    return items


def _first_image_under(folder: Path) -> Path | None:
    """The first readable image file (or DICOM series folder) anywhere below ``folder``; hidden entries
    and what lies below them are skipped."""
    for e in sorted(folder.rglob("*")):
        if any(is_hidden(part) for part in e.relative_to(folder).parts):
            continue
        if is_readable_path(e):
            return e
    return None
