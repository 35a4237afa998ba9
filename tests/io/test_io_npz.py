"""MedMNIST npz reading: the six official files, then malformed archives."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.errors import CorruptFileError, InputError
from meddx.io.npz import read_medmnist_npz

# MANIFEST section 1: image shape per sample and class counts (train / val / test).
OFFICIAL = {
    "breastmnist": ((28, 28), [[147, 399], [21, 57], [42, 114]]),
    "pneumoniamnist": ((28, 28), [[1214, 3494], [135, 389], [234, 390]]),
    "retinamnist": ((28, 28, 3), [[486, 128, 206, 194, 66], [54, 12, 28, 20, 6], [174, 46, 92, 68, 20]]),
    "adrenalmnist3d": ((28, 28, 28), [[929, 259], [76, 22], [229, 69]]),
    "adrenalmnist3d_64": ((64, 64, 64), [[929, 259], [76, 22], [229, 69]]),
    "vesselmnist3d": ((28, 28, 28), [[1185, 150], [169, 22], [339, 43]]),
}


@pytest.mark.parametrize("flag", sorted(OFFICIAL))
def test_official_files(data_dir, flag):
    shape, counts = OFFICIAL[flag]
    out = read_medmnist_npz(data_dir / "medmnist" / f"{flag}.npz")
    assert list(out) == ["train", "val", "test"]
    for split, want in zip(("train", "val", "test"), counts):
        images, labels = out[split]
        assert images.dtype == np.uint8 and images.shape == (sum(want), *shape)
        assert labels.dtype == np.int64 and labels.shape == (sum(want),)
        assert np.bincount(labels, minlength=len(want)).tolist() == want


def _save(path, **arrays):
    np.savez(path, **arrays)
    return path


def _valid(n=(4, 2, 3), labels_shape=lambda k: (k, 1)):
    out = {}
    for split, k in zip(("train", "val", "test"), n):
        out[f"{split}_images"] = np.zeros((k, 5, 5), np.uint8)
        out[f"{split}_labels"] = np.arange(k).reshape(labels_shape(k)) % 2
    return out


def test_multilabel_kept_2d(tmp_path):
    arrays = _valid()
    for s, k in zip(("train", "val", "test"), (4, 2, 3)):
        arrays[f"{s}_labels"] = np.ones((k, 14), np.uint8)
    out = read_medmnist_npz(_save(tmp_path / "chest.npz", **arrays))
    assert out["train"][1].shape == (4, 14) and out["train"][1].dtype == np.int64


def test_missing_keys(tmp_path, assert_one_line_error):
    arrays = _valid()
    del arrays["val_labels"], arrays["test_images"]
    p = _save(tmp_path / "partial.npz", **arrays)
    with pytest.raises(InputError) as ei:
        read_medmnist_npz(p)
    msg = assert_one_line_error(ei, p)
    assert "val_labels" in msg and "test_images" in msg


def test_mismatched_lengths(tmp_path, assert_one_line_error):
    arrays = _valid()
    arrays["val_labels"] = np.zeros((5, 1), np.uint8)
    p = _save(tmp_path / "mismatch.npz", **arrays)
    with pytest.raises(InputError) as ei:
        read_medmnist_npz(p)
    assert "2 images but 5 labels" in assert_one_line_error(ei, p)


def test_not_a_zip(tmp_path, assert_one_line_error):
    p = tmp_path / "broken.npz"
    p.write_bytes(b"PK\x03\x04" + b"garbage" * 50)
    with pytest.raises(CorruptFileError) as ei:
        read_medmnist_npz(p)
    assert_one_line_error(ei, p)


def test_truncated_official_file(tmp_path, data_dir, assert_one_line_error):
    data = (data_dir / "medmnist" / "breastmnist.npz").read_bytes()
    p = tmp_path / "breastmnist.npz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError) as ei:
        read_medmnist_npz(p)
    assert_one_line_error(ei, p)


def test_pickled_objects_refused(tmp_path, assert_one_line_error):
    arrays = _valid()
    arrays["train_labels"] = np.array([{"a": 1}] * 4, dtype=object)
    p = _save(tmp_path / "pickled.npz", **arrays)
    with pytest.raises(InputError) as ei:
        read_medmnist_npz(p)
    assert_one_line_error(ei, p)


def test_single_npy_refused(tmp_path):
    p = tmp_path / "one.npz"
    with open(p, "wb") as fh:
        np.save(fh, np.zeros(3))
    with pytest.raises(InputError, match="one.npz"):
        read_medmnist_npz(p)


def test_negative_labels_refused(tmp_path, assert_one_line_error):
    arrays = _valid()
    arrays["val_labels"] = np.array([[0], [-1]])
    p = _save(tmp_path / "unlabelled.npz", **arrays)
    with pytest.raises(InputError) as ei:
        read_medmnist_npz(p)
    assert "val_labels" in assert_one_line_error(ei, p)
