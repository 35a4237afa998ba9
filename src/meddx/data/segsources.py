"""Segmentation datasets: images with masks, in the same formats as classification.

Layouts, tried in this order:

* a CSV manifest ``image,mask[,split][,patient_id]`` (several masks of one image
  separated by ``;``); images and masks may be files, DICOM series folders or NIfTI;
* a folder with ``images/`` and ``masks/`` (or ``labels/``, ``imagesTr/``/``labelsTr/``)
  sub-folders whose files pair by name (MSD, COVID-19 Radiography); there may be
  several such pairs below the folder; nnU-Net v2's channel suffix pairs too
  (``imagesTr/x_0000.nii.gz`` with ``labelsTr/x.nii.gz``), and a case's channel files
  (``x_0000``, ``x_0001`` ...: T1, FLAIR ...) are stacked into one multi-channel image;
* a folder whose masks sit beside their images as ``<name>_mask.<ext>`` (and
  ``<name>_mask_1.<ext>`` ... for extra masks of one image, merged: BUSI, LGG).

A ``dataset.json`` with a ``labels`` mapping (MSD style) declares the label set; mask
values outside it are refused. The split stratum (``Case.label``) is the class folder
when pairs sit in class folders (BUSI's benign/malignant/normal), else one stratum.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from meddx.data.case import Case, CaseSet, patient_keys
from meddx.errors import DatasetError, ImageContentError, InputError
from meddx.io import read_channels, read_image
from meddx.io.base import ImageData, axcodes_of, same_geometry
from meddx.io.formats import channel_file, is_hidden, is_readable_path, nnunet_channel, path_suffix
from meddx.transforms.orientation import oriented

MASK_STEM = re.compile(r"^(?P<stem>.+?)_(mask|seg|label|labels)(_(?P<k>\d+))?$", re.IGNORECASE)
IMAGE_DIRS = ("images", "imagestr", "image", "imgs", "img")
MASK_DIRS = ("masks", "labelstr", "labels", "mask", "segmentations", "gt")


def masks_beside_images(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """Split ``paths`` into images and masks: ``NAME_mask.png`` (also ``_seg``, ``_label``, ``_mask_1``)
    is a mask when an image ``NAME.*`` sits in the same folder, as segmentation datasets (BUSI, LGG) pair
    them; a file of such a name without its image is an image like any other. Used where images are
    taken from a folder: a class folder for training, and predict's and explain's inputs."""
    from meddx.io.formats import file_stem

    stems = {(p.parent, file_stem(p)) for p in paths}
    keep, masks = [], []
    for p in paths:
        m = MASK_STEM.match(file_stem(p)) if p.is_file() else None
        (masks if m and (p.parent, m.group("stem")) in stems else keep).append(p)
    return keep, masks


def _stem(p: Path) -> str:
    suf = path_suffix(p)
    return p.name[: len(p.name) - len(suf)] if suf and p.name.lower().endswith(suf) else p.stem


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not is_hidden(p) and is_readable_path(p))


def _declared_labels(root: Path) -> dict[int, str] | None:
    """Label values from an MSD-style ``dataset.json`` (``{"labels": {"0": "background", ...}}``)."""
    for cand in (root / "dataset.json", root.parent / "dataset.json"):
        if not cand.is_file():
            continue
        try:
            labels = json.loads(cand.read_text()).get("labels")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
            raise DatasetError(f"dataset.json cannot be read ({type(e).__name__})", path=cand,
                               fix="fix the JSON, or remove the file to let meddx infer the labels") from None
        if not isinstance(labels, dict) or not labels:
            continue
        out: dict[int, str] = {}
        for k, v in labels.items():
            # MSD writes {"0": "background"}; nnU-Net v2 writes {"background": 0}
            value, name = (k, v) if str(k).strip().isdigit() else (v, k)
            try:
                out[int(value)] = str(name)
            except (TypeError, ValueError):
                raise DatasetError(f"label entry {k!r}: {v!r} is not a value/name pair", path=cand,
                                   fix='write labels as {"0": "background", "1": "lesion"}') from None
        return dict(sorted(out.items()))
    return None


def _declared_channel_names(root: Path) -> list[str] | None:
    """The input channels a ``dataset.json`` names (nnU-Net v2 ``channel_names``, MSD ``modality``:
    ``{"0": "T1", "1": "FLAIR"}``), in channel order; None where it names none. A file that cannot be
    read is ``_declared_labels``' to report."""
    for cand in (root / "dataset.json", root.parent / "dataset.json"):
        try:
            d = json.loads(cand.read_text()) if cand.is_file() else None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        names = (d.get("channel_names") or d.get("modality")) if isinstance(d, dict) else None
        if isinstance(names, dict) and names and all(str(k).strip().isdigit() for k in names):
            return [str(names[k]) for k in sorted(names, key=lambda k: int(k))]
    return None


