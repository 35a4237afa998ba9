"""Evaluation: metrics with bootstrap CIs, thresholds, calibration, plots, HTML reports.

Plots import matplotlib lazily, so importing this package costs only numpy.
"""

from meddx.evaluation.calibration import expected_calibration_error, reliability_curve
from meddx.evaluation.metrics import (
    auc_ovr,
    classification_metrics,
    confusion_matrix,
    paired_bootstrap_pvalue,
    predict_labels,
)
from meddx.evaluation.plots import plot_confusion, plot_reliability, plot_roc, plot_training_curves
from meddx.evaluation.report import write_report
from meddx.evaluation.thresholds import (
    choose_threshold,
    threshold_for_sensitivity,
    youden_threshold,
)

__all__ = [
    "auc_ovr",
    "choose_threshold",
    "classification_metrics",
    "confusion_matrix",
    "expected_calibration_error",
    "paired_bootstrap_pvalue",
    "plot_confusion",
    "plot_reliability",
    "plot_roc",
    "plot_training_curves",
    "predict_labels",
    "reliability_curve",
    "threshold_for_sensitivity",
    "write_report",
    "youden_threshold",
]
