"""How sure is the model: uncertainty scores and the refer-to-expert rule (triage).

Scores (per case; larger = less sure):

* ``tta``: test-time augmentation with the plan's own training augmentation
  (rotation, zoom, shift, intensity; Wang et al., Neurocomputing 2019): the variance of
  the class probabilities over ``uncertainty_samples`` augmented copies;
* ``mc_dropout``: Monte-Carlo dropout (Gal & Ghahramani, ICML 2016): dropout layers
  stay active at inference, variance over the stochastic passes (needs ``dropout > 0``
  in the model's params);
* ``ensemble``: deep-ensemble variance (Lakshminarayanan et al., NeurIPS 2017) over the
  run's model and the models of ``evaluate.ensemble_runs`` (same plan, other seeds);
* ``confidence``: ``1 - max p`` of the temperature-calibrated probabilities (no sampling),
  also reported beside the chosen score as the baseline every sampled score must beat.

The variance is summed over classes (the trace of the covariance of the probability
vector). The refer rule: a case goes to an expert when its score is above a threshold
chosen on the *validation* scores (the ``refer_fraction`` most uncertain lie above it), so
the test split never influences it. Accuracy against coverage shows how accurate meddx is
on the cases it keeps, for every fraction it refers. Written here: MONAI has no
uncertainty-for-classification utilities.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from meddx.errors import MeddxError, RunError

METHODS = ("tta", "mc_dropout", "ensemble", "confidence")
COVERAGES = tuple(float(round(c, 2)) for c in np.linspace(0.05, 1.0, 20))


def ensemble_members(models: Sequence[nn.Module]) -> list[nn.Module]:
    """The networks behind ``models`` for the ensemble score: an ``EnsembleModel`` (plan ``ensemble``)
    contributes its members, any other model itself."""
    from meddx.models.ensemble import EnsembleModel

    out: list[nn.Module] = []
    for m in models:
        out.extend(m.members if isinstance(m, EnsembleModel) else [m])
    return out


def has_dropout(model: nn.Module) -> bool:
    """True when the model holds a dropout layer with p > 0."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())


def unavailable_reason(method: str, plan, model: nn.Module, n_ensemble: int) -> str | None:
    """Why ``method`` cannot score this run (None when it can)."""
    from meddx.transforms.augment import BatchAugment

    if method not in METHODS:
        return f"unknown uncertainty method '{method}' (use one of {', '.join(METHODS)})"
    if method == "tta" and not BatchAugment.from_config(plan.augment, plan.data.spatial_dims).active:
        return "test-time augmentation needs augmentation in the plan (augment: all zero)"
    if method == "mc_dropout" and not has_dropout(model):
        return "MC dropout needs a model with dropout (model.params.dropout > 0)"
    if method == "ensemble" and n_ensemble < 2:
        return "an ensemble needs ensemble members (plan ensemble) or evaluate.ensemble_runs (other runs of the same plan)"
    return None


@torch.no_grad()
def sample_proba(models: Sequence[nn.Module], x: torch.Tensor, method: str, plan, *, n_samples: int = 8,
                 seed: int = 0, batch_size: int = 256, device: torch.device | None = None) -> np.ndarray:
    """Class probabilities of every stochastic pass: ``(S, N, K)``.

    Args:
        models: the run's model first, then ensemble members (``ensemble`` uses all; others the first).
        x: preprocessed, standardised inputs ``(N, C, *S)``.
        method: ``tta``, ``mc_dropout`` or ``ensemble``.
        plan: the run's plan (augmentation for ``tta``).
        n_samples: augmented copies / dropout passes (the ensemble uses one pass per model).
        seed: seeds the augmentation draws and dropout masks, so scores are reproducible.
    """
    from meddx.transforms.augment import BatchAugment

    if method not in ("tta", "mc_dropout", "ensemble"):
        raise MeddxError(f"'{method}' is not a sampling method", fix="use tta, mc_dropout or ensemble")
    model = models[0]
    device = device or next(model.parameters()).device
    out = []
    if method == "ensemble":
        for m in ensemble_members(models):
            m.eval()
            out.append(_batched(m, x, batch_size, device))
        return np.stack(out)
    aug = BatchAugment.from_config(plan.augment, plan.data.spatial_dims) if method == "tta" else None
    gen = torch.Generator().manual_seed(int(seed))
    model.eval()
    dropouts = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    try:
        if method == "mc_dropout":
            for m in dropouts:
                m.train()
        for s in range(int(n_samples)):
            if aug is not None:
                xs = torch.cat([aug(x[i:i + batch_size], gen)[0] for i in range(0, x.shape[0], batch_size)]) \
                    if x.shape[0] else x
                out.append(_batched(model, xs, batch_size, device))
            else:
                torch.manual_seed(int(seed) * 7919 + s)
                out.append(_batched(model, x, batch_size, device))
    finally:
        for m in dropouts:
            m.eval()
    return np.stack(out)


