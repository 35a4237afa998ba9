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


def _dicom_slices(real_data, root, patients: dict, tags=("PatientID",), n=4):
    """Slices of the TCIA series written into class folders, ``patients`` = {class: [patient, ...]};
    each patient's ``n`` slices carry its value in every tag of ``tags``; other identifying tags are
    one value for all."""
    import warnings

    import zlib

    import pydicom

    src = sorted((real_data / "dicom" / "tcia_brain_tumor_progression_PGBM-001" / "11-T1post-80644").iterdir())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cls, ids in patients.items():
            (root / cls).mkdir(parents=True, exist_ok=True)
            for j, pid in enumerate(ids):
                for i in range(n):
                    ds = pydicom.dcmread(src[i])
                    ds.PatientID = ds.StudyInstanceUID = ds.SeriesInstanceUID = ""
                    for t in tags:
                        setattr(ds, t, pid if t == "PatientID" else f"1.2.826.0.1.{zlib.crc32(pid.encode())}")
                    ds.save_as(root / cls / f"img_{j}_{i}.dcm", enforce_file_format=False)
    return root


def test_dicom_slices_of_one_patient_stay_on_one_side_of_the_split(real_data, tmp_path):
    """A class folder of DICOM slices made each slice a case, so one scan's slices fell into train and
    test alike; the header's patient (else study, else series) now groups them, under a pseudonym."""
    from meddx.data.split import make_split

    ids = {"lesion": [f"MRN{100 + i}" for i in range(5)], "normal": [f"MRN{200 + i}" for i in range(5)]}
    cs = open_dataset(_dicom_slices(real_data, tmp_path / "f", ids))
    assert len(cs.cases) == 40 and len({c.group for c in cs.cases}) == 10
    assert any("by their PatientID into 10 group(s)" in n for n in cs.notes)
    text = " ".join([*cs.notes, *(c.case_id for c in cs.cases), *(c.group for c in cs.cases)])
    assert not any(pid in text for pids in ids.values() for pid in pids)
    for seed in range(3):
        split = make_split(cs, seed=seed)
        for g in {c.group for c in cs.cases}:
            assert len({split[c.case_id] for c in cs.cases if c.group == g}) == 1
    # an anonymised PatientID (blank) leaves the study to group by
    cs = open_dataset(_dicom_slices(real_data, tmp_path / "s", ids, tags=("StudyInstanceUID",)))
    assert len({c.group for c in cs.cases}) == 10 and any("StudyInstanceUID" in n for n in cs.notes)
    # nothing tells the slices apart: no groups, no note
    cs = open_dataset(_dicom_slices(real_data, tmp_path / "n", ids, tags=()))
    assert {c.group for c in cs.cases} == {None} and not any("grouped" in n for n in cs.notes)
    assert not cs.findings
    # too few patients to split by (2 of one class): ungrouped, and a finding, which train prints, says so
    few = {"lesion": ids["lesion"][:2], "normal": ids["normal"]}
    cs = open_dataset(_dicom_slices(real_data, tmp_path / "few", few))
    assert {c.group for c in cs.cases} == {None}
    assert "too few to split by (class 'lesion' 2" in compute_fingerprint(cs)["findings"][0]


def test_a_manifests_patient_column_is_the_users_word_over_dicom_headers(real_data, tmp_path):
    ids = {"lesion": ["MRN1", "MRN2", "MRN3"], "normal": ["MRN4", "MRN5", "MRN6"]}
    root = _dicom_slices(real_data, tmp_path / "f", ids, n=2)
    files = sorted(root.rglob("*.dcm"))
    (tmp_path / "m.csv").write_text("path,label\n" + "".join(f"{f},{f.parent.name}\n" for f in files))
    assert len({c.group for c in open_dataset(tmp_path / "m.csv").cases}) == 6
    (tmp_path / "p.csv").write_text("path,label,patient_id\n" + "".join(f"{f},{f.parent.name},P{i % 4}\n"
                                                                         for i, f in enumerate(files)))
    cs = open_dataset(tmp_path / "p.csv")
    assert len({c.group for c in cs.cases}) == 4 and not any("grouped" in n for n in cs.notes)
