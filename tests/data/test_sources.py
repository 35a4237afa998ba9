"""Opening generated MedMNIST-style npz files: edge cases the official files do not have."""

import numpy as np
import pytest

from meddx.data.sources import open_dataset
from meddx.data.split import apply_split, make_split
from meddx.errors import DatasetError


def _npz(path, n=(20, 6, 6), shape=(8, 8)):
    rng = np.random.default_rng(0)
    arrays = {}
    for s, k in zip(("train", "val", "test"), n):
        arrays[f"{s}_images"] = rng.integers(0, 255, (k, *shape), dtype=np.uint8)
        arrays[f"{s}_labels"] = (np.arange(k) % 2).reshape(k, 1)
    np.savez(path, **arrays)
    return path


def _one_line(err, path):
    msg = str(err)
    assert path.name in msg and "Fix:" in msg and "\n" not in msg, msg
    return msg


def test_empty_val_split_is_carved_from_train(tmp_path):
    cs = open_dataset(_npz(tmp_path / "emptyval.npz", n=(20, 0, 6)))
    assert cs.num_classes == 2 and len(cs.subset("val")) == 0
    parts = apply_split(cs, make_split(cs, seed=0))
    assert len(parts["val"]) > 0 and len(parts["test"]) == 6


def test_empty_test_split_is_a_clear_error(tmp_path):
    p = _npz(tmp_path / "emptytest.npz", n=(20, 6, 0))
    with pytest.raises(DatasetError) as ei:
        open_dataset(p)
    assert "test split is empty" in _one_line(ei.value, p)


@pytest.mark.parametrize(("trailing", "channels"), [(1, 1), (3, 3), (4, 3)])
def test_channels_last_npz_is_2d(tmp_path, trailing, channels):
    p = _npz(tmp_path / f"c{trailing}.npz", shape=(8, 8, trailing))
    cs = open_dataset(p)
    img = cs.load(cs.cases[0])
    assert img.array.shape == (channels, 8, 8)
    with np.load(p) as z:  # channel k is the file's colour k; an alpha channel is dropped
        np.testing.assert_array_equal(img.array, np.moveaxis(z["train_images"][0][..., :channels], -1, 0))


def test_volume_npz_stays_3d(tmp_path):
    cs = open_dataset(_npz(tmp_path / "vol.npz", shape=(6, 8, 8)))
    assert cs.load(cs.cases[0]).array.shape == (1, 6, 8, 8)


def test_cases_carved_into_val_still_load_their_own_images(tmp_path):
    """The loader looked the carved cases up in the (empty) val array: IndexError in `meddx train`."""
    p = _npz(tmp_path / "emptyval.npz", n=(20, 0, 6))
    cs = open_dataset(p)
    parts = apply_split(cs, make_split(cs, seed=0))
    with np.load(p) as z:
        for c in parts["val"]:
            np.testing.assert_array_equal(cs.load(c).array[0], z["train_images"][c.index])


def test_a_class_folder_skips_masks_beside_their_images_only(tmp_path):
    """Training and predict take one rule: ``NAME_mask.png`` beside ``NAME.png`` is a mask, not a case; an
    image that merely has such a name (no image of its stem beside it) is a case. Training used to drop
    every ``*_mask*`` file, so such an image vanished from the dataset without a word."""
    from meddx_testutils import write_png

    from meddx.evaluation.predict import collect_inputs

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        for i in range(3):
            write_png(tmp_path / cls / f"{i}.png", rng.integers(0, 255, (16, 16), dtype=np.uint8))
            write_png(tmp_path / cls / f"{i}_mask.png", (rng.random((16, 16)) > 0.5).astype(np.uint8) * 255)
    write_png(tmp_path / "b" / "view_seg.png", rng.integers(0, 255, (16, 16), dtype=np.uint8))  # no 'view.png'
    cs = open_dataset(tmp_path)
    assert sorted(c.case_id for c in cs.cases) == ["a/0.png", "a/1.png", "a/2.png", "b/0.png", "b/1.png", "b/2.png",
                                                   "b/view_seg.png"]
    assert any("ignored 6 mask file(s) beside their images" in n for n in cs.notes)
    assert sorted(str(p.relative_to(tmp_path)) for p in collect_inputs(tmp_path, 2)) == \
        sorted(c.case_id for c in cs.cases)


def test_files_a_class_folder_cannot_read_are_named_in_a_note(tmp_path):
    """A GIF or a text file in a class folder was left out without a word."""
    from meddx_testutils import write_png

    for cls in ("a", "b"):
        for i in range(3):
            write_png(tmp_path / cls / f"{i}.png", np.full((8, 8), 40 * i, np.uint8))
    (tmp_path / "a" / "scan.gif").write_bytes(b"GIF89a")
    (tmp_path / "b" / "notes.txt").write_text("x")
    (tmp_path / "b" / ".DS_Store").write_bytes(b"\0")
    cs = open_dataset(tmp_path)
    assert len(cs) == 6
    assert any(n.startswith("skipped 2 file(s) that are not images meddx reads (.gif: 1, .txt: 1; e.g. a/scan.gif)")
               for n in cs.notes), cs.notes

