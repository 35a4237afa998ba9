"""Metrics: hand-computed values, sklearn agreement, bootstrap behaviour."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from meddx.errors import MeddxError
from meddx.evaluation import (
    auc_ovr,
    classification_metrics,
    confusion_matrix,
    expected_calibration_error,
    predict_labels,
    paired_bootstrap_pvalue,
)

# 8-case binary example: 3 positives, 5 negatives.
Y8 = np.array([1, 1, 1, 0, 0, 0, 0, 0])
P8 = np.array([0.9, 0.7, 0.3, 0.6, 0.2, 0.1, 0.4, 0.8])
PROBA8 = np.c_[1 - P8, P8]


def value(m, *keys):
    for k in keys:
        m = m[k]
    return m["value"]


def test_binary_hand_computed():
    # At 0.5: predictions 1,1,0,1,0,0,0,1 -> TP=2, FN=1, FP=2, TN=3.
    m = classification_metrics(Y8, PROBA8, class_names=["benign", "malignant"], n_boot=0)
    o = m["overall"]
    assert m["n"] == 8 and m["n_classes"] == 2
    assert m["operating_point"] == {"rule": "threshold", "threshold": 0.5, "positive_class": "malignant"}
    assert m["confusion_matrix"] == [[3, 2], [1, 2]]
    assert o["sensitivity"]["value"] == pytest.approx(2 / 3)
    assert o["specificity"]["value"] == pytest.approx(3 / 5)
    assert o["ppv"]["value"] == pytest.approx(2 / 4)
    assert o["npv"]["value"] == pytest.approx(3 / 4)
    assert o["f1"]["value"] == pytest.approx(4 / 7)
    assert o["accuracy"]["value"] == pytest.approx(5 / 8)
    assert o["balanced_accuracy"]["value"] == pytest.approx((2 / 3 + 3 / 5) / 2)
    # Class 0 F1 = 2*3 / (2*3 + 1 + 2); macro = mean of both classes.
    assert o["f1_macro"]["value"] == pytest.approx((4 / 7 + 6 / 9) / 2)
    # Positive scores beat 5 + 4 + 2 of the 15 (pos, neg) pairs.
    assert o["auc"]["value"] == pytest.approx(11 / 15)
    assert o["auc_macro"]["value"] == pytest.approx(11 / 15)
    pc = m["per_class"]
    assert pc["malignant"]["support"] == 3 and pc["benign"]["support"] == 5
    assert pc["benign"]["sensitivity"]["value"] == pytest.approx(3 / 5)
    assert pc["benign"]["ppv"]["value"] == pytest.approx(3 / 4)
    assert pc["benign"]["auc"]["value"] == pytest.approx(11 / 15)
    assert o["sensitivity"]["ci_low"] is None  # n_boot=0: no interval


def test_binary_custom_threshold():
    # At 0.65 case 3 (0.6) becomes negative: TP=2, FN=1, FP=1, TN=4.
    m = classification_metrics(Y8, PROBA8, threshold=0.65, n_boot=0)
    assert m["operating_point"] == {"rule": "threshold", "threshold": 0.65, "positive_class": "1"}
    assert m["confusion_matrix"] == [[4, 1], [1, 2]]
    assert value(m, "overall", "specificity") == pytest.approx(4 / 5)
    assert value(m, "overall", "ppv") == pytest.approx(2 / 3)
    assert value(m, "overall", "accuracy") == pytest.approx(6 / 8)
    # AUC does not depend on the threshold.
    assert value(m, "overall", "auc") == pytest.approx(11 / 15)


def test_a_binary_positive_class_at_index_0_gives_its_metrics():
    """Class 0 as the positive class: the same numbers as the mirrored problem with it at index 1,
    and the threshold cuts its probability."""
    names = ["malignant", "benign"]
    m0 = classification_metrics(1 - Y8, PROBA8[:, ::-1], class_names=names, positive=0, threshold=0.65, n_boot=0)
    m1 = classification_metrics(Y8, PROBA8, class_names=names[::-1], threshold=0.65, n_boot=0)
    assert m0["operating_point"]["positive_class"] == "malignant"
    for key in ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "auc"):
        assert value(m0, "overall", key) == pytest.approx(value(m1, "overall", key)), key
    assert value(m0, "overall", "sensitivity") == pytest.approx(2 / 3)  # malignant cases found at p >= 0.65
    assert predict_labels(np.array([[0.7, 0.3], [0.6, 0.4]]), 0.65, positive=0).tolist() == [0, 1]
    with pytest.raises(MeddxError, match="index 0 or 1"):
        predict_labels(PROBA8, positive=2)


def _three_class():
    y = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    pred = np.array([0, 0, 1, 1, 1, 1, 2, 2, 2, 0])
    proba = np.full((10, 3), 0.2)
    proba[np.arange(10), pred] = 0.6
    return y, pred, proba


def test_three_class_hand_computed():
    y, _, proba = _three_class()
    m = classification_metrics(y, proba, class_names=["a", "b", "c"], n_boot=0)
    assert m["operating_point"] == {"rule": "argmax", "threshold": None}
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 3, 1], [1, 0, 2]]
    pc = m["per_class"]
    # class a: TP2 FN1 FP1 TN6; b: TP3 FN1 FP1 TN5; c: TP2 FN1 FP1 TN6.
    expect = {
        "a": dict(sensitivity=2 / 3, specificity=6 / 7, ppv=2 / 3, npv=6 / 7, f1=2 / 3),
        "b": dict(sensitivity=3 / 4, specificity=5 / 6, ppv=3 / 4, npv=5 / 6, f1=3 / 4),
        "c": dict(sensitivity=2 / 3, specificity=6 / 7, ppv=2 / 3, npv=6 / 7, f1=2 / 3),
    }
    for name, vals in expect.items():
        for key, v in vals.items():
            assert pc[name][key]["value"] == pytest.approx(v), (name, key)
    assert [pc[c]["support"] for c in "abc"] == [3, 4, 3]
    o = m["overall"]
    assert o["accuracy"]["value"] == pytest.approx(7 / 10)
    assert o["balanced_accuracy"]["value"] == pytest.approx(25 / 36)
    assert o["sensitivity_macro"]["value"] == pytest.approx(25 / 36)
    assert o["specificity_macro"]["value"] == pytest.approx((6 / 7 + 5 / 6 + 6 / 7) / 3)
    assert o["f1_macro"]["value"] == pytest.approx(25 / 36)
    assert "sensitivity" not in o  # positive-class keys are binary only


def test_agrees_with_sklearn_with_ties():
    rng = np.random.default_rng(3)
    n, k = 300, 4
    y = rng.integers(0, k, n)
    # Small integer logits: many identical rows, hence tied scores in every column.
    logits = rng.integers(0, 3, size=(n, k)).astype(float)
    logits[np.arange(n), y] += 1.0
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pred = proba.argmax(1)
    m = classification_metrics(y, proba, n_boot=0)
    o = m["overall"]
    assert o["accuracy"]["value"] == pytest.approx(skm.accuracy_score(y, pred))
    assert o["balanced_accuracy"]["value"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert o["f1_macro"]["value"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert o["auc_macro"]["value"] == pytest.approx(
        skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"), abs=1e-12)
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    ppv = skm.precision_score(y, pred, average=None)
    for j in range(k):
        pc = m["per_class"][str(j)]
        assert pc["auc"]["value"] == pytest.approx(skm.roc_auc_score(y == j, proba[:, j]), abs=1e-12)
        assert pc["ppv"]["value"] == pytest.approx(ppv[j])
    np.testing.assert_allclose(
        auc_ovr(y, proba), [skm.roc_auc_score(y == j, proba[:, j]) for j in range(k)], atol=1e-12)
    assert o["ece"]["value"] == pytest.approx(expected_calibration_error(y, proba))


def test_binary_auc_with_heavy_ties_equals_sklearn():
    rng = np.random.default_rng(5)
    y = (rng.random(101) < 0.4).astype(int)
    s = np.round(rng.random(101) * 0.6 + 0.3 * y, 1)
    s = np.clip(s, 0, 1)
    got = classification_metrics(y, np.c_[1 - s, s], n_boot=0)
    assert value(got, "overall", "auc") == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert value(got, "per_class", "0", "auc") == value(got, "overall", "auc")


def test_bootstrap_matches_naive_loop():
    """The vectorised bootstrap equals a per-resample loop with sklearn."""
    rng = np.random.default_rng(11)
    n, n_boot, seed = 60, 40, 7
    y = (rng.random(n) < 0.35).astype(int)
    s = np.round(np.clip(rng.normal(0.4 + 0.25 * y, 0.2), 0, 1), 1)
    proba = np.c_[1 - s, s]
    m = classification_metrics(y, proba, n_boot=n_boot, seed=seed, ci=0.9)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    naive = {"auc": [], "accuracy": [], "sensitivity": [], "ece": []}
    for r in idx:
        yr, pr = y[r], proba[r]
        pred = (pr[:, 1] >= 0.5).astype(int)
        if 0 < yr.sum() < n:
            naive["auc"].append(skm.roc_auc_score(yr, pr[:, 1]))
        if yr.sum() > 0:
            naive["sensitivity"].append(skm.recall_score(yr, pred))
        naive["accuracy"].append(skm.accuracy_score(yr, pred))
        naive["ece"].append(expected_calibration_error(yr, pr))
    for key, vals in naive.items():
        lo, hi = np.quantile(vals, [0.05, 0.95])
        assert m["overall"][key]["ci_low"] == pytest.approx(lo, abs=1e-12), key
        assert m["overall"][key]["ci_high"] == pytest.approx(hi, abs=1e-12), key
    assert m["bootstrap"] == {"method": "percentile bootstrap over cases", "n_boot": n_boot,
                              "seed": seed, "ci_level": 0.9,
                              "proportions_with_wilson_ci": "denominator < 20 cases, or a value of 0 or 1"}


def _synthetic(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.5 * (2 * y - 1))))
    return y, np.c_[1 - s, s]


def test_ci_brackets_is_deterministic_and_narrows_with_n():
    y, proba = _synthetic(200, 0)
    a = classification_metrics(y, proba, n_boot=500, seed=1)
    b = classification_metrics(y, proba, n_boot=500, seed=1)
    c = classification_metrics(y, proba, n_boot=500, seed=2)
    assert a == b
    assert a["overall"]["auc"] != c["overall"]["auc"]
    for key in ("accuracy", "auc", "sensitivity", "specificity", "f1", "balanced_accuracy"):
        m = a["overall"][key]
        assert m["ci_low"] < m["value"] < m["ci_high"], key
    big = classification_metrics(*_synthetic(4000, 0), n_boot=500, seed=1)
    for key in ("accuracy", "auc"):
        w_small = a["overall"][key]["ci_high"] - a["overall"][key]["ci_low"]
        w_big = big["overall"][key]["ci_high"] - big["overall"][key]["ci_low"]
        assert w_big < w_small / 2, key  # ~ 1/sqrt(20) expected


def test_undefined_metrics_are_none_and_json_clean():
    # Nothing predicted positive: PPV undefined; only negatives: AUC, sensitivity undefined.
    y = np.array([0, 0, 0, 0])
    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    m = classification_metrics(y, proba, n_boot=100)
    o = m["overall"]
    assert o["auc"] == {"value": None, "ci_low": None, "ci_high": None}
    assert o["sensitivity"]["value"] is None
    assert o["ppv"]["value"] is None
    assert o["auc_macro"]["value"] is None
    assert o["specificity"]["value"] == 1.0
    assert o["npv"]["value"] == 1.0
    assert o["accuracy"]["value"] == 1.0
    assert m["per_class"]["1"]["support"] == 0
    json.dumps(m, allow_nan=False)  # raises on any NaN


def test_rare_class_resamples_are_dropped_not_poisoning():
    # One positive case: AUC is defined, but absent from ~37% of resamples.
    y = np.zeros(30, int)
    y[4] = 1
    s = np.linspace(0.05, 0.6, 30)
    m = classification_metrics(y, np.c_[1 - s, s], n_boot=300, seed=0)
    auc = m["overall"]["auc"]
    assert auc["value"] == pytest.approx(skm.roc_auc_score(y, s))
    assert auc["ci_low"] is not None and 0.0 <= auc["ci_low"] <= auc["ci_high"] <= 1.0


def test_confusion_matrix_and_input_errors():
    assert confusion_matrix([0, 1, 2, 2], [0, 2, 2, 1], 3).tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]
    y, _, proba = _three_class()
    with pytest.raises(MeddxError, match="threshold"):
        classification_metrics(y, proba, threshold=0.5)
    with pytest.raises(MeddxError, match="sum to 1"):
        classification_metrics(Y8, np.c_[P8, P8])
    with pytest.raises(MeddxError, match="labels must lie"):
        classification_metrics(np.r_[Y8[:-1], 2], PROBA8)
    with pytest.raises(MeddxError, match="class names"):
        classification_metrics(Y8, PROBA8, class_names=["a"])


def test_paired_bootstrap_pvalue():
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 2, n)
    good = 1 / (1 + np.exp(-3 * (2 * y - 1) - rng.normal(size=n)))
    noise = rng.random(n)
    pa, pb = np.c_[1 - good, good], np.c_[1 - noise, noise]
    for metric in ("auc", "accuracy"):
        assert paired_bootstrap_pvalue(y, pa, pb, metric=metric, n_boot=500) < 0.01
        assert paired_bootstrap_pvalue(y, pa, pa, metric=metric, n_boot=500) == 1.0
    # Two similar models: no evidence of a difference.
    pa2 = np.clip(good + rng.normal(0, 0.02, n), 0, 1)
    p_close = paired_bootstrap_pvalue(y, pa, np.c_[1 - pa2, pa2], n_boot=500)
    assert p_close > 0.05
    assert paired_bootstrap_pvalue(y, pa, pb, n_boot=300, seed=4) == paired_bootstrap_pvalue(
        y, pa, pb, n_boot=300, seed=4)


def test_a_ci_from_fewer_resamples_says_how_many():
    """Two positives in 300 cases: about exp(-2) = 13.5 % of resamples draw none, and their AUC is
    undefined there; the CI says it rests on the rest. Well-populated metrics say nothing."""
    from meddx.evaluation.report import format_metric

    rng = np.random.default_rng(0)
    y = np.zeros(300, int)
    y[:2] = 1
    p1 = np.clip(0.2 + 0.6 * y + rng.normal(0, 0.1, 300), 0, 1)
    m = classification_metrics(y, np.stack([1 - p1, p1], 1), n_boot=1000)
    auc = m["per_class"]["1"]["auc"]  # (its sensitivity, a proportion over 2 cases, is Wilson's)
    assert 800 < auc["ci_resamples"] < 920
    assert format_metric(auc).endswith(f"(CI of {auc['ci_resamples']} resamples)")
    assert "ci_resamples" not in m["overall"]["accuracy"] and "ci_resamples" not in m["per_class"]["0"]["sensitivity"]


def test_a_proportion_over_few_cases_or_at_one_gets_the_wilson_interval():
    """2 of 2 positives found: the bootstrap of a proportion at 1 collapses to [1, 1]; the Wilson
    score interval of 2/2 is [0.342, 1]. Large, interior proportions keep the bootstrap."""
    from meddx.evaluation.report import format_metric

    rng = np.random.default_rng(1)
    y = np.zeros(300, int)
    y[:2] = 1
    p1 = np.where(y == 1, 0.9, np.clip(rng.normal(0.3, 0.2, 300), 0, 1))
    m = classification_metrics(y, np.stack([1 - p1, p1], 1), n_boot=500)
    sens = m["per_class"]["1"]["sensitivity"]
    assert sens["value"] == 1.0 and sens["ci_method"] == "wilson"
    assert sens["ci_low"] == pytest.approx(0.3424, abs=1e-3) and sens["ci_high"] == pytest.approx(1.0)
    assert format_metric(sens).endswith("(Wilson)")
    ppv = m["per_class"]["1"]["ppv"]  # few predicted positives: a small denominator
    den = int(np.sum(p1 >= 0.5))
    assert (ppv.get("ci_method") == "wilson") == (den < 20)
    acc = m["overall"]["accuracy"]
    assert "ci_method" not in acc and acc["ci_low"] < acc["value"] < acc["ci_high"]
    assert classification_metrics(y, np.stack([1 - p1, p1], 1), n_boot=0)["per_class"]["1"]["sensitivity"]["ci_low"] is None


def test_macro_ppv_and_npv_are_reported():
    """The spec asks for every metric per class *and* macro: PPV and NPV too, with their CIs."""
    rng = np.random.default_rng(4)
    n, k = 200, 3
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.0
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pred = proba.argmax(1)
    m = classification_metrics(y, proba, n_boot=200)
    o = m["overall"]
    assert o["ppv_macro"]["value"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    npv = [np.sum((y != j) & (pred != j)) / np.sum(pred != j) for j in range(k)]
    assert o["npv_macro"]["value"] == pytest.approx(np.mean(npv))
    for key in ("ppv_macro", "npv_macro"):
        assert o[key]["ci_low"] < o[key]["value"] < o[key]["ci_high"]


def test_a_macro_over_one_defined_class_has_that_class_interval():
    """A test set of positives only, none found: balanced accuracy is the positives' sensitivity, 0 of 20,
    but read 0.000 [0.000, 0.000] (every resample of it is 0) beside sensitivity 0.000 [0.000, 0.161]
    (Wilson); one class's macro is that class's metric, with its interval."""
    y = np.ones(20, int)
    p1 = np.linspace(0.05, 0.45, 20)
    m = classification_metrics(y, np.stack([1 - p1, p1], 1), n_boot=200)
    sens = m["per_class"]["1"]["sensitivity"]
    assert sens["value"] == 0.0 and sens["ci_method"] == "wilson" and sens["ci_high"] > 0.1
    for key in ("balanced_accuracy", "sensitivity_macro"):
        assert m["overall"][key] == sens
    assert m["overall"]["specificity_macro"] == m["per_class"]["0"]["specificity"]
    assert m["overall"]["auc_macro"]["value"] is None


def test_a_bootstrap_collapsing_to_a_point_over_few_cases_gives_no_interval():
    """One case (an external set of one image): every resample is that case, so F1 and ECE read
    0.000 [0.000, 0.000] and 0.6 [0.6, 0.6], a 95 % interval of zero width from one image. Under 20 cases a
    zero-width bootstrap interval is no interval; proportions keep Wilson's, and larger sets are unchanged."""
    from meddx.evaluation.report import format_metric

    m = classification_metrics(np.array([1]), np.array([[0.8, 0.2]]), n_boot=200)
    for key in ("f1", "ece", "f1_macro"):
        v = m["overall"][key]
        assert v["value"] is not None and v["ci_low"] is None and v["ci_high"] is None
        assert format_metric(v).endswith("[n/a, n/a]")
    assert m["overall"]["sensitivity"]["ci_method"] == "wilson" and m["overall"]["sensitivity"]["ci_high"] > 0.5
    y = np.r_[np.zeros(30, int), np.ones(30, int)]
    big = classification_metrics(y, np.tile([[0.9, 0.1]], (60, 1)), n_boot=200)  # always predicts class 0
    assert big["overall"]["balanced_accuracy"] == {"value": 0.5, "ci_low": 0.5, "ci_high": 0.5}
