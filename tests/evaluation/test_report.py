"""The HTML report: self-contained, escaped, written atomically."""

from __future__ import annotations

import re

import numpy as np
import pytest

from meddx.errors import MeddxError
from meddx.evaluation import classification_metrics, plot_confusion, write_report

Y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
S = np.array([0.9, 0.7, 0.3, 0.6, 0.2, 0.1, 0.4, 0.8])


@pytest.fixture(scope="module")
def inputs():
    proba = np.c_[1 - S, S]
    m_argmax = classification_metrics(Y, proba, class_names=["benign", "malignant"], n_boot=200)
    m_thr = classification_metrics(Y, proba, class_names=["benign", "malignant"], threshold=0.65,
                                   n_boot=200)
    png = plot_confusion(m_argmax["confusion_matrix"], ["benign", "malignant"])
    return {
        "title": "Test report <b>",
        "summary": {"dataset": "toy", "n cases": 8, "model": "<script>alert(1)</script>", "seed": 0},
        "metrics": {"argmax / 0.5": m_argmax, "validation-chosen threshold (Youden)": m_thr},
        "plots": {"confusion": png},
        "notes": ["a note & more"],
        "tables": {"ablation": [{"variant": "base", "auc": 0.8123}, {"variant": "+aug", "auc": None}]},
    }


def test_report_is_self_contained_and_escaped(tmp_path, inputs):
    out = write_report(tmp_path / "report.html", **inputs)
    text = out.read_text(encoding="utf-8")
    assert list(tmp_path.iterdir()) == [out]
    assert text.count("data:image/png;base64,") == 1
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?://""", text, re.I)
    assert "<script" not in text.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "Test report &lt;b&gt;" in text
    assert "a note &amp; more" in text
    # Overall accuracy 5/8 at 0.5 and 6/8 at 0.65, each with a bracketed CI.
    assert re.search(r"0\.625 \[\d\.\d{3}, \d\.\d{3}\]", text)
    assert re.search(r"0\.750 \[\d\.\d{3}, \d\.\d{3}\]", text)
    assert "How to read this" in text and "never the test split" in text
    assert "95% confidence intervals" in text and "15 equal-width bins" in text
    assert "argmax / 0.5" in text and "validation-chosen threshold (Youden)" in text
    assert "0.8123" in text and "n/a" in text
    # Confusion matrix at 0.5 as a table: [[3, 2], [1, 2]].
    assert re.search(r"<td>benign</td><td class=\"num\">3</td><td class=\"num\">2</td>", text)


def test_na_for_undefined(tmp_path):
    y = np.zeros(4, int)
    proba = np.tile([0.9, 0.1], (4, 1))
    m = classification_metrics(y, proba, n_boot=50)
    out = write_report(tmp_path / "r.html", title="t", summary={}, metrics={"argmax / 0.5": m}, plots={})
    assert "n/a [n/a, n/a]" in out.read_text()


def test_failed_render_leaves_nothing_behind(tmp_path, inputs):
    target = tmp_path / "report.html"
    bad = dict(inputs, plots={"roc": b"not a png"})
    with pytest.raises(MeddxError, match="PNG"):
        write_report(target, **bad)
    assert list(tmp_path.iterdir()) == []
    # An existing report survives a failed re-render untouched.
    write_report(target, **inputs)
    before = target.read_bytes()
    with pytest.raises(MeddxError):
        write_report(target, **bad)
    assert target.read_bytes() == before
    assert list(tmp_path.iterdir()) == [target]


def test_undefined_segmentation_distances_read_n_a_not_nan():
    from meddx.evaluation.report import format_metric

    assert format_metric({"value": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}) == "n/a [n/a, n/a]"
    assert format_metric({"value": 0.5, "ci_low": 0.4, "ci_high": float("nan")}) == "0.500 [0.400, n/a]"


