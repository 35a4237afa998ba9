"""Static int8: QDQ nodes and int8 weights in the graph, no dynamic quantisation, a file about 4x
smaller, and outputs that track the fp32 model."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from deploy_testutils import randomise
from meddx.deploy.export import export_onnx
from meddx.deploy.flops import onnx_flops
from meddx.deploy.quantise import calibration_sample, quantise_static
from meddx.models import create_model


def _run(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def test_static_int8_qdq(tmp_path):
    m = randomise(create_model("small_cnn", spatial_dims=2, in_channels=1, num_classes=2, input_size=28), 3)
    fp32 = export_onnx(m, (1, 28, 28), tmp_path / "fp32.onnx")
    rng = np.random.default_rng(0)
    train = rng.standard_normal((300, 1, 28, 28)).astype(np.float32)
    cal = calibration_sample(train, 64, seed=0)
    assert cal.shape == (64, 1, 28, 28)
    q = quantise_static(fp32, tmp_path / "int8.onnx", cal)
    g = onnx.load(str(q)).graph
    ops = {n.op_type for n in g.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert not ops & {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"}  # never dynamic int8
    conv_w = [i for i in g.initializer if len(i.dims) == 4]
    assert conv_w and all(i.data_type == onnx.TensorProto.INT8 for i in conv_w)
    assert fp32.stat().st_size / q.stat().st_size > 2.5
    assert onnx_flops(q)["flops"] == onnx_flops(fp32)["flops"]
    x = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    a, b = _run(fp32, x), _run(q, x)
    da, db = a[:, 1] - a[:, 0], b[:, 1] - b[:, 0]
    assert np.corrcoef(da, db)[0, 1] > 0.95
    assert (np.sign(da) == np.sign(db)).mean() > 0.85


def test_bad_calibration_input(tmp_path):
    m = create_model("small_cnn", spatial_dims=2, in_channels=1, num_classes=2, input_size=28)
    fp32 = export_onnx(m, (1, 28, 28), tmp_path / "fp32.onnx")
    with pytest.raises(ValueError, match="calibration"):
        quantise_static(fp32, tmp_path / "q.onnx", np.zeros((0, 1, 28, 28), np.float32))
    with pytest.raises(ValueError, match="unknown calibration method"):
        quantise_static(fp32, tmp_path / "q.onnx", np.zeros((4, 1, 28, 28), np.float32), method="dynamic")


def test_an_int8_bundle_states_the_difference_of_the_model_it_ships(tmp_path):
    """The card and bundle.json of an int8 bundle gave the fp32 graph's export check (about 1e-8) as
    "Checked at export", although model.onnx is the int8 graph; its own difference is now measured and
    stated beside it, and the fp32 check says which graph it was."""
    import json

    from deploy_testutils import make_run
    from meddx.deploy.export import write_model_bundle
    from meddx.training.run import load_run

    run = make_run(tmp_path / "run")
    plan, m = load_run(run)
    fp32 = export_onnx(m, (1, 28, 28), tmp_path / "fp32.onnx")
    cal = np.random.default_rng(0).standard_normal((32, 1, 28, 28)).astype(np.float32)
    q = quantise_static(fp32, tmp_path / "int8.onnx", cal)
    b = write_model_bundle(tmp_path / "b", m, plan, run_dir=run, onnx_path=q, precision="int8")
    man = json.loads((b / "bundle.json").read_text())
    fp32_diff, int8_diff = man["export_check"]["max_abs_prob_diff"], man["shipped_model_check"]["max_abs_prob_diff"]
    assert int8_diff > fp32_diff and int8_diff > 1e-6
    card = (b / "model_card.md").read_text()
    assert "Checked at export (the fp32 graph the shipped model was made from)" in card
    assert f"The shipped model (`model.onnx`, int8) vs torch fp32 on the same inputs: max |difference| {int8_diff:.2e}" in card
    plain = write_model_bundle(tmp_path / "p", m, plan, run_dir=run)
    assert "shipped_model_check" not in json.loads((plain / "bundle.json").read_text())
    assert "* Checked at export: ONNX Runtime" in (plain / "model_card.md").read_text()
