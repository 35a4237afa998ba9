"""Dataset fingerprint: what the planner reads and what ``meddx inspect`` prints."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from typing import Callable

import numpy as np

from meddx.data.case import CaseSet, hash_id
from meddx.io.base import axcodes_of, check_pixels
from meddx.errors import MeddxError

PIXEL_SAMPLE = 4096  # pixels drawn per image for dataset-wide percentiles


def _target_spacing(spacings: list, shapes: list) -> dict | None:
    """nnU-Net's target spacing for the dataset (``transforms/resample.py``) when every image has one."""
    if not spacings or len(spacings) != len(shapes) or len(set(map(len, spacings))) != 1:
        return None
    if len(spacings[0]) != 3 or any(len(s) != 3 for s in shapes):
        return None
    from meddx.transforms.resample import target_spacing_decision

    try:
        d = target_spacing_decision(spacings, shapes)
    except MeddxError:
        return None
    return {k: d[k] for k in ("spacing", "median_spacing", "anisotropic", "coarse_axis", "rule")}


NOISE_SAMPLE = 200  # cases whose noise level is estimated
RARE_LABEL_FRACTION = 1e-4  # a mask label on fewer voxels than this share is flagged as possibly stray


CANONICAL = ("R", "A", "S")


def _oriented_hash(img) -> str:
    """The hash of a volume's voxels turned to RAS (what ``hashes`` compares for duplicates)."""
    from meddx.transforms.orientation import oriented

    return hashlib.sha1(np.ascontiguousarray(oriented(img, CANONICAL).array).tobytes()).hexdigest()


def _problem_text(e: MeddxError, c) -> str:
    """The error of an unusable case as written to outputs. With a patient column the case's path may
    hold the patient identifier (``PGBM-001/img0.png``), so the path gives way to the case id, whose
    patient part is pseudonymised. (A fatal error on stderr names the file itself: the user must find it.)"""
    text = str(e)
    if c.group is not None:
        for p in sorted({e.path, str(c.path) if c.path is not None else None} - {None}, key=len, reverse=True):
            text = text.replace(p, c.case_id)
    return text


