"""The runtime imports and predicts in a process where ``import torch`` fails, and agrees with torch.

The child process gets a ``sitecustomize`` that puts an import blocker for torch (and
MONAI, which is torch) first on ``sys.meta_path``. It loads bundles exported from runs,
predicts real PNG, DICOM and NIfTI files, and saves its outputs; this process computes
the same predictions with the torch models and meddx's training-side preprocessing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from deploy_testutils import make_run, make_seg_run
from meddx.data.preprocess import PreprocessSpec, prepare, standardise
from meddx.deploy.export import export_run
from meddx.evaluation.calibration import apply_temperature
from meddx.io import read_image
from meddx.training.engine import predict_proba
from meddx.training.run import load_run

BLOCKER = textwrap.dedent("""
    import sys

    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "monai", "torchvision"):
                raise ImportError(f"{name} is blocked in this test: the runtime must not need it")
            return None

    sys.meta_path.insert(0, _NoTorch())
""")

CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    try:
        import torch  # noqa: F401
        sys.exit("torch imported although blocked")
    except ImportError:
        pass
    import meddx.runtime as rt

    jobs = json.loads(sys.argv[1])
    out = {}
    for bundle, files in jobs.items():
        b = rt.load(bundle)
        res = []
        for f in files:
            p = b.predict(f)
            if b.task == "segment":
                img, x = b.prepare(f)
                npy = f"{sys.argv[2]}/{len(out)}_{len(res)}.npz"
                np.savez(npy, mask=p.mask, proba=b.segment_proba(x))
                res.append({"npz": npy, **p.to_dict()})
            else:
                res.append(p.to_dict())
        out[bundle] = res
    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "monai", "sklearn", "matplotlib", "scipy"})
    print(json.dumps({"results": out, "heavy_modules": heavy}))
""")


def run_blocked(tmp_path: Path, jobs: dict, *args: str) -> dict:
    site = tmp_path / "blocker"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(jobs), str(tmp_path), *args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def torch_classify(run: Path, f: Path) -> np.ndarray:
    plan, model = load_run(run)
    spec = PreprocessSpec.from_plan(plan.data)
    x = standardise(torch.from_numpy(prepare(read_image(f), spec, str(f)))[None], spec)
    return predict_proba(model, x, 1, torch.device("cpu"), plan.evaluate.tta_flip_axes)[0]


@pytest.mark.slow
def test_runtime_predicts_without_torch_and_matches_torch(real_data, tmp_path):
    dcm = real_data / "dicom" / "pydicom_data_selection"
    hip = sorted((real_data / "seg" / "msd_hippocampus_udacity" / "images").iterdir())[:2]
    pngs = [real_data / "seg" / "busi_subset" / "benign" / "benign (1).png",
            real_data / "det" / "nih_chestxray14_bbox" / "thumbnails" / "00001369_000.png"]
    runs = {
        "cls2d": (make_run(tmp_path / "cls2d", tta=(1,)), pngs + [dcm / "693_UNCR.dcm", dcm / "gdcm-US-ALOKA-16.dcm"]),
        "cls3d": (make_run(tmp_path / "cls3d", dims=3, size=16, intensity="image_zscore", mean=0.0, std=1.0,
                           temperature=None, threshold=None, classes=("a", "b", "c")),
                  hip + [real_data / "dicom" / "tcia_brain_tumor_progression_PGBM-001" / "35623-FLAIRreg-79237"]),
        "seg3d": (make_seg_run(tmp_path / "seg3d"), hip),
    }
    bundles = {k: export_run(r, tmp_path / f"{k}_bundle") for k, (r, _) in runs.items()}
    jobs = {str(bundles[k]): [str(f) for f in files] for k, (_, files) in runs.items()}
    got = run_blocked(tmp_path, jobs)
    assert got["heavy_modules"] == ["scipy"]  # scipy only for the segmenter's post-processing

    for key in ("cls2d", "cls3d"):
        run, files = runs[key]
        plan, _ = load_run(run)
        names = plan.data.class_names
        t = json.loads((run / "calibration.json").read_text())["temperature"] if (run / "calibration.json").exists() \
            else 1.0
        for f, r in zip(files, got["results"][str(bundles[key])]):
            ref = torch_classify(run, f)
            p = np.array([r["probabilities"][n] for n in names])
            assert np.abs(p - ref).max() < 1e-4, (key, f.name, p, ref)
            assert r["label"] == names[int(ref.argmax())]
            cal = apply_temperature(ref[None], t)[0]
            assert abs(r["confidence"] - cal.max()) < 1e-4
    thr = got["results"][str(bundles["cls2d"])][0]
    assert thr["threshold"] == 0.42 and thr["label_at_threshold"] in ("normal", "pneumonia")

    from meddx.evaluation.seg_infer import predict_case
    from meddx.training.seg_engine import segment_probs
    from meddx.data.segprep import prepare_image
    from meddx.transforms.postprocess import postprocess

    run, files = runs["seg3d"]
    plan, model = load_run(run)
    for f, r in zip(files, got["results"][str(bundles["seg3d"])]):
        img = read_image(f)
        child = np.load(r["npz"])
        ref_p = segment_probs(model, torch.from_numpy(prepare_image(plan, img, str(f))), plan).numpy()
        assert np.abs(child["proba"] - ref_p).max() < 1e-4
        idx = postprocess(predict_case(model, plan, img, str(f)), plan.segment.postprocess, 3, plan.segment.min_size)
        ref_mask = np.asarray(plan.segment.label_values)[idx]
        assert child["mask"].shape == ref_mask.shape == img.spatial_shape
        assert (child["mask"] == ref_mask).mean() > 0.999  # argmax ties at 1e-6 may differ
        assert r["counts"]["anterior"] == int((child["mask"] == 1).sum())


@pytest.mark.slow
def test_runtime_cli_writes_masks_in_input_geometry(real_data, tmp_path):
    f = sorted((real_data / "seg" / "msd_hippocampus_udacity" / "images").iterdir())[0]
    b = export_run(make_seg_run(tmp_path / "seg", tta=(), postprocess=()), tmp_path / "bundle")
    site = tmp_path / "blocker"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-m", "meddx.runtime", str(b), str(f), "--masks", str(tmp_path / "m")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout.splitlines()[0])
    out, src = nib.load(row["mask_file"]), nib.load(str(f))
    assert out.shape == src.shape and np.allclose(out.affine, src.affine)
    assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1, 2}


def test_runtime_cli_reads_a_folder_as_meddx_predict_does(real_data, tmp_path):
    """A folder argument: every image under it, sub-folders too, the mask beside its image skipped
    (with a note), each input once; an empty folder: one line, exit 2. Without torch."""
    import shutil

    busi = real_data / "seg" / "busi_subset" / "benign"
    inp = tmp_path / "in"
    (inp / "sub").mkdir(parents=True)
    shutil.copy(busi / "benign (1).png", inp / "a.png")
    shutil.copy(busi / "benign (1)_mask.png", inp / "a_mask.png")
    shutil.copy(busi / "benign (2).png", inp / "sub" / "b.png")
    (inp / "notes.txt").write_text("not an image")
    b = export_run(make_run(tmp_path / "cls2d"), tmp_path / "bundle")
    site = tmp_path / "blocker"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = [sys.executable, "-m", "meddx.runtime", str(b)]
    proc = subprocess.run([*run, str(inp)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(Path(r["file"]).name for r in rows) == ["a.png", "b.png"]
    assert "skipped 1 mask file(s)" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([*run, str(tmp_path / "empty")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no readable images in the folder" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""
