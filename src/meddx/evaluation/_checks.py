"""Input validation and small helpers shared by the evaluation modules."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from meddx.errors import MeddxError

# Model outputs are often float32 softmax: rows can miss 1 by ~1e-6.
_ROW_SUM_TOL = 1e-3


def check_labels_proba(y_true, proba) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``y_true`` (N,) integer labels and ``proba`` (N, K) probabilities.

    Returns:
        ``(y, p)`` as int64 and float64 arrays.

    Raises:
        MeddxError: on shape mismatch, non-finite or non-probability values, or labels
            outside ``[0, K)``.
    """
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise MeddxError(
            f"proba must have shape (N, K) with K >= 2, got {p.shape}",
            fix="pass one column per class (for binary tasks, both columns)",
        )
    n, k = p.shape
    if n == 0:
        raise MeddxError("no cases to evaluate (proba is empty)")
    if not np.all(np.isfinite(p)):
        raise MeddxError("proba contains NaN or Inf", fix="check the model outputs")
    if p.min() < -_ROW_SUM_TOL or p.max() > 1 + _ROW_SUM_TOL:
        raise MeddxError("proba values must lie in [0, 1]", fix="apply softmax to the logits first")
    if np.max(np.abs(p.sum(axis=1) - 1.0)) > _ROW_SUM_TOL:
        raise MeddxError("proba rows must sum to 1", fix="apply softmax to the logits first")
    y = check_labels(y_true, n_classes=k, n=n)
    return y, p


def check_labels(y_true, *, n_classes: int | None = None, n: int | None = None) -> np.ndarray:
    """Validate integer class labels; returns them as int64 (N,)."""
    y_raw = np.asarray(y_true)
    if y_raw.ndim != 1:
        raise MeddxError(f"y_true must be one-dimensional, got shape {y_raw.shape}")
    if n is not None and y_raw.shape[0] != n:
        raise MeddxError(f"y_true has {y_raw.shape[0]} labels but there are {n} predictions")
    if y_raw.size and not np.issubdtype(y_raw.dtype, np.integer):
        if y_raw.dtype == bool:
            y_raw = y_raw.astype(np.int64)
        else:
            yf = y_raw.astype(np.float64)
            if not np.all(np.isfinite(yf)) or np.any(yf != np.round(yf)):
                raise MeddxError("y_true must hold integer class indices")
            y_raw = yf
    y = y_raw.astype(np.int64)
    if n_classes is not None and y.size and (y.min() < 0 or y.max() >= n_classes):
        raise MeddxError(f"y_true labels must lie in [0, {n_classes}), got [{y.min()}, {y.max()}]")
    return y


def check_positive(positive) -> int:
    """The index of a binary task's positive class: 0 or 1."""
    if positive not in (0, 1):
        raise MeddxError(f"the positive class of a binary task is index 0 or 1, got {positive!r}")
    return int(positive)


def check_binary(y_true, score) -> tuple[np.ndarray, np.ndarray]:
    """Validate binary labels (0/1, both present) and a 1-D finite score."""
    s = np.asarray(score, dtype=np.float64)
    if s.ndim != 1:
        raise MeddxError(f"score must be one-dimensional, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise MeddxError("score contains NaN or Inf", fix="check the model outputs")
    y = check_labels(y_true, n_classes=2, n=s.shape[0])
    if y.size == 0 or y.min() == y.max():
        raise MeddxError(
            "choosing a threshold needs both positive and negative cases",
            fix="use a validation split that contains both classes",
        )
    return y, s


@contextmanager
def replaced_on_success(final: Path):
    """A hidden folder beside ``final`` to write into; it becomes ``final`` only when the block ends
    without an error, replacing an earlier one there. A failure part-way (a bad file, Ctrl-C) removes it
    and leaves ``final`` as it was: never old results beside half of the new ones."""
    final = Path(final)
    stage, old = final.with_name(f".{final.name}.partial"), final.with_name(f".{final.name}.old")
    shutil.rmtree(stage, ignore_errors=True)  # left by a killed process
    stage.mkdir(parents=True)
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    stage.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def json_ready(o: Any) -> Any:
    """``o`` as plain JSON values: NaN and infinities become None (null: the bare ``NaN`` Python's json
    writes is not JSON, and browsers' ``JSON.parse`` and strict parsers refuse the whole file), numpy
    scalars and arrays Python numbers and lists."""
    if isinstance(o, dict):
        return {(k if isinstance(k, str) else json_ready(k)): json_ready(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_ready(v) for v in o]
    if isinstance(o, np.ndarray):
        return json_ready(o.tolist())
    if isinstance(o, (bool, np.bool_)):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, (float, np.floating)):
        f = float(o)
        return f if math.isfinite(f) else None
    return o


def json_text(o: Any, indent: int | None = 2) -> str:
    """``o`` as strict JSON (``json_ready``; anything else, e.g. a path, as its text)."""
    return json.dumps(json_ready(o), indent=indent, default=str, allow_nan=False)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    with atomic_open(path) as fh:
        fh.write(data)


class atomic_open:
    """Context manager: a binary file handle whose content appears at ``path`` only on success.

    On an exception the temp file is removed and ``path`` is left untouched.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._tmp: str | None = None
        self._fh = None

    def __enter__(self):
        folder = self.path.parent
        if self.path.is_dir():  # else os.replace fails at the end, naming the temp file
            raise MeddxError("is a folder, not a file name", path=self.path,
                             fix="give the path of a file to write (inside that folder, or elsewhere)")
        folder.mkdir(parents=True, exist_ok=True)
        try:
            fd, self._tmp = tempfile.mkstemp(dir=folder, prefix=f".{self.path.name}.", suffix=".tmp")
        except OSError as e:  # name the folder the user gave, not the temp file that could not be made
            raise OSError(e.errno, e.strerror, str(folder)) from None
        self._fh = os.fdopen(fd, "wb")
        return self._fh

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self._fh.flush()
                os.fsync(self._fh.fileno())
            self._fh.close()
            if exc_type is None:
                # mkstemp creates 0600; reports and plots are meant to be shared.
                os.chmod(self._tmp, 0o644)
                os.replace(self._tmp, self.path)
                self._tmp = None
        finally:
            if self._tmp is not None and os.path.exists(self._tmp):
                os.unlink(self._tmp)
        return False
