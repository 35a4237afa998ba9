"""The fingerprint a plan reads holds nothing of the test split (nnU-Net fingerprints its training
set only): test cases are read for format and duplicates but add nothing to the statistics."""

import dataclasses
import json

import pytest

from meddx.data.fingerprint import compute_fingerprint
from meddx.data.sources import open_dataset
from meddx.data.split import make_split, read_split
from meddx_testutils import write_seg_pairs, write_seg_volumes

PLANNED_STATS = ("class_counts", "imbalance_ratio", "intensity", "noise")


def _without_test(cs, split):
    return dataclasses.replace(cs, cases=[c for c in cs.cases if split[c.case_id] != "test"])


def test_test_cases_add_nothing_to_the_statistics_a_plan_reads(tiny_folder):
    cs = open_dataset(str(tiny_folder))
    split = make_split(cs, seed=3)
    n_test = sum(s == "test" for s in split.values())
    fp = compute_fingerprint(cs, split=split)
    ref = compute_fingerprint(_without_test(cs, split))
    for key in PLANNED_STATS:  # the same, to the last bit, as if the test cases did not exist
        assert fp[key] == ref[key], key
    assert fp["n_cases"] == len(cs.cases) and fp["n_readable"] == len(cs.cases)  # but they were read
    assert {s: sum(c.values()) for s, c in fp["split_counts"].items()} == \
        {s: sum(v == s for v in split.values()) for s in ("train", "val", "test")}
    assert f"the {n_test} test cases" in fp["statistics_from"]
    everything = compute_fingerprint(cs)  # `meddx inspect`: every case counts
    assert sum(everything["class_counts"].values()) == len(cs.cases)
    assert everything["intensity"] != fp["intensity"] and "statistics_from" not in everything


def test_test_masks_only_say_which_labels_exist(tmp_path):
    from meddx.data.segsources import open_seg_dataset

    cs = open_seg_dataset(str(write_seg_pairs(tmp_path / "seg", n=20)))
    split = make_split(cs, seed=0)
    seg = compute_fingerprint(cs, split=split)["segmentation"]
    ref = compute_fingerprint(_without_test(cs, split))["segmentation"]
    assert seg["objects"] == ref["objects"] and seg["label_fraction"] == ref["label_fraction"]
    assert seg["empty_masks"] == ref["empty_masks"]
    assert seg["label_values"] == compute_fingerprint(cs)["segmentation"]["label_values"]


@pytest.mark.parametrize("seed", [0, 5])
def test_a_run_plans_on_the_split_it_then_trains_on(tiny_folder, tmp_path, seed):
    """The split made before planning is the one the run writes: the fingerprint's split counts match
    split.csv, and its statistics leave the test cases out."""
    from meddx.training.run import train_run

    run = train_run(str(tiny_folder), tmp_path / "r", overrides={"seed": seed, "train.epochs": 1},
                    progress=False, log=lambda *_: None)
    fp = json.loads((run / "fingerprint.json").read_text())
    split = read_split(run / "split.csv")
    assert {s: sum(c.values()) for s, c in fp["split_counts"].items()} == \
        {s: sum(v == s for v in split.values()) for s in ("train", "val", "test")}
    assert sum(fp["class_counts"].values()) == sum(v != "test" for v in split.values())


def test_stray_mask_values_are_flagged(tmp_path):
    """Two pixels of 7 in one mask of a 0/255 set make a class of their own: inspect says so."""
    import numpy as np
    from PIL import Image

    from meddx.data.segsources import open_seg_dataset

    root = write_seg_pairs(tmp_path / "seg", n=20, size=48)
    m = np.array(Image.open(root / "case003_mask.png"))
    m[0, :2] = 7
    Image.fromarray(m).save(root / "case003_mask.png")
    fp = compute_fingerprint(open_seg_dataset(str(root)))
    assert any("label_7" in f and "stray" in f for f in fp["findings"]), fp["findings"]
    clean = compute_fingerprint(open_seg_dataset(str(write_seg_pairs(tmp_path / "ok", n=20, size=48))))
    assert not any("stray" in f for f in clean["findings"])


def test_a_segmentation_datasets_hash_covers_its_masks(tmp_path):
    """The data hash read images only, so a dataset whose masks were redrawn kept the hash of the
    old one: run.json could not tell the two trainings' data apart."""
    import numpy as np
    from PIL import Image

    from meddx.data.segsources import open_seg_dataset

    root = write_seg_pairs(tmp_path / "seg", n=8)
    before = compute_fingerprint(open_seg_dataset(root))["data_hash"]
    m = root / "case003_mask.png"
    a = np.asarray(Image.open(m)).copy()
    a[:4, :4] = a.max()  # a few more foreground pixels
    Image.fromarray(a).save(m)
    after = compute_fingerprint(open_seg_dataset(root))
    assert after["data_hash"] != before and after["duplicates"]["groups"] == 0
    assert compute_fingerprint(open_seg_dataset(root))["data_hash"] == after["data_hash"]


