"""MedMNIST ``.npz`` files: ``{train,val,test}_{images,labels}``."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from meddx.errors import CorruptFileError, InputError
from meddx.io.formats import check_file, short_reason

SPLITS = ("train", "val", "test")
_FIX_FORMAT = "use a MedMNIST-style .npz with arrays train_images, train_labels, val_images, val_labels, " \
              "test_images, test_labels"


def read_medmnist_npz(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read a MedMNIST-style npz.

    Returns:
        ``{"train"|"val"|"test": (images, labels)}``: images as stored (uint8,
        ``(N, H, W)``, ``(N, H, W, 3)`` or ``(N, D, H, W)``), labels int64 ``(N,)``
        for single-label files or ``(N, K)`` for multi-label ones.

    Raises:
        CorruptFileError: not a zip/npz, or a damaged member.
        InputError: missing arrays, pickled objects, mismatched lengths, non-integer or
            negative labels.
    """
    p = check_file(path)
    try:
        npz = np.load(p, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise CorruptFileError(f"not a readable .npz archive ({short_reason(e, p)})", path=p,
                               fix="download the file again") from e
    except ValueError as e:  # np.load refuses pickles / unknown content with ValueError
        raise CorruptFileError(f"not a .npz archive ({short_reason(e, p)})", path=p, fix=_FIX_FORMAT) from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise InputError("holds a single array, not a MedMNIST archive", path=p, fix=_FIX_FORMAT)
    with npz:
        keys = set(npz.files)
        missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in keys]
        if missing:
            raise InputError(f"missing arrays {', '.join(missing)} (found: {', '.join(sorted(keys)) or 'none'})",
                             path=p, fix=_FIX_FORMAT)
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for s in SPLITS:
            images = _member(npz, p, f"{s}_images")
            labels = _member(npz, p, f"{s}_labels")
            out[s] = (_check_images(p, s, images), _check_labels(p, s, labels, len(images)))
    if len(out["train"][0]) == 0:
        raise InputError("the train split is empty", path=p, fix=_FIX_FORMAT)
    shapes = {out[s][0].shape[1:] for s in SPLITS if len(out[s][0])}
    if len(shapes) > 1:
        raise InputError(f"splits have different image shapes {sorted(shapes)}", path=p, fix=_FIX_FORMAT)
    return out


def _member(npz, p: Path, key: str) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as e:
        raise InputError(f"array {key} cannot be loaded without pickle ({short_reason(e, p)})", path=p,
                         fix=_FIX_FORMAT) from e
    except Exception as e:  # noqa: BLE001 - zlib.error, BadZipFile, EOFError on damaged members
        raise CorruptFileError(f"array {key} is damaged ({short_reason(e, p)})", path=p,
                               fix="download the file again") from e


def _check_images(p: Path, split: str, images: np.ndarray) -> np.ndarray:
    if images.ndim not in (3, 4) or images.dtype.kind not in "uif":
        raise InputError(f"{split}_images has shape {images.shape} and dtype {images.dtype}; expected numeric "
                         f"(N, H, W), (N, H, W, 3) or (N, D, H, W)", path=p, fix=_FIX_FORMAT)
    return images


def _check_labels(p: Path, split: str, labels: np.ndarray, n: int) -> np.ndarray:
    if labels.dtype.kind not in "uifb":
        raise InputError(f"{split}_labels has dtype {labels.dtype}; expected integers", path=p, fix=_FIX_FORMAT)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim not in (1, 2):
        raise InputError(f"{split}_labels has shape {labels.shape}; expected (N,), (N, 1) or (N, K)", path=p,
                         fix=_FIX_FORMAT)
    if len(labels) != n:
        raise InputError(f"{split} has {n} images but {len(labels)} labels", path=p, fix=_FIX_FORMAT)
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels) & (labels == np.round(labels))):
        raise InputError(f"{split}_labels holds non-integer values", path=p, fix=_FIX_FORMAT)
    if labels.size and labels.min() < 0:
        # a -1 "unlabelled" marker would silently fall out of every class count
        raise InputError(f"{split}_labels holds negative values (min {int(labels.min())}); labels are class "
                         "indices 0, 1, 2, ...", path=p, fix="drop the unlabelled cases or renumber the classes from 0")
    return labels.astype(np.int64)