def compute_fingerprint(cs: CaseSet, *, strict: bool = True, seed: int = 0,
                        progress: Callable[[int], None] | None = None, split: dict[str, str] | None = None) -> dict:
    """Read every case once and summarise the dataset.

    Args:
        cs: the dataset.
        strict: raise on the first unreadable, NaN or constant image (training); when
            False, collect them as findings (``meddx inspect``).
        seed: for the pixel sample behind the percentiles.
        progress: called with 1 after each case.
        split: ``case_id -> split`` of the run to be planned. Its test cases are still read and
            checked (format, shapes, duplicates, the data hash) but add nothing to the statistics a
            plan reads (intensity, noise, masks, class counts), as nnU-Net fingerprints only its
            training set; ``split_counts`` then come from this split.
    """
    held = {cid for cid, s in split.items() if s == "test"} if split else set()
    rng = np.random.default_rng(seed)
    shapes, chans, dims, spacings, chan_files = [], [], [], [], []
    samples, means, stds = [], [], []
    vmin, vmax = np.inf, -np.inf
    hashes: dict[str, list[str]] = defaultdict(list)
    problems: list[dict] = []
    integer_valued = True
    dims_example: dict[str, str] = {}
    data_hash = hashlib.sha256()
    seg = _MaskStats() if cs.task in ("segment", "detect") else None
    axcodes: Counter = Counter()
    shape_codes: list = []  # each shape's (spacing's) orientation: mixed ones are measured as R20 turns them
    spacing_codes: list = []
    gapped: list[str] = []  # DICOM volumes whose slice positions are not evenly spaced (missing slices)
    # noise is estimated on a seeded sample of cases (wavelet MAD per image, see transforms/noise.py)
    stat_idx = [i for i, c in enumerate(cs.cases) if c.case_id not in held]  # the cases statistics come from
    noise_pick = set(np.random.default_rng(seed).choice(stat_idx, size=min(NOISE_SAMPLE, len(stat_idx)),
                                                        replace=False).tolist()) if stat_idx else set()
    noise_abs: list[float] = []
    noise_rel: list[float] = []
    for ci, c in enumerate(cs.cases):
        where = str(c.path) if c.path is not None else f"{cs.source}#{c.case_id}"
        try:
            if seg is not None:
                from meddx.data.segsources import load_mask_values

                img, mask = load_mask_values(cs, c)
            else:
                img = cs.load(c)
            check_pixels(img.array, where)
            if seg is not None:
                seg.add(mask, values_only=c.case_id in held,  # a test mask's labels: only which exist
                        where="; ".join(map(str, c.masks)) or where)
        except MeddxError as e:
            if strict:
                raise
            problems.append({"case": c.case_id, "error": _problem_text(e, c)})
            if progress:
                progress(1)
            continue
        a = img.array
        codes = axcodes_of(img)
        shapes.append(img.spatial_shape)
        shape_codes.append(codes)
        chans.append(img.channels)
        chan_files.append(int(img.meta.get("channel_files", 1)))
        dims.append(img.spatial_dims)
        dims_example.setdefault(str(img.spatial_dims), c.case_id)  # case ids carry no patient id
        if img.spacing is not None:
            spacings.append(tuple(float(s) for s in img.spacing))
            spacing_codes.append(codes)
        if codes:
            axcodes[codes] += 1
        if img.meta.get("irregular_slices"):
            gapped.append(c.case_id)
        if ci in noise_pick:
            from meddx.transforms.noise import estimate_noise

            noise_abs.append(estimate_noise(a))
            noise_rel.append(estimate_noise(a, relative=True))
        if c.case_id not in held:
            flat = a.reshape(-1)
            k = min(PIXEL_SAMPLE, flat.size)
            samples.append(flat[rng.integers(0, flat.size, k)])
            means.append(float(a.mean()))
            stds.append(float(a.std()))
            vmin, vmax = min(vmin, float(a.min())), max(vmax, float(a.max()))
            if integer_valued and not np.array_equal(samples[-1], np.round(samples[-1])):
                integer_valued = False
        h = hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()
        # duplicates are looked for in one orientation: the same volume stored LPS and RAS is one volume
        hashes[h if codes in (None, CANONICAL) else _oriented_hash(img)].append(c.case_id)
        # a segmentation or detection case's target is its mask (boxes are drawn into one): hashed with it
        target = f"|{hashlib.sha1(np.ascontiguousarray(mask).tobytes()).hexdigest()}" if seg is not None else ""
        data_hash.update(f"{hash_id(c)}|{c.label}|{c.split}|{h}{target}\n".encode())
        if progress:
            progress(1)

    if len(axcodes) > 1:  # mixed orientations: shapes and spacings along the axes training turns them to (R20)
        from meddx.transforms.orientation import per_axis_in

        major = axcodes.most_common(1)[0][0]
        shapes = [per_axis_in(v, c, major) for v, c in zip(shapes, shape_codes)]
        spacings = [per_axis_in(v, c, major) for v, c in zip(spacings, spacing_codes)]
    counts = cs.class_counts([cs.cases[i] for i in stat_idx])
    nz = [v for v in counts.values() if v > 0]
    split_counts = {}
    for s in ("train", "val", "test"):
        sub = [c for c in cs.cases if split.get(c.case_id) == s] if split else cs.subset(s)
        if sub:
            split_counts[s] = cs.class_counts(sub)
    fp: dict = {
        "dataset": cs.name,
        "kind": cs.kind,
        "task": cs.task,
        "n_cases": len(cs.cases),
        "n_readable": len(shapes),
        "class_names": cs.class_names,
        "class_counts": counts,
        "split_counts": split_counts,
        "official_split": cs.official_split,
        "imbalance_ratio": round(max(nz) / min(nz), 3) if nz else None,
        "has_patient_groups": any(c.group for c in cs.cases),
        "problems": problems,
        "notes": list(cs.notes),
        "data_hash": data_hash.hexdigest(),
    }
    if split:
        fp["statistics_from"] = (f"train and val ({len(cs.cases) - len(held)} cases): class counts, intensity, noise "
                                 f"and masks; the {len(held)} test cases are read only for format, shapes and "
                                 "duplicates")
    if not shapes or not samples:
        fp["findings"] = ["no case could be read" if not shapes else "no training or validation case could be read"]
        return fp
    if seg is not None:
        fp["segmentation"] = seg.summary(cs)
    arr_shapes = np.array([s for s in shapes if len(s) == max(dims)]) if shapes else np.zeros((0, 2))
    pix = np.concatenate(samples)
    from meddx.transforms.noise import summarise_noise

    fp.update({
        "noise": summarise_noise(noise_abs, noise_rel) if noise_rel else None,
        "spatial_dims": sorted(set(dims)),
        "dims_example": dims_example,
        "channels": {str(k): v for k, v in sorted(Counter(chans).items())},
        "channel_files": {str(k): v for k, v in sorted(Counter(chan_files).items())},
        "channel_names": cs.channel_names,
        "shape_median": [int(x) for x in np.median(arr_shapes, 0)],
        # each image's own shorter / longer side, then the median (R3, S2): per-axis medians would mix
        # portrait and landscape images into a square neither is
        "short_side_median": int(np.median(arr_shapes.min(1))),
        "long_side_median": int(np.median(arr_shapes.max(1))),
        "shape_min": [int(x) for x in arr_shapes.min(0)],
        "shape_max": [int(x) for x in arr_shapes.max(0)],
        "distinct_shapes": len(set(shapes)),
        "spacing_median": [round(float(x), 4) for x in np.median(np.array(spacings), 0)] if spacings and len(set(map(len, spacings))) == 1 else None,
        "n_with_spacing": len(spacings),
        "distinct_spacings": len(set(spacings)),
        "target_spacing": _target_spacing(spacings, shapes),
        # anatomical direction of each array axis (RAS letters), when >= 90 % of the images agree
        "axcodes": (list(axcodes.most_common(1)[0][0]) if axcodes and axcodes.most_common(1)[0][1] >= 0.9 * len(shapes)
                    else None),
        "orientations": {"".join(k): v for k, v in axcodes.most_common()},  # volumes per orientation (R20)
        "intensity": {
            "min": vmin, "max": vmax,
            "mean": float(pix.mean()), "std": float(pix.std()),
            "p00_5": float(np.percentile(pix, 0.5)), "p99_5": float(np.percentile(pix, 99.5)),
            "integer_valued": bool(integer_valued),
            "image_mean_spread": float(np.std(means)),
        },
    })
    dups = [ids for ids in hashes.values() if len(ids) > 1]
    fp["duplicates"] = {"groups": len(dups), "cases": sum(len(d) for d in dups), "examples": dups[:5]}
    # the run's split when given (a seeded split exists only in it), else the dataset's own
    split_of = {c.case_id: split.get(c.case_id) if split else c.split for c in cs.cases}
    cross = [ids for ids in dups if len({split_of[i] for i in ids}) > 1]
    # None: no split to cross yet (a folder without one of its own is split by `meddx plan` / `train`)
    fp["duplicates"]["across_splits"] = len(cross) if any(v is not None for v in split_of.values()) else None
    findings = list(cs.findings)  # what opening the dataset found (e.g. DICOM slices it could not group)
    # with a run's split, counts come from its training and validation cases only (inspect counts all)
    among = f" among the {len(cs.cases) - len(held)} training and validation cases" if split else ""
    if problems:
        findings.append(f"{len(problems)} case(s) could not be used (see problems)")
    if len(set(dims)) > 1:
        findings.append(f"mixed dimensionality: {dict(Counter(dims))} (2D and 3D images in one dataset)")
    if len(axcodes) > 1:  # e.g. DICOM series (slice, row, column) beside NIfTI (i, j, k): transposed volumes
        shown = ", ".join(f"{''.join(k)}: {v}" for k, v in axcodes.most_common(4))
        findings.append(f"mixed orientations ({shown}): the arrays' axes point different ways; training and "
                        f"prediction reorient every volume to the most common, {''.join(axcodes.most_common(1)[0][0])} "
                        "(rule R20, data.orientation in the plan)")
    if gapped:
        findings.append(f"{len(gapped)} DICOM volume(s) with uneven slice positions (e.g. {gapped[0]}): missing "
                        "slices? They are stacked at the median step, so anatomy after a gap sits in the wrong "
                        "place and distances and volumes are off; export the series complete")
    if len(set(chans)) > 1:
        findings.append(f"mixed channel counts: {dict(Counter(chans))}")
    named = cs.channel_names
    if named and chans and set(chans) != {len(named)}:  # e.g. a modality's files left out of imagesTr
        findings.append(f"dataset.json names {len(named)} channel(s) ({', '.join(named)}) but the images have "
                        f"{' or '.join(map(str, sorted(set(chans))))}: check that every channel's files are there")
    if fp["distinct_shapes"] > 1:
        how = ("3D segmentation keeps each volume's own grid: patches and a sliding window" if seg is not None
               and max(dims) == 3 else "resized to the plan's input size")
        findings.append(f"mixed image sizes: {fp['distinct_shapes']} distinct shapes ({how})")
    if dups:
        findings.append(f"{fp['duplicates']['cases']} cases in {len(dups)} groups of identical images"
                        + (f", {len(cross)} group(s) span splits (leakage)" if cross else ""))
    if seg is not None and fp["segmentation"]["empty_masks"]:
        findings.append(f"{fp['segmentation']['empty_masks']} case(s) have an empty mask (no foreground){among}")
    if seg is not None:  # a few stray mask values become classes of their own (masks are label maps)
        rare = {k: v for k, v in fp["segmentation"]["label_fraction"].items() if 0 < v < RARE_LABEL_FRACTION}
        if rare:
            findings.append("label(s) " + ", ".join(f"{k} ({100 * v:.4f} % of mask voxels)" for k, v in rare.items())
                            + " are nearly absent: stray mask values? Each trains as a class of its own")
    if seg is None and fp["imbalance_ratio"] and fp["imbalance_ratio"] >= 3:
        findings.append(f"class imbalance {fp['imbalance_ratio']}:1{among}")
    fp["findings"] = findings
    return fp


