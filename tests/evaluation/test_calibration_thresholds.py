"""Calibration error and operating-point selection, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.errors import MeddxError
from meddx.evaluation import (
    choose_threshold,
    expected_calibration_error,
    reliability_curve,
    threshold_for_sensitivity,
    youden_threshold,
)

# Confidences 0.90 (right), 0.88 (wrong), 0.62 (right), 0.70 (wrong).
Y4 = np.array([1, 0, 0, 0])
PROBA4 = np.array([[0.10, 0.90], [0.12, 0.88], [0.62, 0.38], [0.30, 0.70]])


def test_ece_hand_computed():
    # 15 bins: 0.90 and 0.88 share (13/15, 14/15]: |0.5 - 0.89| = 0.39 (weight 2);
    # 0.62 alone: |1 - 0.62| = 0.38; 0.70 alone: |0 - 0.70| = 0.70.
    assert expected_calibration_error(Y4, PROBA4) == pytest.approx((2 * 0.39 + 0.38 + 0.70) / 4)
    # One bin: |accuracy 0.5 - mean confidence 0.775|.
    assert expected_calibration_error(Y4, PROBA4, n_bins=1) == pytest.approx(0.275)


def test_ece_zero_when_perfectly_calibrated():
    # Confidence 0.8 everywhere and exactly 80% right.
    y = np.array([1] * 8 + [0] * 2)
    proba = np.tile([0.2, 0.8], (10, 1))
    assert expected_calibration_error(y, proba) == pytest.approx(0.0, abs=1e-12)
    # Three classes, confidence 0.5, half right.
    y3 = np.array([0, 1, 0, 2])
    p3 = np.tile([0.5, 0.3, 0.2], (4, 1))
    assert expected_calibration_error(y3, p3) == pytest.approx(0.0, abs=1e-12)


def test_reliability_curve_bins():
    c = reliability_curve(Y4, PROBA4)
    assert len(c["bin_count"]) == 15 and sum(c["bin_count"]) == 4
    assert c["bin_count"][13] == 2
    assert c["bin_confidence"][13] == pytest.approx(0.89)
    assert c["bin_accuracy"][13] == pytest.approx(0.5)
    assert c["bin_accuracy"][10] == 0.0 and c["bin_accuracy"][9] == 1.0
    assert c["bin_confidence"][0] is None and c["bin_accuracy"][0] is None
    assert c["bin_edges"][0] == 0.0 and c["bin_edges"][-1] == 1.0


# Sorted by score: 0.8(+) 0.6(+) 0.4(-) 0.35(-) 0.3(+) 0.1(-).
# J at each threshold: 1/3, 2/3, 1/3, 0, 1/3, 0.
YT = np.array([0, 0, 0, 1, 1, 1])
ST = np.array([0.1, 0.4, 0.35, 0.8, 0.6, 0.3])


def test_youden_hand_checked():
    assert youden_threshold(YT, ST) == 0.6


def test_youden_tie_goes_to_threshold_closest_to_half():
    # J = 0.5 at both 0.8 and 0.3; 0.3 is closer to 0.5.
    assert youden_threshold([0, 1, 0, 1], [0.2, 0.3, 0.7, 0.8]) == 0.3


def test_threshold_for_sensitivity_hand_checked():
    assert threshold_for_sensitivity(YT, ST, 0.9) == 0.3
    assert threshold_for_sensitivity(YT, ST, 0.5) == 0.6
    assert threshold_for_sensitivity(YT, ST, 2 / 3) == 0.6  # exactly reachable
    assert threshold_for_sensitivity(YT, ST, 0.3) == 0.8
    with pytest.raises(MeddxError):
        threshold_for_sensitivity(YT, ST, 0.0)


def test_choose_threshold():
    proba = np.c_[1 - ST, ST]
    out = choose_threshold(YT, proba)
    assert out == {"rule": "youden", "threshold": 0.6, "val_sensitivity": pytest.approx(2 / 3),
                   "val_specificity": 1.0}
    out = choose_threshold(YT, proba, rule="sensitivity", target_sensitivity=0.9)
    assert out["threshold"] == 0.3
    assert out["val_sensitivity"] == 1.0
    assert out["val_specificity"] == pytest.approx(1 / 3)  # 0.4 and 0.35 are false positives
    with pytest.raises(MeddxError, match="target_sensitivity"):
        choose_threshold(YT, proba, rule="sensitivity")
    with pytest.raises(MeddxError, match="both"):
        choose_threshold([0, 0, 0], [[0.9, 0.1]] * 3)
    with pytest.raises(MeddxError, match="binary"):
        choose_threshold([0, 1, 2], np.full((3, 3), 1 / 3))


def test_choose_threshold_for_a_positive_class_at_index_0():
    """The threshold of class 0 is chosen on its probability, as class 1's would be on the mirrored data."""
    mirrored = np.c_[ST, 1 - ST]
    out = choose_threshold(1 - np.asarray(YT), mirrored, positive=0)
    assert out == choose_threshold(YT, np.c_[1 - ST, ST])
    out = choose_threshold(1 - np.asarray(YT), mirrored, rule="sensitivity", target_sensitivity=0.9, positive=0)
    assert out["threshold"] == 0.3 and out["val_sensitivity"] == 1.0


def test_the_stored_positive_class_of_a_run():
    from meddx.evaluation.thresholds import stored_positive

    names = ["cancer", "normal"]
    assert stored_positive(names, {"threshold": 0.4, "positive_class": "cancer"}) == 0
    assert stored_positive(names, {"threshold": 0.4}) == 1                 # written before R18: class 1
    assert stored_positive(names, {}, fallback="cancer") == 0              # no thresholds.json: the plan's
    assert stored_positive(names, {"threshold": 0.4}, fallback="cancer") == 1  # a stored file wins


def test_temperature_scaling_fixes_overconfidence_and_keeps_ranking():
    from meddx.evaluation.calibration import apply_temperature, expected_calibration_error, fit_temperature

    rng = np.random.default_rng(0)
    n = 4000
    y = rng.integers(0, 2, n)
    true_logit = rng.normal(0, 1.5, n) + (2 * y - 1) * 1.0
    p1 = 1 / (1 + np.exp(-3.0 * true_logit))  # logits scaled x3: overconfident by a temperature of 3
    p = np.stack([1 - p1, p1], 1)
    t = fit_temperature(y, p)
    assert 2.4 < t < 3.6
    q = apply_temperature(p, t)
    assert expected_calibration_error(y, q) < 0.5 * expected_calibration_error(y, p)
    assert np.array_equal(q.argmax(1), p.argmax(1))
    assert np.allclose(q.sum(1), 1)
    assert fit_temperature(np.zeros(5, int), p[:5]) == 1.0  # one class: nothing to fit
