"""``meddx export RUN --out DIR``: a run's best model as a deployable bundle (``meddx.runtime.spec``).

The network goes to ONNX through PyTorch's TorchScript-based exporter (``dynamo=False``):
it needs no onnxscript, folds BatchNorm into the convolutions in eval mode and gave
graphs equal to the torch models to < 1e-5 for every registry model tried (small_cnn,
resnet18, mobilenet_v2 in 2D, small_cnn in 3D, MONAI UNet in 3D). Every export is
checked: ONNX Runtime and torch run the same inputs and the probabilities must agree to
``TOLERANCE``; the measured difference is written into ``bundle.json``.
"""

from __future__ import annotations

import datetime as _dt
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

import meddx
from meddx.errors import RunError
from meddx.runtime.spec import MANIFEST, BundleError, Labels, Preprocessing, Thresholds

OPSET = 17
TORCH_STEPS = ("ct_window", "zscore")  # preprocessing steps implemented with MONAI: the runtime cannot run them
TOLERANCE = 1e-4  # max |p_onnx - p_torch| over the check inputs (the issue's bar for fp32)


def preprocessing_from_plan(plan) -> Preprocessing:
    """The bundle's preprocessing spec from a run's plan (the one place the two meet)."""
    d = plan.data
    seg = plan.segment if plan.task == "segment" else None
    native3d = seg is not None and d.spatial_dims == 3
    return Preprocessing(
        task="segment" if seg is not None else "classify", spatial_dims=d.spatial_dims, channels=d.channels,
        size=None if native3d else [int(s) for s in d.input_size], intensity=d.intensity,
        clip=[float(c) for c in d.clip] if d.clip else None, mean=float(d.norm_mean), std=float(d.norm_std),
        tta_flip_axes=list(seg.tta_flip_axes if seg else plan.evaluate.tta_flip_axes),
        roi_size=[int(s) for s in seg.patch_size] if seg is not None and seg.patch_size else None,
        overlap=float(seg.sw_overlap) if seg else 0.5, blend=seg.sw_mode if seg else "gaussian",
        window_batch=int(plan.train.batch_size) if seg else 4,
        postprocess=list(seg.postprocess) if seg else [], min_size=int(seg.min_size) if seg else 0,
        steps=[[st.name, dict(st.params)] for st in getattr(d, "preprocess", [])],
        target_spacing=[float(t) for t in d.target_spacing] if getattr(d, "target_spacing", None) else None,
        orientation=list(d.orientation) if getattr(d, "orientation", None) else None,
        antialias_3d=bool(getattr(d, "antialias_3d", False)), channel_files=int(getattr(d, "channel_files", 1)))


def labels_from_plan(plan) -> Labels:
    if plan.task == "segment":
        return Labels(task="segment", label_values=[int(v) for v in plan.segment.label_values],
                      label_names=list(plan.segment.label_names))
    return Labels(task="classify", class_names=list(plan.data.class_names))


def thresholds_from_run(run_dir: Path, plan, temperature: float | None = None, threshold: dict | None = None,
                        temperature_source: str | None = None) -> Thresholds:
    """Temperature from ``calibration.json`` (T = 1, said so, when absent) and the threshold from
    ``thresholds.json`` (or the ones given, for compressed models calibrated anew)."""
    if plan.task == "segment":
        return Thresholds(temperature=1.0, temperature_source="segmentation: no calibration (T = 1)")
    if temperature is None:
        cal = run_dir / "calibration.json"
        if cal.exists():
            temperature = float(json.loads(cal.read_text())["temperature"])
            temperature_source = "calibration.json of the run (temperature scaling fitted on validation)"
        else:
            temperature = 1.0
            temperature_source = "none: the run has no calibration.json, so T = 1 (confidences are uncalibrated)"
    if threshold is None:
        tp = run_dir / "thresholds.json"
        threshold = json.loads(tp.read_text()) if tp.exists() else {"rule": "argmax", "threshold": None}
    names = list(plan.data.class_names)
    thr = threshold.get("threshold")
    out = Thresholds(temperature=float(temperature), temperature_source=str(temperature_source),
                     threshold=None if thr is None else float(thr), threshold_rule=str(threshold.get("rule", "argmax")))
    if len(names) == 2:
        from meddx.evaluation.thresholds import stored_positive

        out.positive_class = names[stored_positive(names, threshold)]
    if thr is not None and len(names) == 2:
        from meddx.evaluation.calibration import apply_temperature

        pos = names.index(out.positive_class)
        at = np.full((1, 2), 1.0 - thr)
        at[0, pos] = thr
        out.calibrated_threshold = float(apply_temperature(at, temperature)[0, pos])
    return out


