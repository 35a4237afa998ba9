"""Train -> evaluate -> predict on every kind of real input, without code changes.

Short runs (1-2 epochs): these prove the pipeline reads and handles each format; the
benchmark (benchmarks/medmnist.py) is what measures accuracy.
"""

import csv
import json

import pytest

from meddx.evaluation.evaluate_run import evaluate_run
from meddx.evaluation.predict import predict_paths
from meddx.training.run import train_run

from meddx_testutils import lgg_manifest, pgbm_manifest


def _run(dataset, out, **ov):
    ov.setdefault("train.epochs", 1)
    return train_run(str(dataset), out, overrides=ov, progress=False, log=lambda *_: None)


def _check_run(run, n_classes):
    m = json.loads((run / "metrics.json").read_text())
    first = next(iter(m["operating_points"].values()))
    assert first["n_classes"] == n_classes
    auc = first["overall"].get("auc") or first["overall"]["auc_macro"]
    assert auc["value"] is not None and auc["ci_low"] <= auc["value"] <= auc["ci_high"]
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    return m


@pytest.mark.slow
@pytest.mark.parametrize("flag,n_classes", [("breastmnist", 2), ("retinamnist", 5), ("adrenalmnist3d", 2)])
def test_medmnist_grey_rgb_3d(real_data, tmp_path, flag, n_classes):
    # 3D: 2 augmented passes of the triage score instead of 8 (a third of this test's time, at training and
    # again at re-evaluation); the path is the same
    ov = {"evaluate.uncertainty_samples": 2} if flag == "adrenalmnist3d" else {}
    run = _run(real_data / "medmnist" / f"{flag}.npz", tmp_path / flag, **ov)
    m = _check_run(run, n_classes)
    assert m["n_test"] == {"breastmnist": 156, "retinamnist": 400, "adrenalmnist3d": 298}[flag]
    if flag == "adrenalmnist3d":  # R16: the flips were tried on validation and the choice saved with the plan
        from meddx.planning.plan import Plan

        plan = Plan.load(run / "plan.yaml")
        d = [d for d in plan.decisions if d.rule.startswith("R16") and d.kind == "empirical"][-1]
        assert not plan.evaluate.choose_tta and d.reads["candidate_flip_axes"] == [0, 1, 2]
        sc = d.reads["validation_score"]
        assert plan.evaluate.tta_flip_axes == ([0, 1, 2] if sc["with"] > sc["without"] else [])
    sub = evaluate_run(run, progress=False)
    again = json.loads((sub / "metrics.json").read_text())
    # re-evaluation from the checkpoint reproduces the run's own test numbers
    assert again["operating_points"]["argmax / 0.5"]["overall"]["accuracy"] == \
        m["operating_points"]["argmax / 0.5"]["overall"]["accuracy"]


@pytest.mark.slow
def test_busi_folder_rgb_mixed_sizes(real_data, tmp_path):
    run = _run(real_data / "seg" / "busi_subset", tmp_path / "busi", **{"data.input_size": [64, 64]})
    _check_run(run, 3)
    img = real_data / "seg" / "busi_subset" / "malignant" / "malignant (1).png"
    rows = predict_paths(run, img, progress=False)
    assert rows[0]["predicted"] in ("benign", "malignant", "normal")


@pytest.mark.slow
def test_lgg_tiff_manifest_grouped_split(real_data, tmp_path):
    m = lgg_manifest(real_data, tmp_path)
    run = _run(m, tmp_path / "lgg", **{"data.input_size": [64, 64]})
    _check_run(run, 2)
    with open(run / "split.csv") as f:
        rows = list(csv.DictReader(f))
    by_group = {}
    for r in rows:
        by_group.setdefault(r["group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_group.values())
    text = "".join(p.read_text(errors="ignore") for p in run.iterdir() if p.is_file() and p.suffix in
                   (".csv", ".json", ".yaml", ".md", ".jsonl"))
    # patient identifiers (the manifest's patient_id values) never reach the outputs, even inside paths
    assert "TCGA_CS_4941" not in text and "TCGA_HT_7602" not in text


@pytest.mark.slow
def test_dicom_manifest_and_series_predict(real_data, tmp_path):
    pgbm = real_data / "dicom" / "tcia_brain_tumor_progression_PGBM-001"
    m, series = pgbm_manifest(real_data, tmp_path)
    run = _run(m, tmp_path / "dcm", **{"data.input_size": [64, 64]})
    _check_run(run, 2)
    out = predict_paths(run, series["37908-T2reg-21119"], progress=False)
    assert len(out) == 24  # a 2D model predicts each slice of a series folder
    for p in run.rglob("*"):
        if p.is_file() and p.suffix in (".json", ".csv", ".md", ".html", ".yaml", ".jsonl"):
            assert "PGBM-001" not in p.read_text(errors="ignore").replace(str(pgbm), ""), p


@pytest.mark.slow
def test_nifti_volume_manifest_3d(real_data, tmp_path):
    import numpy as np

    from meddx.io import read_image

    imgs = sorted((real_data / "seg" / "msd_hippocampus_udacity" / "images").glob("*.nii.gz"))[:40]
    vols = [float((read_image(real_data / "seg" / "msd_hippocampus_udacity" / "labels" / p.name).array > 0).sum())
            for p in imgs]
    med = float(np.median(vols))
    m = tmp_path / "hip.csv"
    m.write_text("path,label\n" + "".join(f"{p},{'large' if v > med else 'small'}\n" for p, v in zip(imgs, vols)))
    run = _run(m, tmp_path / "hip", **{"data.input_size": [24, 24, 24], "train.batch_size": 8})
    _check_run(run, 2)
    out = predict_paths(run, imgs[0], progress=False)
    assert out[0]["predicted"] in ("large", "small")
