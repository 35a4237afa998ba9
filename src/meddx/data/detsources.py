"""Detection datasets: images with labelled boxes, from a CSV manifest.

One row per box: ``image,x1,y1,x2,y2,label[,split][,patient_id]`` (pixel coordinates of
the image as stored, x = column, y = row, x2/y2 exclusive), or ``x,y,w,h`` instead of the
corners. An image without findings has one row with empty coordinates and an empty label
(or ``none``, ``no finding`` or ``background``, which cannot name a finding).
A ``scale`` column multiplies the coordinates (e.g. 0.25 for boxes given on 1024 px
originals of 256 px thumbnails).

Training reuses the segmentation pipeline: each box is drawn into a label map (class
index of its finding; a later box overwrites an earlier one where they overlap), so a
segmenter learns where findings are, and detections are the connected components of
its prediction, scored by their mean probability. Evaluation compares those detections
with the listed boxes (not with the drawn map).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path

import numpy as np

from meddx.data.case import Case, CaseSet, patient_keys
from meddx.errors import DatasetError, InputError
from meddx.io import read_image
from meddx.io.manifest import delimiter_of

_NO_FINDING = {"none", "no finding", "no_finding", "background"}  # label 0 and the stratum of unboxed images
_SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
           "test": "test", "testing": "test"}


def _float(v: str, p: Path, line: int, col: str) -> float:
    try:
        x = float(v)
    except ValueError:
        raise DatasetError(f"line {line}: {col} '{v[:20]}' is not a number", path=p,
                           fix="write box coordinates as numbers") from None
    if not np.isfinite(x):
        raise DatasetError(f"line {line}: {col} is not finite", path=p, fix="write box coordinates as numbers")
    return x


def open_det_dataset(path: str | Path) -> CaseSet:
    """Open a box manifest (see the module docstring); returns a ``task="detect"`` CaseSet."""
    p = Path(path).expanduser()
    if not p.is_file() or p.suffix.lower() not in (".csv", ".tsv"):
        raise InputError("detection needs a CSV manifest of boxes", path=p,
                         fix="write image,x1,y1,x2,y2,label[,split][,patient_id] with one row per box")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"manifest is not UTF-8 text (byte {e.start})", path=p,
                           fix="save the CSV as UTF-8") from e
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter_of(p, text))
    try:
        rows = list(reader)
    except csv.Error as e:  # e.g. "field larger than field limit (131072)"
        raise DatasetError(f"line {reader.line_num + 1} cannot be read as CSV ({e})", path=p,
                           fix="look for an unclosed quote or an overlong value on that line") from e
    if not rows:
        raise DatasetError("the manifest has no rows", path=p, fix="add one row per box")
    cols = {c.strip().lower(): c for c in rows[0] if c}
    img_col = next((cols[c] for c in ("image", "path", "file") if c in cols), None)
    lab_col = next((cols[c] for c in ("label", "finding", "class") if c in cols), None)
    corners = all(c in cols for c in ("x1", "y1", "x2", "y2"))
    xywh = all(c in cols for c in ("x", "y", "w", "h"))
    if img_col is None or lab_col is None or not (corners or xywh):
        raise DatasetError(f"columns {list(cols)} lack image, label and x1,y1,x2,y2 (or x,y,w,h)", path=p,
                           fix="use the header image,x1,y1,x2,y2,label[,split][,patient_id]")
    boxes: dict[Path, list] = defaultdict(list)
    meta: dict[Path, tuple] = {}
    labels: set[str] = set()
    for line, r in enumerate(rows, start=2):
        raw = (r.get(img_col) or "").strip()
        if not raw:
            raise DatasetError(f"line {line} has an empty image path", path=p, fix="fill it in or remove the line")
        ip = Path(raw).expanduser()
        ip = ip if ip.is_absolute() else p.parent / ip
        split = (r.get(cols.get("split", ""), "") or "").strip().lower() or None
        if split is not None and split not in _SPLITS:
            raise DatasetError(f"line {line} has split '{split}'", path=p, fix="use train, val or test")
        pid = (r.get(cols.get("patient_id", ""), "") or "").strip() or None
        first = meta.setdefault(ip, (_SPLITS.get(split) if split else None, pid, line))
        if first[:2] != (_SPLITS.get(split) if split else None, pid):  # values not shown: patient IDs
            raise DatasetError(f"line {line} gives '{raw}' another split or patient_id than line {first[2]}", path=p,
                               fix="give every row of one image the same split and patient_id")
        lab = (r.get(lab_col) or "").strip()
        keys = ("x1", "y1", "x2", "y2") if corners else ("x", "y", "w", "h")
        vals = [(r.get(cols[k]) or "").strip() for k in keys]
        if (not lab or lab.lower() in _NO_FINDING) and not any(vals):
            boxes.setdefault(ip, [])
            continue
        if lab.lower() in _NO_FINDING:
            raise DatasetError(f"line {line}: '{lab}' labels a box, but it means no finding", path=p,
                               fix="name the finding the box shows, or leave the coordinates empty for an "
                                   "image without findings")
        if not lab or not all(vals):
            raise DatasetError(f"line {line} has a box without a label or a label without a box", path=p,
                               fix="fill in label and all four coordinates, or leave them all empty")
        a, b, c, d = (_float(v, p, line, k) for v, k in zip(vals, keys))
        x1, y1, x2, y2 = (a, b, c, d) if corners else (a, b, a + c, b + d)
        s = _float(r[cols["scale"]], p, line, "scale") if "scale" in cols and r.get(cols["scale"]) else 1.0
        x1, y1, x2, y2 = x1 * s, y1 * s, x2 * s, y2 * s
        if x2 <= x1 or y2 <= y1:
            raise DatasetError(f"line {line}: the box has no area ({x1:g},{y1:g})-({x2:g},{y2:g})", path=p,
                               fix="x2 > x1 and y2 > y1 (or w, h > 0)")
        labels.add(lab)
        boxes[ip].append((x1, y1, x2, y2, lab))
    missing = [ip for ip in boxes if not ip.exists()]
    if missing:
        raise DatasetError(f"{len(missing)} listed images do not exist; first: '{missing[0]}'", path=p,
                           fix="correct the paths (relative paths are taken from the CSV's folder)")
    if not labels:
        raise DatasetError("no boxes in the manifest", path=p, fix="add at least one labelled box")
    names = sorted(labels)
    idx = {n: i + 1 for i, n in enumerate(names)}
    splits = [meta[ip][0] for ip in boxes]
    if any(splits) and not all(splits):
        raise DatasetError("the split column is filled on some rows only", path=p,
                           fix="give every image a split or drop the column")
    strata = sorted({bs[0][4] if bs else "none" for bs in boxes.values()})
    cases = []
    for ip, bs in boxes.items():
        split, pid, _ = meta[ip]
        try:
            cid = str(ip.relative_to(p.parent))
        except ValueError:
            cid = str(ip)
        cases.append(Case(label=strata.index(bs[0][4] if bs else "none"), split=split, **patient_keys(cid, pid),
                          path=ip,
                          boxes=tuple((x1, y1, x2, y2, idx[lab]) for x1, y1, x2, y2, lab in bs)))
    official = all(splits)
    return CaseSet(name=p.stem, source=str(p), kind="box manifest", class_names=strata, cases=cases,
                   official_split=official, loader=_load_checked, task="detect",
                   declared_labels={0: "background", **{i: n for n, i in idx.items()}})


BOX_OVERHANG = 0.05  # a box may reach this share of the image's size past an edge (clipped), no further


def check_boxes_fit(shape: tuple[int, int], boxes, where: str) -> None:
    """Refuse a box that lies outside its image, or reaches past an edge by more than ``BOX_OVERHANG``
    of the image's size: its coordinates belong to another image size (or another image), and drawn
    clipped or not at all it would train and score as a finding that is not there."""
    if len(shape) != 2:  # x, y boxes have no z: drawn into a volume they would fill its first two axes
        raise DatasetError(f"boxes (x1,y1,x2,y2) are 2D, but this image is {len(shape)}D {tuple(shape)}", path=where,
                           fix="give 2D images in a box manifest, or segment volumes with masks (--task segment)")
    rows, cols = shape
    tol_c, tol_r = BOX_OVERHANG * cols, BOX_OVERHANG * rows
    for x1, y1, x2, y2, _ in boxes:
        if x1 < -tol_c or y1 < -tol_r or x2 > cols + tol_c or y2 > rows + tol_r or x1 >= cols or y1 >= rows \
                or x2 <= 0 or y2 <= 0:
            raise DatasetError(f"the box ({x1:g},{y1:g})-({x2:g},{y2:g}) lies outside the {cols} x {rows} px image",
                               path=where, fix="give box coordinates in pixels of this image (a scale column "
                               "rescales boxes drawn on another size)")


def _load_checked(case: Case):
    """A box manifest's image, refused when a listed box does not fit it: every reader of the case set
    (fingerprint, training's label maps, evaluation of either detector) loads through here."""
    img = read_image(case.path)
    check_boxes_fit(img.spatial_shape, case.boxes, str(case.path))
    return img


def draw_boxes(shape: tuple[int, int], boxes) -> np.ndarray:
    """Label map of ``shape`` (rows, cols) with each box ``(x1, y1, x2, y2, cls)`` filled with ``cls``."""
    out = np.zeros(shape, np.float32)
    for x1, y1, x2, y2, cls in boxes:
        r0, r1 = int(np.floor(y1)), int(np.ceil(y2))
        c0, c1 = int(np.floor(x1)), int(np.ceil(x2))
        out[max(0, r0):max(0, r1), max(0, c0):max(0, c1)] = cls
    return out


def reference_boxes(case: Case, shape: tuple[int, int] | None = None):
    """The listed boxes of a case as detection ``Box`` objects (row, col order), clipped to the image's
    ``shape`` (rows, cols) when given, as they are drawn: a box may reach past an edge (``BOX_OVERHANG``),
    and a detection cannot, so unclipped it could never match it fully."""
    from meddx.evaluation.detection import Box

    rows, cols = shape if shape is not None else (np.inf, np.inf)
    return [Box((max(0, int(np.floor(y1))), max(0, int(np.floor(x1)))),
                (int(min(rows, np.ceil(y2))), int(min(cols, np.ceil(x2)))), int(cls))
            for x1, y1, x2, y2, cls in case.boxes]