def _by_stem(files: list[Path]) -> dict[str, Path]:
    """``stem -> file``; two files of one stem (``a.png`` and ``a.jpg``) would pair with one mask, and
    one of them would be dropped without a word."""
    out: dict[str, Path] = {}
    for p in files:
        stem = _stem(p)
        if stem in out:
            raise DatasetError(f"'{out[stem].name}' and '{p.name}' have the same name, so it is unclear which one "
                               "pairs with the mask (or image) of that name", path=p,
                               fix="keep one of them, or rename the other")
        out[stem] = p
    return out


def _nnunet_cases(images: dict[str, Path], masks: dict[str, Path]) -> dict[str, tuple[Path, ...]]:
    """Each case's image file(s), keyed by its mask's name. Files named as nnU-Net v2 names channels
    (``x_0000`` is channel 0 of case ``x``, whose mask is ``x``) group into one case of several channels,
    in channel order; any other file is a case of its own."""
    named = {stem: nnunet_channel(p) for stem, p in images.items()}
    if not images or set(images) & set(masks) or not all(named.values()):
        return {stem: (p,) for stem, p in images.items()}
    cases: dict[str, dict[int, Path]] = {}
    for stem, (case, k) in sorted(named.items()):
        cases.setdefault(case, {})[k] = images[stem]
    if not set(cases) & set(masks):
        return {stem: (p,) for stem, p in images.items()}
    n = max(len(ch) for ch in cases.values())
    for case, ch in sorted(cases.items()):  # n is the most any case has: one short of it misses one
        gap = next((k for k in range(n) if k not in ch), None)
        if gap is not None:
            want = channel_file(next(iter(ch.values())), gap)
            raise DatasetError(f"case '{case}' has {len(ch)} channel file(s) where others have {n}: {want.name} is "
                               "missing", path=want, fix="give every case the same channels, numbered from 0000 as "
                                                         "nnU-Net v2 names them, or remove the case")
    return {case: tuple(ch[k] for k in range(n)) for case, ch in cases.items()}


def _pair_dirs(root: Path) -> list[tuple[Path, Path]]:
    """``(images_dir, masks_dir)`` pairs at or below ``root``."""
    pairs = []
    for d in sorted([root, *[p for p in root.rglob("*") if p.is_dir() and not is_hidden(p)]]):
        subs = {p.name.lower(): p for p in d.iterdir() if p.is_dir()} if d.is_dir() else {}
        img = next((subs[n] for n in IMAGE_DIRS if n in subs), None)
        msk = next((subs[n] for n in MASK_DIRS if n in subs), None)
        if img is not None and msk is not None:
            pairs.append((img, msk))
    return pairs


def _cases_from_pair_dirs(root: Path, pairs: list[tuple[Path, Path]]) -> list[Case]:
    cases = []
    for img_dir, msk_dir in pairs:
        masks = _by_stem(_files(msk_dir))
        images = _nnunet_cases(_by_stem(_files(img_dir)), masks)
        for stem, files in images.items():
            p = files[0]
            if stem not in masks:
                suffix = path_suffix(p)
                raise DatasetError(f"image '{p.name}' has no mask of the same name in {msk_dir.name}/",
                                   path=p, fix=f"add {msk_dir.name}/{stem}{suffix} or remove the image")
        extra = sorted(set(masks) - set(images))
        if extra:
            raise DatasetError(f"mask '{masks[extra[0]].name}' has no image ({len(extra)} such masks)",
                               path=masks[extra[0]], fix=f"add the image to {img_dir.name}/ or remove the mask")
        stratum = img_dir.parent.name if img_dir.parent != root else "all"
        for stem, files in sorted(images.items()):
            cases.append(Case(case_id=str(files[0].relative_to(root)), label=None, path=files[0],
                              masks=(masks[stem],), group=stratum, channels=files if len(files) > 1 else ()))
    return cases


