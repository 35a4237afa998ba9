"""Detection metrics (AP at IoU 0.5, FROC) and boxes from label maps."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.evaluation.detection import Box, average_precision, boxes_from_labels, detection_summary, froc, iou


def test_iou_2d_and_3d():
    assert iou(Box((0, 0), (10, 10)), Box((0, 5), (10, 15))) == pytest.approx(50 / 150)
    assert iou(Box((0, 0, 0), (2, 2, 2)), Box((0, 0, 0), (2, 2, 2))) == 1.0
    assert iou(Box((0, 0), (1, 1)), Box((5, 5), (6, 6))) == 0.0


def test_boxes_from_labels_one_per_component_scored_by_probability():
    lab = np.zeros((20, 20), np.uint8)
    lab[2:5, 3:9] = 1
    lab[10:15, 10:12] = 1
    lab[16:18, 0:2] = 2
    probs = np.zeros((3, 20, 20), np.float32)
    probs[1][lab == 1] = 0.8
    probs[2][lab == 2] = 0.6
    bs = sorted(boxes_from_labels(lab, probs, 3), key=lambda b: b.lo)
    assert [(b.lo, b.hi, b.cls) for b in bs] == [((2, 3), (5, 9), 1), ((10, 10), (15, 12), 1), ((16, 0), (18, 2), 2)]
    assert bs[0].score == pytest.approx(0.8) and bs[2].score == pytest.approx(0.6)
    assert len(boxes_from_labels(lab, None, 3, min_size=10)) == 2


def test_ap_and_froc_on_a_hand_computed_case():
    ref = [[Box((0, 0), (10, 10))], [Box((20, 20), (30, 30))], []]
    pred = [[Box((0, 0), (10, 10), score=0.9), Box((50, 50), (60, 60), score=0.8)],  # hit, FP
            [Box((40, 40), (45, 45), score=0.7)],                                    # FP (miss)
            [Box((1, 1), (2, 2), score=0.3)]]                                        # FP
    # ranked: TP(0.9) FP(0.8) FP(0.7) FP(0.3); recall tops out at 1/2 with precision 1
    assert average_precision(pred, ref) == pytest.approx(0.5)
    f = froc(pred, ref)
    assert f["sensitivity"]["0.125"] == 0.5 and f["sensitivity"]["8.0"] == 0.5 and f["n_reference"] == 2
    perfect = [[Box((0, 0), (10, 10))], [Box((20, 20), (30, 30))], []]
    assert average_precision(perfect, ref) == 1.0 and froc(perfect, ref)["mean"] == 1.0


def test_each_reference_matches_once_and_classes_are_separate():
    ref = [[Box((0, 0), (10, 10), cls=1)]]
    dup = [[Box((0, 0), (10, 10), cls=1, score=0.9), Box((0, 0), (10, 10), cls=1, score=0.8)]]
    assert average_precision(dup, ref) == 1.0  # the duplicate is a FP ranked after the hit
    f = froc(dup, ref)  # the hit ranks before the duplicate, so no FP is needed to find it
    assert f["sensitivity"]["0.125"] == 1.0 and f["max_sensitivity"] == 1.0
    wrong_class = [[Box((0, 0), (10, 10), cls=2)]]
    assert average_precision(wrong_class, ref, cls=1) == 0.0
    s = detection_summary(dup, ref, ["lesion"])
    assert s["per_class"]["lesion"]["ap"] == 1.0 and np.isfinite(s["ap_mean"])


def test_boxes_from_probability_maps_find_what_argmax_misses():
    import numpy as np

    from meddx.evaluation.detection import boxes_from_segmentation

    probs = np.zeros((3, 20, 20), np.float32)
    probs[0] = 1.0
    probs[2, 5:10, 6:12] = 0.3  # a rare class, always under background
    probs[0, 5:10, 6:12] = 0.7
    labels = probs.argmax(0)
    assert boxes_from_segmentation(labels, probs, 3, None) == []
    boxes = boxes_from_segmentation(labels, probs, 3, 0.2)
    assert len(boxes) == 1 and boxes[0].cls == 2 and boxes[0].lo == (5, 6) and boxes[0].hi == (10, 12)
    assert abs(boxes[0].score - 0.3) < 1e-6
    assert boxes_from_segmentation(labels, probs, 3, 0.5) == []


def test_a_test_set_without_findings_has_no_mean_ap_and_no_warning():
    """No reference box of any class: every AP is n/a, so is their mean, with no numpy warning on stderr."""
    import math
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = detection_summary([[Box((1, 1), (5, 5), cls=1, score=0.9)], []], [[], []], ["mass", "nodule"])
    assert math.isnan(s["ap_mean"])


def test_a_finding_without_reference_boxes_reads_n_a_in_the_report_and_the_cli(tmp_path, capsys):
    """AP and FROC are undefined (NaN) for a finding no test case holds: the report's detection table
    and `meddx train`'s summary printed "nan" as if it were a number; a CI over one case ([nan, nan]) was
    read by rich as markup and silently dropped."""
    from meddx.cli import _print_seg_summary
    from meddx.evaluation.seg_metrics import case_metrics, summarise
    from meddx.evaluation.seg_report import _det_table
    from meddx.training.run import write_json

    det = detection_summary([[Box((0, 0), (4, 4), 1, 0.9)]], [[Box((0, 0), (4, 4), 1)]], ["mass", "nodule"])
    nodule = next(r for r in _det_table(det) if r["finding"] == "nodule")
    assert nodule["AP@0.5"] == nodule["FROC mean"] == nodule["sens @ 1.0 FP/img"] == "n/a"
    one = np.zeros((8, 8), np.uint8)
    one[2:5, 2:5] = 1
    summary = summarise([case_metrics(one, one, 2)], ["lesion"], n_boot=50)
    write_json(tmp_path / "metrics.json", {"dataset": "d", "n_test": 1, "detection": det, "summary": summary,
                                           "distance_units": "px"})
    _print_seg_summary(tmp_path)
    out = capsys.readouterr().out
    assert "nan" not in out.lower() and "n/a" in out
    assert "[n/a" in out  # the one-case CI is shown as undefined, not dropped
