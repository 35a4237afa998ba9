"""Everything a finished run writes about its model: metrics, predictions, plots, report, card."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from meddx.evaluation.calibration import apply_temperature, expected_calibration_error, fit_temperature
from meddx.evaluation.metrics import classification_metrics, positive_index, predict_labels
from meddx.evaluation.plots import plot_confusion, plot_reliability, plot_roc, plot_training_curves
from meddx.evaluation.report import decision_rows, write_report
from meddx.evaluation.thresholds import choose_threshold, stored_positive


def operating_points(plan, y_val: np.ndarray, p_val: np.ndarray) -> dict[str, Any]:
    """The validation-chosen threshold for binary tasks (None for multi-class), on the probability of
    the plan's positive class (``evaluate.positive_class``), which it names."""
    names = list(plan.data.class_names)
    if p_val.shape[1] != 2:
        return {"rule": "argmax", "threshold": None, "why": "multi-class: argmax"}
    pos = positive_index(names, plan.evaluate.positive_class)
    if len(np.unique(y_val)) < 2:
        return {"rule": "argmax", "threshold": None, "why": "validation has one class", "positive_class": names[pos]}
    ev = plan.evaluate
    return {**choose_threshold(y_val, p_val, rule=ev.threshold_rule, target_sensitivity=ev.target_sensitivity,
                               positive=pos), "positive_class": names[pos]}


def calibration(run_dir: Path, plan, y_val: np.ndarray, p_val: np.ndarray, y_test: np.ndarray,
                p_test: np.ndarray, refit: bool) -> dict[str, Any]:
    """Temperature fitted on validation (``calibration.json``), with ECE before and after on both splits.

    A new training run refits; re-evaluating an existing run keeps its temperature (never fitted on test).
    """
    from meddx.training.run import write_json

    path = run_dir / "calibration.json"
    fitted = refit or (not path.exists() and len(y_val) > 1)
    if fitted:
        t = fit_temperature(y_val, p_val)
    elif path.exists():
        t = float(json.loads(path.read_text())["temperature"])
    else:
        t = 1.0  # nothing to fit on and nothing fitted before: uncalibrated
    bins = plan.evaluate.ece_bins
    cal = {"method": "temperature scaling on validation log-probabilities", "temperature": t, "ece_bins": bins}
    for split, y, p in (("val", y_val, p_val), ("test", y_test, p_test)):
        if len(y):
            cal[f"ece_{split}_before"] = float(expected_calibration_error(y, p, n_bins=bins))
            cal[f"ece_{split}_after"] = float(expected_calibration_error(y, apply_temperature(p, t), n_bins=bins))
    if fitted:
        write_json(path, cal)
    return cal


def triage(run_dir: Path, plan, y_val: np.ndarray, p_val: np.ndarray, y_test: np.ndarray, p_test: np.ndarray,
           temperature: float, refit: bool, inputs=None) -> dict[str, Any]:
    """The refer-to-expert rule (``triage.json``) and accuracy against coverage on the test split.

    A new training run chooses the threshold on validation; re-evaluating an existing run keeps it.
    ``inputs`` = ``(models, x_val, x_test)`` enables the sampled scores (TTA, MC dropout, ensemble);
    without them, or when the plan's method cannot score this model, the score is ``1 - max p``
    (calibrated), and the file says why.
    """
    from meddx.evaluation import uncertainty as U
    from meddx.training.run import write_json

    ev = plan.evaluate
    pv, pt = apply_temperature(p_val, temperature) if len(p_val) else p_val, apply_temperature(p_test, temperature)
    conf_val, conf_test = U.confidence_score(pv) if len(pv) else np.zeros(0), U.confidence_score(pt)
    if inputs is not None:
        models, x_val, x_test = inputs
        s_test, used, why = U.uncertainty_scores(plan, models, x_test, pt)
        s_val = U.uncertainty_scores(plan, models, x_val, pv)[0] if len(p_val) else np.zeros(0)
    else:
        s_val, s_test, used, why = conf_val, conf_test, "confidence", (
            None if ev.uncertainty == "confidence" else "no model inputs were given to score")
    path = run_dir / "triage.json"
    old = json.loads(path.read_text()) if path.exists() and not refit else None
    if old is not None and old.get("method_used") == used:
        thr = old.get("threshold")
    else:
        thr = U.refer_threshold(s_val, ev.refer_fraction)
    thr = None if thr is None else float(thr)
    curves = {used: U.accuracy_coverage(y_test, pt, s_test)}
    if used != "confidence":
        curves["confidence"] = U.accuracy_coverage(y_test, pt, conf_test)
    out = {
        "method": ev.uncertainty, "method_used": used, "fallback_reason": why,
        "samples": ev.uncertainty_samples if used in ("tta", "mc_dropout") else None,
        "ensemble_size": len(inputs[0]) if inputs is not None and used == "ensemble" else None,
        "score": "1 - max calibrated probability" if used == "confidence"
        else "variance of the class probabilities over the passes, summed over classes",
        "refer_fraction": ev.refer_fraction, "threshold": thr,
        "rule": "refer to an expert when the score is above the threshold (chosen so that the refer_fraction "
                "most uncertain validation cases lie above it; the test split never influenced it)",
        "temperature": temperature,
        "val": U.triage_summary(y_val, pv, s_val, thr) if len(y_val) else {"n": 0},
        "test": U.triage_summary(y_test, pt, s_test, thr),
        "accuracy_coverage_test": curves,
    }
    if refit:
        write_json(path, out)
    return out