def _cases_from_siblings(root: Path) -> list[Case]:
    cases = []
    for folder in sorted({p.parent for p in root.rglob("*") if p.is_file()}):
        if is_hidden(folder.relative_to(root)) if folder != root else False:
            continue
        files = _files(folder)
        masks: dict[str, list[tuple[int, Path]]] = {}
        others: list[Path] = []
        for p in files:
            m = MASK_STEM.match(_stem(p))
            if m:
                masks.setdefault(m["stem"], []).append((int(m["k"] or 0), p))
            else:
                others.append(p)
        if not masks:
            continue
        images = _by_stem(others)
        for ms in masks.values():
            _by_stem([p for _, p in ms])  # a_mask.png and a_mask.tif: one mask twice, or two different ones?
        for stem, p in images.items():
            if stem not in masks:
                raise DatasetError(f"image '{p.name}' has no mask beside it", path=p,
                                   fix=f"add '{stem}_mask{path_suffix(p)}' or move the image out of the folder")
        for stem, ms in masks.items():
            if stem not in images:
                raise DatasetError(f"mask '{ms[0][1].name}' has no image named '{stem}.*'", path=ms[0][1],
                                   fix="add the image or remove the mask")
            stratum = folder.name if folder != root else "all"
            cases.append(Case(case_id=str(images[stem].relative_to(root)), label=None, path=images[stem],
                              masks=tuple(p for _, p in sorted(ms)), group=stratum))
    return cases


def _cases_from_manifest(path: Path) -> tuple[list[Case], bool]:
    from meddx.data.sources import manifest_cases
    from meddx.io.manifest import read_manifest

    return manifest_cases(path, read_manifest(path, require_label=False, require_mask=True), lambda r: None)


def _load_case(c: Case) -> ImageData:
    return read_channels(list(c.channels)) if c.channels else read_image(c.path)


