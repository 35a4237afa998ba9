"""CSV manifests."""

from __future__ import annotations

from pathlib import Path

import pytest

from meddx.errors import DatasetError
from meddx.io.manifest import ManifestRow, read_manifest


@pytest.fixture
def images(tmp_path) -> Path:
    (tmp_path / "img").mkdir()
    for n in ("a.png", "b.png", "c.png"):
        (tmp_path / "img" / n).write_bytes(b"x")
    return tmp_path


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def test_aliases_bom_blank_lines_and_splits(images):
    csv = _write(images / "m.csv", " Image , Class ,Split, Subject ,extra\n"
                                   "img/a.png, pneumonia ,Training,P1,x\n"
                                   "\n"
                                   "img/b.png,normal,valid,P2,y\n"
                                   "img/c.png,normal,TESTING,,z\n", encoding="utf-8-sig")
    rows = read_manifest(csv)
    assert rows == [
        ManifestRow(images / "img/a.png", "pneumonia", "train", "P1", 2),
        ManifestRow(images / "img/b.png", "normal", "val", "P2", 4),
        ManifestRow(images / "img/c.png", "normal", "test", None, 5),
    ]
    assert rows[0].path.relative_to(csv.parent) == Path("img/a.png")


def test_tsv_and_absolute_paths(images):
    tsv = _write(images / "m.tsv", f"path\tlabel\n{images / 'img' / 'a.png'}\t1\n")
    (row,) = read_manifest(tsv)
    assert row.path == images / "img" / "a.png" and row.label == "1" and row.split is None


def test_a_semicolon_separated_manifest_is_read(images):
    """Spreadsheets set to a decimal comma save CSV with semicolons: the header was read as one column
    ("no path column in header (path;label;patient_id)")."""
    m = _write(images / "m.csv", "path;label;patient_id\r\nimg/a.png;benign;P1\r\nimg/b.png;\"malignant; left\";P2\r\n")
    assert [(r.path.name, r.label, r.patient_id) for r in read_manifest(m)] == [
        ("a.png", "benign", "P1"), ("b.png", "malignant; left", "P2")]
    # a comma header keeps ';' inside a cell (segmentation: several masks of one image)
    seg = _write(images / "s.csv", "image,mask\nimg/a.png,img/b.png;img/c.png\n")
    (row,) = read_manifest(seg, require_label=False, require_mask=True)
    assert [p.name for p in row.masks] == ["b.png", "c.png"]


def test_missing_files_counted_first_named(images, assert_one_line_error):
    csv = _write(images / "m.csv", "path,label\nimg/a.png,x\nimg/nope.png,y\nimg/gone.png,y\n")
    with pytest.raises(DatasetError) as ei:
        read_manifest(csv)
    msg = assert_one_line_error(ei, csv)
    assert "2 of 3" in msg and "nope.png" in msg and "line 3" in msg


def test_empty_label(images, assert_one_line_error):
    csv = _write(images / "m.csv", "path,label\nimg/a.png,x\nimg/b.png,  \n")
    with pytest.raises(DatasetError) as ei:
        read_manifest(csv)
    assert "line 3" in assert_one_line_error(ei, csv)
    rows = read_manifest(csv, require_label=False)
    assert rows[1].label is None
    no_col = _write(images / "n.csv", "file\nimg/a.png\n")
    assert read_manifest(no_col, require_label=False)[0].label is None
    with pytest.raises(DatasetError, match="no label column"):
        read_manifest(no_col)


def test_bad_split(images, assert_one_line_error):
    csv = _write(images / "m.csv", "path,label,split\nimg/a.png,x,train\nimg/b.png,y,holdout\n")
    with pytest.raises(DatasetError) as ei:
        read_manifest(csv)
    msg = assert_one_line_error(ei, csv)
    assert "line 3" in msg and "holdout" in msg


@pytest.mark.parametrize(("text", "needle"), [
    ("", "empty"),
    ("\n\n", "empty"),
    ("path,label\n", "no rows"),
    ("name,label\nimg/a.png,x\n", "no path column"),
    ("path,image,label\nimg/a.png,img/a.png,x\n", "keep one path column"),
])
def test_header_problems(images, text, needle, assert_one_line_error):
    csv = _write(images / "bad.csv", text)
    with pytest.raises(DatasetError) as ei:
        read_manifest(csv)
    assert needle in assert_one_line_error(ei, csv)


def test_missing_manifest(tmp_path):
    with pytest.raises(DatasetError, match="absent.csv"):
        read_manifest(tmp_path / "absent.csv")


def test_overlong_field_names_the_line(images, assert_one_line_error):
    csv = _write(images / "m.csv", "path,label\nimg/a.png,x\n\nimg/b.png," + "y" * 200_000 + "\nimg/c.png,z\n")
    with pytest.raises(DatasetError) as ei:
        read_manifest(csv)
    msg = assert_one_line_error(ei, csv)
    assert "line 4" in msg and "field limit" in msg


def test_one_number_written_two_ways_is_not_two_classes(images, assert_one_line_error):
    """Labels 1 and 1.0 (a column partly saved as floats) silently made two classes of one."""
    from meddx.data.sources import open_manifest

    csv = _write(images / "m.csv", "path,label\nimg/a.png,0\nimg/b.png,1\nimg/c.png,1.0\n")
    with pytest.raises(DatasetError) as ei:
        open_manifest(csv)
    assert "'1' (line 3) and '1.0' (line 4)" in assert_one_line_error(ei, csv)
    floats = _write(images / "f.csv", "path,label\nimg/a.png,0.0\nimg/b.png,1.0\n")  # one way: fine
    assert open_manifest(floats).class_names == ["0.0", "1.0"]
