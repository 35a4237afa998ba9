"""Calibration: top-label expected calibration error and reliability curves.

Written here rather than taken from MONAI, which has no top-label ECE for
classification probabilities.
"""

from __future__ import annotations

import numpy as np

from meddx.errors import MeddxError
from meddx.evaluation._checks import check_labels_proba


def bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin of each confidence: bin ``b`` holds ``(b/n, (b+1)/n]``; 0 goes to bin 0."""
    if int(n_bins) < 1:
        raise MeddxError(f"n_bins must be >= 1, got {n_bins}")
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    return np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, int(n_bins) - 1)


def top_label(y_true, proba) -> tuple[np.ndarray, np.ndarray]:
    """Confidence (max probability) and correctness of the argmax prediction per case."""
    y, p = check_labels_proba(y_true, proba)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    return confidence, correct


def expected_calibration_error(y_true, proba, n_bins: int = 15) -> float:
    """Top-label expected calibration error.

    Cases are binned by confidence (the largest class probability) into ``n_bins``
    equal-width bins on [0, 1]; ECE is the count-weighted mean over bins of
    ``|accuracy - mean confidence|``.

    Args:
        y_true: (N,) integer labels.
        proba: (N, K) class probabilities, rows summing to 1.
        n_bins: number of equal-width bins.

    Returns:
        ECE in [0, 1].
    """
    confidence, correct = top_label(y_true, proba)
    b = bin_index(confidence, n_bins)
    gap = np.bincount(b, weights=correct - confidence, minlength=n_bins)
    return float(np.abs(gap).sum() / confidence.shape[0])


def reliability_curve(y_true, proba, n_bins: int = 15) -> dict:
    """Per-bin mean confidence, accuracy and count (the data of a reliability diagram).

    Returns:
        Dict with ``bin_confidence``, ``bin_accuracy`` (lists of length ``n_bins``; None
        for empty bins), ``bin_count`` (list of int) and ``bin_edges`` (``n_bins + 1``).
    """
    confidence, correct = top_label(y_true, proba)
    b = bin_index(confidence, n_bins)
    count = np.bincount(b, minlength=n_bins)
    conf_sum = np.bincount(b, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(b, weights=correct, minlength=n_bins)
    conf = [float(c / n) if n else None for c, n in zip(conf_sum, count)]
    acc = [float(a / n) if n else None for a, n in zip(acc_sum, count)]
    return {
        "bin_confidence": conf,
        "bin_accuracy": acc,
        "bin_count": [int(c) for c in count],
        "bin_edges": [float(e) for e in np.linspace(0.0, 1.0, int(n_bins) + 1)],
    }


def apply_temperature(proba, temperature: float) -> np.ndarray:
    """Rescale probabilities by a temperature: ``softmax(log(p) / T)``.

    Works on probabilities rather than logits so it also calibrates averaged outputs
    (test-time augmentation, ensembles) and the ONNX runtime's softmax output.
    """
    p = np.clip(np.asarray(proba, dtype=np.float64), 1e-12, 1.0)
    z = np.log(p) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(y_true, proba, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """Temperature scaling (Guo et al., 2017): the ``T`` that minimises the negative
    log-likelihood of ``softmax(log(p) / T)`` on held-out (validation) data.

    One scalar, so ranking (AUC) and argmax never change; only confidences do. Solved
    by bounded scalar minimisation over ``log T`` (the NLL is smooth and unimodal in it).

    Returns:
        The fitted temperature (1.0 when the data cannot inform it: under 2 cases or one class).
    """
    from scipy.optimize import minimize_scalar

    y, p = check_labels_proba(y_true, proba)
    if y.shape[0] < 2 or len(np.unique(y)) < 2:
        return 1.0
    logp = np.log(np.clip(p, 1e-12, 1.0))
    idx = np.arange(y.shape[0])

    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(-(z[idx, y] - np.log(np.exp(z).sum(axis=1))).mean())

    res = minimize_scalar(nll, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-4})
    t = float(np.exp(res.x))
    return t if nll(np.log(t)) <= nll(0.0) else 1.0