def test_the_plans_ece_bins_reach_the_metric_tables_and_the_report(tmp_path):
    """One ECE per report: the metric tables, metrics.json's ece_test and the text use the plan's bins."""
    from meddx.evaluation.calibration import expected_calibration_error
    from meddx.evaluation.run_report import metric_sets
    from meddx_testutils import make_plan_for

    rng = np.random.default_rng(0)
    p = rng.dirichlet([1, 1, 1], 300)
    y = np.array([rng.choice(3, p=row) for row in p])
    plan = make_plan_for(n_classes=3)
    plan.evaluate.ece_bins, plan.evaluate.n_boot = 10, 0
    m = metric_sets(plan, y, p, {})["argmax / 0.5"]
    assert m["overall"]["ece"]["value"] == pytest.approx(expected_calibration_error(y, p, n_bins=10))
    assert m["overall"]["ece"]["value"] != pytest.approx(expected_calibration_error(y, p, n_bins=15))
    html = write_report(tmp_path / "r.html", title="t", summary={}, metrics={"argmax / 0.5": m}, plots={}).read_text()
    assert "ECE (top-label, 10 bins)" in html and "into 10 equal-width bins" in html and "15 bins" not in html


def test_predictions_csv_counts_a_tie_as_the_metrics_do(tmp_path):
    """p = 0.5 exactly: the confusion matrix (threshold 0.5, >=) calls it positive; so must the CSV."""
    import csv

    from meddx.evaluation.run_report import write_predictions

    rows = [("a", "test", 0, np.array([0.5, 0.5])), ("b", "test", 1, np.array([0.2, 0.8]))]
    write_predictions(tmp_path / "p.csv", rows, ["neg", "pos"], threshold=None)
    with open(tmp_path / "p.csv", newline="") as f:
        got = {r["case_id"]: r["predicted"] for r in csv.DictReader(f)}
    cm = classification_metrics(np.array([0, 1]), np.stack([r[3] for r in rows]), n_boot=0)["confusion_matrix"]
    assert got == {"a": "pos", "b": "pos"} and cm == [[0, 1], [0, 1]]


def test_binary_metrics_name_their_positive_class(tmp_path, inputs):
    """Binary sensitivity, PPV, AUC and the threshold are about class 1: the report names it, so a
    reader of BreastMNIST (class 1 is "normal, benign") does not take them for malignancy."""
    text = write_report(tmp_path / "report.html", **inputs).read_text(encoding="utf-8")
    assert "Sensitivity (positive class: malignant)" in text and "AUC (positive class: malignant)" in text
    assert "threshold 0.65 on p(malignant)" in text


def test_extra_tables_align_numbers_right_and_let_text_wrap(tmp_path):
    """The plan-decision table used to right-align every column after the first without wrapping, so its
    rule names and JSON values ran off the page; a column's floats also mixed 3 and 4 decimals (0.899
    beside 0.9413). Now a column is right-aligned only when it holds numbers, and floats keep their
    trailing zeros."""
    rows = [{"field": "data.input_size", "value": [28, 28], "rule": "R3 input size", "acc": 0.899, "n": 3},
            {"field": "augment", "value": {"rotate_deg": 10.0}, "rule": "R8 augmentation", "acc": 0.9413, "n": None}]
    text = write_report(tmp_path / "r.html", title="t", summary={}, metrics={}, plots={},
                        tables={"Plan decisions": rows}).read_text(encoding="utf-8")
    body = text[text.index("<h3>Plan decisions</h3>"):]
    assert '<td>R3 input size</td>' in body and '<td>[28, 28]</td>' in body
    assert '<td class="num">0.8990</td>' in body and '<td class="num">0.9413</td>' in body
    assert '<td class="num">3</td><' in body and '<td class="num">n/a</td>' in body
    assert "overflow-wrap:break-word" in text


def test_each_operating_point_says_how_it_was_set(tmp_path, inputs):
    text = write_report(tmp_path / "report.html", **inputs).read_text(encoding="utf-8")
    assert "<p class=\"note\">threshold 0.65 on p(malignant); n = 8" in text  # was "rule: threshold, threshold ..."
    y = np.array([0, 1, 2, 1])
    m = classification_metrics(y, np.eye(3)[y] * 0.8 + 0.2 / 3, n_boot=20)
    text = write_report(tmp_path / "m.html", title="t", summary={}, metrics={"argmax": m}, plots={}
                        ).read_text(encoding="utf-8")
    assert "argmax: the most probable class" in text
