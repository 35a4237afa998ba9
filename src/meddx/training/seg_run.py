"""A segmentation or detection run, end to end: dataset -> fingerprint -> plan -> split ->
train -> post-processing chosen on validation -> test metrics at native resolution -> report.

The run directory holds what a classification run holds (``plan.yaml``,
``fingerprint.json``, ``split.csv``, ``checkpoints/``, ``log.jsonl``, ``metrics.json``,
``report.html``) plus ``per_case.csv`` and overlays of the worst test cases. Detection
(``task: detect``, a box manifest) trains either a segmenter on the drawn boxes whose
connected components become detections, or the centre-heatmap detector.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np


from meddx.data.case import CaseSet
from meddx.data.detsources import open_det_dataset
from meddx.data.segprep import build_seg_data
from meddx.data.segsources import open_seg_dataset
from meddx.data.split import patient_groups
from meddx.errors import DatasetError, PlanError, RunError
from meddx.planning.plan import Decision, Plan
from meddx.planning.planner import apply_overrides, make_seg_plan
from meddx.training.engine import seed_everything
from meddx.training.run import (RunGuard, _check_out_dir, build_single_model, check_resume_dataset,
                                fingerprint_dataset, note_resumed, planned_split, planning_budgets, progress_callback,
                                resume_state, set_status, size_epochs, split_for_run, start_run_dir)
from meddx.evaluation.seg_infer import predict_cases
from meddx.training.seg_engine import SegTrainer, dice_per_class


def open_for_plan(dataset: str, plan: Plan) -> CaseSet:
    if plan.task == "detect":
        return _with_plan_findings(open_det_dataset(dataset), plan, dataset)
    return open_seg_dataset(dataset, resample_masks=plan.segment.resample_masks,
                            group_by_folder=plan.segment.group_by_folder)


def _with_plan_findings(cs: CaseSet, plan: Plan, dataset: str) -> CaseSet:
    """A box manifest numbers its findings by their sorted names; give each box the plan's number for its
    name instead, so another manifest (other or fewer findings) is scored finding by finding, and a
    finding the run never learned is refused rather than scored as another."""
    names = list(plan.segment.label_names)
    found = {i: n for i, n in (cs.declared_labels or {}).items() if i != 0}
    unknown = sorted(n for n in found.values() if n not in names[1:])
    if unknown:
        raise DatasetError(f"box label(s) {unknown} are not among the run's findings {names[1:]}", path=dataset,
                           fix="use a box manifest labelled with the run's findings")
    value = {i: int(plan.segment.label_values[names.index(n, 1)]) for i, n in found.items()}
    for c in cs.cases:
        c.boxes = tuple((*b[:4], value[b[4]]) for b in c.boxes)
    cs.declared_labels = {int(v): n for v, n in zip(plan.segment.label_values, names)}
    return cs


def choose_postprocessing(plan: Plan, fp: dict, preds, truths) -> None:
    """S10: try each post-processing on validation cases; record the choice in the plan."""
    from meddx.transforms.postprocess import choose_postprocess

    sg = plan.segment
    k = len(sg.label_values)
    objs = fp.get("segmentation", {}).get("objects", {})
    min_size = sg.min_size or int(max(0, objs.get("size_p05", 0)) // 2)
    ops, trace = choose_postprocess(preds, truths, k, min_size, lambda p, t: float(dice_per_class(p, t, k).mean()))
    sg.postprocess = ops
    sg.min_size = min_size if "remove_small" in ops else sg.min_size
    sg.choose_postprocess = False  # chosen: a re-run of this plan keeps it
    plan.decisions.append(Decision(field="segment.postprocess", value=ops, rule="S10 post-processing",
                                   kind="empirical", reads={"validation_mean_dice": trace, "min_size": min_size}))


DET_THRESHOLDS = (None, 0.5, 0.3, 0.15, 0.08)


def choose_det_threshold(plan: Plan, cs, val_cases, model, progress: bool) -> None:
    """S11 (detection with the components detector): boxes from the argmax map or from each class's
    probability map at a threshold, whichever gives the best mean FROC (then AP) on validation."""
    from meddx.data.detsources import reference_boxes
    from meddx.evaluation.detection import boxes_from_segmentation, detection_summary
    from meddx.transforms.postprocess import postprocess

    sg = plan.segment
    k = len(sg.label_values)
    preds, _, _, probs = predict_cases(cs, val_cases, plan, model, progress, "choosing the detection threshold",
                                       with_probs=True)
    preds = [postprocess(p, sg.postprocess, k, sg.min_size) for p in preds]  # as the test cases will be
    refs = [reference_boxes(c, p.shape) for c, p in zip(val_cases, preds)]
    trace, best, best_key = {}, None, (-1.0, -1.0)
    for t in DET_THRESHOLDS:
        det = detection_summary([boxes_from_segmentation(p, pr.astype(np.float32), k, t) for p, pr in zip(preds, probs)],
                                refs, list(sg.label_names[1:]))
        key = (det["froc_pooled"]["mean"], 0.0 if np.isnan(det["ap_mean"]) else det["ap_mean"])
        trace["argmax" if t is None else str(t)] = {"froc": round(key[0], 4), "ap": round(key[1], 4)}
        if key > best_key:
            best, best_key = t, key
    sg.det_threshold = best
    sg.choose_det_threshold = False
    plan.decisions.append(Decision(field="segment.det_threshold", value=best, rule="S11 detection threshold",
                                   kind="empirical", reads={"validation": trace}))


def note_heatmap_augment(plan: Plan, log=print) -> None:
    """S7 under the heatmap detector: record (once) and say which of the plan's augmentation it applies.
    Rotation, zoom, shift and elastic deformation would have to move the boxes, so it drops them."""
    from meddx.training.det_engine import heatmap_augment

    aug, dropped = heatmap_augment(plan.augment)
    if any(d.rule == "S7 augmentation" and d.reads.get("detector") == "heatmap" for d in plan.decisions):
        return  # a resumed run
    used = {k: getattr(aug, k) for k in ("brightness", "contrast", "noise_std", "gamma", "blur_sigma")
            if getattr(aug, k)}
    used = {"flip_axes": list(aug.flip_axes), **used, "p": aug.p}
    plan.decisions.append(Decision(field="augment", value=used, rule="S7 augmentation", kind="rule-based",
                                   reads={"detector": "heatmap", "not_applied": dropped,
                                          "why": "geometric augmentation would move the boxes; flips move "
                                                 "the centre heatmaps with the image, intensity changes none"}))
    if dropped:
        log(f"heatmap detector: augmentation {', '.join(dropped)} not applied (it would move the boxes); "
            f"flips and intensity only")


def train_seg_run(dataset: str | None, out: str | Path, *, plan_path: str | None = None,
                  overrides: dict[str, Any] | None = None, resume: bool = False, image_size: int | None = None,
                  resample_masks: bool = False, group_by_folder: bool = False, task: str = "segment",
                  progress: bool = True, log=print) -> Path:
    """Train, evaluate and report a segmentation (or detection) model. Returns the run directory.

    ``image_size`` (``--image-size``): the input size on every spatial axis; in 3D the training patch
    and sliding window too (``segment.patch_size``), which is what a 3D segmenter's input is."""
    out = Path(out)
    overrides = dict(overrides or {})
    if resume:
        plan, fp = resume_state(out, {**overrides, "--plan": plan_path, "--image-size": image_size,
                                      "--resample-masks": resample_masks, "--group-by-folder": group_by_folder})
        if plan.task not in ("segment", "detect"):
            raise RunError(f"the run is a '{plan.task}' run", path=out, fix="resume it without --task")
        cs = open_for_plan(dataset or plan.data.source, plan)
        check_resume_dataset(cs, out)
    else:
        _check_out_dir(out)
        plan = Plan.load(plan_path) if plan_path else None
        if plan is not None and plan.task not in ("segment", "detect"):
            raise PlanError(f"the plan is for task '{plan.task}'", path=plan_path,
                            fix="use a segmentation or detection plan, or drop --task")
        if plan is None and dataset is None:
            raise RunError("no dataset given", fix="pass a dataset path or --plan")
        if plan is not None:
            cs = open_for_plan(dataset or plan.data.source, plan)
        elif task == "detect":
            cs = open_det_dataset(dataset)
        else:
            cs = open_seg_dataset(dataset, resample_masks=resample_masks, group_by_folder=group_by_folder)
        fp = None
        if plan is None:
            fp = fingerprint_dataset(cs, progress, split=planned_split(cs, overrides=overrides), log=log)
            # an orientation the user gives is planned with (S7's flips follow it), not set afterwards
            given = {k: overrides.pop(k) for k in ("data.orientation",) if k in overrides}
            plan = make_seg_plan(fp, source=str(Path(cs.source).resolve()), seed=int(overrides.pop("seed", 0) or 0),
                                 group_by_folder=group_by_folder, overrides=given or None,
                                 **planning_budgets(overrides))
        elif overrides.get("seed") is not None:
            plan.seed = int(overrides.pop("seed"))
        overrides.pop("seed", None)
        if image_size:  # one size per spatial axis, known only now that the plan is
            overrides["data.input_size"] = [int(image_size)] * plan.data.spatial_dims
            if plan.segment.patch_size is not None:
                overrides["segment.patch_size"] = [int(image_size)] * plan.data.spatial_dims
        plan = apply_overrides(plan, overrides)
        if fp is None:
            fp = fingerprint_dataset(cs, progress, split=planned_split(cs, plan=plan), log=log)
    seed_everything(plan.seed)
    parts = split_for_run(cs, plan, out, resume)
    with RunGuard(out, resume) as guard:
        if not resume:
            start_run_dir(out, plan, fp, cs)
            guard.created = True
        else:
            note_resumed(out)
        cb, stop = progress_callback(progress, len(cs.cases), "preprocessing")
        try:
            data = build_seg_data(cs, {s: parts[s] for s in ("train", "val")}, plan, cb)
        finally:
            stop()
        heatmap = plan.task == "detect" and plan.segment.detector == "heatmap"
        if heatmap and plan.data.spatial_dims != 2:
            raise PlanError("the heatmap detector is 2D only", path=plan_path or cs.source,
                            fix="use segment.detector: components for 3D")
        if heatmap:
            note_heatmap_augment(plan, log)
        from meddx.training.ensemble import fit_members, member_cases, n_members

        def make_trainer(p, model, d):
            if heatmap:
                from meddx.training.det_engine import HeatmapTrainer

                return HeatmapTrainer(p, model, d, progress=progress)
            return SegTrainer(p, model, d, progress=progress)

        k = n_members(plan)
        trainer = make_trainer(plan, build_single_model(plan), out)
        n, m = len(data["train"]), member_cases(plan, len(data["train"]))  # kfold: (k-1)/k of the cases
        # leave ~8% of the budget for post-processing choice and test evaluation
        size_epochs(plan, out, lambda: trainer.measure_epoch_seconds(
            data["train"] if m == n else data["train"].subset(range(m)), data["val"]) * k, "S8 epochs", 0.92)
        plan.save(out / "plan.yaml")
        log(f"training {plan.model.name}{f' x{k} ({plan.ensemble.kind})' if k > 1 else ''} on {len(data['train'])} "
            f"cases ({plan.data.spatial_dims}D, "
            f"{'patch ' + str(plan.segment.patch_size) if plan.segment.patch_size else 'input ' + str(plan.data.input_size)}, "
            f"{plan.train.epochs_text}{' each' if k > 1 else ''}) -> {out}")
        if k == 1:
            seed_everything(plan.seed)
            trainer.model = build_single_model(plan).to(trainer.device)
            result = trainer.fit(data["train"], data["val"], resume=resume)
            model = trainer.model.eval()
        else:
            def fit_member(tr, idx, res):
                return tr.fit(data["train"] if idx is None else data["train"].subset(idx), data["val"], resume=res)

            fg = [int(lab.max() > 0) for lab in data["train"].labels]  # folds stratified by "has foreground"
            model, result = fit_members(plan, out, build_single_model, make_trainer, fit_member, np.array(fg),
                                        resume=resume, fold_groups=patient_groups(parts["train"]), log=log)
            model = model.eval()
            from meddx.training.checkpoint import save_checkpoint

            save_checkpoint(out / "checkpoints" / "best.pt", {"model": model.state_dict(), "epoch": result.best_epoch})
        if plan.segment.choose_postprocess and not heatmap:
            pv, tv, _ = predict_cases(cs, parts["val"], plan, model, progress, "choosing post-processing")
            choose_postprocessing(plan, fp, pv, tv)
        if plan.task == "detect" and not heatmap and plan.segment.choose_det_threshold and parts["val"]:
            choose_det_threshold(plan, cs, parts["val"], model, progress)
        plan.save(out / "plan.yaml")
        from meddx.evaluation.seg_report import evaluate_det_outputs, evaluate_seg_outputs

        if heatmap:
            evaluate_det_outputs(out, plan, cs, parts["test"], model, fit=result, progress=progress)
        else:
            evaluate_seg_outputs(out, plan, cs, parts["test"], model, fit=result, progress=progress)
        set_status(out, "complete", finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
                   train_seconds=result.train_seconds, best_epoch=result.best_epoch, stopped_by=result.stopped_by)
        return out
