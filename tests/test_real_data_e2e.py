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


# Every command in one subprocess (one start of torch), driven as `meddx ARGS...`; then the API in-process,
# with the logging `meddx serve` sets up. Its stdout and stderr are what a user or a log collector sees.
_DRIVER = r"""
import json, logging, sys
from meddx.cli import main

cmds, run, scan = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
for args in cmds:
    sys.argv = ["meddx", *args]
    try:
        main()
    except SystemExit as e:
        if e.code:
            raise
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
from pathlib import Path
from fastapi.testclient import TestClient
from meddx.deploy.server import create_app

key = {"X-API-Key": "phi-test-key-0123"}
client = TestClient(create_app(run, api_key=key["X-API-Key"]))
r = client.post("/v1/predict", files={"file": ("scan.dcm", Path(scan).read_bytes())}, headers=key)
assert r.status_code == 200, r.text
print(r.text)
print(client.get("/v1/model", headers=key).text)
"""


@pytest.mark.slow
def test_dicom_identifiers_never_reach_outputs_or_the_console(real_data, tmp_path):
    """PGBM-001 slices in patient folders named by a manifest's patient_id, through inspect, train,
    evaluate, predict (CSV and JSON), explain, export and the API: no DICOM identifier (name, ID,
    accession number, study/series/instance UIDs, dates) and no patient_id value is in any file written
    or on stdout/stderr. (Only the inputs' own paths are echoed by predict; these hold no identifier.)"""
    import subprocess
    import sys

    import pydicom

    src = real_data / "dicom" / "tcia_brain_tumor_progression_PGBM-001"
    pids = [f"MRN{4711000 + k}" for k in range(6)]
    rows, used = ["path,label,patient_id"], []
    for label, series in (("T1post", "11-T1post-80644"), ("FLAIR", "35623-FLAIRreg-79237")):
        for i, f in enumerate(sorted((src / series).glob("*.dcm"))[::2]):
            pid = pids[i % len(pids)]
            (tmp_path / "data" / pid).mkdir(parents=True, exist_ok=True)
            (tmp_path / "data" / pid / f"{label}_{f.name}").symlink_to(f)
            rows.append(f"{pid}/{label}_{f.name},{label},{pid}")
            used.append(f)
    man = tmp_path / "data" / "cases.csv"
    man.write_text("\n".join(rows) + "\n")
    new = tmp_path / "new"
    new.mkdir()
    for f in (src / "37908-T2reg-21119" / "000011.dcm", src / "11-T1post-80644" / "000013.dcm"):
        (new / f"{f.parent.name[:5]}.dcm").symlink_to(f)
    used += [f.resolve() for f in new.iterdir()]

    idents = set(pids)
    tags = ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "AccessionNumber", "StudyID",
            "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID", "InstitutionName",
            "ReferringPhysicianName", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")
    for f in used:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for t in tags:
            v = str(ds.get(t) or "")
            if len(v) >= 4:
                idents |= {v, v.replace("^", " ")}
                if t.endswith("Date") and len(v) == 8:
                    idents.add(f"{v[:4]}-{v[4:6]}-{v[6:]}")
    assert {"PGBM-001", "5686274134839343", "19920402"} <= idents  # what the check below looks for

    run, out = tmp_path / "run", tmp_path / "out"
    cmds = [["inspect", man, "--json", out / "fingerprint.json"],
            ["train", man, "--out", run, "--epochs", "1", "--image-size", "32"],
            ["evaluate", run], ["evaluate", run, man],
            ["predict", run, new, "--out", out / "p.csv"], ["predict", run, new, "--out", out / "p.json"],
            ["explain", run, new / "11-T1.dcm", "--out", out / "explain"], ["export", run, "--out", out / "bundle"]]
    cmds = [[str(a) for a in c] + (["--no-progress"] if c[0] != "export" else []) for c in cmds]
    out.mkdir()
    r = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps(cmds), str(run), str(new / "37908.dcm")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert '"model_version"' in r.stdout and "POST /v1/predict 200" in r.stderr
    written = [p for d in (run, out) for p in d.rglob("*") if p.is_file()]
    assert {"split.csv", "log.jsonl", "metrics.json", "predictions.csv", "report.html", "model_card.md",
            "run.json", "p.csv", "p.json", "model.onnx"} <= {p.name for p in written}
    assert any("evaluations" in p.parts for p in written) and any(p.suffix == ".png" for p in
                                                                   (out / "explain").iterdir())
    for where, blob in [("stdout", r.stdout.encode()), ("stderr", r.stderr.encode())] + \
                       [(str(p), p.read_bytes()) for p in written]:
        found = [v for v in idents if v.encode() in blob]
        assert not found, (where, found)
