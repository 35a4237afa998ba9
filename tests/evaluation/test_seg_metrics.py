"""Segmentation metrics: known values, the empty-mask rule, bootstrap CIs."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.evaluation.seg_metrics import case_metrics, summarise


def test_dice_iou_and_distances_on_known_squares():
    t = np.zeros((40, 40), np.uint8)
    t[10:20, 10:20] = 1
    p = np.zeros_like(t)
    p[10:20, 12:22] = 1  # shifted 2 px right: overlap 10x8
    m = case_metrics(p, t, 2)
    assert m["dice"][0] == pytest.approx(2 * 80 / 200)
    assert m["iou"][0] == pytest.approx(80 / 120)
    assert m["hd95"][0] == pytest.approx(2.0)
    m2 = case_metrics(p, t, 2, spacing=(1.0, 0.5))  # columns are 0.5 mm: the 2 px shift is 1 mm
    assert m2["hd95"][0] == pytest.approx(1.0)
    # ASD, by hand: each square's surface is its 36-pixel outer ring. From the shifted ring to the
    # reference ring: top and bottom rows 0 (x8), 1, 2 each -> 6; the left column (rows 11-18)
    # min(2, distance to the top/bottom row) = 1,2,2,2,2,2,2,1 -> 14; the right column 2 each -> 16.
    # 36 / 36 points, and the same back by symmetry: symmetric ASD = 72 / 72 = 1 px.
    assert m["asd"][0] == pytest.approx(1.0)
    # with 0.5 mm columns: top and bottom rows 0.5 + 1.0 each -> 3, left and right columns 1 mm each -> 16
    assert m2["asd"][0] == pytest.approx(19 / 36)


def test_empty_mask_rule():
    z = np.zeros((10, 10), np.uint8)
    one = z.copy()
    one[2:4, 2:4] = 1
    both_empty = case_metrics(z, z, 2)
    assert both_empty["dice"][0] == 1 and both_empty["hd95"][0] == 0
    missed = case_metrics(z, one, 2)
    assert missed["dice"][0] == 0 and np.isnan(missed["hd95"][0])
    s = summarise([both_empty, missed, case_metrics(one, one, 2)], ["lesion"], n_boot=200)
    assert s["per_class"]["lesion"]["dice"]["value"] == pytest.approx(2 / 3)
    assert s["per_class"]["lesion"]["hd95"]["n_undefined"] == 1
    assert s["per_class"]["lesion"]["hd95"]["value"] == 0.0


def test_multiclass_and_ci_brackets_the_mean():
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(20):
        t = rng.integers(0, 3, (12, 12)).astype(np.uint8)
        p = np.where(rng.random(t.shape) < 0.8, t, rng.integers(0, 3, t.shape)).astype(np.uint8)
        cases.append(case_metrics(p, t, 3))
    s = summarise(cases, ["a", "b"], n_boot=500)
    for name in ("a", "b"):
        d = s["per_class"][name]["dice"]
        assert 0.6 < d["value"] < 0.95 and d["ci_low"] < d["value"] < d["ci_high"]
    assert s["mean"]["dice"]["value"] == pytest.approx(np.mean([np.mean(c["dice"]) for c in cases]))


def test_distances_share_one_unit_when_some_cases_have_no_spacing(tmp_path, monkeypatch):
    """A DICOM (spacing in mm) beside PNGs (no spacing): its HD95 was in mm, theirs in pixels, and the mean
    of both was reported as pixels. Without a spacing for every case, every distance is in pixels."""
    import csv
    import json

    from meddx_testutils import write_seg_pairs

    from meddx.data.segsources import open_seg_dataset
    from meddx.evaluation import seg_infer
    from meddx.evaluation.seg_report import evaluate_seg_outputs
    from meddx.planning.plan import Plan

    cs = open_seg_dataset(write_seg_pairs(tmp_path / "pairs", n=2, size=40))
    plan = Plan.model_validate(dict(
        task="segment", data=dict(source="x", kind="folder", class_names=["all"], spatial_dims=2, channels=1,
                                  input_size=[40, 40]),
        segment=dict(label_values=[0, 255], label_names=["background", "lesion"]), evaluate=dict(n_boot=20)))
    t = np.zeros((40, 40), np.uint8)
    t[10:20, 10:20] = 1
    p = np.zeros_like(t)
    p[10:20, 12:22] = 1  # 2 px off: HD95 2 px (1 mm at 0.5 mm)
    probs = np.stack([1.0 - p, p]).astype(np.float16)
    monkeypatch.setattr(seg_infer, "predict_cases", lambda *a, **k: ([p, p], [t, t], [None, (0.5, 0.5)],
                                                                     [probs, probs]))
    out = tmp_path / "run"
    out.mkdir()
    m = evaluate_seg_outputs(out, plan, cs, cs.cases, None, progress=False)
    assert m["distance_units"] == "px" and m["summary"]["per_class"]["lesion"]["hd95"]["value"] == pytest.approx(2.0)
    with open(out / "per_case.csv") as f:
        assert [float(r["hd95_lesion"]) for r in csv.DictReader(f)] == pytest.approx([2.0, 2.0])
    assert json.loads((out / "metrics.json").read_text())["distance_units"] == "px"


def test_undefined_metrics_are_written_as_json_null_not_a_bare_nan(tmp_path):
    """A class missed in every case has no surface distance: in memory NaN, in metrics.json null. Python
    writes NaN as a bare ``NaN``, which is not JSON: a browser's JSON.parse refuses the whole file."""
    import json

    from meddx.training.run import write_json

    z = np.zeros((10, 10), np.uint8)
    one = z.copy()
    one[2:4, 2:4] = 1
    s = summarise([case_metrics(z, one, 2), case_metrics(z, one, 2)], ["lesion"], n_boot=50)
    assert np.isnan(s["per_class"]["lesion"]["hd95"]["value"])
    write_json(tmp_path / "metrics.json", {"summary": s, "n": np.int64(2), "arr": np.array([0.5, np.inf]),
                                           "f32": np.float32(0.25), "path": tmp_path})
    m = json.loads((tmp_path / "metrics.json").read_text(),
                   parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.json"))
    hd = m["summary"]["per_class"]["lesion"]["hd95"]
    assert hd["value"] is None and hd["ci_low"] is None and hd["n_undefined"] == 2
    assert m["n"] == 2 and m["arr"] == [0.5, None] and m["f32"] == 0.25 and m["path"] == str(tmp_path)
    assert m["summary"]["per_class"]["lesion"]["dice"]["value"] == 0.0