def open_seg_dataset(path: str | Path, *, resample_masks: bool = False, group_by_folder: bool = False) -> CaseSet:
    """Open a segmentation dataset (see the module docstring for the layouts).

    Args:
        path: a folder or a CSV manifest.
        resample_masks: resize a mask whose size differs from its image to the image
            (nearest neighbour); without it, a size mismatch is an error.
        group_by_folder: treat each image's folder as one patient (LGG's layout), so no
            patient is in two splits; folder names are pseudonymised in case ids.

    Raises:
        DatasetError: no pairs found, an image without a mask or a mask without an image.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError("no such file or folder", path=p, fix="check the path")
    official = False
    if p.is_file() and p.suffix.lower() in (".csv", ".tsv"):
        cases, official = _cases_from_manifest(p)
        kind, root = "manifest", p.parent
        strata = [None] * len(cases)
    elif p.is_dir():
        pairs = _pair_dirs(p)
        cases = _cases_from_pair_dirs(p, pairs) if pairs else _cases_from_siblings(p)
        kind, root = ("image/mask folders" if pairs else "mask beside image"), p
        strata = [c.group for c in cases]
        for c in cases:
            c.group = None
    else:
        raise InputError("not a segmentation dataset: meddx reads a folder of images with masks or a CSV manifest "
                         "image,mask", path=p, fix="point at one of those (a single image is for `meddx predict`)")
    if not cases:
        raise DatasetError("no image/mask pairs found", path=p,
                           fix="put masks beside their images as NAME_mask.png, or use images/ and masks/ "
                               "sub-folders, or a CSV manifest with image,mask columns")
    if group_by_folder:
        strata = [None] * len(cases)  # the folders are patients, not strata (and their names are identifiers)
        for c in cases:
            keys = patient_keys(c.case_id, c.path.parent.name)
            c.case_id, c.group, c.split_key = keys["case_id"], keys["group"], keys["split_key"]
    names = sorted({s for s in strata if s is not None}) or ["all"]
    idx = {n: i for i, n in enumerate(names)}
    for c, s in zip(cases, strata):
        c.label = idx[s if s is not None else names[0]]
    return CaseSet(name=p.stem if p.is_file() else p.name, source=str(p), kind=kind, class_names=names,
                   cases=cases, official_split=official, loader=_load_case, task="segment",
                   declared_labels=_declared_labels(root), resample_masks=resample_masks,
                   channel_names=_declared_channel_names(root))


# -- masks --------------------------------------------------------------------------------
def _mask_plane(img: ImageData, where: Path) -> np.ndarray:
    """A decoded mask file -> spatial array of its values (RGB masks: grey ones only, channels equal)."""
    a = img.array
    if a.shape[0] in (3, 4):
        if not (a[0] == a[1]).all() or not (a[0] == a[2]).all():
            # e.g. red for one class and green for another: taking one channel (or their maximum) would
            # merge the classes without a word
            raise ImageContentError("a colour mask: its red, green and blue channels differ, so its colours are "
                                    "not label values", path=where,
                                    fix="save masks as single-channel label images (0 = background, 1..K = classes)")
        a = a[:1]  # RGB masks with equal channels, RGBA alpha ignored
    elif a.shape[0] != 1:
        raise ImageContentError(f"a mask must have one channel (or RGB), this one has {a.shape[0]}", path=where,
                                fix="save masks as single-channel label images")
    a = a[0]
    if not np.isfinite(a).all():
        raise ImageContentError("mask contains NaN or infinite values", path=where, fix="re-export the mask")
    if img.meta.get("mode") == "1":  # a bilevel PNG/TIFF: on is 255, as Pillow's own conversion to 8 bit has it
        a = a * 255.0
    return a


def load_mask_values(cs: CaseSet, case: Case, image: ImageData | None = None) -> tuple[ImageData, np.ndarray]:
    """Read an image and its merged mask; the mask has the image's spatial shape.

    Several masks of one image are merged by maximum (BUSI's ``_mask_1``). A mask whose
    size or geometry differs from its image is an error unless the dataset was opened
    with ``resample_masks`` (then it is resized to the image, nearest neighbour).
    """
    from meddx.transforms.spatial import resize_labels

    img = image if image is not None else cs.load(case)
    shape = img.spatial_shape
    if cs.task == "detect":  # boxes drawn as a label map at the image's size
        from meddx.data.detsources import draw_boxes

        return img, draw_boxes(shape, case.boxes)  # cs.load refused boxes that do not fit the image
    merged = None
    codes = axcodes_of(img) if img.spatial_dims == 3 else None
    for mp in case.masks:
        m = read_image(mp)
        if codes and m.spatial_dims == 3:
            # a mask stored in another orientation (a NIfTI mask of a DICOM series, as 3D Slicer or dcm2niix
            # write it) is turned to its image's axes first, as MONAI's Orientationd on both would
            m = oriented(m, codes)
        plane = _mask_plane(m, mp)
        if (img.spatial_dims == 3 and {img.meta.get("format"), m.meta.get("format")} == {"dicom", "nifti"}
                and not (tuple(plane.shape) == shape and same_geometry(img, m, unknown=False))):
            # (on one grid, e.g. the NIfTI mask `meddx predict` wrote for a DICOM series, they pair up)
            # DICOM arrays are (slice, row, column), NIfTI's (i, j, k): resizing one onto the other
            # would pair each voxel with a voxel of another place
            raise ImageContentError(f"the image is {img.meta.get('format').upper()} and its mask "
                                    f"{m.meta.get('format').upper()} on another voxel grid, even turned to the "
                                    "image's axes: resizing one onto the other would pair voxels of different "
                                    "places",
                                    path=mp, fix="convert the DICOM side to NIfTI (e.g. dcm2niix) so image and "
                                                 "mask share one geometry")
        if tuple(plane.shape) != shape:
            squeezed = np.squeeze(plane)
            if squeezed.shape == tuple(s for s in shape if s != 1):
                plane = squeezed.reshape(shape)
            elif cs.resample_masks and plane.ndim == len(shape):
                plane = resize_labels(plane, shape)
            elif cs.resample_masks:  # resizing cannot add or drop an axis
                raise ImageContentError(
                    f"mask is {plane.ndim}D ({'x'.join(map(str, plane.shape))}) but its image is {len(shape)}D "
                    f"({'x'.join(map(str, shape))}); --resample-masks resizes, it cannot add or drop an axis",
                    path=mp, fix=f"give a {len(shape)}D mask for this image")
            else:
                raise ImageContentError(
                    f"mask is {'x'.join(map(str, plane.shape))} but its image is {'x'.join(map(str, shape))}",
                    path=mp, fix="give masks their image's size, or pass --resample-masks to resize them "
                                 "(nearest neighbour)")
        elif not same_geometry(img, m) and not cs.resample_masks:
            raise ImageContentError("mask geometry (affine) differs from its image's", path=mp,
                                    fix="resample the mask onto its image, or pass --resample-masks to accept "
                                        "the image's geometry")
        merged = plane if merged is None else np.maximum(merged, plane)
    return img, merged


def label_index(values: np.ndarray, label_values: list[int], where: Path | str) -> np.ndarray:
    """Map raw mask values to class indices ``0..K-1`` (index = position in ``label_values``).

    Raises:
        ImageContentError: a value outside the declared set, or a non-integer value.
    """
    lv = np.asarray(label_values, dtype=np.float64)
    uniq = np.unique(values)
    bad = uniq[~np.isin(uniq, lv)]
    if bad.size:
        shown = ", ".join(f"{v:g}" for v in bad[:5])
        raise ImageContentError(
            f"mask has value(s) {shown} outside the label set {[int(v) for v in label_values]}", path=where,
            fix="correct the mask, or declare the labels in dataset.json / re-plan so the set includes them")
    lut_idx = np.searchsorted(lv, values.astype(np.float64)) if np.all(np.diff(lv) > 0) else None
    if lut_idx is not None:
        return lut_idx.astype(np.int64)
    out = np.zeros(values.shape, dtype=np.int64)
    for i, v in enumerate(lv):
        out[values == v] = i
    return out


def infer_label_values(unique_values: set[float], declared: dict[int, str] | None,
                       source: str, seen_in: dict[float, str] | None = None,
                       declared_in: str = "dataset.json") -> tuple[list[int], list[str], str]:
    """Decide the label set from the values the masks hold.

    Returns ``(values, names, how)``: declared labels win; two values ``{0, v}`` are a
    binary mask (``v`` = foreground, e.g. 255); otherwise each integer value is a class.
    ``seen_in`` (value -> mask file) lets an error about one value name a mask that holds it;
    ``declared_in`` names where the declared labels came from (a box manifest's findings have no
    dataset.json).
    """
    seen_in = seen_in or {}
    vals = sorted(unique_values)
    non_int = [v for v in vals if float(v) != int(v)]
    if non_int:
        where = seen_in.get(non_int[0])
        raise DatasetError(f"{'this mask holds' if where else 'masks hold'} non-integer values (e.g. {non_int[0]:g})",
                           path=where or source,
                           fix="masks must be label images (0 = background, 1..K = classes); re-export them")
    ints = [int(v) for v in vals]
    if ints and ints[0] < 0:  # the lowest value would become the background (class index 0), and 0 a foreground class
        where = seen_in.get(float(ints[0]))
        raise DatasetError(f"{'this mask holds' if where else 'masks hold'} a negative value ({ints[0]})",
                           path=where or source,
                           fix="masks must be label images (0 = background, 1..K = classes); re-export them")
    if declared and min(declared) < 0:
        raise DatasetError(f"{declared_in} declares a negative label value ({min(declared)})", path=source,
                           fix="label values are 0 (background) and 1..K; correct the labels")
    if declared:
        outside = [v for v in ints if v not in declared]
        if outside:
            where = seen_in.get(float(outside[0]))
            raise DatasetError(f"{'this mask holds' if where else 'masks hold'} value {outside[0]} (of "
                               f"{outside[:5]}), not declared in {declared_in}", path=where or source,
                               fix=f"add them to {declared_in}'s labels or correct the masks")
        return list(declared), list(declared.values()), f"declared in {declared_in}"
    if 0 not in ints:
        ints = [0, *ints]
    if len(ints) == 1:
        raise DatasetError("every mask is empty (only background)", path=source,
                           fix="add masks that mark the structures to segment")
    if len(ints) == 2:
        return ints, ["background", "foreground"], f"binary: value {ints[1]} is foreground"
    if len(ints) > 64:
        raise DatasetError(f"masks hold {len(ints)} distinct values; that is not a label map", path=source,
                           fix="masks must be label images with few values (0 = background, 1..K = classes)")
    return ints, ["background", *[f"label_{v}" for v in ints[1:]]], "each mask value is a class"
