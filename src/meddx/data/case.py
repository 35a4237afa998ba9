"""Case records and the dataset (``CaseSet``) that knows how to load them."""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from meddx.errors import MeddxError
from meddx.io.base import ImageData

SPLITS = ("train", "val", "test")


@dataclass
class Case:
    """One labelled example.

    Attributes:
        case_id: stable id within the dataset (relative path, or ``split/index`` for npz).
        label: class index into ``CaseSet.class_names`` (None when unlabelled).
        split: ``train`` / ``val`` / ``test`` when the dataset defines it, else None.
        group: pseudonymised patient key (a keyed hash, never the raw identifier) or None.
        split_key: in memory only, never written: the patient's unkeyed order key
            (``split_order_key``), so a seeded split is the same on every machine whatever
            its pseudonym key.
        path: file or series folder, for file-backed datasets.
        index: row in an in-memory array, for array-backed datasets (MedMNIST).
        masks: segmentation only: the mask file(s) of this image (several are merged).
        boxes: detection only: ``(x1, y1, x2, y2, class)`` per finding, pixel coordinates.
        channels: a case stored as one file per channel (nnU-Net v2's ``x_0000``, ``x_0001`` ...):
            those files in channel order (``path`` is the first); empty otherwise.
    """

    case_id: str
    label: int | None
    split: str | None = None
    group: str | None = None
    path: Path | None = None
    index: int | None = None
    masks: tuple[Path, ...] = ()
    boxes: tuple = ()
    channels: tuple[Path, ...] = ()
    split_key: str | None = field(default=None, repr=False)


PSEUDONYM_KEY_ENV = "MEDDX_PSEUDONYM_KEY"


def _key_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "meddx" / "pseudonym.key"


def pseudonym_key() -> bytes:
    """The secret behind pseudonyms: ``$MEDDX_PSEUDONYM_KEY``, else this user's key file
    (``~/.config/meddx/pseudonym.key``, made with 256 random bits, mode 600, on first use).

    Patient identifiers are short (a 7-digit number, ``PGBM-001``): a hash of them without a
    secret is reversed by trying every candidate in seconds, so the hash is keyed (HMAC) and
    the key never goes into a run directory. Runs made with one key are evaluated with the
    same key: copy the file, or set the variable, on another machine.
    """
    env = os.environ.get(PSEUDONYM_KEY_ENV)
    if env:
        return env.encode()
    return _file_key(_key_file())


@functools.lru_cache(maxsize=4)
def _file_key(f: Path) -> bytes:
    """Read the key file, making it first if there is none (read once per process)."""
    try:
        if not f.exists():
            f.parent.mkdir(parents=True, exist_ok=True)
            tmp = f.with_name(f"{f.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
            try:  # a complete file appears at once; if another process won the race, its key stands
                os.link(tmp, f)
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
        key = f.read_text().strip()
    except OSError as e:
        raise MeddxError(f"cannot read or create the pseudonym key ({e.strerror or e})", path=f,
                         fix=f"make {f.parent} writable, or set {PSEUDONYM_KEY_ENV} to a secret string") from None
    if not key:
        raise MeddxError("the pseudonym key file is empty", path=f,
                         fix=f"restore it from a backup (runs made with it need it), or set {PSEUDONYM_KEY_ENV}")
    return key.encode()


def pseudonym_key_id() -> str:
    """A short fingerprint of the key (not the key): run.json records it, so that a run can
    tell that it is being evaluated with another key than it was made with."""
    return hashlib.sha256(b"meddx-key-id:" + pseudonym_key()).hexdigest()[:8]


def pseudonymise(value: str) -> str:
    """Return a short keyed one-way key (HMAC-SHA256) for a patient identifier, safe to write to outputs."""
    return hmac.new(pseudonym_key(), value.encode(), hashlib.sha256).hexdigest()[:12]


def patient_keys(case_id: str, patient_id: str | None) -> dict:
    """``Case`` fields for a case of patient ``patient_id``: the case id with the identifier
    (where the path embeds it) replaced by its pseudonym, ``group`` and ``split_key``."""
    if not patient_id:
        return {"case_id": case_id, "group": None, "split_key": None}
    key = pseudonymise(patient_id)
    return {"case_id": case_id.replace(patient_id, key), "group": key, "split_key": split_order_key(patient_id)}


def hash_id(c: "Case") -> str:
    """The case id as the data hash reads it: with the machine-independent order key in place of the
    keyed pseudonym, so one dataset has one hash on every machine (as before pseudonyms were keyed)."""
    return c.case_id.replace(c.group, c.split_key) if c.group and c.split_key else c.case_id


def split_order_key(value: str) -> str:
    """An unkeyed hash of a patient identifier that orders patients for the seeded split, so
    the split does not depend on the machine's key. Kept in memory (``Case.split_key``) and
    never written: unkeyed, it could be reversed."""
    return hashlib.sha256(f"meddx:{value}".encode()).hexdigest()[:12]


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
        notes: what opening the dataset did (files ignored, cases grouped), for ``meddx inspect``.
        findings: what opening it found wrong, told as the fingerprint's findings (train prints them).
        task: ``classify`` (labels are the target) or ``segment`` (masks are the target;
            ``label`` is then only the stratum the split balances, e.g. BUSI's class folder).
        declared_labels: segmentation only: mask value -> name, when the dataset declares
            its label set (``dataset.json``); masks with other values are refused.
        channel_names: the input channels ``dataset.json`` names (``channel_names`` / ``modality``),
            in order; the fingerprint records them and says when the images disagree.
    """

    name: str
    source: str
    kind: str
    class_names: list[str]
    cases: list[Case]
    official_split: bool
    loader: Callable[[Case], ImageData] = field(repr=False)
    notes: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    task: str = "classify"
    declared_labels: dict[int, str] | None = None
    resample_masks: bool = False
    channel_names: list[str] | None = None

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