def test_mixed_volume_sizes_are_not_said_to_be_resized_for_3d_segmentation(tmp_path):
    """3D segmentation predicts each volume on its own grid (patches, sliding window): the finding said
    they were resized to the plan's input size, as 2D images and classifiers' volumes are."""
    from meddx.data.segsources import open_seg_dataset
    from meddx_testutils import write_seg_volumes

    write_seg_volumes(tmp_path / "v", n=2, shape=(12, 14, 12), seed=0)
    write_seg_volumes(tmp_path / "w", n=2, shape=(14, 14, 12), seed=1)
    for f in (tmp_path / "w").rglob("*.nii.gz"):
        f.rename(tmp_path / "v" / f.parent.name / f.name.replace("vol", "big"))
    found = [f for f in compute_fingerprint(open_seg_dataset(tmp_path / "v"))["findings"] if "mixed image sizes" in f]
    assert found and "own grid" in found[0] and "resized" not in found[0]


def test_a_dicom_series_with_a_missing_slice_is_a_finding(real_data, tmp_path):
    """The reader flagged uneven slice positions (irregular_slices) and nothing read the flag: a series missing
    a slice trained and was measured as if whole."""
    import shutil

    src = real_data / "dicom" / "tcia_brain_tumor_progression_PGBM-001" / "11-T1post-80644"
    for cls, series in (("a", "s1"), ("b", "s2")):
        shutil.copytree(src, tmp_path / cls / series)
    (tmp_path / "b" / "s2" / "000012.dcm").unlink()
    fp = compute_fingerprint(open_dataset(tmp_path))
    gaps = [f for f in fp["findings"] if "uneven slice positions" in f]
    assert len(gaps) == 1 and gaps[0].startswith("1 DICOM volume(s)") and "b/s2" in gaps[0], fp["findings"]


def test_duplicates_that_span_the_seeded_split_are_flagged_as_leakage(tiny_folder):
    """A class folder has no split of its own: the duplicates the plan warns about are checked against
    the seeded split the run will make, not against the cases' own (absent) split."""
    import shutil

    for p in sorted((tiny_folder / "normal").glob("*.png"))[:8]:
        shutil.copy(p, p.with_name("copy_" + p.name))
    cs = open_dataset(str(tiny_folder))
    split = make_split(cs, seed=0)
    pairs = [(c.case_id, c.case_id.replace("copy_", "")) for c in cs.cases if "copy_" in c.case_id]
    crossing = sum(split[a] != split[b] for a, b in pairs)
    assert crossing > 0  # the fixture: some copies land on another side of the split than their original
    fp = compute_fingerprint(cs, split=split)
    assert fp["duplicates"]["groups"] == 8 and fp["duplicates"]["across_splits"] == crossing
    assert any(f"{crossing} group(s) span splits (leakage)" in f for f in fp["findings"])
    assert compute_fingerprint(cs)["duplicates"]["across_splits"] is None  # `meddx inspect`: no split made yet


def test_counted_findings_say_they_count_the_training_and_validation_cases(tiny_folder):
    """With a run's split (plan, train) the imbalance and empty-mask findings count train and val only;
    unqualified, "class imbalance 3.577:1" read as the dataset's 3.526:1 that `meddx inspect` gives."""
    for p in sorted((tiny_folder / "lesion").glob("*.png"))[6:]:
        p.unlink()
    cs = open_dataset(str(tiny_folder))
    split = make_split(cs, seed=0)
    n_seen = sum(s != "test" for s in split.values())
    planned = [f for f in compute_fingerprint(cs, split=split)["findings"] if f.startswith("class imbalance")]
    assert planned and planned[0].endswith(f":1 among the {n_seen} training and validation cases")
    assert [f for f in compute_fingerprint(cs)["findings"] if f.startswith("class imbalance")][0].endswith(":1")


def test_one_volume_stored_in_two_orientations_is_a_duplicate(tmp_path):
    """The same scan saved RAS and PIL (transposed and mirrored) holds other bytes, but is one volume:
    a test copy of a training scan must not pass unseen because it was re-saved another way."""
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, ornt_transform

    from meddx.data.segsources import open_seg_dataset

    root = write_seg_volumes(tmp_path / "v", n=4, shape=(14, 16, 13))
    to_pil = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt("PIL"))
    for sub in ("images", "labels"):
        src = nib.load(str(root / sub / "vol00.nii.gz"))
        nib.save(src.as_reoriented(to_pil), str(root / sub / "vol00_pil.nii.gz"))
    fp = compute_fingerprint(open_seg_dataset(root))
    assert fp["orientations"] == {"RAS": 4, "PIL": 1}
    assert fp["duplicates"]["groups"] == 1 and sorted(fp["duplicates"]["examples"][0]) == [
        "images/vol00.nii.gz", "images/vol00_pil.nii.gz"]
