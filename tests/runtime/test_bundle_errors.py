"""Bad bundles give one-line errors naming the file and the fix (missing file, wrong opset,
tampered weights, damaged specs); the runtime CLI exits with code 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from deploy_testutils import make_run
from meddx.deploy.export import export_run
from meddx.runtime import BundleError, load, verify
from meddx.runtime.spec import sha256_file


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("bundle")
    return export_run(make_run(tmp / "run"), tmp / "bundle")


@pytest.fixture
def copy(bundle, tmp_path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(bundle, dst)
    return dst


def _resum(b: Path, name: str) -> None:
    man = json.loads((b / "bundle.json").read_text())
    man["files"][name] = sha256_file(b / name)
    (b / "bundle.json").write_text(json.dumps(man))


def _one_line(e: BundleError) -> str:
    s = str(e)
    assert "\n" not in s and "Fix:" in s
    return s


def test_intact_bundle_loads(bundle):
    b = load(bundle)
    assert b.task == "classify" and b.labels.class_names == ["normal", "pneumonia"]
    assert b.thresholds.temperature == pytest.approx(1.7) and b.thresholds.threshold == pytest.approx(0.42)
    p = b.predict_proba(np.zeros((3, 1, 28, 28), np.float32))
    assert p.shape == (3, 2) and np.allclose(p.sum(1), 1, atol=1e-6)


def test_a_tie_at_one_half_is_the_positive_class_as_evaluated(bundle):
    """meddx's metrics, predictions.csv and `meddx predict` call p1 = 0.5 class 1; the edge runtime too."""
    b = load(bundle)
    pred = b._classify("x.png", np.array([0.5, 0.5]))
    assert pred.label == "pneumonia" and pred.confidence == pytest.approx(0.5)
    assert b._classify("x.png", np.array([0.5001, 0.4999])).label == "normal"


@pytest.mark.parametrize("name", ["model.onnx", "preprocess.json", "labels.json", "thresholds.json", "model_card.md"])
def test_missing_file(copy, name):
    (copy / name).unlink()
    with pytest.raises(BundleError) as e:
        load(copy)
    msg = _one_line(e.value)
    assert name in msg and "missing" in msg


def test_missing_manifest(copy):
    (copy / "bundle.json").unlink()
    with pytest.raises(BundleError, match="has no bundle.json"):
        load(copy)


def test_tampered_weights_fail_the_checksum(copy):
    m = onnx.load(str(copy / "model.onnx"))
    w = next(i for i in m.graph.initializer if len(i.dims) == 4)
    arr = onnx.numpy_helper.to_array(w).copy()
    arr.flat[0] += 0.5
    w.CopyFrom(onnx.numpy_helper.from_array(arr, w.name))
    onnx.save(m, str(copy / "model.onnx"))
    with pytest.raises(BundleError) as e:
        load(copy)
    msg = _one_line(e.value)
    assert "model.onnx" in msg and "SHA-256" in msg


def test_edited_spec_fails_the_checksum(copy):
    spec = json.loads((copy / "preprocess.json").read_text())
    spec["mean"] = 0.0
    (copy / "preprocess.json").write_text(json.dumps(spec))
    with pytest.raises(BundleError, match="preprocess.json does not match its SHA-256"):
        verify(copy)