def model_input_shape(plan) -> tuple[int, ...]:
    """``(C, *spatial)`` the network takes: the input size, or the 3D sliding-window patch."""
    seg = plan.segment if plan.task == "segment" else None
    size = seg.patch_size if seg is not None and seg.patch_size else plan.data.input_size
    return (int(plan.data.channels), *(int(s) for s in size))


def export_onnx(model: torch.nn.Module, input_shape: tuple[int, ...], path: str | Path, *, opset: int = OPSET) -> Path:
    """Write ``model`` (eval mode, CPU) as ONNX with input ``input`` (dynamic batch) and output ``logits``."""
    import onnx

    try:
        from torch.onnx._constants import ONNX_MAX_OPSET, ONNX_MIN_OPSET
    except ImportError:  # private to torch: the range of the versions this was written against
        ONNX_MIN_OPSET, ONNX_MAX_OPSET = 7, 23
    from meddx.runtime.bundle import MIN_OPSET

    lowest = max(ONNX_MIN_OPSET, MIN_OPSET)  # torch exports older opsets too, but the runtime would refuse the bundle
    if not lowest <= int(opset) <= ONNX_MAX_OPSET:
        raise BundleError(f"--opset {opset} is not one this torch exports and the edge runtime reads ({lowest} to "
                          f"{ONNX_MAX_OPSET})", fix=f"leave --opset out (default {OPSET}) or give one in that range")
    model = model.eval().cpu()
    x = torch.randn(2, *input_shape)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=int(opset), input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          do_constant_folding=True)
    onnx.checker.check_model(str(path), full_check=True)
    return Path(path)


