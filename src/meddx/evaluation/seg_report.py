"""Segmentation and detection evaluation outputs: metrics.json, per_case.csv, plots,
worst-case overlays, report.html. Metrics are computed in each image's own geometry
(native size, spacing). Segmentation runs also report lesion detection derived from
their masks (connected components as boxes, scored by mean probability).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np

from meddx.evaluation.plots import _figure, _finish, plot_training_curves
from meddx.evaluation.report import decision_rows, format_metric, format_value, write_report
from meddx.evaluation.seg_metrics import EMPTY_RULE, METRICS, case_metrics, summarise
from meddx.transforms.postprocess import postprocess

N_WORST = 4


def _display_plane(img: np.ndarray, truth: np.ndarray, pred: np.ndarray):
    """2D: the image; 3D: the slice (first axis) with the most reference + predicted foreground."""
    if truth.ndim == 2:
        return img, truth, pred
    area = (truth > 0).sum(axis=(1, 2)) + (pred > 0).sum(axis=(1, 2))
    z = int(np.argmax(area))
    return img[..., z, :, :] if img.ndim == 4 else img[z], truth[z], pred[z]


def overlay_png(image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray, title: str = "",
                path: str | Path | None = None) -> bytes:
    """Image in grey with the reference (green) and predicted (red) outlines."""
    a = image.astype(np.float32)
    if a.ndim == 3:
        a = a.mean(0) if a.shape[0] in (1, 3, 4) else a[0]
    lo, hi = np.percentile(a, [1, 99])
    a = np.clip((a - lo) / (hi - lo + 1e-8), 0, 1)
    h, w = a.shape
    fig = _figure((max(3.0, 4.0 * w / max(h, w)), max(3.0, 4.0 * h / max(h, w))))
    ax = fig.subplots()
    ax.imshow(a, cmap="gray", interpolation="nearest")
    if truth is not None and truth.any():
        ax.contour(truth > 0, levels=[0.5], colors=["#2ca02c"], linewidths=1.2)
    if pred.any():
        ax.contour(pred > 0, levels=[0.5], colors=["#d62728"], linewidths=1.0)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    return _finish(fig, path)


def boxes_png(image: np.ndarray, refs, preds, title: str = "", path: str | Path | None = None,
              max_pred: int = 10) -> bytes:
    """2D image with reference boxes (green) and the highest-scoring predicted boxes (red, with scores)."""
    from matplotlib.patches import Rectangle

    a = image.astype(np.float32)
    if a.ndim == 3:
        a = a.mean(0)
    lo, hi = np.percentile(a, [1, 99])
    a = np.clip((a - lo) / (hi - lo + 1e-8), 0, 1)
    fig = _figure((4.2, 4.2))
    ax = fig.subplots()
    ax.imshow(a, cmap="gray", interpolation="nearest")
    for b in refs:
        ax.add_patch(Rectangle((b.lo[1] - 0.5, b.lo[0] - 0.5), b.hi[1] - b.lo[1], b.hi[0] - b.lo[0], fill=False,
                               ec="#2ca02c", lw=1.5))
    for b in sorted(preds, key=lambda b: -b.score)[:max_pred]:
        ax.add_patch(Rectangle((b.lo[1] - 0.5, b.lo[0] - 0.5), b.hi[1] - b.lo[1], b.hi[0] - b.lo[0], fill=False,
                               ec="#d62728", lw=1.0))
        ax.text(b.lo[1], b.lo[0] - 1, f"{b.score:.2f}", color="#d62728", fontsize=6)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    return _finish(fig, path)


def plot_froc(det: dict, path=None) -> bytes:
    """Sensitivity against false positives per image (log scale), per class and pooled."""
    fig = _figure((5.0, 3.8))
    ax = fig.subplots()
    curves = {**{k: v["froc"] for k, v in det["per_class"].items()}, "all findings": det["froc_pooled"]}
    for name, f in curves.items():
        xs = [float(r) for r in f["sensitivity"]]
        ys = [f["sensitivity"][r] for r in f["sensitivity"]]
        ax.plot(xs, ys, marker="o", ms=3, lw=2.0 if name == "all findings" else 1.0, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("false positives per image")
    ax.set_ylabel("sensitivity")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"FROC (hit: IoU >= {det['iou_threshold']})")
    ax.legend(fontsize=7)
    return _finish(fig, path)


def _det_table(det: dict) -> list[dict]:
    rows = []
    for name, v in {**det["per_class"], "all findings (pooled)": {"ap": det["ap_mean"], "froc": det["froc_pooled"]}}.items():
        f = v["froc"]
        rows.append({"finding": name, "AP@0.5": format_value(v["ap"]),
                     **{f"sens @ {r} FP/img": format_value(x) for r, x in f["sensitivity"].items()},
                     "FROC mean": format_value(f["mean"]),
                     "reference boxes": f.get("n_reference", 0)})
    return rows


def plot_case_dice(per_case: list[dict], names: list[str], path=None) -> bytes:
    """Per-case Dice of each class as points over a box plot."""
    fig = _figure((max(4.0, 1.6 * len(names) + 2), 3.6))
    ax = fig.subplots()
    data = [np.array([pc["dice"][j] for pc in per_case]) for j in range(len(names))]
    ax.boxplot(data, showfliers=False)
    rng = np.random.default_rng(0)
    for j, d in enumerate(data):
        ax.scatter(j + 1 + rng.uniform(-0.12, 0.12, len(d)), d, s=10, alpha=0.6, color="#4c78a8")
    ax.set_xticks(range(1, len(names) + 1), names)
    ax.set_ylabel("Dice")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Dice per test case")
    return _finish(fig, path)


def evaluate_seg_outputs(out: Path, plan, cs, cases, model, *, fit=None, progress: bool = True,
                         prefix: str = "") -> dict:
    """Predict ``cases`` in native geometry, post-process, score and write the outputs."""
    from meddx.data.detsources import reference_boxes
    from meddx.evaluation.detection import boxes_from_labels, boxes_from_segmentation, detection_summary
    from meddx.evaluation.seg_infer import predict_cases
    from meddx.training.run import write_json

    out = Path(out)
    sg = plan.segment
    k = len(sg.label_values)
    names = list(sg.label_names[1:])
    seconds: list[float] = []
    preds, truths, spacings, probs = predict_cases(cs, cases, plan, model, progress, "evaluating", with_probs=True,
                                                   timings=seconds)
    preds = [postprocess(p, sg.postprocess, k, sg.min_size) for p in preds]
    det_pred = [boxes_from_segmentation(p, pr.astype(np.float32), k, sg.det_threshold) for p, pr in zip(preds, probs)]
    del probs
    det_ref = [reference_boxes(c, t.shape) if cs.task == "detect" else boxes_from_labels(t, None, k)
               for c, t in zip(cases, truths)]
    det = detection_summary(det_pred, det_ref, names)
    units = "mm" if all(s is not None and len(s) == t.ndim for s, t in zip(spacings, truths)) else "px"
    if units == "px":  # one unit for every case: a PNG beside a DICOM would average pixels with mm
        spacings = [None] * len(spacings)
    per_case = [case_metrics(p, t, k, s) for p, t, s in zip(preds, truths, spacings)]
    summary = summarise(per_case, names, n_boot=plan.evaluate.n_boot, seed=plan.seed)
    rows = []
    for c, pc, t, p in zip(cases, per_case, truths, preds):
        row = {"case_id": c.case_id}
        for j, nm in enumerate(names):
            for m in METRICS:
                row[f"{m}_{nm}"] = None if not np.isfinite(pc[m][j]) else round(float(pc[m][j]), 5)
            # voxel counts let a reader pool cases (e.g. per-patient Dice over slices)
            row[f"ref_n_{nm}"] = int((t == j + 1).sum())
            row[f"pred_n_{nm}"] = int((p == j + 1).sum())
            row[f"inter_n_{nm}"] = int(((t == j + 1) & (p == j + 1)).sum())
        row["mean_dice"] = round(float(np.mean(pc["dice"])), 5)
        rows.append(row)
    with open(out / f"{prefix}per_case.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    worst = sorted(range(len(rows)), key=lambda i: rows[i]["mean_dice"])[:N_WORST]
    plots: dict[str, bytes] = {}
    if fit is not None and fit.history:
        plots["Training curves"] = plot_training_curves(fit.history, path=out / "training_curves.png")
    plots["Dice per test case"] = plot_case_dice(per_case, names, path=out / f"{prefix}dice_per_case.png")
    wdir = out / f"{prefix}worst_cases"
    wdir.mkdir(exist_ok=True)
    for rank, i in enumerate(worst):
        img = cs.load(cases[i]).array
        a, t, p = _display_plane(img, truths[i], preds[i])
        title = f"{rows[i]['case_id']}  mean Dice {rows[i]['mean_dice']:.3f}  (green: reference, red: prediction)"
        plots[f"Worst case {rank + 1}: {rows[i]['case_id']}"] = overlay_png(a, t, p, title,
                                                                            path=wdir / f"worst_{rank + 1}.png")
    plots["FROC (detections = connected components)"] = plot_froc(det, path=out / f"{prefix}froc.png")
    if cs.task == "detect" and truths and truths[0].ndim == 2:
        for rank, i in enumerate(worst[:2]):
            plots[f"Detections, case {rows[i]['case_id']}"] = boxes_png(
                cs.load(cases[i]).array, det_ref[i], det_pred[i], title=f"{rows[i]['case_id']} (green: reference, red: "
                f"detections)", path=wdir / f"boxes_{rank + 1}.png")
    metrics = {
        "task": plan.task, "dataset": cs.name, "detection": det, "n_test": len(cases), "label_names": names,
        "distance_units": units, "empty_rule": EMPTY_RULE, "postprocess": list(sg.postprocess),
        "summary": summary, "worst_cases": [rows[i]["case_id"] for i in worst], "inference": inference_timing(seconds),
    }
    if fit is not None:
        metrics["training"] = {"best_epoch": fit.best_epoch, "epochs_run": fit.epochs_run,
                               "epochs_planned": fit.epochs_planned, "train_seconds": round(fit.train_seconds, 2),
                               "stopped_by": fit.stopped_by, "select_metric": "dice",
                               "best_val_metric": fit.best_metric}
    table = []
    for nm in names:
        r = {"class": nm}
        for m in METRICS:
            v = summary["per_class"][nm][m]
            r[f"{m.upper()} [95% CI]"] = format_metric(v)
        r["cases with HD95 undefined"] = summary["per_class"][nm]["hd95"]["n_undefined"]
        table.append(r)
    mean_row = {"class": "mean over classes"}
    for m in METRICS:
        v = summary["mean"][m]
        mean_row[f"{m.upper()} [95% CI]"] = format_metric(v)
    table.append(mean_row)
    info = {
        "dataset": f"{cs.name} ({cs.kind})", "labels": ", ".join(f"{v}={n}" for v, n in
                                                                 zip(sg.label_values, sg.label_names)),
        "test cases": len(cases), "model": f"{plan.model.name} {plan.model.params}",
        "input": (f"{plan.data.spatial_dims}D patch {sg.patch_size}" if sg.patch_size else
                  f"{plan.data.spatial_dims}D resized to {plan.data.input_size}") + f", {plan.data.channels} ch",
        "loss": sg.loss, "post-processing (chosen on validation)": ", ".join(sg.postprocess) or "none",
        "distances in": units, "seed": plan.seed,
        "inference per case (s, mean / max)": _timing_text(metrics["inference"]),
    }
    from meddx.training.run import note_resumed_in_summary

    note_resumed_in_summary(info, out)
    write_json(out / f"{prefix}metrics.json", metrics)
    write_report(out / f"{prefix}report.html", title=f"meddx segmentation report: {cs.name}", summary=info,
                 metrics={}, plots=plots,
                 notes=[f"Empty masks: {EMPTY_RULE}.",
                        "Metrics are per test case in the image's own geometry, then averaged; 95% CIs are "
                        "percentile bootstrap over cases.",
                        "Worst cases are the lowest mean Dice; their overlays show the slice with most foreground."],
                 tables={"Test metrics per class": table,
                         "Detection from the masks (components as boxes, IoU >= 0.5)": _det_table(det),
                         "Per case": rows, "Plan decisions (rule, kind, what it read)": decision_rows(plan)})
    return metrics


def inference_timing(seconds: list[float]) -> dict:
    """Per-case inference seconds (network and geometry, file reading excluded) as mean / median / max."""
    import torch

    v = np.asarray(seconds, float)
    if not v.size:
        return {"n_cases": 0}
    return {"n_cases": int(v.size), "seconds_per_case_mean": round(float(v.mean()), 4),
            "seconds_per_case_median": round(float(np.median(v)), 4), "seconds_per_case_max": round(float(v.max()), 4),
            "threads": torch.get_num_threads()}


def _timing_text(t: dict) -> str:
    if not t.get("n_cases"):
        return "-"
    return f"{t['seconds_per_case_mean']:.3f} / {t['seconds_per_case_max']:.3f} ({t['threads']} threads)"


def evaluate_det_outputs(out: Path, plan, cs, cases, model, *, fit=None, progress: bool = True) -> dict:
    """Heatmap detector: AP and FROC on ``cases`` in each image's pixel coordinates."""
    from meddx.data.detsources import reference_boxes
    from meddx.evaluation.detection import detection_summary
    from meddx.evaluation.seg_infer import predict_boxes
    from meddx.training.run import progress_callback, write_json

    out = Path(out)
    names = list(plan.segment.label_names[1:])
    preds, refs, seconds = [], [], []
    cb, stop = progress_callback(progress, len(cases), "evaluating")
    try:
        for c in cases:
            img = cs.load(c)  # refuses boxes that do not fit the image
            t0 = time.perf_counter()
            preds.append(predict_boxes(model, plan, img, str(c.path)))
            seconds.append(time.perf_counter() - t0)
            refs.append(reference_boxes(c, img.spatial_shape))
            if cb:
                cb(1)
    finally:
        stop()
    det = detection_summary(preds, refs, names)
    plots: dict[str, bytes] = {}
    if fit is not None and fit.history:
        plots["Training curves"] = plot_training_curves(fit.history, path=out / "training_curves.png")
    plots["FROC"] = plot_froc(det, path=out / "froc.png")
    wdir = out / "examples"
    wdir.mkdir(exist_ok=True)
    with_ref = [i for i, r in enumerate(refs) if r][:3]
    for rank, i in enumerate(with_ref):
        plots[f"Detections, case {cases[i].case_id}"] = boxes_png(
            cs.load(cases[i]).array, refs[i], preds[i], title=f"{cases[i].case_id} (green: reference, red: detections)",
            path=wdir / f"boxes_{rank + 1}.png")
    rows = [{"case_id": c.case_id, "reference_boxes": len(r), "detections": len(p),
             "best_score": round(max((b.score for b in p), default=0.0), 4)} for c, r, p in zip(cases, refs, preds)]
    with open(out / "per_case.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    metrics = {"task": "detect", "detector": "heatmap", "dataset": cs.name, "n_test": len(cases),
               "label_names": names, "detection": det, "inference": inference_timing(seconds)}
    if fit is not None:
        metrics["training"] = {"best_epoch": fit.best_epoch, "epochs_run": fit.epochs_run,
                               "epochs_planned": fit.epochs_planned, "train_seconds": round(fit.train_seconds, 2),
                               "stopped_by": fit.stopped_by, "select_metric": "froc",
                               "best_val_metric": fit.best_metric}
    info = {"dataset": f"{cs.name} ({cs.kind})", "findings": ", ".join(names), "test images": len(cases),
            "detector": f"centre heatmap on {plan.model.name}", "input": f"2D resized to {plan.data.input_size}",
            "seed": plan.seed, "inference per case (s, mean / max)": _timing_text(metrics["inference"])}
    from meddx.training.run import note_resumed_in_summary

    note_resumed_in_summary(info, out)
    write_json(out / "metrics.json", metrics)
    write_report(out / "report.html", title=f"meddx detection report: {cs.name}", summary=info, metrics={},
                 plots=plots, notes=[det["rule"] + ".", "Boxes are compared in each image's own pixel coordinates."],
                 tables={"Detection (IoU >= 0.5)": _det_table(det), "Per image": rows,
                         "Plan decisions (rule, kind, what it read)": decision_rows(plan)})
    return metrics
