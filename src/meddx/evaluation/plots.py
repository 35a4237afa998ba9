"""Evaluation plots, returned as PNG bytes (and optionally written to a file).

Figures are built with ``matplotlib.figure.Figure`` on an Agg canvas rather than
through pyplot: no global backend switch, no figure registry to leak, and safe to
call from a server thread. matplotlib is imported inside each function to keep
``import meddx`` fast.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from meddx.errors import MeddxError
from meddx.evaluation._checks import atomic_write_bytes, check_labels_proba
from meddx.evaluation.calibration import expected_calibration_error, reliability_curve
from meddx.evaluation.thresholds import roc_points

FIGSIZE = (5.0, 4.0)
DPI = 110


def _figure(figsize=FIGSIZE):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _finish(fig, path: str | Path | None) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.1)  # long class names
    fig.clear()
    data = buf.getvalue()
    if path is not None:
        atomic_write_bytes(path, data)
    return data


def plot_roc(y_true, proba, class_names: Sequence[str] | None = None, path=None, positive: int = 1) -> bytes:
    """ROC curves: the positive class for K=2, one curve per class for K>2.

    Args:
        y_true: (N,) integer labels.
        proba: (N, K) probabilities.
        class_names: K names for the legend.
        path: also write the PNG here.
        positive: K=2: index of the positive class, whose curve is drawn.

    Returns:
        PNG bytes.
    """
    from meddx.evaluation.metrics import auc_ovr

    y, p = check_labels_proba(y_true, proba)
    k = p.shape[1]
    names = [str(c) for c in class_names] if class_names is not None else [str(j) for j in range(k)]
    if len(names) != k:
        raise MeddxError(f"{len(names)} class names given for {k} classes")
    aucs = auc_ovr(y, p)
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="chance")
    for j in [positive] if k == 2 else range(k):
        pos = y == j
        if np.isnan(aucs[j]):
            ax.plot([], [], label=f"{names[j]} (AUC n/a: one class only)")
            continue
        _, tpr, fpr = roc_points(pos, p[:, j])
        fpr, tpr = np.r_[0.0, fpr], np.r_[0.0, tpr]
        ax.plot(fpr, tpr, lw=1.6, label=f"{names[j]} (AUC {aucs[j]:.3f})")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("1 - specificity (false-positive rate)")
    ax.set_ylabel("sensitivity (true-positive rate)")
    ax.set_title("ROC" + (f": {names[positive]} vs {names[1 - positive]}" if k == 2 else " (one vs rest)"))
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize=8)
    return _finish(fig, path)


def plot_confusion(cm, class_names: Sequence[str], title: str = "Confusion matrix", path=None) -> bytes:
    """Confusion matrix with counts and row percentages (rows true, columns predicted).

    Returns:
        PNG bytes.
    """
    m = np.asarray(cm, dtype=np.int64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise MeddxError(f"confusion matrix must be square, got shape {m.shape}")
    k = m.shape[0]
    names = [str(c) for c in class_names]
    if len(names) != k:
        raise MeddxError(f"{len(names)} class names given for a {k}x{k} confusion matrix")
    row = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, row, out=np.zeros(m.shape), where=row > 0)
    side = max(4.0, min(10.0, 1.6 + 0.7 * k))
    fig = _figure((side + 1.0, side))
    ax = fig.add_subplot()
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="row fraction")
    fontsize = 9 if k <= 6 else 7
    for i in range(k):
        for j in range(k):
            colour = "white" if frac[i, j] > 0.6 else "black"
            ax.text(j, i, f"{m[i, j]}\n{100 * frac[i, j]:.1f}%", ha="center", va="center",
                    color=colour, fontsize=fontsize)
    ax.set_xticks(range(k), names, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _finish(fig, path)


def plot_reliability(y_true, proba, n_bins: int = 15, path=None) -> bytes:
    """Reliability diagram (top-label accuracy vs confidence per bin) with the ECE.

    Returns:
        PNG bytes.
    """
    curve = reliability_curve(y_true, proba, n_bins=n_bins)
    ece = expected_calibration_error(y_true, proba, n_bins=n_bins)
    edges = np.asarray(curve["bin_edges"])
    width = edges[1] - edges[0]
    filled = [b for b, c in enumerate(curve["bin_count"]) if c > 0]
    acc = np.array([curve["bin_accuracy"][b] for b in filled])
    conf = np.array([curve["bin_confidence"][b] for b in filled])
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="perfect calibration")
    ax.bar(edges[filled], acc, width=width, align="edge", color="#4c78a8", edgecolor="white",
           label="accuracy")
    # Hatched and unfilled so the gap stays visible where it overlaps the accuracy bar.
    ax.bar(edges[filled], np.abs(conf - acc), bottom=np.minimum(acc, conf), width=width,
           align="edge", fill=False, hatch="///", edgecolor="#e45756", lw=0.8,
           label="gap to mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-label probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability (ECE {ece:.3f}, {n_bins} bins, n={sum(curve['bin_count'])})")
    ax.legend(loc="upper left", fontsize=8)
    return _finish(fig, path)


def plot_training_curves(history: Sequence[dict], path=None) -> bytes:
    """Two panels: train/validation loss; validation metric with learning rate on a twin axis.

    Args:
        history: one dict per epoch with keys ``epoch``, ``train_loss``, ``val_loss``,
            ``val_metric``, ``val_metric_name`` and ``lr``; missing or None values are
            skipped.
        path: also write the PNG here.

    Returns:
        PNG bytes.
    """
    from matplotlib.ticker import MaxNLocator

    if not history:
        raise MeddxError("training history is empty; nothing to plot")

    def series(key):
        pts = [(h.get("epoch", i), h.get(key)) for i, h in enumerate(history)]
        pts = [(e, v) for e, v in pts if v is not None and np.isfinite(v)]
        return ([e for e, _ in pts], [float(v) for _, v in pts])

    metric_name = next((str(h["val_metric_name"]) for h in history if h.get("val_metric_name")),
                       "validation metric")
    fig = _figure((10.0, 4.0))
    ax_loss, ax_metric = fig.subplots(1, 2)
    for key, label in (("train_loss", "train loss"), ("val_loss", "validation loss")):
        e, v = series(key)
        if e:
            ax_loss.plot(e, v, marker="o", ms=3, lw=1.4, label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("Loss")
    if ax_loss.has_data():
        ax_loss.legend(fontsize=8)

    e, v = series("val_metric")
    lines = []
    if e:
        lines += ax_metric.plot(e, v, marker="o", ms=3, lw=1.4, color="#2ca02c",
                                label=f"validation {metric_name}")
        best = int(np.argmax(v)) if "loss" not in metric_name.lower() else int(np.argmin(v))
        ax_metric.axvline(e[best], color="0.7", ls=":", lw=1)
    ax_metric.set_xlabel("epoch")
    epochs = [e for h_e in (series(k)[0] for k in ("train_loss", "val_loss", "val_metric")) for e in h_e]
    for ax in (ax_loss, ax_metric):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if epochs and max(epochs) - min(epochs) < 4:  # a short run: whole epochs, not 0.945 ... 1.050
            ax.set_xticks(range(int(min(epochs)), int(max(epochs)) + 1))
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    ax_metric.set_ylabel(metric_name)
    ax_metric.set_title(f"Validation {metric_name} and learning rate")
    e, v = series("lr")
    if e:
        ax_lr = ax_metric.twinx()
        lines += ax_lr.plot(e, v, lw=1.2, ls="--", color="#9467bd", label="learning rate")
        ax_lr.set_ylabel("learning rate")
        if min(v) > 0 and max(v) / min(v) > 20:
            # Schedules spanning decades (warm-up, cosine to ~0) are unreadable on a linear axis.
            ax_lr.set_yscale("log")
    if lines:
        ax_metric.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="lower right")
    return _finish(fig, path)
