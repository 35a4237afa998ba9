"""Segmentation metrics per case and class, with bootstrap 95% CIs over cases.

Dice and IoU are counted directly; HD95 and average surface distance (symmetric) come
from MONAI, in millimetres when the spacing is known (else pixels).

Empty masks, stated in every report:
* reference and prediction both empty: Dice = IoU = 1, HD95 = ASD = 0 (a correct "nothing");
* exactly one of them empty: Dice = IoU = 0; HD95 and ASD are undefined, left out of
  their means and counted (``n_distance_undefined``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EMPTY_RULE = ("both masks empty: Dice = IoU = 1, HD95 = ASD = 0; one empty: Dice = IoU = 0, HD95/ASD undefined "
              "(left out of their means, counted)")
METRICS = ("dice", "iou", "hd95", "asd")


def case_metrics(pred: np.ndarray, truth: np.ndarray, k: int, spacing: Sequence[float] | None = None) -> dict:
    """Dice, IoU, HD95 and ASD of each foreground class ``1..k-1`` for one case.

    Returns:
        ``{"dice": [..k-1], "iou": [...], "hd95": [...], "asd": [...]}`` (NaN = undefined).
    """
    import warnings

    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    out = {m: np.full(k - 1, np.nan) for m in METRICS}
    for c in range(1, k):
        p, t = pred == c, truth == c
        ps, ts = int(p.sum()), int(t.sum())
        inter = int(np.logical_and(p, t).sum())
        if ps == 0 and ts == 0:
            out["dice"][c - 1], out["iou"][c - 1], out["hd95"][c - 1], out["asd"][c - 1] = 1.0, 1.0, 0.0, 0.0
            continue
        out["dice"][c - 1] = 2.0 * inter / (ps + ts)
        out["iou"][c - 1] = inter / (ps + ts - inter)
        if ps == 0 or ts == 0:
            continue
        pt = torch.from_numpy(p)[None, None]
        tt = torch.from_numpy(t)[None, None]
        sp = list(spacing) if spacing is not None and len(spacing) == p.ndim else None
        with warnings.catch_warnings():  # a deprecation inside MONAI 1.6's own call chain
            warnings.simplefilter("ignore", FutureWarning)
            out["hd95"][c - 1] = float(compute_hausdorff_distance(pt, tt, include_background=True, percentile=95,
                                                                  spacing=sp)[0, 0])
            out["asd"][c - 1] = float(compute_average_surface_distance(pt, tt, include_background=True,
                                                                       symmetric=True, spacing=sp)[0, 0])
    return out


def _boot_ci(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if len(v) < 2 or n_boot <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n_boot, len(v)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarise(per_case: list[dict], class_names: Sequence[str], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean of each metric per class and over classes (per-case mean), with bootstrap 95% CIs.

    Args:
        per_case: ``case_metrics`` results.
        class_names: foreground class names (``k-1``).
    """
    out: dict = {"per_class": {}, "mean": {}, "n_cases": len(per_case), "empty_rule": EMPTY_RULE}
    for m in METRICS:
        arr = np.array([pc[m] for pc in per_case], dtype=float).reshape(len(per_case), len(class_names))
        for j, name in enumerate(class_names):
            col = arr[:, j]
            lo, hi = _boot_ci(col, n_boot, seed + j)
            out["per_class"].setdefault(name, {})[m] = {
                "value": float(np.nanmean(col)) if np.isfinite(col).any() else float("nan"),
                "ci_low": lo, "ci_high": hi, "sd": float(np.nanstd(col)) if np.isfinite(col).any() else float("nan"),
                "n_undefined": int((~np.isfinite(col)).sum())}
        finite = np.isfinite(arr)
        case_mean = np.where(finite.any(1), np.where(finite, arr, 0).sum(1) / np.maximum(finite.sum(1), 1), np.nan)
        lo, hi = _boot_ci(case_mean, n_boot, seed + 101)
        out["mean"][m] = {"value": float(np.nanmean(case_mean)) if np.isfinite(case_mean).any() else float("nan"),
                          "ci_low": lo, "ci_high": hi, "n_undefined": int((~np.isfinite(case_mean)).sum())}
    return out
