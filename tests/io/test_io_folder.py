"""Class-folder scanning."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from meddx.errors import DatasetError
from meddx.io import read_image
from meddx.io.folder import scan_class_folder


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(path)


def test_layout_with_dicom_and_series(tmp_path, dicom_dir, tcia_dir):
    root = tmp_path / "ds"
    _png(root / "benign" / "b2.png")
    _png(root / "benign" / "a1.png")
    shutil.copy(dicom_dir / "693_UNCR.dcm", root / "benign" / "ct.dcm")
    shutil.copy(dicom_dir / "emri_small.dcm", root / "benign" / "IM000001")  # DICOM without suffix
    (root / "benign" / "notes.txt").write_text("not an image")
    _png(root / "benign" / ".hidden.png")
    series = root / "malignant" / "case07"
    series.mkdir(parents=True)
    for f in sorted((tcia_dir / "5388-MaskTumor-63335").iterdir())[:3]:
        shutil.copy(f, series / f.name)
    (root / "malignant" / "empty_subdir").mkdir()
    _png(root / ".cache" / "x.png")  # hidden folder: not a class
    (root / "README.md").write_text("loose files in the root are ignored")
    items = scan_class_folder(root)
    assert [(p.relative_to(root).as_posix(), c) for p, c in items] == [
        ("benign/IM000001", "benign"),
        ("benign/a1.png", "benign"),
        ("benign/b2.png", "benign"),
        ("benign/ct.dcm", "benign"),
        ("malignant/case07", "malignant"),
    ]
    assert read_image(items[-1][0]).array.shape == (1, 3, 320, 260)
    assert scan_class_folder(root) == items  # deterministic


def test_real_busi_folder(data_dir):
    items = scan_class_folder(data_dir / "seg" / "busi_subset")
    assert len(items) == 182
    assert sorted({c for _, c in items}) == ["benign", "malignant", "normal"]
    assert sum(c == "normal" for _, c in items) == 60  # 30 images + 30 masks


def test_missing_and_empty_root(tmp_path, assert_one_line_error):
    with pytest.raises(DatasetError) as ei:
        scan_class_folder(tmp_path / "absent")
    assert_one_line_error(ei, tmp_path / "absent")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".DS_Store").write_bytes(b"x")
    with pytest.raises(DatasetError) as ei:
        scan_class_folder(empty)
    assert "empty" in assert_one_line_error(ei, empty)


def test_no_class_subfolders(tmp_path, assert_one_line_error):
    root = tmp_path / "flat"
    _png(root / "a.png")
    _png(root / "b.png")
    with pytest.raises(DatasetError) as ei:
        scan_class_folder(root)
    assert "root/<class>/<image>" in assert_one_line_error(ei, root)


def test_class_without_images_is_named(tmp_path, assert_one_line_error):
    root = tmp_path / "ds"
    _png(root / "cat" / "a.png")
    (root / "dog").mkdir()
    (root / "dog" / "list.csv").write_text("BM,1\n")
    with pytest.raises(DatasetError) as ei:
        scan_class_folder(root)
    assert "'dog'" in assert_one_line_error(ei, root)


def test_images_in_a_sub_folder_of_a_class_are_refused_not_dropped(tmp_path, assert_one_line_error):
    """root/<class>/<patient>/<image> used to read only the class folder's own files: here 1 case of 3,
    with no word about the two in p1/ (and a class holding only sub-folders was called empty)."""
    root = tmp_path / "ds"
    _png(root / "benign" / "a.png")
    _png(root / "benign" / "p1" / "b.png")
    _png(root / "benign" / "p1" / "c.png")
    _png(root / "malignant" / "m.png")
    (root / "malignant" / "notes").mkdir()
    (root / "malignant" / "notes" / "x.txt").write_text("no images here")  # still ignored
    _png(root / "malignant" / "._meta" / "y.png")  # hidden: ignored
    with pytest.raises(DatasetError) as ei:
        scan_class_folder(root)
    msg = assert_one_line_error(ei, root / "benign" / "p1")
    assert "'p1'" in msg and "p1/b.png" in msg and "manifest" in msg
    shutil.rmtree(root / "benign" / "p1")
    assert [p.name for p, _ in scan_class_folder(root)] == ["a.png", "m.png"]