def test_truncated_model(copy):
    data = (copy / "model.onnx").read_bytes()
    (copy / "model.onnx").write_bytes(data[: len(data) // 2])
    _resum(copy, "model.onnx")  # a consistent but broken bundle: onnxruntime must refuse it
    with pytest.raises(BundleError, match="onnxruntime cannot load the model"):
        load(copy)


def test_opset_newer_than_onnxruntime(copy):
    m = onnx.load(str(copy / "model.onnx"))
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = 99
    onnx.save(m, str(copy / "model.onnx"))
    _resum(copy, "model.onnx")
    with pytest.raises(BundleError) as e:
        load(copy)
    msg = _one_line(e.value)
    assert "opset" in msg and "model.onnx" in msg


def test_opset_too_old_in_manifest(copy):
    man = json.loads((copy / "bundle.json").read_text())
    man["model"]["opset"] = 9
    (copy / "bundle.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match="opset 9; this runtime needs 13"):
        load(copy)


def test_other_format_version(copy):
    man = json.loads((copy / "bundle.json").read_text())
    man["version"] = 0
    (copy / "bundle.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match="format version 0 is not 1, 2 or 3, the versions this runtime reads"):
        load(copy)


def test_only_a_bundle_that_turns_volumes_is_written_as_format_2(tmp_path):
    """R20's orientation is a step a version-1 runtime would skip without a word, so a bundle that names
    one says version 2 (which such a runtime refuses, naming the upgrade); every other bundle stays 1 and
    still runs there. This runtime reads both."""
    from deploy_testutils import make_seg_run

    from meddx.deploy.export import export_run
    from meddx.planning.plan import Plan

    runs = {k: make_seg_run(tmp_path / k, patch=(16, 16, 16), tta=(), postprocess=()) for k in ("plain", "turned")}
    plan = Plan.load(runs["turned"] / "plan.yaml")
    plan.data.orientation = ["R", "A", "S"]
    plan.save(runs["turned"] / "plan.yaml")
    for k, version in (("plain", 1), ("turned", 2)):
        b = export_run(runs[k], tmp_path / f"{k}_bundle")
        assert json.loads((b / "bundle.json").read_text())["version"] == version
        pre = json.loads((b / "preprocess.json").read_text())
        assert pre["format"].endswith(f"/{version}") and pre["orientation"] == (None if version == 1 else ["R", "A", "S"])
        assert load(b).preprocessing.orientation == pre["orientation"]


def test_a_bundle_that_filters_shrinking_volumes_is_format_3(tmp_path):
    """R3's antialias_3d is another step an older runtime would skip without a word (it would sample a
    volume training filtered): such a bundle says version 3; a 2D or plain 3D bundle does not."""
    import nibabel as nib

    from meddx.planning.plan import Plan

    runs = {k: make_run(tmp_path / k, dims=3, size=16) for k in ("plain", "filtered")}
    plan = Plan.load(runs["filtered"] / "plan.yaml")
    plan.data.antialias_3d = True
    plan.save(runs["filtered"] / "plan.yaml")
    vol = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((64, 48, 40)).astype(np.float32), np.eye(4)), str(vol))
    probs = {}
    for k, version in (("plain", 1), ("filtered", 3)):
        b = load(export_run(runs[k], tmp_path / f"{k}_bundle"))
        assert json.loads((b.path / "bundle.json").read_text())["version"] == version
        assert b.preprocessing.antialias_3d is (version == 3)
        probs[k] = b.predict(vol).probabilities
    assert probs["plain"] != probs["filtered"]  # the two preprocessings differ on a shrinking volume


@pytest.mark.parametrize("field, value, needle", [("version", "2a", "format version '2a'"),
                                                  ("version", None, "format version None"),
                                                  ("version", 1.5, "format version 1.5"),
                                                  ("model", "fp32", "does not state the model's ONNX opset")])
def test_damaged_manifest_fields_are_one_line(copy, field, value, needle):
    """bundle.json is the one file without a checksum: a version of "2a" or null was a ValueError or
    TypeError traceback, and a "model" that is not an object an AttributeError."""
    man = json.loads((copy / "bundle.json").read_text())
    man[field] = value
    (copy / "bundle.json").write_text(json.dumps(man))
    with pytest.raises(BundleError) as e:
        load(copy)
    assert needle in _one_line(e.value) and "bundle.json" in str(e.value)


def test_a_newer_format_version_says_to_upgrade(copy):
    man = json.loads((copy / "bundle.json").read_text())
    man["version"] = 99
    (copy / "bundle.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match="format version 99 .* Fix: install the newer meddx"):
        load(copy)


def test_damaged_json_spec(copy):
    (copy / "labels.json").write_text("{not json")
    _resum(copy, "labels.json")
    with pytest.raises(BundleError, match="labels is not valid JSON"):
        load(copy)


def test_not_a_folder(tmp_path):
    with pytest.raises(BundleError, match="no such bundle folder"):
        load(tmp_path / "nope")


def test_bad_image_names_the_file(bundle, tmp_path):
    f = tmp_path / "broken.png"
    f.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    from meddx.errors import MeddxError

    with pytest.raises(MeddxError) as e:
        load(bundle).predict(f)
    assert "broken.png" in str(e.value)


def test_runtime_cli_exits_2_with_one_line(copy, tmp_path):
    (copy / "labels.json").unlink()
    proc = subprocess.run([sys.executable, "-m", "meddx.runtime", str(copy), str(tmp_path / "x.png")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and "labels.json" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_runtime_cli_masks_folder_that_is_a_file(tmp_path):
    """--masks onto an existing file was a FileExistsError traceback."""
    from deploy_testutils import make_seg_run
    from meddx_testutils import write_png

    b = export_run(make_seg_run(tmp_path / "seg", dims=2, size=32, labels=(0, 1), names=("background", "lesion"),
                                tta=(), postprocess=()), tmp_path / "bundle")
    img = tmp_path / "x.png"
    write_png(img, (np.arange(32 * 32) % 251).astype(np.uint8).reshape(32, 32))
    (tmp_path / "taken").write_text("x")
    proc = subprocess.run([sys.executable, "-m", "meddx.runtime", str(b), str(img), "--masks", str(tmp_path / "taken")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "taken" in proc.stderr, proc.stderr


def test_runtime_cli_leaves_no_masks_when_an_input_fails_part_way(tmp_path):
    """A damaged second file left the first file's mask in --masks (and its JSON line on stdout), a
    folder that looked finished; `meddx predict` removes what the failing call wrote, the runtime now too."""
    from deploy_testutils import make_seg_run
    from meddx_testutils import write_png

    b = export_run(make_seg_run(tmp_path / "seg", dims=2, size=32, labels=(0, 1), names=("background", "lesion"),
                                tta=(), postprocess=()), tmp_path / "bundle")
    good, bad = tmp_path / "a.png", tmp_path / "b.png"
    write_png(good, (np.arange(32 * 32) % 251).astype(np.uint8).reshape(32, 32))
    bad.write_bytes(b"\x89PNG\r\n\x1a\n damaged")
    old = tmp_path / "kept"
    old.mkdir()
    (old / "earlier_mask.png").write_bytes(b"an earlier call's output")
    for masks in (tmp_path / "new", old):
        proc = subprocess.run([sys.executable, "-m", "meddx.runtime", str(b), str(good), str(bad), "--masks",
                               str(masks)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and "b.png" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == "", proc.stdout
    assert not (tmp_path / "new").exists()
    assert [f.name for f in old.iterdir()] == ["earlier_mask.png"]
    proc = subprocess.run([sys.executable, "-m", "meddx.runtime", str(b), str(good), "--masks", str(old)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and Path(json.loads(proc.stdout)["mask_file"]) == old / "a_mask.png"


@pytest.mark.parametrize("args, needle", [(["--threads", "0"], "--threads"), (["--threads", "-2"], "--threads"),
                                          (["--bogus"], "--bogus"), ([], "files")])
def test_runtime_cli_usage_mistakes_are_one_line(bundle, args, needle):
    """argparse's three-line usage block (and --threads -2 taken without a word) became one error line."""
    files = [] if needle == "files" else [str(bundle / "none.png")]
    proc = subprocess.run([sys.executable, "-m", "meddx.runtime", str(bundle), *files, *args], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and needle in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Fix:" in proc.stderr, proc.stderr


def test_runtime_masks_for_a_classifier_and_ctrl_c_are_one_line(bundle, tmp_path, capsys, monkeypatch):
    """--masks with a classifier bundle was ignored without a word; Ctrl-C printed a traceback."""
    import meddx.runtime
    from meddx.runtime.__main__ import main

    assert main([str(bundle), str(tmp_path / "x.png"), "--masks", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "--masks is for segmentation bundles" in err and "leave --masks out" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m").exists()

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(meddx.runtime, "load", interrupted)
    assert main([str(bundle), str(tmp_path / "x.png")]) == 130
    assert capsys.readouterr().err == "interrupted\n"
