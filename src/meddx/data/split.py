"""Train/val/test splits: the dataset's own, or stratified (and patient-grouped) from a seed."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from meddx.data.case import SPLITS, Case, CaseSet
from meddx.errors import DatasetError


def _assign_groups(keys: list[str], labels: np.ndarray, fractions: tuple[float, float, float],
                   rng: np.random.Generator) -> dict[str, str]:
    """Assign whole groups to splits, greedily keeping each class near its target share.

    Groups are shuffled, then placed largest-first into the split whose per-class deficit
    (target minus current count) is largest for that group's label mix. Once a class has
    only as many groups left as there are splits (with a share) still lacking it, those
    groups go to the lacking splits: a class with 3 cases reaches train, val and test.
    This changes nothing where the greedy choice would have reached every split anyway.
    """
    uniq = sorted(set(keys))
    rng.shuffle(uniq)
    n_cls = int(labels.max()) + 1
    key_idx = {k: i for i, k in enumerate(uniq)}
    comp = np.zeros((len(uniq), n_cls))
    for k, y in zip(keys, labels):
        comp[key_idx[k], y] += 1
    order = np.argsort(-comp.sum(1), kind="stable")
    total = comp.sum(0)
    target = np.outer(np.array(fractions), total)  # (3, n_cls)
    current = np.zeros_like(target)
    left = (comp > 0).sum(0)  # groups not yet placed, per class
    out: dict[str, str] = {}
    for gi in order:
        deficit = ((target - current) * comp[gi]).sum(1) / max(comp[gi].sum(), 1)
        lacking = (target > 0) & (current == 0)  # (3, n_cls): splits that still lack a class
        bound = (comp[gi] > 0) & (left > 0) & (left == lacking.sum(0))
        if bound.any():
            # the rule ignores val's small share, which loses every close call to train or test
            deficit = np.where(lacking[:, bound].any(1), deficit, -np.inf)
        s = int(np.argmax(deficit))
        current[s] += comp[gi]
        left -= comp[gi] > 0
        out[uniq[gi]] = SPLITS[s]
    return out


def _order_key(c: Case) -> str:
    """What a case is grouped and ordered by: its patient's machine-independent order key (the
    pseudonym is keyed per machine, so ordering by it would change the split from machine to
    machine), else its patient group, else the case itself."""
    return c.split_key or c.group or c.case_id


def patient_groups(cases) -> list[str]:
    """One group key per case, equal for the cases of one patient (cross-validation folds keep
    them together); machine-independent like the split, and held in memory only."""
    return [_order_key(c) for c in cases]


def make_split(cs: CaseSet, seed: int = 0, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> dict[str, str]:
    """Return ``case_id -> split``.

    Uses the dataset's own split when it has one (a missing ``val`` is carved out of
    ``train``, stratified). Otherwise a stratified split from ``seed``, grouped by patient
    when groups exist, so no patient appears in two splits.
    """
    rng = np.random.default_rng(seed)
    if cs.official_split:
        split = {c.case_id: c.split for c in cs.cases}
        if not any(c.split == "val" for c in cs.cases):
            train = [c for c in cs.cases if c.split == "train"]
            val_frac = fractions[1] / (fractions[0] + fractions[1])
            sub = _assign_groups([_order_key(c) for c in train], cs.labels(train),
                                 (1 - val_frac, val_frac, 0.0), rng)
            for c in train:
                split[c.case_id] = sub[_order_key(c)]
        return split
    keys = [_order_key(c) for c in cs.cases]
    by_group = _assign_groups(keys, cs.labels(), fractions, rng)
    split = {c.case_id: by_group[k] for c, k in zip(cs.cases, keys)}
    return split


def apply_split(cs: CaseSet, split: dict[str, str]) -> dict[str, list[Case]]:
    """Stamp the split onto the cases and check every split can be used."""
    parts: dict[str, list[Case]] = {s: [] for s in SPLITS}
    for c in cs.cases:
        s = split.get(c.case_id)
        if s not in parts:
            # only a stored split (the run's split.csv: resume, compress --data) can miss a case
            raise DatasetError(f"case '{c.case_id}' is not in the run's split (split.csv): this is not the "
                               "dataset the run was trained on", path=cs.source,
                               fix="give the run's own dataset, without cases added since it was trained")
        c.split = s
        parts[s].append(c)
    for s in SPLITS:
        if not parts[s]:
            raise DatasetError(
                f"the {s} split is empty ({len(cs.cases)} cases in all)", path=cs.source,
                fix="add cases: each class needs at least 3 (patients, when cases are grouped) for a "
                    "train/val/test split",
            )
    if cs.task == "detect":
        # the strata of a box manifest (first finding, or "none") only balance a drawn split; what
        # training needs is a box of every finding among its images (images without findings may all
        # be in val or test)
        seen = {b[4] for c in parts["train"] for b in (c.boxes or ())}
        labels = {int(k): n for k, n in (cs.declared_labels or {}).items() if int(k) != 0}
        missing = [n for k, n in sorted(labels.items()) if k not in seen]
        if missing:
            raise DatasetError(f"finding(s) {missing} have no box in the training images", path=cs.source,
                               fix="move images with those findings into train, or drop their boxes")
        return parts
    train_counts = cs.class_counts(parts["train"])
    missing = [n for n, c in train_counts.items() if c == 0]
    if missing:
        raise DatasetError(f"class(es) {missing} have no training cases", path=cs.source,
                           fix="add more cases of those classes")
    return parts


def write_split(path: Path, cs: CaseSet) -> None:
    """Write ``split.csv`` (case_id, label, split, group): groups are pseudonymised keys."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "label", "split", "group"])
        for c in cs.cases:
            w.writerow([c.case_id, cs.class_names[c.label], c.split, c.group or ""])


def read_split(path: Path) -> dict[str, str]:
    """``case_id -> split`` from a run's ``split.csv``.

    Raises:
        RunError: the run (its ``run.json`` beside the file) pseudonymised patient ids with another
            key than this machine's, or before pseudonyms were keyed, so its case ids cannot be
            matched to the data here.
    """
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if any(row.get("group") for row in rows):
        _check_pseudonym_key(Path(path).parent)
    return {row["case_id"]: row["split"] for row in rows}


def _check_pseudonym_key(run_dir: Path) -> None:
    import json

    from meddx.data.case import PSEUDONYM_KEY_ENV, pseudonym_key_id
    from meddx.errors import RunError

    try:
        info = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return
    made_with = info.get("pseudonym_key_id") if isinstance(info, dict) else None
    if made_with is None:
        raise RunError("the run was made before meddx keyed its patient pseudonyms, so its case ids do not "
                       "match the data as read now", path=run_dir, fix="train the run again")
    if made_with != pseudonym_key_id():
        raise RunError(f"the run pseudonymised patient ids with another key (id {made_with}) than this machine's "
                       f"(id {pseudonym_key_id()}), so its case ids do not match the data here", path=run_dir,
                       fix=f"set {PSEUDONYM_KEY_ENV} to the key it was made with, or copy that machine's "
                           "~/.config/meddx/pseudonym.key here")
