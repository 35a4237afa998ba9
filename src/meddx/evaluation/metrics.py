"""Classification metrics with percentile-bootstrap confidence intervals.

Every metric, point estimate and bootstrap replicate alike, is computed from case
weights: the full sample has weight 1 per case, a bootstrap resample has weight
"times this case was drawn". One code path therefore gives both, and the whole
bootstrap is a handful of array operations (no Python loop over resamples).

Conventions:
    * A metric that is undefined (PPV with no predicted positives, AUC with one class
      present, ...) is ``None`` in the returned dict, never NaN.
    * Macro averages run over the classes whose metric is defined on the full sample;
      a resample in which any of those is undefined is dropped from that metric's CI.
      A CI computed from fewer than ``n_boot`` resamples says how many in ``ci_resamples``
      (a rare class: the interval is conditional on the class being drawn at all).
    * A proportion (accuracy, sensitivity, specificity, PPV, NPV) whose denominator has fewer
      than ``WILSON_BELOW`` cases, or whose value is 0 or 1, gets the Wilson score interval
      (scipy) instead, marked ``"ci_method": "wilson"``: there the percentile bootstrap
      collapses (2 of 2 positives found resample to [1, 1]) or is far too narrow.
    * Balanced accuracy is the macro sensitivity (mean per-class recall).
    * Over fewer than ``WILSON_BELOW`` cases, a metric that is not a proportion (F1, AUC, ECE, a macro
      average) whose bootstrap interval has zero width gets no interval (``ci_low``/``ci_high`` None):
      the resamples of a handful of cases all agreeing says nothing about the population.
    * ECE is top-label (argmax) with ``ece_bins`` equal-width bins (15 unless the plan says
      otherwise), independent of the threshold. It is
      biased upwards on small samples, and its bootstrap interval inherits that bias.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from meddx.errors import MeddxError
from meddx.evaluation._checks import check_labels, check_labels_proba, check_positive
from meddx.evaluation.calibration import bin_index

ECE_BINS = 15
# Bound the (resamples x cases) weight matrix to ~32 MB whatever the test-set size.
_MAX_WEIGHT_ELEMENTS = 1 << 22

PER_CLASS_KEYS = ("sensitivity", "specificity", "ppv", "npv", "f1", "auc")
PROPORTION_KEYS = ("accuracy", "sensitivity", "specificity", "ppv", "npv")
WILSON_BELOW = 20  # cases in a proportion's denominator under which its CI is Wilson's
# overall macro averages and the per-class metric each averages
_MACRO_OF = {"balanced_accuracy": "sensitivity", "sensitivity_macro": "sensitivity",
             "specificity_macro": "specificity", "ppv_macro": "ppv", "npv_macro": "npv", "f1_macro": "f1",
             "auc_macro": "auc"}


# ---------------------------------------------------------------- public helpers


def positive_index(class_names: Sequence[str], positive_class: str | None = None) -> int:
    """Index of a binary task's positive class: ``positive_class`` when given, else the second class
    (index 1). Sensitivity, specificity, PPV, NPV, F1, AUC and the threshold are about that class."""
    if positive_class is None:
        return 1
    names = [str(c) for c in class_names]
    if str(positive_class) not in names:
        raise MeddxError(f"positive class {positive_class!r} is not one of the classes {names}",
                         fix="set evaluate.positive_class to one of them")
    return names.index(str(positive_class))


def predict_labels(proba, threshold: float | None = None, positive: int = 1) -> np.ndarray:
    """Turn probabilities into class predictions.

    Args:
        proba: (N, K) probabilities.
        threshold: binary only: class ``positive`` iff ``proba[:, positive] >= threshold``
            (default 0.5), else the other class. Must be None for K > 2, where the prediction
            is the argmax.
        positive: binary only: index of the positive class (0 or 1).

    Returns:
        (N,) int64 predicted classes.
    """
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise MeddxError(f"proba must have shape (N, K) with K >= 2, got {p.shape}")
    if p.shape[1] == 2:
        t = 0.5 if threshold is None else _check_threshold(threshold)
        pos = check_positive(positive)
        return np.where(p[:, pos] >= t, pos, 1 - pos).astype(np.int64)
    if threshold is not None:
        raise MeddxError(
            f"a threshold only applies to binary tasks, but proba has {p.shape[1]} classes",
            fix="pass threshold=None (argmax) for multi-class tasks",
        )
    return p.argmax(axis=1).astype(np.int64)


def confusion_matrix(y_true, y_pred, K: int) -> np.ndarray:
    """(K, K) int64 confusion matrix; rows are true classes, columns predicted ones."""
    y = check_labels(y_true, n_classes=K)
    yp = check_labels(y_pred, n_classes=K, n=y.shape[0])
    return np.bincount(y * K + yp, minlength=K * K).reshape(K, K).astype(np.int64)


def auc_ovr(y_true, proba) -> np.ndarray:
    """One-vs-rest ROC AUC per class (Mann-Whitney, ties count one half).

    Returns:
        (K,) float array; NaN for a class that is absent or is the only one present.
        Equals ``sklearn.metrics.roc_auc_score(y_true == k, proba[:, k])``.
    """
    y, p = check_labels_proba(y_true, proba)
    w = np.ones((1, y.shape[0]))
    return np.array([_auc_weighted(w, *_auc_prep(s, pos))[0] for s, pos in _ovr_scores(y, p)])


# ---------------------------------------------------------------- main entry point


def classification_metrics(
    y_true,
    proba,
    *,
    class_names: Sequence[str] | None = None,
    threshold: float | None = None,
    positive: int = 1,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    ece_bins: int = ECE_BINS,
) -> dict:
    """Point estimates and percentile-bootstrap CIs of the standard classification metrics.

    Args:
        y_true: (N,) integer labels in ``[0, K)``.
        proba: (N, K) class probabilities, rows summing to 1.
        class_names: K names (default ``"0"``, ``"1"``, ...).
        threshold: binary only: class ``positive`` iff ``proba[:, positive] >= threshold``
            (default 0.5). Must be None for K > 2 (argmax).
        positive: binary only: index of the positive class, whose sensitivity, specificity,
            PPV, NPV, F1 and AUC are the overall binary metrics (see ``positive_index``).
        n_boot: bootstrap resamples of the cases (0 disables the CIs).
        seed: seed of ``np.random.default_rng`` for the resamples.
        ci: confidence level of the percentile interval.
        ece_bins: equal-width confidence bins of the ECE.

    Returns:
        A JSON-serialisable dict: ``n``, ``n_classes``, ``class_names``,
        ``operating_point``, ``bootstrap``, ``overall``, ``per_class`` and
        ``confusion_matrix``. Each metric is ``{"value", "ci_low", "ci_high"}``.
    """
    y, p = check_labels_proba(y_true, proba)
    n, k = p.shape
    names = _class_names(class_names, k)
    if not 0.0 < ci < 1.0:
        raise MeddxError(f"ci must lie in (0, 1), got {ci}")
    if int(n_boot) < 0:
        raise MeddxError(f"n_boot must be >= 0, got {n_boot}")
    y_pred = predict_labels(p, threshold, positive)
    if k == 2:
        op = {"rule": "threshold", "threshold": 0.5 if threshold is None else float(threshold),
              "positive_class": names[positive]}
    else:
        op = {"rule": "argmax", "threshold": None}

    engine = _MetricEngine(y, p, y_pred, ece_bins)
    point = engine.compute(np.ones((1, n)))
    counts = engine.counts(np.ones((1, n)))  # successes and denominators of the proportions
    # Macro averages are fixed to the classes defined on the full sample.
    masks = {key: ~np.isnan(point[key][0]) for key in PER_CLASS_KEYS}
    point_flat = engine.flatten(point, masks)

    boot: dict[str, list[np.ndarray]] = {key: [] for key in point_flat}
    for weights in _bootstrap_weights(n, int(n_boot), seed):
        for key, values in engine.flatten(engine.compute(weights), masks).items():
            boot[key].append(values)

    alpha = (1.0 - ci) / 2.0
    samples_by_key = {key: np.concatenate(v, axis=0) for key, v in boot.items() if v}

    def summarise(key: str, col: int | None = None) -> dict:
        per_class_key = _MACRO_OF.get(key)
        if per_class_key is not None and masks[per_class_key].sum() == 1:
            # a macro over one defined class (a test set of one class) is that class's metric: same CI
            # (Wilson's where due), not the bootstrap of a proportion collapsing to [0, 0] or [1, 1]
            return summarise(per_class_key, int(np.flatnonzero(masks[per_class_key])[0]))
        value = point_flat[key][0] if col is None else point_flat[key][0, col]
        if np.isnan(value):
            return _metric(None)
        if key in PROPORTION_KEYS and int(n_boot) > 0:
            hits, den = (c[0] if col is None else c[0, col] for c in counts[key])
            if den < WILSON_BELOW or hits in (0, den):
                lo, hi = _wilson(int(round(hits)), int(round(den)), ci)
                return {**_metric(value, lo, hi), "ci_method": "wilson"}
        if key not in samples_by_key:
            return _metric(value)
        samples = samples_by_key[key] if col is None else samples_by_key[key][:, col]
        samples = samples[~np.isnan(samples)]
        if samples.size == 0:
            return _metric(value)
        lo, hi = np.quantile(samples, [alpha, 1.0 - alpha])
        if n < WILSON_BELOW and hi - lo <= 1e-12:
            # F1, AUC, ECE or a macro over a handful of cases whose resamples all agree (one case: ECE 0.608
            # [0.608, 0.608]): no interval rather than a zero-width one; proportions got Wilson's above
            return _metric(value)
        out = _metric(value, lo, hi)
        if samples.size < int(n_boot):  # the other resamples lacked a class this metric needs
            out["ci_resamples"] = int(samples.size)
        return out

    overall_keys = [
        "accuracy", "balanced_accuracy", "auc_macro", "f1_macro",
        "sensitivity_macro", "specificity_macro", "ppv_macro", "npv_macro", "ece",
    ]
    overall = {key: summarise(key) for key in overall_keys}
    if k == 2:
        for key in PER_CLASS_KEYS:
            overall[key] = summarise(key, positive)

    support = np.bincount(y, minlength=k)
    per_class = {}
    for j, name in enumerate(names):
        entry = {key: summarise(key, j) for key in PER_CLASS_KEYS}
        entry["support"] = int(support[j])
        per_class[name] = entry

    return {
        "n": int(n),
        "n_classes": int(k),
        "class_names": names,
        "operating_point": op,
        "ece_bins": int(ece_bins),
        "bootstrap": {
            "method": "percentile bootstrap over cases",
            "proportions_with_wilson_ci": f"denominator < {WILSON_BELOW} cases, or a value of 0 or 1",
            "n_boot": int(n_boot),
            "seed": int(seed),
            "ci_level": float(ci),
        },
        "overall": overall,
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y, y_pred, k).tolist(),
    }


def paired_bootstrap_pvalue(
    y_true, proba_a, proba_b, metric: str = "auc", n_boot: int = 2000, seed: int = 0
) -> float:
    """Two-sided paired-bootstrap p-value for ``metric(a) == metric(b)`` on the same cases.

    Both models are scored on the same case resamples. The resampled differences are
    centred on the observed one to mimic the null, and
    ``p = (1 + #{|d_b - d| >= |d|}) / (1 + B)`` over the B resamples where the metric
    is defined. ``proba_a`` and ``proba_b`` may also be equal-length lists of (N, K)
    arrays (one per training seed): the difference is then the mean over seeds of
    ``metric(a_s) - metric(b_s)``, every seed scored on the same case resample.

    Args:
        y_true: (N,) integer labels.
        proba_a: (N, K) probabilities of model A, or a list of them (seeds).
        proba_b: (N, K) probabilities of model B, or a list of them (seeds).
        metric: ``"auc"`` (positive-class AUC if binary, else macro one-vs-rest AUC) or
            ``"accuracy"`` (threshold 0.5 if binary, else argmax).
        n_boot: number of resamples.
        seed: seed of ``np.random.default_rng``.

    Returns:
        The p-value in (0, 1].
    """
    if metric not in ("auc", "accuracy"):
        raise MeddxError(f"unknown metric {metric!r}", fix="use 'auc' or 'accuracy'")
    list_a = list(proba_a) if isinstance(proba_a, (list, tuple)) else [proba_a]
    list_b = list(proba_b) if isinstance(proba_b, (list, tuple)) else [proba_b]
    if len(list_a) != len(list_b) or not list_a:
        raise MeddxError(f"give as many seeds for A as for B (got {len(list_a)} and {len(list_b)})")
    y = None
    scorers = []
    for pa_raw, pb_raw in zip(list_a, list_b):
        y, pa = check_labels_proba(y_true, pa_raw)
        _, pb = check_labels_proba(y, pb_raw)
        if pa.shape != pb.shape:
            raise MeddxError(f"proba_a {pa.shape} and proba_b {pb.shape} must have the same shape")
        scorers.append((_scalar_scorer(y, pa, metric), _scalar_scorer(y, pb, metric)))
    if int(n_boot) < 1:
        raise MeddxError(f"n_boot must be >= 1, got {n_boot}")
    n = y.shape[0]

    def diff(w):
        return np.mean([sa(w) - sb(w) for sa, sb in scorers], axis=0)

    observed = diff(np.ones((1, n)))[0]
    if np.isnan(observed):
        raise MeddxError(f"{metric} is undefined on these labels (is only one class present?)")
    diffs = np.concatenate([diff(w) for w in _bootstrap_weights(n, int(n_boot), seed)])
    diffs = diffs[~np.isnan(diffs)]
    # Float noise would otherwise make |0 - 0| >= |0| depend on rounding.
    tol = 1e-12
    extreme = np.count_nonzero(np.abs(diffs - observed) >= abs(observed) - tol)
    return float((1 + extreme) / (1 + diffs.size))


# ---------------------------------------------------------------- internals


def _metric(value, lo=None, hi=None) -> dict:
    def f(x):
        return None if x is None or not np.isfinite(x) else float(x)

    return {"value": f(value), "ci_low": f(lo), "ci_high": f(hi)}


def _wilson(hits: int, n: int, ci: float) -> tuple[float, float]:
    from scipy.stats import binomtest

    r = binomtest(hits, n).proportion_ci(confidence_level=ci, method="wilson")
    return float(r.low), float(r.high)


def _check_threshold(threshold) -> float:
    t = float(threshold)
    if not np.isfinite(t):
        raise MeddxError(f"threshold must be a finite number, got {threshold}")
    return t


def _class_names(class_names, k: int) -> list[str]:
    if class_names is None:
        return [str(j) for j in range(k)]
    names = [str(c) for c in class_names]
    if len(names) != k:
        raise MeddxError(f"{len(names)} class names given for {k} classes")
    if len(set(names)) != k:
        raise MeddxError(f"class names must be unique, got {names}")
    return names


def _bootstrap_weights(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Yield (b, n) float matrices: how often each case is drawn in each resample."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, _MAX_WEIGHT_ELEMENTS // n))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))
        flat = (idx + np.arange(b)[:, None] * n).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
        done += b


def _ovr_scores(y: np.ndarray, p: np.ndarray):
    k = p.shape[1]
    for j in range(k):
        # For K=2, -p1 orders class 0 exactly as p0 would, without 1-p rounding artefacts,
        # so both per-class AUCs are identical.
        score = -p[:, 1] if (k == 2 and j == 0) else p[:, j]
        yield score, y == j


def _auc_prep(score: np.ndarray, pos: np.ndarray):
    """Sort the negatives once; locate each positive's tie block among them."""
    neg_order = np.flatnonzero(~pos)[np.argsort(score[~pos], kind="mergesort")]
    neg_sorted = score[neg_order]
    pos_idx = np.flatnonzero(pos)
    lo = np.searchsorted(neg_sorted, score[pos_idx], side="left")
    hi = np.searchsorted(neg_sorted, score[pos_idx], side="right")
    return neg_order, pos_idx, lo, hi


def _auc_weighted(weights, neg_order, pos_idx, lo, hi) -> np.ndarray:
    """Weighted Mann-Whitney AUC for each row of ``weights``; NaN if a class has no weight.

    With ``cn[:, m]`` the weight of the m lowest-scoring negatives, a positive scores
    above ``cn[lo]`` negatives and ties ``cn[hi] - cn[lo]``; counting ties one half
    gives ``(cn[lo] + cn[hi]) / 2``. Cumsums and gathers only, no per-tie-group loop.
    """
    cn = np.zeros((weights.shape[0], neg_order.size + 1))
    np.cumsum(weights[:, neg_order], axis=1, out=cn[:, 1:])
    wp = weights[:, pos_idx]
    u = 0.5 * np.einsum("bi,bi->b", wp, cn[:, lo] + cn[:, hi])
    denom = wp.sum(axis=1) * cn[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, u / denom, np.nan)


def _div(num, den) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _macro(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if not mask.any():
        return np.full(values.shape[0], np.nan)
    # A NaN in any included class makes the mean NaN, which drops that resample.
    return values[:, mask].mean(axis=1)


class _MetricEngine:
    """Metrics as functions of case weights (ones = full sample, counts = a resample)."""

    def __init__(self, y: np.ndarray, p: np.ndarray, y_pred: np.ndarray, ece_bins: int = ECE_BINS):
        n, k = p.shape
        self.k = k
        cell = y * k + y_pred
        # onehot[i, c] = 1 if case i falls in confusion cell c: weights @ onehot = counts.
        self.cells = np.zeros((n, k * k))
        self.cells[np.arange(n), cell] = 1.0
        confidence = p.max(axis=1)
        correct = (p.argmax(axis=1) == y).astype(np.float64)
        self.gap = np.zeros((n, ece_bins))
        self.gap[np.arange(n), bin_index(confidence, ece_bins)] = correct - confidence
        self.auc_prep = [_auc_prep(s, pos) for s, pos in _ovr_scores(y, p)]

    def compute(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        c = self.counts(weights)
        tp, support = c["sensitivity"]
        predicted = c["ppv"][1]
        out = {key: _div(*c[key]) for key in PROPORTION_KEYS}
        out.update({
            "f1": _div(2 * tp, support + predicted),  # 2TP / (2TP + FP + FN)
            "auc": self._auc(weights),
            "ece": np.abs(weights @ self.gap).sum(axis=1) / weights.sum(axis=1),
        })
        return out

    def counts(self, weights: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``(successes, denominator)`` of each proportion, shaped like ``compute``'s values."""
        k = self.k
        cm = (weights @ self.cells).reshape(-1, k, k)
        tp = np.diagonal(cm, axis1=1, axis2=2)
        support, predicted = cm.sum(axis=2), cm.sum(axis=1)
        total = cm.sum(axis=(1, 2))[:, None]
        tn = total - support - predicted + tp
        return {"sensitivity": (tp, support), "specificity": (tn, total - support), "ppv": (tp, predicted),
                "npv": (tn, total - predicted), "accuracy": (tp.sum(axis=1), total[:, 0])}

    def _auc(self, weights: np.ndarray) -> np.ndarray:
        if self.k == 2:
            # Class 0 ranks the same cases in reverse: its AUC is the same number.
            auc1 = _auc_weighted(weights, *self.auc_prep[1])
            return np.stack([auc1, auc1], axis=1)
        return np.stack([_auc_weighted(weights, *prep) for prep in self.auc_prep], axis=1)

    @staticmethod
    def flatten(m: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per-class arrays (b, K) plus overall scalars (b,)."""
        out = {key: m[key] for key in PER_CLASS_KEYS}
        out["accuracy"] = m["accuracy"]
        out["ece"] = m["ece"]
        out["sensitivity_macro"] = _macro(m["sensitivity"], masks["sensitivity"])
        out["balanced_accuracy"] = out["sensitivity_macro"]
        out["specificity_macro"] = _macro(m["specificity"], masks["specificity"])
        out["ppv_macro"] = _macro(m["ppv"], masks["ppv"])
        out["npv_macro"] = _macro(m["npv"], masks["npv"])
        out["f1_macro"] = _macro(m["f1"], masks["f1"])
        out["auc_macro"] = _macro(m["auc"], masks["auc"])
        return out


def _scalar_scorer(y: np.ndarray, p: np.ndarray, metric: str):
    """A function weights (b, n) -> (b,) values of ``metric`` for fixed predictions."""
    if metric == "accuracy":
        correct = (predict_labels(p) == y).astype(np.float64)
        return lambda w: (w @ correct) / w.sum(axis=1)
    k = p.shape[1]
    preps = [_auc_prep(s, pos) for s, pos in _ovr_scores(y, p)]
    if k == 2:
        return lambda w: _auc_weighted(w, *preps[1])
    full = np.array([_auc_weighted(np.ones((1, y.shape[0])), *prep)[0] for prep in preps])
    keep = [prep for prep, v in zip(preps, full) if not np.isnan(v)]
    if not keep:
        return lambda w: np.full(w.shape[0], np.nan)
    return lambda w: np.mean([_auc_weighted(w, *prep) for prep in keep], axis=0)