def compare_onnx(model: torch.nn.Module, onnx_path: str | Path, inputs: np.ndarray) -> dict[str, float]:
    """Run ``inputs`` through torch and ONNX Runtime; max differences of logits and softmax."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: inputs.astype(np.float32)})[0]
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(inputs.astype(np.float32))).numpy()
    sm = lambda z: torch.softmax(torch.from_numpy(z), 1).numpy()  # noqa: E731
    return {"max_abs_logit_diff": float(np.abs(got - ref).max()), "max_abs_prob_diff": float(np.abs(sm(got) - sm(ref)).max()),
            "n_inputs": int(inputs.shape[0])}


def check_inputs(input_shape: tuple[int, ...], n: int = 8, seed: int = 0) -> np.ndarray:
    """Standard-normal inputs (the model sees standardised images): a shape-level check that
    does not depend on any data being at hand."""
    return np.random.default_rng(seed).standard_normal((n, *input_shape)).astype(np.float32)


def model_card(run_dir: Path | None, plan, bundle_facts: dict[str, Any], thresholds: Thresholds,
               pre: Preprocessing, extra: str = "") -> str:
    """The bundle's model card: deployment facts, then the training run's own card."""
    lines = [f"# Deployment bundle: {plan.model.name} ({plan.task})", "",
             f"Exported {bundle_facts['created']} by meddx {meddx.__version__}"
             + (f" from run `{Path(run_dir).name}`." if run_dir is not None else "."), "",
             "## What the bundle computes",
             f"* Input: {pre.channels}-channel {pre.spatial_dims}D image; intensity `{pre.intensity}`"
             + (f" (clip {pre.clip})" if pre.clip else "")
             + (f", resized to {pre.size}" if pre.size else ", on the volume's own grid")
             + f", standardised with mean {pre.mean:.5g}, std {pre.std:.5g} (training split).",
             f"* Model: `model.onnx`, opset {bundle_facts['model']['opset']}, {bundle_facts['model']['precision']}; "
             f"{bundle_facts['model']['params']:,} stored weights, {bundle_facts['model']['flops'] / 1e6:.2f} MFLOPs "
             f"per {'image' if pre.roi_size is None else 'window'}."]
    if pre.tta_flip_axes:
        lines.append(f"* Test-time flips averaged along spatial axes {pre.tta_flip_axes}.")
    if pre.roi_size:
        lines.append(f"* Sliding window {pre.roi_size}, overlap {pre.overlap}, {pre.blend} blending.")
    if pre.postprocess:
        lines.append(f"* Post-processing chosen on validation: {', '.join(pre.postprocess)}.")
    if plan.task == "classify":
        lines.append(f"* Calibrated confidence: softmax(log p / T) with T = {thresholds.temperature:.4g} "
                     f"({thresholds.temperature_source}).")
        if thresholds.threshold is not None:
            lines.append(f"* Operating point: `{thresholds.positive_class}` when its probability is >= "
                         f"{thresholds.threshold:.4f} ({thresholds.threshold_rule}, chosen on validation; "
                         f"{thresholds.calibrated_threshold:.4f} on the calibrated probability).")
    chk, shipped = bundle_facts.get("export_check"), bundle_facts.get("shipped_model_check")
    if chk:
        lines.append(f"* Checked at export{' (the fp32 graph the shipped model was made from)' if shipped else ''}: "
                     f"ONNX Runtime vs torch on {chk['n_inputs']} inputs, max |difference| "
                     f"{chk['max_abs_prob_diff']:.2e} in probability, {chk['max_abs_logit_diff']:.2e} in logits.")
    if shipped:
        lines.append(f"* The shipped model (`model.onnx`, {bundle_facts['model']['precision']}) vs torch fp32 on the "
                     f"same inputs: max |difference| {shipped['max_abs_prob_diff']:.2e} in probability, "
                     f"{shipped['max_abs_logit_diff']:.2e} in logits (measured, not held to the {TOLERANCE:g} limit).")
    lines += ["", "Run it without torch: `python -m meddx.runtime BUNDLE FILE` or "
              "`meddx.runtime.load(BUNDLE).predict(FILE)`.", ""]
    if extra:
        lines += [extra, ""]
    card = run_dir / "model_card.md" if run_dir is not None else None
    if card is not None and card.exists():
        body = card.read_text().splitlines()
        lines += ["## From the training run", ""] + [("#" + ln if ln.startswith("#") else ln) for ln in body]
    return "\n".join(lines) + "\n"


def write_model_bundle(out: str | Path, model: torch.nn.Module, plan, *, run_dir: Path | None,
                       onnx_path: str | Path | None = None, precision: str = "fp32", thresholds: Thresholds | None = None,
                       extra_manifest: dict | None = None, card_extra: str = "", opset: int = OPSET,
                       overwrite: bool = False, check: bool = True, extra_files: dict | None = None) -> Path:
    """Export (unless ``onnx_path`` is given, e.g. an int8 model), check and write a bundle."""
    from meddx.deploy.flops import onnx_flops
    from meddx.models.registry import count_parameters
    from meddx.runtime.bundle import write_bundle

    pre = preprocessing_from_plan(plan)
    labels = labels_from_plan(plan)
    thr = thresholds or thresholds_from_run(Path(run_dir), plan)
    shape = model_input_shape(plan)
    with tempfile.TemporaryDirectory(prefix="meddx-export-") as td:
        fp32 = export_onnx(model, shape, Path(td) / "model.onnx", opset=opset)
        facts: dict[str, Any] = {"task": pre.task, "created": _dt.datetime.now().isoformat(timespec="seconds"),
                                 "meddx_version": meddx.__version__, "torch_version": torch.__version__,
                                 "source_run": Path(run_dir).name if run_dir is not None else None,
                                 "model_name": plan.model.name, "model_params": dict(plan.model.params)}
        if check:
            inputs = check_inputs(shape, n=8 if len(shape) == 3 else 2)
            chk = compare_onnx(model, fp32, inputs)
            if chk["max_abs_prob_diff"] > TOLERANCE:
                raise BundleError(f"the ONNX graph differs from the torch model by {chk['max_abs_prob_diff']:.2e} "
                                  f"in probability (limit {TOLERANCE})", path=run_dir,
                                  fix="report this model to the meddx developers; try another --opset")
            facts["export_check"] = chk
            if onnx_path is not None:  # e.g. int8: not the graph checked above, so its own difference is recorded
                facts["shipped_model_check"] = compare_onnx(model, onnx_path, inputs)
        final = Path(onnx_path) if onnx_path is not None else fp32
        fl = onnx_flops(final)
        import onnx

        opset_used = next(o.version for o in onnx.load(str(final), load_external_data=False).opset_import
                          if o.domain in ("", "ai.onnx"))
        facts["model"] = {"file": "model.onnx", "opset": int(opset_used), "input": "input", "output": "logits",
                          "input_shape": ["batch", *shape], "precision": precision, "flops": fl["flops"],
                          "params": fl["params"], "torch_parameters": int(count_parameters(model))}
        facts.update(extra_manifest or {})
        card = model_card(Path(run_dir) if run_dir is not None else None, plan, facts, thr, pre, card_extra)
        return write_bundle(out, final, preprocessing=pre, labels=labels, thresholds=thr, card=card,
                            manifest=facts, overwrite=overwrite, extra_files=extra_files)


def refuse_out_over_inputs(out: str | Path, *inputs: str | Path | None) -> None:
    """``--overwrite`` replaces ``out`` wholesale: refuse an ``out`` that is, or holds, a folder the command
    reads (the run, the teacher, the dataset), which the bundle would replace (``export RUN --out RUN``)."""
    o = Path(out).resolve()
    for p in filter(None, inputs):
        q = Path(p).resolve()
        if q == o or o in q.parents:
            raise BundleError(f"--out is {'' if q == o else 'a folder holding '}{p}, which this command reads; the "
                              f"bundle would replace it", path=out, fix="choose a new --out for the bundle")


def export_run(run_dir: str | Path, out: str | Path, *, opset: int = OPSET, overwrite: bool = False) -> Path:
    """Export a finished classification or segmentation run as a bundle in ``out``.

    Raises:
        RunError: not a run, or a detection run (not exportable yet).
        BundleError: the ONNX graph disagrees with torch, or ``out`` exists.
    """
    from meddx.training.run import load_run, require_finished

    run_dir = Path(run_dir)
    refuse_out_over_inputs(out, run_dir)
    plan, model = load_run(run_dir)
    require_finished(run_dir, "exported")
    torch_steps = [st.name for st in getattr(plan.data, "preprocess", []) if st.name in TORCH_STEPS]
    if torch_steps:
        raise RunError(f"the plan's preprocessing step(s) {torch_steps} run on MONAI (torch), which the edge "
                       f"runtime does not have", path=run_dir / "plan.yaml",
                       fix="train with percentile_clip or the plan's intensity clip instead, then export")
    if plan.task == "detect":
        raise RunError("detection runs cannot be exported yet (their box decoding runs in torch)", path=run_dir,
                       fix="export a classification or segmentation run")
    return write_model_bundle(out, model, plan, run_dir=run_dir, opset=opset, overwrite=overwrite)


def read_manifest(bundle_dir: str | Path) -> dict:
    from meddx.runtime.spec import read_json

    return read_json(Path(bundle_dir) / MANIFEST, "the bundle manifest")
