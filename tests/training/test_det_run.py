"""Detection runs on generated boxes: both detectors train, report AP/FROC and predict boxes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from meddx_testutils import write_png

from meddx.data.detsources import open_det_dataset
from meddx.evaluation.detection import Box
from meddx.evaluation.seg_predict import predict_seg_paths
from meddx.training.det_engine import centernet_loss, decode, heatmap_targets
from meddx.training.seg_run import train_seg_run


@pytest.fixture(scope="module")
def box_manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("boxes")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(36):
        img = rng.normal(50, 10, (48, 48))
        n = 0 if i % 6 == 0 else 1 + i % 2
        for _ in range(n):
            h, w = rng.integers(6, 12, 2)
            y, x = rng.integers(0, 48 - h), rng.integers(0, 48 - w)
            img[y:y + h, x:x + w] += 120
            rows.append([f"im{i}.png", x, y, x + w, y + h, "spot"])
        if n == 0:
            rows.append([f"im{i}.png", "", "", "", "", ""])
        write_png(root / f"im{i}.png", np.clip(img, 0, 255).astype(np.uint8))
    man = root / "boxes.csv"
    with open(man, "w", newline="") as f:
        csv.writer(f).writerows([["image", "x1", "y1", "x2", "y2", "label"], *rows])
    return man


def test_heatmap_targets_loss_and_decode_round_trip():
    boxes = [Box((4, 6), (12, 16), 1), Box((20, 20), (30, 26), 2)]
    t = heatmap_targets((32, 32), boxes, 2)
    assert t.shape == (5, 32, 32) and t[4].sum() == 2 and t[0].max() == 1 and t[1].max() == 1
    # a perfect output (logits of the targets) decodes back to the boxes
    from meddx.training.det_engine import HEAT_PRIOR

    logit = torch.logit(t[:4].clamp(1e-4, 1 - 1e-4))
    logit[:2] -= HEAT_PRIOR
    out = decode(logit, 2)
    got = sorted(((b.lo, b.hi, b.cls) for b in out if b.score > 0.5), key=lambda x: x[2])
    assert got == [((4, 6), (12, 16), 1), ((20, 20), (30, 26), 2)]
    good, bad = centernet_loss(logit[None], t[None], 2), centernet_loss(-logit[None], t[None], 2)
    assert float(good) < float(bad)


@pytest.mark.parametrize("detector", ["components", "heatmap"])
def test_detect_run_reports_ap_froc_and_predicts_boxes(box_manifest, tmp_path, detector):
    out = tmp_path / detector
    train_seg_run(str(box_manifest), out, task="detect", overrides={
        "train.epochs": 20, "data.input_size": [48, 48],
        "segment.detector": detector}, progress=False, log=lambda *a: None)
    m = json.loads((out / "metrics.json").read_text())
    det = m["detection"]
    assert set(det["per_class"]) == {"spot"} and 0 <= det["ap_mean"] <= 1
    # bright squares on noise are findable; the heatmap head learns slower from 25 images
    floor = 0.5 if detector == "components" else 0.1
    assert det["per_class"]["spot"]["ap"] > floor and det["froc_pooled"]["max_sensitivity"] > 0.3, det
    assert (out / "froc.png").exists() and "AP@0.5" in (out / "report.html").read_text()
    if detector == "components":  # S11: the detection threshold was chosen on validation and recorded
        from meddx.planning.plan import Plan

        plan = Plan.load(out / "plan.yaml")
        s11 = next(d for d in plan.decisions if d.rule.startswith("S11"))
        assert s11.kind == "empirical" and set(s11.reads["validation"]) == {"argmax", "0.5", "0.3", "0.15", "0.08"}
        assert plan.segment.det_threshold == s11.value and not plan.segment.choose_det_threshold
    else:  # S7: the planned geometric augmentation the heatmap detector leaves out is recorded
        from meddx.planning.plan import Plan

        plan = Plan.load(out / "plan.yaml")
        s7 = next(d for d in plan.decisions if d.rule == "S7 augmentation" and d.reads.get("detector") == "heatmap")
        assert s7.reads["not_applied"] == ["rotate_deg", "scale", "translate"]
    rows = predict_seg_paths(out, box_manifest.parent / "im1.png", tmp_path / "p", progress=False)
    assert rows[0]["finding"] in ("spot", "") and (tmp_path / "p" / "im1_overlay.png").exists()
    # scoring another manifest whose box lies outside its image is refused, as training refuses it
    from meddx.errors import DatasetError
    from meddx.evaluation.evaluate_run import evaluate_run

    bad = box_manifest.parent / "bad.csv"
    bad.write_text("image,x1,y1,x2,y2,label\nim1.png,60,60,90,90,spot\n")
    with pytest.raises(DatasetError, match="lies outside the 48 x 48 px image"):
        evaluate_run(out, str(bad), progress=False)


def test_detect_dataset_pseudonymises_patients(tmp_path):
    write_png(tmp_path / "00012345_000.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "b.csv").write_text("image,x,y,w,h,label,patient_id\n00012345_000.png,1,1,3,3,Mass,00012345\n")
    cs = open_det_dataset(tmp_path / "b.csv")
    assert "00012345" not in cs.cases[0].case_id and cs.cases[0].group


def test_heatmap_detector_keeps_intensity_augmentation_and_says_what_it_drops(tmp_path):
    """Gamma and blur leave boxes where they are: the heatmap detector applies them with the flips,
    brightness, contrast and noise; rotation, zoom, shift and elastic would move the boxes."""
    from meddx.planning.plan import Plan
    from meddx.training.det_engine import HeatmapTrainer
    from meddx.training.seg_run import note_heatmap_augment

    plan = Plan.model_validate(dict(
        task="detect", data=dict(source="x", kind="folder", class_names=["bg", "les"], spatial_dims=2, channels=1,
                                 input_size=[32, 32]),
        segment=dict(label_values=[0, 1], label_names=["bg", "les"], detector="heatmap"),
        augment=dict(flip_axes=[1], rotate_deg=15, scale=0.15, gamma=0.5, blur_sigma=1.0, elastic=0.05,
                     brightness=0.1, noise_std=0.05)))
    t = HeatmapTrainer(plan, torch.nn.Conv2d(1, 3, 1), tmp_path, device=torch.device("cpu"), progress=False)
    a = t.augment
    assert (a.flip_axes, a.gamma, a.blur_sigma, a.brightness, a.noise_std) == ((1,), 0.5, 1.0, 0.1, 0.05)
    assert a.rotate_deg == a.scale == a.elastic == a.translate == 0
    assert t.augment_dropped == ["rotate_deg", "scale", "elastic"]
    said = []
    note_heatmap_augment(plan, said.append)
    note_heatmap_augment(plan, said.append)  # a resumed run records it once
    s7 = [d for d in plan.decisions if d.rule == "S7 augmentation"]
    assert len(s7) == 1 and s7[0].reads["not_applied"] == ["rotate_deg", "scale", "elastic"]
    assert s7[0].value["gamma"] == 0.5 and s7[0].value["blur_sigma"] == 1.0
    assert "rotate_deg, scale, elastic not applied" in said[0]


def test_predict_gives_the_boxes_evaluation_scored_after_post_processing(tmp_path, monkeypatch):
    """Evaluation draws a components detector's boxes from the post-processed argmax map (S10); predict
    drew them from the raw map, so a run that kept only the largest component was scored on one box per
    finding and predicted every speck."""
    from meddx.evaluation import seg_infer
    from meddx.planning.plan import Plan
    from meddx.training import run as run_mod

    plan = Plan.model_validate(dict(
        task="detect", data=dict(source="x", kind="box manifest", class_names=["spot"], spatial_dims=2, channels=1,
                                 input_size=[32, 32]),
        segment=dict(label_values=[0, 1], label_names=["background", "spot"], detector="components",
                     det_threshold=None, choose_det_threshold=False, postprocess=["largest_component"],
                     choose_postprocess=False)))
    lab = np.zeros((32, 32), np.uint8)
    lab[4:14, 6:16] = 1  # the lesion
    lab[25:28, 25:28] = 1  # a speck that largest_component removes
    probs = np.stack([1.0 - 0.9 * lab, 0.9 * lab]).astype(np.float16)
    probs[1, 25:28, 25:28] = 0.95  # ranked above the lesion
    probs[0, 25:28, 25:28] = 0.05
    monkeypatch.setattr(run_mod, "load_run", lambda run_dir: (plan, torch.nn.Identity()))
    monkeypatch.setattr(seg_infer, "predict_case", lambda *a, **k: (lab.copy(), probs))
    write_png(tmp_path / "im.png", np.full((32, 32), 90, np.uint8))
    rows = predict_seg_paths(tmp_path / "run", tmp_path / "im.png", tmp_path / "p", progress=False)
    assert [(r["finding"], r["x1"], r["y1"], r["x2"], r["y2"]) for r in rows] == [("spot", 6, 4, 16, 14)]
    # S11 scores the argmax candidate on the validation boxes it would give on the test cases: post-processed
    from meddx.data.case import Case
    from meddx.training import seg_run

    monkeypatch.setattr(seg_run, "predict_cases", lambda *a, **k: ([lab.copy()], [lab], [None], [probs]))
    plan.segment.choose_det_threshold = True
    seg_run.choose_det_threshold(plan, None, [Case("im.png", 1, boxes=((6, 4, 16, 14, 1),))], None, False)
    trace = plan.decisions[-1].reads["validation"]
    assert trace["argmax"]["froc"] == 1.0 and trace["0.5"]["froc"] < 1.0  # the speck is a false positive there
