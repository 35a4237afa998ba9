"""CSV manifests: ``path,label[,split][,patient_id]`` (or ``image,mask,...`` for segmentation) with a header row."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from meddx.errors import DatasetError

_ALIASES = {
    "path": ("path", "image", "file", "filename"),
    "label": ("label", "class", "target"),
    "split": ("split",),
    "patient_id": ("patient_id", "patient", "subject", "subject_id"),
    "mask": ("mask", "masks", "seg", "segmentation", "mask_path", "label_path", "label_image"),
}
_SPLITS = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}
_HEADER_FIX = "start the file with a header row such as path,label,split,patient_id"


@dataclass(frozen=True)
class ManifestRow:
    """One manifest line. ``path`` is resolved against the CSV's folder; ``line`` is 1-based."""

    path: Path
    label: str | None
    split: str | None
    patient_id: str | None
    line: int
    masks: tuple[Path, ...] = ()


def _canonical(name: str) -> str | None:
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    for canon, aliases in _ALIASES.items():
        if key in aliases:
            return canon
    return None


def delimiter_of(path: Path, text: str) -> str:
    """The manifest's field separator, read from its header (first non-blank line of ``text``): a tab
    for ``.tsv`` or a tab-separated header, a semicolon for a header with semicolons and no comma
    (spreadsheets set to a decimal comma save CSV that way), else a comma."""
    header = next((ln for ln in text.splitlines() if ln.strip()), "")
    if path.suffix.lower() == ".tsv" or ("\t" in header and "," not in header):
        return "\t"
    return ";" if ";" in header and "," not in header else ","


def read_manifest(csv_path: str | Path, *, require_label: bool = True,
                  require_mask: bool = False) -> list[ManifestRow]:
    """Read and validate a CSV (or tab-separated) manifest.

    Columns (case-insensitive): ``path`` (or image/file/filename), ``label`` (or
    class/target), optional ``split`` (train/val/test and common spellings, normalised)
    and ``patient_id`` (or patient/subject/subject_id). Other columns are ignored.
    Relative paths are taken from the CSV's folder; blank lines are skipped.

    Args:
        csv_path: the manifest file.
        require_label: if True (default) a label column and a label on every row are required;
            if False they may be absent (rows get ``label=None``), e.g. for prediction lists.
        require_mask: segmentation: a ``mask`` column (or seg/segmentation) is required and
            every row names one or more masks, separated by ``;``.

    Raises:
        DatasetError: missing/unreadable file, no header, a line the CSV parser rejects
            (e.g. a field over its size limit), missing columns, empty path or label, bad
            split, no rows, or listed files that do not exist.
    """
    p = Path(csv_path)
    if not p.is_file():
        raise DatasetError("manifest not found", path=p, fix="check the path to the CSV file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"manifest is not UTF-8 text (byte {e.start})", path=p,
                           fix="save the CSV as UTF-8") from e
    reader = csv.reader(text.splitlines(), delimiter=delimiter_of(p, text))
    header: list[str | None] | None = None
    rows: list[ManifestRow] = []
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:  # e.g. "field larger than field limit (131072)"
            raise DatasetError(f"line {start} cannot be read as CSV ({e})", path=p,
                               fix="look for an unclosed quote or an overlong value on that line") from e
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if header is None:
            header = _parse_header(p, cells, require_label, require_mask)
            continue
        rows.append(_parse_row(p, header, cells, line, require_label, require_mask))
    if header is None:
        raise DatasetError("manifest is empty", path=p, fix=_HEADER_FIX + ", then one line per image")
    if not rows:
        raise DatasetError("manifest has a header but no rows", path=p, fix="add one line per image")
    missing = [(r, q) for r in rows for q in (r.path, *r.masks) if not q.exists()]
    if missing:
        m, q = missing[0]
        raise DatasetError(
            f"{len(missing)} of {sum(1 + len(r.masks) for r in rows)} listed files do not exist; first: '{q}' "
            f"(line {m.line})",
            path=p, fix="correct the paths (relative paths are taken from the CSV's folder) or remove those lines")
    return rows


def _parse_header(p: Path, cells: list[str], require_label: bool, require_mask: bool = False) -> list[str | None]:
    header = [_canonical(c) for c in cells]
    for canon in _ALIASES:
        hits = [cells[i].strip() for i, h in enumerate(header) if h == canon]
        if len(hits) > 1:
            raise DatasetError(f"columns {', '.join(hits)} all mean '{canon}'", path=p,
                               fix=f"keep one {canon} column")
    if "path" not in header:
        raise DatasetError(f"no path column in header ({', '.join(c.strip() for c in cells)})", path=p,
                           fix=_HEADER_FIX)
    if require_mask and "mask" not in header:
        raise DatasetError(f"no mask column in header ({', '.join(c.strip() for c in cells)})", path=p,
                           fix="start the file with a header row such as image,mask,split,patient_id")
    if require_label and "label" not in header:
        raise DatasetError(f"no label column in header ({', '.join(c.strip() for c in cells)})", path=p,
                           fix=_HEADER_FIX)
    return header


def _parse_row(p: Path, header: list[str | None], cells: list[str], line: int, require_label: bool,
               require_mask: bool = False) -> ManifestRow:
    if len(cells) > len(header) and any(c.strip() for c in cells[len(header):]):
        raise DatasetError(f"line {line} has {len(cells)} fields but the header has {len(header)}", path=p,
                           fix="quote values that contain the delimiter, or fix the line")
    values = {h: cells[i].strip() for i, h in enumerate(header) if h is not None and i < len(cells)}
    raw_path = values.get("path", "")
    if not raw_path:
        raise DatasetError(f"line {line} has an empty path", path=p, fix="fill in the path or remove the line")
    label = values.get("label") or None
    if require_label and label is None:
        raise DatasetError(f"line {line} has an empty label", path=p, fix="fill in the label or remove the line")
    split_raw = values.get("split", "")
    split = None
    if split_raw:
        split = _SPLITS.get(split_raw.lower())
        if split is None:
            raise DatasetError(f"line {line} has split '{split_raw[:40]}'", path=p,
                               fix="use train, val or test (or leave it empty)")
    target = _resolve(p, raw_path)
    masks = tuple(_resolve(p, m.strip()) for m in values.get("mask", "").split(";") if m.strip())
    if require_mask and not masks:
        raise DatasetError(f"line {line} has an empty mask", path=p, fix="fill in the mask path or remove the line")
    return ManifestRow(path=target, label=label, split=split, patient_id=values.get("patient_id") or None, line=line,
                       masks=masks)


def _resolve(p: Path, raw_path: str) -> Path:
    target = Path(raw_path).expanduser()
    if not target.is_absolute():
        target = p.parent / target
    if "\\" in raw_path and not target.exists():  # a manifest written on Windows
        alt = Path(raw_path.replace("\\", "/")).expanduser()
        alt = alt if alt.is_absolute() else p.parent / alt
        if alt.exists():
            return alt
    return target