class _MaskStats:
    """Mask values, foreground share and object sizes over a segmentation dataset."""

    def __init__(self):
        self.values: set[float] = set()
        self.counts: Counter = Counter()
        self.total = 0
        self.empty = 0
        self.objects: list[int] = []
        self.first_seen: dict[float, str] = {}  # value -> the mask it was first found in (errors name it)

    def add(self, mask: np.ndarray, values_only: bool = False, where: str | None = None) -> None:
        from scipy import ndimage

        vals, cnt = np.unique(mask, return_counts=True)
        self.values.update(float(v) for v in vals)
        if where is not None:
            for v in vals:
                self.first_seen.setdefault(float(v), where)
        if values_only:
            return
        self.counts.update({float(v): int(n) for v, n in zip(vals, cnt)})
        self.total += mask.size
        fg = mask != 0
        if not fg.any():
            self.empty += 1
            return
        lab, n = ndimage.label(fg)
        self.objects.extend(int(x) for x in np.bincount(lab.ravel())[1:])

    def summary(self, cs: CaseSet) -> dict:
        from meddx.data.segsources import infer_label_values

        values, names, how = infer_label_values(
            self.values, cs.declared_labels, cs.source, seen_in=self.first_seen,
            declared_in="the box manifest's findings" if cs.kind == "box manifest" else "dataset.json")
        if how.startswith("binary"):
            frac = {names[1]: sum(n for v, n in self.counts.items() if v != 0) / max(1, self.total)}
        else:
            frac = {nm: self.counts.get(float(v), 0) / max(1, self.total) for v, nm in zip(values, names)}
        obj = np.array(self.objects) if self.objects else np.zeros(1)
        return {
            "mask_values": sorted(self.values)[:64],
            "label_values": values, "label_names": names, "labels_from": how,
            "label_fraction": {k: round(float(v), 5) for k, v in frac.items()},
            "empty_masks": self.empty,
            "objects": {"count": len(self.objects), "size_median": float(np.median(obj)),
                        "size_p05": float(np.percentile(obj, 5)), "size_min": int(obj.min())},
            "resample_masks": cs.resample_masks,
        }