def metric_sets(plan, y: np.ndarray, p: np.ndarray, threshold: dict) -> dict[str, dict]:
    """Metrics at argmax / 0.5 and at the stored validation-chosen threshold; a binary task's metrics are
    about the positive class that threshold names."""
    names = list(plan.data.class_names)
    ev = plan.evaluate
    pos = stored_positive(names, threshold)
    out = {"argmax / 0.5": classification_metrics(y, p, class_names=names, positive=pos, n_boot=ev.n_boot,
                                                  seed=plan.seed, ece_bins=ev.ece_bins)}
    if threshold.get("threshold") is not None:
        label = f"validation-chosen threshold ({threshold['rule']}, t={threshold['threshold']:.3f})"
        out[label] = classification_metrics(y, p, class_names=names, threshold=threshold["threshold"], positive=pos,
                                            n_boot=ev.n_boot, seed=plan.seed, ece_bins=ev.ece_bins)
    return out


def write_predictions(path: Path, rows: list[tuple[str, str, int | None, np.ndarray]], class_names: list[str],
                      threshold: float | None, positive: int = 1) -> None:
    """CSV: case_id, split, label, predicted (argmax/0.5), predicted_at_threshold, p_<class>...

    Binary tasks: both predictions are the ``positive`` class iff its probability reaches 0.5 or the
    threshold, as the metrics count them."""
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "split", "label", "predicted", "predicted_at_threshold"]
                   + [f"p_{n}" for n in class_names])
        for cid, split, y, p in rows:
            pred = int(predict_labels(p[None], positive=positive)[0])
            pred_t = int(predict_labels(p[None], threshold, positive)[0]) if threshold is not None else pred
            w.writerow([cid, split, class_names[y] if y is not None else "", class_names[pred],
                        class_names[pred_t]] + [f"{v:.6f}" for v in p])
    os.replace(tmp, path)