def _batched(model: nn.Module, x: torch.Tensor, batch_size: int, device) -> np.ndarray:
    parts = [F.softmax(model(x[i:i + batch_size].to(device)).float(), dim=1).cpu()
             for i in range(0, x.shape[0], batch_size)]
    return torch.cat(parts).numpy() if parts else np.zeros((0, 0), dtype=np.float32)


def variance_score(samples: np.ndarray) -> np.ndarray:
    """``(S, N, K)`` -> ``(N,)``: variance over passes, summed over classes."""
    return samples.var(axis=0).sum(axis=-1)


def confidence_score(proba: np.ndarray) -> np.ndarray:
    """``1 - max p`` per case."""
    return 1.0 - np.asarray(proba, float).max(axis=1)


def accuracy_coverage(y: np.ndarray, proba: np.ndarray, score: np.ndarray,
                      coverages: Sequence[float] = COVERAGES) -> dict:
    """Accuracy on the cases kept when the most uncertain are referred, at each coverage.

    Cases are kept in order of increasing score (ties in case order); coverage ``c`` keeps
    ``ceil(c * N)`` of them. Also the area under the risk-coverage curve (AURC, Geifman &
    El-Yaniv 2017: mean error over all coverages ``1/N .. 1``; lower is better).
    """
    y = np.asarray(y)
    n = y.shape[0]
    if n == 0:
        return {"coverage": [], "accuracy": [], "n_kept": [], "aurc": None}
    correct = (np.asarray(proba).argmax(1) == y).astype(float)
    order = np.argsort(np.asarray(score, float), kind="stable")
    cum = np.cumsum(correct[order])
    kept = [max(1, int(np.ceil(c * n - 1e-9))) for c in coverages]
    acc = [float(cum[k - 1] / k) for k in kept]
    aurc = float(np.mean(1.0 - cum / np.arange(1, n + 1)))
    return {"coverage": [float(c) for c in coverages], "accuracy": acc, "n_kept": kept, "aurc": aurc}


def refer_threshold(val_scores: np.ndarray, refer_fraction: float) -> float | None:
    """Score above which a case is referred, chosen on validation.

    With ``k = floor(refer_fraction * n_val)``, the threshold is the (k+1)-th largest validation score, so
    exactly the ``k`` most uncertain validation cases lie above it (fewer with ties): the rule never refers
    more than asked on the data it was chosen on. ``None`` without validation scores.
    """
    v = np.asarray(val_scores, float)
    if not 0.0 <= float(refer_fraction) < 1.0:
        raise MeddxError(f"refer_fraction must be in [0, 1), got {refer_fraction}",
                         fix="set evaluate.refer_fraction, e.g. 0.1")
    if v.size == 0:
        return None
    if refer_fraction == 0:
        return float(np.inf)
    k = int(np.floor(float(refer_fraction) * v.size + 1e-9))
    return float(np.sort(v)[::-1][min(k, v.size - 1)])


def refer(score: np.ndarray | float, threshold: float | None) -> np.ndarray:
    """The refer flag: score strictly above the threshold (never, without a threshold)."""
    s = np.asarray(score, float)
    return np.zeros(s.shape, bool) if threshold is None else s > threshold


