"""Every supported dataset kind opens, fingerprints and plans on the real data."""

import pytest

from meddx.data.fingerprint import compute_fingerprint
from meddx.data.sources import open_dataset
from meddx.planning.planner import make_plan
from meddx_testutils import lgg_manifest, pgbm_manifest

COUNTS = {  # train / val / test, from MANIFEST.md
    "breastmnist": (546, 78, 156), "pneumoniamnist": (4708, 524, 624), "retinamnist": (1080, 120, 400),
    "adrenalmnist3d": (1188, 98, 298), "adrenalmnist3d_64": (1188, 98, 298), "vesselmnist3d": (1335, 191, 382),
}


@pytest.mark.parametrize("flag", sorted(COUNTS))
def test_medmnist_files_open_with_official_splits(real_data, flag):
    cs = open_dataset(real_data / "medmnist" / f"{flag}.npz")
    assert cs.official_split
    assert tuple(len(cs.subset(s)) for s in ("train", "val", "test")) == COUNTS[flag]
    img = cs.load(cs.cases[0])
    if flag == "retinamnist":
        assert img.array.shape == (3, 28, 28) and cs.num_classes == 5
    elif flag.endswith("3d"):
        assert img.array.shape == (1, 28, 28, 28)
    elif flag.endswith("_64"):
        assert img.array.shape == (1, 64, 64, 64)
    else:
        assert img.array.shape == (1, 28, 28) and cs.num_classes == 2


def test_pneumonia_fingerprint_and_plan(real_data):
    cs = open_dataset(real_data / "medmnist" / "pneumoniamnist.npz")
    fp = compute_fingerprint(cs)
    assert fp["class_counts"] == {"normal": 1583, "pneumonia": 4273}
    assert fp["split_counts"]["train"] == {"normal": 1214, "pneumonia": 3494}
    assert fp["imbalance_ratio"] == pytest.approx(4273 / 1583, abs=1e-3)
    assert fp["shape_median"] == [28, 28] and fp["channels"] == {"1": 5856}
    assert 0 <= fp["intensity"]["min"] and fp["intensity"]["max"] <= 255 and fp["intensity"]["integer_valued"]
    plan = make_plan(fp, source=cs.source)
    assert plan.data.input_size == [28, 28] and plan.data.intensity == "scale255"
    adrenal = open_dataset(real_data / "medmnist" / "adrenalmnist3d.npz")
    p3 = make_plan(compute_fingerprint(adrenal), source=adrenal.source)
    assert p3.data.spatial_dims == 3 and p3.data.input_size == [28, 28, 28]
    retina = open_dataset(real_data / "medmnist" / "retinamnist.npz")
    assert make_plan(compute_fingerprint(retina), source=retina.source).data.channels == 3


def test_busi_class_folder(real_data):
    cs = open_dataset(real_data / "seg" / "busi_subset")
    # masks live beside the images; a class folder of BUSI therefore needs them filtered
    assert cs.class_names == ["benign", "malignant", "normal"]
    assert cs.class_counts() == {"benign": 30, "malignant": 30, "normal": 30}
    assert any("mask" in n for n in cs.notes)
    assert all("_mask" not in c.case_id for c in cs.cases)


def test_lgg_tiff_manifest_with_patient_groups(real_data, tmp_path):
    from meddx.data.split import apply_split, make_split

    cs = open_dataset(lgg_manifest(real_data, tmp_path))
    assert len(cs.cases) == 131 and cs.class_counts() == {"none": 91, "tumour": 40}
    assert all(c.group and "TCGA" not in c.group for c in cs.cases)  # pseudonymised
    parts = apply_split(cs, make_split(cs, seed=0))
    groups = {s: {c.group for c in parts[s]} for s in parts}
    assert not (groups["train"] & groups["test"]) and not (groups["train"] & groups["val"])
    img = cs.load(cs.cases[0])
    assert img.array.shape == (3, 256, 256)


def test_dicom_and_nifti_manifests(real_data, tmp_path):
    m, _ = pgbm_manifest(real_data, tmp_path)
    cs = open_dataset(m)
    fp = compute_fingerprint(cs)
    assert fp["n_cases"] == 48 and fp["spacing_median"] == [0.6875, 0.6875]
    assert fp["shape_median"] == [320, 260]
    hip = sorted((real_data / "seg" / "msd_hippocampus_udacity" / "images").glob("*.nii.gz"))[:30]
    m2 = tmp_path / "nifti.csv"
    m2.write_text("path,label\n" + "".join(f"{p},{'a' if i % 2 else 'b'}\n" for i, p in enumerate(hip)))
    cs2 = open_dataset(m2)
    fp2 = compute_fingerprint(cs2)
    assert fp2["spatial_dims"] == [3] and fp2["spacing_median"] == [1.0, 1.0, 1.0]
    assert make_plan(fp2, source=str(m2)).data.intensity == "image_zscore"