def evaluate_run_outputs(run_dir: Path, plan, cs, parts: dict, p_val: np.ndarray, y_val: np.ndarray,
                         p_test: np.ndarray, y_test: np.ndarray, *, fit=None, out_dir: Path | None = None,
                         title_suffix: str = "", uncertainty_inputs=None) -> dict:
    """Write thresholds.json, calibration.json, triage.json, predictions.csv, plots, metrics.json, report.html
    and model_card.md.

    ``uncertainty_inputs`` = ``(models, x_val, x_test)`` lets triage use the plan's sampled uncertainty score.

    ``metrics.json`` and ``report.html`` come last, so their presence means the run finished.
    """
    from meddx.training.run import machine, versions, write_json

    out_dir = Path(out_dir or run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(plan.data.class_names)
    thr_path = run_dir / "thresholds.json"
    if fit is not None or not thr_path.exists():
        thr = operating_points(plan, y_val, p_val)
        write_json(thr_path, thr)
    else:
        thr = json.loads(thr_path.read_text())
    cal = calibration(run_dir, plan, y_val, p_val, y_test, p_test, refit=fit is not None)
    tri = triage(run_dir, plan, y_val, p_val, y_test, p_test, cal["temperature"], refit=fit is not None,
                 inputs=uncertainty_inputs)
    sets = metric_sets(plan, y_test, p_test, thr)
    rows = [(c.case_id, "val", int(c.label), p) for c, p in zip(parts.get("val", []), p_val)] if fit else []
    rows += [(c.case_id, c.split or "test", c.label, p) for c, p in zip(parts["test"], p_test)]
    pos = stored_positive(names, thr)
    write_predictions(out_dir / "predictions.csv", rows, names, thr.get("threshold"), pos)

    plots: dict[str, bytes] = {}
    plots["ROC curves (test)"] = plot_roc(y_test, p_test, names, path=out_dir / "roc.png", positive=pos)
    for i, (label, m) in enumerate(sets.items()):
        fname = "confusion.png" if i == 0 else "confusion_threshold.png"
        plots[f"Confusion matrix, {label}"] = plot_confusion(np.array(m["confusion_matrix"]), names,
                                                             title=label, path=out_dir / fname)
    plots["Reliability diagram (test, before temperature scaling)"] = plot_reliability(
        y_test, p_test, n_bins=plan.evaluate.ece_bins, path=out_dir / "reliability.png")
    plots[f"Reliability diagram (test, after temperature scaling, T={cal['temperature']:.3f})"] = plot_reliability(
        y_test, apply_temperature(p_test, cal["temperature"]), n_bins=plan.evaluate.ece_bins,
        path=out_dir / "reliability_calibrated.png")
    from meddx.evaluation.uncertainty import plot_accuracy_coverage

    op_cov = 1.0 - tri["test"]["referred_fraction"] if tri["test"].get("n") else None
    plots["Accuracy against coverage (test)"] = plot_accuracy_coverage(
        tri["accuracy_coverage_test"], op_cov, path=out_dir / "accuracy_coverage.png")
    if fit is not None and fit.history:
        plots["Training curves"] = plot_training_curves(fit.history, path=out_dir / "training_curves.png")

    val_metrics = (classification_metrics(y_val, p_val, class_names=names, positive=pos, n_boot=0)
                   if fit is not None else None)
    metrics = {
        "dataset": cs.name, "n_test": int(len(y_test)), "class_names": names,
        "operating_points": sets, "threshold": thr,
        "ece_test": float(expected_calibration_error(y_test, p_test, n_bins=plan.evaluate.ece_bins)),
        "calibration": cal,
        "triage": tri,
    }
    if val_metrics is not None:
        metrics["validation"] = {"auc": val_metrics["overall"].get("auc_macro"),
                                 "accuracy": val_metrics["overall"]["accuracy"], "n": int(len(y_val))}
    if fit is not None:
        metrics["training"] = {"best_epoch": fit.best_epoch, "epochs_run": fit.epochs_run,
                               "epochs_planned": fit.epochs_planned, "train_seconds": round(fit.train_seconds, 2),
                               "stopped_by": fit.stopped_by, "select_metric": plan.train.select_metric,
                               # the loop maximises its score, so a loss is held negated: reported as the loss
                               "best_val_metric": -fit.best_metric if plan.train.select_metric == "loss"
                               else fit.best_metric}
        from meddx.training.fitted_inputs import input_fit_seconds

        if (fit_in := input_fit_seconds(run_dir)) is not None:  # learned denoiser / GAN, before the classifier
            metrics["training"]["input_fit_seconds"] = fit_in
    summary = {
        "dataset": f"{cs.name} ({cs.kind})", "classes": ", ".join(names),
        "cases train / val / test": " / ".join(str(len(parts.get(s, []))) for s in ("train", "val", "test")),
        "split": plan.data.split, "model": f"{plan.model.name} {plan.model.params}",
        "input": f"{plan.data.spatial_dims}D {plan.data.input_size} x {plan.data.channels} ch, {plan.data.intensity}",
        "optimiser": f"{plan.optim.name} lr={plan.optim.lr} wd={plan.optim.weight_decay}, {plan.schedule.name}",
        "seed": plan.seed,
    }
    if fit is not None:
        summary.update({"epochs run (best)": f"{fit.epochs_run} ({fit.best_epoch})",
                        "training time (s)": round(fit.train_seconds, 1), "stopped by": fit.stopped_by})
        if "input_fit_seconds" in metrics["training"]:
            summary["fitting the inputs first (s)"] = metrics["training"]["input_fit_seconds"]
    from meddx.training.run import note_resumed_in_summary, read_run_info

    info = read_run_info(run_dir)
    if info:
        summary["data hash"] = info.get("data_hash", "")[:16]
    note_resumed_in_summary(summary, run_dir)
    summary.update({f"version {k}": v for k, v in versions().items()})
    mc = machine()
    summary["machine"] = f"{mc['cpu']} x{mc['cores']}"
    notes = []
    if thr.get("threshold") is not None:
        notes.append(f"Threshold {thr['threshold']:.4f} was chosen on the validation split by the "
                     f"{thr['rule']} rule (validation sensitivity {thr['val_sensitivity']:.3f}, specificity "
                     f"{thr['val_specificity']:.3f}); the test split never influenced it.")
    else:
        notes.append(f"Operating point: argmax ({thr.get('why', '')}).")
    notes += calibration_triage_notes(cal, tri)
    absent = [n for i, n in enumerate(names) if not np.any(np.asarray(y_test) == i)]
    if absent:  # e.g. a manifest whose test rows are all one class: say why AUC and more read n/a
        metrics["classes_absent_from_test"] = absent
        notes.insert(0, f"The test cases hold no {', '.join(repr(a) for a in absent)}: AUC, and the sensitivity of "
                        "the absent class(es), are undefined (n/a); accuracy then measures one class only.")
    write_json(out_dir / "metrics.json", metrics)
    notes.append(f"Calibration: temperature {cal['temperature']:.3f} fitted on validation "
                 f"(test ECE {cal.get('ece_test_before', float('nan')):.3f} before, "
                 f"{cal.get('ece_test_after', float('nan')):.3f} after; stored in calibration.json). The metrics "
                 "above use the uncalibrated probabilities (temperature scaling does not move argmax or AUC).")
    write_report(out_dir / "report.html", title=f"meddx report: {cs.name}{title_suffix}", summary=summary,
                 metrics=sets, plots=plots, notes=notes,
                 tables={"Plan decisions (rule, kind, what it read)": decision_rows(plan),
                         **calibration_triage_tables(cal, tri)})
    write_model_card(out_dir / "model_card.md", plan, cs, sets, summary)
    return metrics


def calibration_triage_notes(cal: dict, tri: dict) -> list[str]:
    """Report notes: how the temperature was fitted and what the refer rule does."""
    notes = ["The served 'calibrated confidence' (meddx serve) is the top probability after temperature scaling."]
    t = tri.get("test") or {}
    thr = tri.get("threshold")
    if thr is None:
        notes.append("Triage: no refer threshold (no validation cases to choose it on).")
        return notes
    used = tri["method_used"] + (f" (asked for {tri['method']}: {tri['fallback_reason']})"
                                 if tri.get("fallback_reason") else "")
    ak = t.get("accuracy_kept")
    notes.append(f"Triage operating point: refer to an expert when the {used} uncertainty score is above "
                 f"{thr:.4g}, chosen so that the {tri['refer_fraction']:.0%} most uncertain validation cases lie "
                 f"above it. On test it refers {t.get('referred', 0)} of {t.get('n', 0)} cases "
                 f"({t.get('referred_fraction', 0):.1%}); accuracy on the kept cases "
                 f"{'n/a' if ak is None else f'{ak:.3f}'} against {t.get('accuracy_all', float('nan')):.3f} on all.")
    return notes


def calibration_triage_tables(cal: dict, tri: dict) -> dict[str, list[dict]]:
    """Report tables: ECE before/after calibration; accuracy at a few coverages for each score."""
    rows = []
    for split in ("val", "test"):
        if f"ece_{split}_before" in cal:
            rows.append({"split": split, "ECE before": cal[f"ece_{split}_before"],
                         "ECE after": cal[f"ece_{split}_after"], "temperature": cal["temperature"]})
    cov_rows = []
    for name, c in (tri.get("accuracy_coverage_test") or {}).items():
        if not c.get("coverage"):
            continue
        row = {"score": name, "AURC": c.get("aurc")}
        for cov in (1.0, 0.9, 0.8, 0.7, 0.5):
            if cov in c["coverage"]:
                row[f"acc @ {cov:.0%}"] = c["accuracy"][c["coverage"].index(cov)]
        cov_rows.append(row)
    return {"Calibration (top-label ECE, temperature fitted on validation)": rows,
            "Accuracy on kept cases at each coverage (test)": cov_rows}


def write_model_card(path: Path, plan, cs, sets: dict, summary: dict) -> None:
    first = next(iter(sets.values()))
    ov = first["overall"]

    def fmt(m):
        if not m or m.get("value") is None:
            return "n/a"
        lo, hi = m.get("ci_low"), m.get("ci_high")
        return f"{m['value']:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None else f"{m['value']:.3f}"

    lines = [
        f"# Model card: {plan.model.name} on {cs.name}", "",
        "## Intended use",
        "Research and decision support only; every output needs review by a qualified clinician. "
        f"Classifies {plan.data.spatial_dims}D images into: {', '.join(plan.data.class_names)}.", "",
        "## Data", f"- {summary['dataset']}; cases train / val / test: {summary['cases train / val / test']}",
        f"- Input: {summary['input']}", "",
        "## Test metrics (argmax / 0.5; 95% bootstrap CI)",
        f"- AUC: {fmt(ov.get('auc') or ov.get('auc_macro'))}", f"- Accuracy: {fmt(ov.get('accuracy'))}",
        f"- Balanced accuracy: {fmt(ov.get('balanced_accuracy'))}", f"- ECE: {fmt(ov.get('ece'))}", "",
        "## Limits",
        "- Validated only on the test split above; performance on other scanners, sites or populations is unknown.",
        "- Inputs are resized to the training size; very different resolutions or modalities are out of scope.", "",
    ]
    path.write_text("\n".join(lines))
