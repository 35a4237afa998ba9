"""Operating-point selection for binary classifiers.

Thresholds must be chosen on validation data only, then applied unchanged to the
test split; choosing them on the test split inflates every reported metric. A case
is predicted positive iff ``score >= threshold``.
"""

from __future__ import annotations

import numpy as np

from meddx.errors import MeddxError
from meddx.evaluation._checks import check_binary, check_positive

# Float noise must not break ties between mathematically equal Youden indices.
_TIE_TOL = 1e-12


def roc_points(y_true_binary, score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve at every distinct score.

    Returns:
        ``(thresholds, tpr, fpr)``, thresholds in decreasing order; at ``thresholds[i]``
        the cases with ``score >= thresholds[i]`` are called positive.
    """
    y, s = check_binary(y_true_binary, score)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), s.shape[0] - 1]
    tps = np.cumsum(y_sorted)[last]
    fps = (last + 1) - tps
    return s_sorted[last], tps / tps[-1], fps / fps[-1]


def youden_threshold(y_true_binary, score) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1.

    Chosen among the ROC thresholds (the distinct scores) of validation data only.
    Ties go to the threshold closest to 0.5 (then to the larger one).

    Args:
        y_true_binary: (N,) labels in {0, 1}, both present.
        score: (N,) score of the positive class.

    Returns:
        The threshold.
    """
    thr, tpr, fpr = roc_points(y_true_binary, score)
    j = tpr - fpr
    best = np.flatnonzero(j >= j.max() - _TIE_TOL)
    # thr is decreasing, so argmin picks the larger of two equally distant thresholds.
    return float(thr[best[np.argmin(np.abs(thr[best] - 0.5))]])


def threshold_for_sensitivity(y_true_binary, score, target: float) -> float:
    """Largest threshold whose sensitivity on validation data is at least ``target``.

    Args:
        y_true_binary: (N,) labels in {0, 1}, both present.
        score: (N,) score of the positive class.
        target: required sensitivity in (0, 1].

    Returns:
        The threshold.
    """
    target = float(target)
    if not 0.0 < target <= 1.0:
        raise MeddxError(f"target sensitivity must lie in (0, 1], got {target}")
    thr, tpr, _ = roc_points(y_true_binary, score)
    # The lowest threshold always reaches sensitivity 1, so this is never empty.
    return float(thr[tpr >= target - _TIE_TOL].max())


def choose_threshold(
    y_val, proba_val, rule: str = "youden", target_sensitivity: float | None = None, positive: int = 1
) -> dict:
    """Choose a binary operating point on the validation split (never the test split).

    Args:
        y_val: (N,) validation labels in {0, 1}.
        proba_val: (N, 2) validation probabilities, or (N,) positive-class scores.
        positive: index of the positive class (with (N, 2) probabilities): the threshold applies to
            its probability, and sensitivity is its recall. With (N,) scores, ``y_val == positive``
            marks the positive cases.
        rule: ``"youden"`` (max sensitivity + specificity - 1) or ``"sensitivity"``
            (largest threshold reaching ``target_sensitivity``).
        target_sensitivity: required with ``rule="sensitivity"``.

    Returns:
        ``{"rule", "threshold", "val_sensitivity", "val_specificity"}``, plus
        ``"target_sensitivity"`` for the sensitivity rule.
    """
    check_positive(positive)
    p = np.asarray(proba_val, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 2:
        score = p[:, positive]
    elif p.ndim == 1:
        score = p
    else:
        raise MeddxError(
            f"threshold selection is for binary tasks; proba_val has shape {p.shape}",
            fix="pass (N, 2) probabilities, or use argmax for multi-class tasks",
        )
    y, score = check_binary(y_val, score)
    if positive == 0:
        y = 1 - y
    if rule == "youden":
        if target_sensitivity is not None:
            raise MeddxError("target_sensitivity only applies to rule='sensitivity'")
        t = youden_threshold(y, score)
    elif rule == "sensitivity":
        if target_sensitivity is None:
            raise MeddxError("rule='sensitivity' needs target_sensitivity", fix="e.g. 0.95")
        t = threshold_for_sensitivity(y, score, target_sensitivity)
    else:
        raise MeddxError(f"unknown threshold rule {rule!r}", fix="use 'youden' or 'sensitivity'")
    pred = score >= t
    out = {
        "rule": rule,
        "threshold": t,
        "val_sensitivity": float(np.mean(pred[y == 1])),
        "val_specificity": float(np.mean(~pred[y == 0])),
    }
    if rule == "sensitivity":
        out["target_sensitivity"] = float(target_sensitivity)
    return out


def stored_positive(class_names, threshold: dict | None, fallback: str | None = None) -> int:
    """Index of the positive class a stored operating point (``thresholds.json``) is about: its
    ``positive_class``; a file written before that key existed was about class 1. Without a file (a run
    that did not finish), ``fallback`` (the plan's ``evaluate.positive_class``) when it is a class."""
    names = [str(c) for c in class_names]
    name = (threshold or {}).get("positive_class")
    if name is None and not threshold and fallback is not None:
        name = fallback
    return names.index(name) if name in names else 1