def triage_summary(y: np.ndarray, proba: np.ndarray, score: np.ndarray, threshold: float | None) -> dict:
    """What the rule does on labelled cases: share referred, accuracy kept / referred / overall."""
    y = np.asarray(y)
    if y.size == 0:
        return {"n": 0}
    correct = np.asarray(proba).argmax(1) == y
    r = refer(score, threshold)
    kept = ~r

    def acc(m):
        return float(correct[m].mean()) if m.any() else None

    return {"n": int(y.size), "referred": int(r.sum()), "referred_fraction": float(r.mean()),
            "accuracy_all": float(correct.mean()), "accuracy_kept": acc(kept), "accuracy_referred": acc(r)}


def load_ensemble(plan, runs: Sequence[str], base: str | None = None, *,
                  check_normalisation: bool = True) -> list[nn.Module]:
    """Models of ``runs`` (relative paths resolve against ``base``); each must share the plan's data and model.

    ``check_normalisation=False``: a plan whose standardisation is not yet measured (before training
    computes it from the training split) checks everything else."""
    from pathlib import Path

    from meddx.training.run import load_run

    out = []
    for r in runs:
        p = Path(r)
        if not p.is_absolute() and base is not None and not p.exists():
            p = Path(base) / p
        other, model = load_run(p)
        if (list(other.data.class_names) != list(plan.data.class_names)
                or other.data.input_key() != plan.data.input_key()
                or (check_normalisation and other.data.norm_mean != plan.data.norm_mean)):
            raise RunError("ensemble member differs from the run (classes, input size, channels, intensity scheme, "
                           "orientation, 3D resizing, preprocessing steps or normalisation)",
                           path=p, fix="list runs trained with the same plan and split, other seeds only")
        out.append(model)
    return out


def uncertainty_scores(plan, models: Sequence[nn.Module], x: torch.Tensor, proba_cal: np.ndarray, *,
                       method: str | None = None, seed: int | None = None,
                       device: torch.device | None = None) -> tuple[np.ndarray, str, str | None]:
    """The plan's uncertainty score for inputs ``x`` (and the method actually used).

    Falls back to ``confidence`` (with the reason) when the chosen method cannot score the run.

    Returns:
        ``(scores (N,), method used, reason for a fallback or None)``.
    """
    ev = plan.evaluate
    method = method or ev.uncertainty
    why = unavailable_reason(method, plan, models[0], len(ensemble_members(models)))
    if method == "confidence" or why:
        return confidence_score(proba_cal), "confidence", why
    s = sample_proba(models, x, method, plan, n_samples=ev.uncertainty_samples,
                     seed=plan.seed if seed is None else seed, batch_size=plan.train.eval_batch_size, device=device)
    return variance_score(s), method, None


def plot_accuracy_coverage(curves: dict[str, dict], operating_coverage: float | None = None, path=None) -> bytes:
    """Accuracy of the kept cases against coverage, one line per uncertainty score.

    Args:
        curves: score name -> ``accuracy_coverage()`` dict.
        operating_coverage: the coverage of the chosen rule (a vertical line).
        path: also write the PNG here.
    """
    from meddx.evaluation.plots import _figure, _finish

    fig = _figure()
    ax = fig.add_subplot()
    for name, c in curves.items():
        if c.get("coverage"):
            aurc = c.get("aurc")
            ax.plot(c["coverage"], c["accuracy"], marker="o", ms=3,
                    label=f"{name} (AURC {aurc:.3f})" if aurc is not None else name)
    if operating_coverage is not None:
        ax.axvline(operating_coverage, ls="--", color="0.5", lw=1, label=f"operating point ({operating_coverage:.2f})")
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("coverage (fraction of cases kept, most uncertain referred)")
    ax.set_ylabel("accuracy on kept cases")
    ax.set_title("Accuracy against coverage (test)")
    ax.legend(loc="lower left", fontsize=8)
    return _finish(fig, path)
