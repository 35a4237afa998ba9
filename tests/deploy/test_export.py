"""``meddx export``: registry models round-trip to ONNX (outputs equal torch to 1e-4), the bundle
holds every file with its checksum, and FLOPs counted on the graph equal torch's count."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deploy_testutils import make_run, make_seg_run
from meddx.deploy.export import export_run
from meddx.deploy.flops import onnx_flops, torch_flops
from meddx.errors import MeddxError
from meddx.runtime import load
from meddx.runtime.spec import CHECKED_FILES, sha256_file
from meddx.training.run import load_run

CASES = {
    "small_cnn_2d": dict(),
    "resnet18_2d": dict(model="resnet18"),
    "mobilenet_v2_2d_rgb_tta": dict(model="mobilenet_v2", channels=3, tta=(1,)),
    "small_cnn_3d": dict(dims=3, size=16, classes=("a", "b", "c"), threshold=None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_classifier_round_trip(case, tmp_path):
    run = make_run(tmp_path / "run", **CASES[case])
    b = export_run(run, tmp_path / "bundle")
    man = json.loads((b / "bundle.json").read_text())
    assert sorted(man["files"]) == sorted(CHECKED_FILES)
    assert all(man["files"][n] == sha256_file(b / n) for n in CHECKED_FILES)
    assert man["export_check"]["max_abs_prob_diff"] < 1e-4

    plan, model = load_run(run)
    bundle = load(b)
    shape = (plan.data.channels, *plan.data.input_size)
    x = np.random.default_rng(1).standard_normal((5, *shape)).astype(np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    assert np.abs(bundle.logits(x) - logits).max() < 1e-4 * max(1.0, float(np.abs(logits).max()))
    assert man["model"]["flops"] == onnx_flops(b / "model.onnx")["flops"] == torch_flops(model, torch.zeros(1, *shape))
    assert man["model"]["precision"] == "fp32" and man["model"]["opset"] == 17
    pre = json.loads((b / "preprocess.json").read_text())
    assert pre["mean"] == plan.data.norm_mean and pre["size"] == plan.data.input_size
    assert pre["tta_flip_axes"] == list(plan.evaluate.tta_flip_axes)
    assert json.loads((b / "labels.json").read_text())["class_names"] == plan.data.class_names
    card = (b / "model_card.md").read_text()
    assert "T = 1.7" in card and "From the training run" in card


def test_segmenter_round_trip(tmp_path):
    run = make_seg_run(tmp_path / "run")
    b = export_run(run, tmp_path / "bundle")
    plan, model = load_run(run)
    bundle = load(b)
    assert bundle.preprocessing.size is None and bundle.preprocessing.roi_size == [24, 32, 24]
    assert bundle.preprocessing.postprocess == ["largest_component"]
    assert bundle.labels.label_values == [0, 1, 2] and bundle.thresholds.temperature == 1.0
    assert "segmentation" in bundle.thresholds.temperature_source
    x = np.random.default_rng(0).standard_normal((2, 1, 24, 32, 24)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(bundle.logits(x) - ref).max() < 1e-4


def test_run_without_calibration_says_t_is_one(tmp_path):
    run = make_run(tmp_path / "run", temperature=None, threshold=None)
    b = load(export_run(run, tmp_path / "bundle"))
    assert b.thresholds.temperature == 1.0 and "no calibration.json" in b.thresholds.temperature_source
    p = b.predict_proba(np.zeros((1, 1, 28, 28), np.float32))[0]
    assert b._classify("x", p).confidence == pytest.approx(float(p.max()), abs=1e-6)


def test_calibrated_threshold_is_the_same_operating_point(tmp_path):
    b = load(export_run(make_run(tmp_path / "run", temperature=2.5, threshold=0.3), tmp_path / "bundle"))
    t = b.thresholds
    assert t.positive_class == "pneumonia" and t.threshold == pytest.approx(0.3)
    from meddx.evaluation.calibration import apply_temperature

    for p1 in (0.29, 0.31):
        cal = apply_temperature(np.array([[1 - p1, p1]]), 2.5)[0, 1]
        assert (p1 >= t.threshold) == (cal >= t.calibrated_threshold)


def test_existing_output_is_refused_and_nothing_half_written(tmp_path):
    run = make_run(tmp_path / "run")
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(MeddxError, match="exists and is not empty"):
        export_run(run, out)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    export_run(run, out, overwrite=True)
    assert (out / "bundle.json").exists() and not (out / "keep.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]  # no temporary folders left


def test_overwrite_never_replaces_the_run_or_data_it_reads(tmp_path):
    """`export RUN --out RUN --overwrite` (or --out the folder above RUN) replaced the training run, its
    checkpoints and reports, with the bundle; compress likewise its run, teacher or --data folder."""
    from meddx.deploy.compress import CompressOptions, compress_run

    run = make_run(tmp_path / "site" / "run")
    before = sorted(p.name for p in run.iterdir())
    for out in (run, tmp_path / "site"):
        with pytest.raises(MeddxError, match="which this command reads; the bundle would replace it"):
            export_run(run, out, overwrite=True)
    other = make_run(tmp_path / "other")
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(b"kept")
    for out, opts in ((run, CompressOptions(int8=True)), (other, CompressOptions(distill_from=str(other), epochs=1)),
                      (images, CompressOptions(int8=True, data=str(images)))):
        with pytest.raises(MeddxError, match="which this command reads"):
            compress_run(run, out, opts, overwrite=True, progress=False)
    assert sorted(p.name for p in run.iterdir()) == before and (other / "plan.yaml").exists()
    assert (images / "a.png").read_bytes() == b"kept"


def test_not_a_run(tmp_path):
    with pytest.raises(MeddxError, match="not a meddx run directory"):
        export_run(tmp_path, tmp_path / "b")


def test_learned_denoiser_in_front_exports_and_matches_torch(tmp_path):
    """The blind-spot inference (grid passes, neighbour means) is one ONNX graph equal to torch."""
    from meddx.deploy.export import compare_onnx, export_onnx
    from meddx.models import create_model
    from meddx.models.ensemble import DenoisedInput
    from meddx.transforms.learned_denoise import SelfSupervisedDenoiser

    torch.manual_seed(0)
    den = SelfSupervisedDenoiser(epochs=1, time_budget_s=None, batch_size=8).fit(torch.rand(16, 1, 28, 28))
    net = create_model("small_cnn", spatial_dims=2, in_channels=1, num_classes=2, input_size=(28, 28))
    model = DenoisedInput(den.net_, den.mean_, den.std_, net, stride=den._grid_stride()).eval()
    x = np.random.default_rng(0).random((3, 1, 28, 28)).astype(np.float32)
    torch.testing.assert_close(model.denoise(torch.from_numpy(x)), den.transform(x), atol=1e-5, rtol=0)
    diff = compare_onnx(model, export_onnx(model, (1, 28, 28), tmp_path / "m.onnx"), x)
    assert diff["max_abs_logit_diff"] < 1e-4
