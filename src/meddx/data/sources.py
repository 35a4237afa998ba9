"""Open any supported dataset path as a ``CaseSet``.

Supported: a MedMNIST ``.npz`` (official splits), a folder with one sub-folder per
class, and a CSV manifest ``path,label[,split][,patient_id]``.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from meddx.data.case import Case, CaseSet, patient_keys
from meddx.errors import DatasetError, InputError
from meddx.io import read_image
from meddx.io.base import ImageData
from meddx.io.formats import is_hidden

# Label names as published in medmnist's INFO table (medmnist 3.0.2).
MEDMNIST_LABELS: dict[str, list[str]] = {
    "pneumoniamnist": ["normal", "pneumonia"],
    "breastmnist": ["malignant", "normal, benign"],
    "retinamnist": ["0", "1", "2", "3", "4"],
    "adrenalmnist3d": ["normal", "hyperplasia"],
    "vesselmnist3d": ["vessel", "aneurysm"],
    "nodulemnist3d": ["benign", "malignant"],
    "organmnist3d": [str(i) for i in range(11)],
    "fracturemnist3d": ["buckle", "nondisplaced", "displaced"],
    "synapsemnist3d": ["inhibitory", "excitatory"],
    "bloodmnist": [str(i) for i in range(8)],
    "dermamnist": [str(i) for i in range(7)],
    "pathmnist": [str(i) for i in range(9)],
    "octmnist": ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
}


def _medmnist_flag(path: Path) -> str:
    stem = path.name[: -len(".npz")].lower()
    return re.sub(r"_(64|128|224)$", "", stem)


def open_npz(path: Path) -> CaseSet:
    """MedMNIST-style npz: ``{train,val,test}_{images,labels}``.

    Images ``(N, H, W)`` or ``(N, H, W, 1)`` are grey 2D, ``(N, H, W, 3)`` RGB and
    ``(N, H, W, 4)`` RGBA with the alpha dropped; other 4D arrays are volumes
    ``(N, D, H, W)``. An empty val split is allowed (``make_split`` carves one out of
    train); an empty test split is refused, as a manifest's official split without
    test rows is.
    """
    from meddx.io.npz import read_medmnist_npz

    splits = read_medmnist_npz(path)
    if len(splits["test"][0]) == 0:
        raise DatasetError("the test split is empty; meddx evaluates on the official test split", path=path,
                           fix="fill test_images and test_labels, or use a manifest without a split column "
                               "to let meddx split")
    flag = _medmnist_flag(path)
    label_arrays = {s: lab for s, (_, lab) in splits.items()}
    for s, lab in label_arrays.items():
        if lab.ndim != 1:
            raise DatasetError(
                f"split '{s}' has multi-label targets of shape {lab.shape}; meddx classifies one label per image",
                path=path,
                fix="use a single-label MedMNIST file or a manifest with one label column",
            )
    n_classes = int(max(lab.max() for lab in label_arrays.values() if lab.size)) + 1  # val/test may be empty
    names = MEDMNIST_LABELS.get(flag)
    if names is None or len(names) < n_classes:
        names = [str(i) for i in range(n_classes)]
    images = {s: img for s, (img, _) in splits.items()}
    first = next(iter(images.values()))
    # (N, H, W, 1) is grey, (N, H, W, 3) RGB, (N, H, W, 4) RGBA (alpha dropped, as for RGBA PNGs);
    # any other 4D array is a batch of volumes (N, D, H, W).
    channels_last = first.ndim == 4 and first.shape[-1] in (1, 3, 4)
    cases: list[Case] = []
    for s in ("train", "val", "test"):
        lab = label_arrays[s]
        cases.extend(Case(case_id=f"{s}/{i}", label=int(lab[i]), split=s, index=i) for i in range(len(lab)))

    def load(case: Case) -> ImageData:
        # the file's own split (the case id's prefix): a val carved out of train re-stamps case.split
        arr = images[case.case_id.split("/", 1)[0]][case.index]
        if channels_last:
            arr = np.moveaxis(arr[..., :3], -1, 0)
        else:
            arr = arr[None]
        return ImageData(arr.astype(np.float32), spacing=None, meta={"format": "npz"})

    return CaseSet(
        name=path.name[:-4], source=str(path), kind="npz", class_names=list(names[:n_classes]),
        cases=cases, official_split=True, loader=load,
    )


def _sort_labels(names: set[str]) -> list[str]:
    def key(s: str):
        try:
            return (0, float(s), s)
        except ValueError:
            return (1, 0.0, s.lower())

    return sorted(names, key=key)


def _load_file(case: Case) -> ImageData:
    return read_image(case.path)


def _refuse_image_and_mask_folders(path: Path, names: list[str]) -> None:
    """"Classes" that include an image folder and a mask folder (``imagesTr``/``labelsTr``, with or
    without ``imagesTs``; ``images``/``masks``) are a segmentation dataset: a classifier would learn to
    tell images from masks."""
    from meddx.data.segsources import IMAGE_DIRS, MASK_DIRS

    images = [n for n in names if n.lower() in IMAGE_DIRS or n.lower() == "imagests"]
    masks = [n for n in names if n.lower() in MASK_DIRS]
    if images and masks:
        raise DatasetError(f"the class folders {', '.join(images + masks)} are images and their masks: a "
                           "segmentation dataset, not classes", path=path,
                           fix="add --task segment (or give a folder with one sub-folder per class)")


def open_folder(path: Path) -> CaseSet:
    """Folder with one sub-folder per class."""
    from meddx.data.segsources import masks_beside_images
    from meddx.io.folder import scan_class_folder

    items = scan_class_folder(path)
    # segmentation datasets (BUSI, LGG) keep masks beside their images: not cases (predict skips them alike)
    masks = set(masks_beside_images([p for p, _ in items])[1])
    notes = []
    if masks:
        items = [(p, lab) for p, lab in items if p not in masks]
        notes.append(f"ignored {len(masks)} mask file(s) beside their images (NAME_mask.*, _seg, _label)")
    listed = {p for p, _ in items} | masks
    other = [f for c in sorted({lab for _, lab in items}) for f in sorted((path / c).iterdir())
             if f.is_file() and not is_hidden(f) and f not in listed]
    if other:  # e.g. GIF or WebP images, which would otherwise be left out without a word
        kinds = Counter(f.suffix.lower() or "no suffix" for f in other)
        notes.append(f"skipped {len(other)} file(s) that are not images meddx reads "
                     f"({', '.join(f'{k}: {n}' for k, n in kinds.most_common())}; e.g. {other[0].relative_to(path)}): "
                     f"convert images among them to PNG to include them")
    names = _sort_labels({lab for _, lab in items})
    _refuse_image_and_mask_folders(path, names)
    idx = {n: i for i, n in enumerate(names)}
    cases = [
        Case(case_id=str(p.relative_to(path)), label=idx[lab], path=p) for p, lab in items
    ]
    cs = CaseSet(name=path.name, source=str(path), kind="folder", class_names=names, cases=cases,
                 official_split=False, loader=_load_file, notes=notes)
    group_dicom_by_patient(cs)
    return cs


def group_dicom_by_patient(cs: CaseSet) -> None:
    """Group the DICOM cases that no patient column groups by the patient (else study, else series)
    their headers name, so that the slices of one scan do not fall on both sides of the split; the
    value is replaced by its pseudonym, as a patient_id column's is. Where that leaves a class fewer
    than 3 groups (too few for train, val and test) the cases stay ungrouped, and a finding says so."""
    from meddx.io.dicom import dicom_group_keys
    from meddx.io.formats import detect_format

    dicom = [c for c in cs.cases if c.group is None and c.path is not None
             and (c.path.is_dir() or detect_format(c.path) == "dicom")]
    if len(dicom) < 2:
        return
    keys, tag = dicom_group_keys([c.path for c in dicom])
    if tag is None:
        return
    per_class: dict[str, set] = {n: set() for n in cs.class_names}
    for c in cs.cases:  # a case without a key (not DICOM, or the tag blank) is a group of its own
        per_class[cs.class_names[c.label]].add(keys.get(c.path, c.case_id))
    few = {n: len(g) for n, g in per_class.items() if len(g) < 3}
    n = len(set(keys.values()))
    if few:
        shown = ", ".join(f"'{k}' {v}" for k, v in few.items())
        cs.findings.append(f"the DICOM headers name {n} {tag} value(s), too few to split by (class {shown}; each "
                           "needs 3): cases are split one by one, so slices of one scan can be in train and in "
                           "test, and test metrics are optimistic; list the files in a CSV manifest with a "
                           "patient_id column to decide")
        return
    for c in dicom:
        if c.path in keys:
            k = patient_keys(c.case_id, keys[c.path])
            c.case_id, c.group, c.split_key = k["case_id"], k["group"], k["split_key"]
    cs.notes.append(f"grouped {len(keys)} DICOM case(s) by their {tag} into {n} group(s): a group stays on one "
                    "side of the split")


def manifest_cases(path: Path, rows, label_of) -> tuple[list[Case], bool]:
    """Cases of manifest rows (classification or segmentation) and whether their split is official.

    Case ids are paths relative to the CSV, with an embedded patient identifier replaced
    by its pseudonym; a split column must be filled on every row or none, and name at
    least train and test.
    """
    have_split = [r.split is not None for r in rows]
    if any(have_split) and not all(have_split):
        first = next(r for r in rows if r.split is None)
        raise DatasetError(
            f"the split column is empty on line {first.line} but filled on others",
            path=path, fix="give every row a split (train/val/test) or drop the column",
        )
    seen: set[str] = set()
    cases = []
    for r in rows:
        try:
            cid = str(r.path.relative_to(path.parent))
        except ValueError:
            cid = str(r.path)
        keys = patient_keys(cid, r.patient_id)  # a path that embeds the identifier gets its pseudonym
        cid = keys["case_id"]
        if cid in seen:
            raise DatasetError(f"'{cid}' is listed twice (line {r.line})", path=path,
                               fix="list each image once")
        seen.add(cid)
        cases.append(Case(label=label_of(r), split=r.split, path=r.path, masks=r.masks, **keys))
    official = all(have_split)
    if official:
        present = {r.split for r in rows}
        if "train" not in present or "test" not in present:
            raise DatasetError(
                f"the split column names only {sorted(present)}; meddx needs at least train and test",
                path=path, fix="add train and test rows, or drop the split column to let meddx split",
            )
    return cases, official


def _refuse_one_number_written_two_ways(path: Path, rows, names: list[str]) -> None:
    """Labels ``1`` and ``1.0`` (a column partly written as floats) would be two classes."""
    seen: dict[float, str] = {}
    for name in names:
        try:
            v = float(name)
        except ValueError:
            continue
        if v in seen:
            a, b = (next(r.line for r in rows if r.label == n) for n in (seen[v], name))
            raise DatasetError(f"labels '{seen[v]}' (line {a}) and '{name}' (line {b}) are one number written two "
                               "ways, which would make them two classes", path=path,
                               fix="write each class's label the same way on every line")
        seen[v] = name


def open_manifest(path: Path) -> CaseSet:
    """CSV manifest ``path,label[,split][,patient_id]``."""
    from meddx.io.manifest import read_manifest

    rows = read_manifest(path)
    names = _sort_labels({r.label for r in rows})
    _refuse_one_number_written_two_ways(path, rows, names)
    idx = {n: i for i, n in enumerate(names)}
    cases, official = manifest_cases(path, rows, lambda r: idx[r.label])
    cs = CaseSet(name=path.stem, source=str(path), kind="manifest", class_names=names, cases=cases,
                 official_split=official, loader=_load_file)
    if not official and not any(r.patient_id for r in rows):  # a patient_id column is the user's word
        group_dicom_by_patient(cs)
    return cs


def open_dataset(path: str | Path, *, min_classes: int = 2) -> CaseSet:
    """Open a dataset path (npz, class folder or CSV manifest), or explain what is wrong.

    ``min_classes=1`` accepts data of one class: scoring a trained model on, say, a set of confirmed
    positives (its sensitivity), which is no training set."""
    if str(path).startswith("synthetic:"):
        from meddx.data.synthetic import synthetic_caseset

        parts = str(path).split(":")
        if parts[1:2] != ["phantoms"] or len(parts) > 3 or (len(parts) == 3 and not parts[2].isdigit()):
            raise InputError("unknown synthetic dataset", path=path,
                             fix="use synthetic:phantoms or synthetic:phantoms:N (N cases, e.g. 200)")
        cs = synthetic_caseset(n=int(parts[2]) if len(parts) == 3 else 600)
        check_labels(cs, min_classes)
        return cs
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError("no such file or folder", path=p, fix="check the path")
    if p.is_file() and p.name.lower().endswith(".npz"):
        cs = open_npz(p)
    elif p.is_file() and p.suffix.lower() in (".csv", ".tsv"):
        cs = open_manifest(p)
    elif p.is_dir():
        cs = open_folder(p)
    else:
        raise InputError(
            "not a dataset: meddx reads a MedMNIST .npz, a CSV manifest, or a folder with one sub-folder per class",
            path=p, fix="point at one of those (a single image is for `meddx predict`)",
        )
    check_labels(cs, min_classes)
    return cs


def check_labels(cs: CaseSet, min_classes: int = 2) -> None:
    """Refuse datasets that cannot train a classifier (or, with ``min_classes=1``, be scored)."""
    if not cs.cases:
        raise DatasetError("the dataset has no cases", path=cs.source, fix="add labelled images")
    counts = cs.class_counts()
    present = [n for n, c in counts.items() if c > 0]
    if len(present) < min_classes:
        raise DatasetError(
            f"only one class ('{present[0] if present else '?'}') is present; a classifier needs at least two",
            path=cs.source, fix="add images of another class",
        )
