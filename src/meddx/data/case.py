"""Case records and the dataset (``CaseSet``) that knows how to load them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from meddx.io.base import ImageData

SPLITS = ("train", "val", "test")


@dataclass
class Case:
    """One labelled example.

    Attributes:
        case_id: stable id within the dataset (relative path, or ``split/index`` for npz).
        label: class index into ``CaseSet.class_names`` (None when unlabelled).
        split: ``train`` / ``val`` / ``test`` when the dataset defines it, else None.
        group: pseudonymised patient key (a hash, never the raw identifier) or None.
        path: file or series folder, for file-backed datasets.
        index: row in an in-memory array, for array-backed datasets (MedMNIST).
        masks: segmentation only: the mask file(s) of this image (several are merged).
        boxes: detection only: ``(x1, y1, x2, y2, class)`` per finding, pixel coordinates.
    """

    case_id: str
    label: int | None
    split: str | None = None
    group: str | None = None
    path: Path | None = None
    index: int | None = None
    masks: tuple[Path, ...] = ()
    boxes: tuple = ()


def pseudonymise(value: str, salt: str = "meddx") -> str:
    """Return a short one-way key for a patient identifier, safe to write to outputs."""
    return hashlib.sha256(f"{salt}:{value}".encode()).hexdigest()[:12]


@dataclass
class CaseSet:
    """A dataset: its cases, class names and a loader for one case.

    Attributes:
        name: short dataset name (file or folder stem).
        source: where it came from (path as given).
        kind: ``npz`` | ``folder`` | ``manifest`` | ``synthetic``.
        class_names: label names, index = class id.
        cases: all cases, in a deterministic order.
        official_split: True when the dataset itself defines train/val/test.
        loader: function ``Case -> ImageData``.
        task: ``classify`` (labels are the target) or ``segment`` (masks are the target;
            ``label`` is then only the stratum the split balances, e.g. BUSI's class folder).
        declared_labels: segmentation only: mask value -> name, when the dataset declares
            its label set (``dataset.json``); masks with other values are refused.
    """

    name: str
    source: str
    kind: str
    class_names: list[str]
    cases: list[Case]
    official_split: bool
    loader: Callable[[Case], ImageData] = field(repr=False)
    notes: list[str] = field(default_factory=list)
    task: str = "classify"
    declared_labels: dict[int, str] | None = None
    resample_masks: bool = False

    def load(self, case: Case) -> ImageData:
        return self.loader(case)

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def labels(self, cases: list[Case] | None = None) -> np.ndarray:
        return np.array([c.label for c in (cases if cases is not None else self.cases)], dtype=np.int64)

    def subset(self, split: str) -> list[Case]:
        return [c for c in self.cases if c.split == split]

    def class_counts(self, cases: list[Case] | None = None) -> dict[str, int]:
        lab = self.labels(cases)
        return {name: int((lab == i).sum()) for i, name in enumerate(self.class_names)}
