"""``meddx ablate``: what each optimisation is worth, measured.

Arms (each trained with the same time budget and seeds, scored on the same test cases):
  * ``baseline``: the plain small CNN: cross-entropy, no augmentation, no balancing, no
    preprocessing, no ensemble, no test-time augmentation (optimiser, schedule, dropout and
    input size are the plan's);
  * ``+ <component>``: the baseline plus one component;
  * ``full - <component>``: the planner's full plan without one of the components it chose;
  * ``full``: the planner's plan as ``meddx train`` would run it.

Every arm reports test ACC, balanced ACC, AUC and sensitivity (mean and sd over seeds), the
same on validation (so later rule changes can rest on validation alone), and a paired
bootstrap p-value against the baseline over the same test cases (the mean over seeds of the
per-seed difference, each seed scored on the same case resample). Runs are kept in
``OUT/<arm>/seed<k>/``; an interrupted ablation continues where it stopped.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meddx.errors import MeddxError
from meddx.planning.plan import Plan


@dataclass(frozen=True)
class Component:
    """One optimisation: how to add it to the baseline, whether the full plan has it, how to take it out."""

    name: str
    what: str
    on: Callable[[Plan], dict[str, Any]]
    in_plan: Callable[[Plan], bool]
    off: Callable[[Plan], dict[str, Any]]
    applies: Callable[[Plan], bool] = lambda p: True


def _aug_on(p: Plan) -> dict:
    return {"augment": p.augment.model_dump()}


def _aug_active(p: Plan) -> bool:
    a = p.augment
    return bool(a.flip_axes or a.rotate_deg or a.scale or a.translate or a.brightness or a.contrast)


_DENOISERS = ("median", "gaussian", "bilateral", "nlm")


def _with_step(p: Plan, step: dict) -> dict:
    return {"data.preprocess": [s.model_dump() for s in p.data.preprocess] + [step]}


def _without(p: Plan, names) -> dict:
    return {"data.preprocess": [s.model_dump() for s in p.data.preprocess if s.name not in names]}


def _denoise_step(p: Plan) -> dict:
    return {"name": "nlm", "params": {}} if p.data.spatial_dims == 2 else {"name": "median", "params": {"radius": 1}}


_EXTRA_AUG = {"augment.elastic": 0.03, "augment.gamma": 0.2, "augment.blur_sigma": 0.5, "augment.noise_std": 0.05}

_DENOISE = Component("denoising", "non-local means (2D) / 3x3x3 median (3D) before the intensity scheme",
                     lambda p: _with_step(p, _denoise_step(p)),
                     lambda p: any(s.name in _DENOISERS for s in p.data.preprocess), lambda p: _without(p, _DENOISERS))
_CLAHE = Component("clahe", "contrast-limited adaptive histogram equalisation (2D)",
                   lambda p: _with_step(p, {"name": "clahe", "params": {}}),
                   lambda p: any(s.name == "clahe" for s in p.data.preprocess), lambda p: _without(p, ("clahe",)),
                   applies=lambda p: p.data.spatial_dims == 2)

COMPONENTS: dict[str, Component] = {c.name: c for c in [
    _DENOISE,
    Component("learned_denoising", "self-supervised CNN denoiser (blind-spot, 10 epochs) fitted on the training images",
              lambda p: {"data.learned_denoise": {"epochs": 10}}, lambda p: p.data.learned_denoise is not None,
              lambda p: {"data.learned_denoise": None}),
    _CLAHE,
    Component("augmentation", "the plan's geometric and intensity augmentation", _aug_on, _aug_active,
              lambda p: {"augment": {}}),
    Component("extra_augmentation", "elastic deformation, gamma, blur and noise on top of the plan's augmentation",
              lambda p: {**_aug_on(p), **_EXTRA_AUG},
              lambda p: bool(p.augment.elastic or p.augment.gamma or p.augment.blur_sigma),
              lambda p: {k: 0.0 for k in _EXTRA_AUG}),
    Component("balanced_sampling", "class-balanced batches (weighted sampler)", lambda p: {"train.sampler": "weighted"},
              lambda p: p.train.sampler != "none", lambda p: {"train.sampler": "none"}),
    Component("class_weights", "class-weighted cross-entropy", lambda p: {"train.class_weights": "balanced"},
              lambda p: p.train.class_weights is not None, lambda p: {"train.class_weights": None}),
    Component("focal_loss", "focal loss (gamma 2)", lambda p: {"train.loss": "focal"},
              lambda p: p.train.loss == "focal", lambda p: {"train.loss": "ce"}),
    Component("logit_adjustment", "logit-adjusted cross-entropy (tau 1)", lambda p: {"train.logit_adjust": 1.0},
              lambda p: p.train.logit_adjust > 0, lambda p: {"train.logit_adjust": 0.0}),
    Component("synthetic_gan", "conditional-GAN minority samples (50 GAN epochs), used only if the quality check "
              "passes (2D)", lambda p: {"train.synthetic": {"epochs": 50}}, lambda p: p.train.synthetic is not None,
              lambda p: {"train.synthetic": None}, applies=lambda p: p.data.spatial_dims == 2),
    Component("mixup_cutmix", "mixup (0.2) or cutmix (1.0) on half the batches",
              lambda p: {"train.mixup": 0.2, "train.cutmix": 1.0},
              lambda p: bool(p.train.mixup or p.train.cutmix), lambda p: {"train.mixup": 0.0, "train.cutmix": 0.0}),
    Component("attention", "squeeze-and-excitation channel attention after each stage",
              lambda p: {"model.params.attention": "se"},
              lambda p: bool(p.model.params.get("attention")), lambda p: {"model.params.attention": None}),
    Component("pca_head", "PCA (16) + logistic regression on the trained features",
              lambda p: {"train.head": "pca_linear", "train.pca_components": 16},
              lambda p: p.train.head == "pca_linear", lambda p: {"train.head": "deep"}),
    Component("ensemble", "ensemble of 5 seeds sharing the budget (time, or epochs: each member gets 1/5)",
              lambda p: {"ensemble.kind": "seeds", "ensemble.members": 5,
                         **({} if p.train.time_budget_s else {"train.epochs": max(1, p.train.epochs // 5)})},
              lambda p: p.ensemble.kind != "none",
              lambda p: {"ensemble.kind": "none", "ensemble.members": 1,
                         **({} if p.train.time_budget_s else {"train.epochs": p.train.epochs * p.ensemble.members})}),
    Component("tta", "flip test-time augmentation on every axis, always on (3D only: 2D laterality matters)",
              lambda p: {"evaluate.tta_flip_axes": list(range(p.data.spatial_dims)), "evaluate.choose_tta": False},
              lambda p: bool(p.evaluate.tta_flip_axes),
              lambda p: {"evaluate.tta_flip_axes": [], "evaluate.choose_tta": False},
              applies=lambda p: p.data.spatial_dims == 3),
]}


SEG_COMPONENTS: dict[str, Component] = {c.name: c for c in [
    _DENOISE,
    COMPONENTS["augmentation"],
    COMPONENTS["extra_augmentation"],
    Component("dice_ce_loss", "Dice + cross-entropy instead of Dice alone", lambda p: {"segment.loss": "dice_ce"},
              lambda p: p.segment.loss == "dice_ce", lambda p: {"segment.loss": "dice"}),
    Component("attention", "SE attention after each U-Net encoder level", lambda p: {"model.params.attention": "se"},
              lambda p: bool(p.model.params.get("attention")), lambda p: {"model.params.attention": None},
              applies=lambda p: p.model.name == "unet"),
    Component("postprocess", "largest component / hole filling / small-component removal chosen on validation",
              lambda p: {"segment.choose_postprocess": True},
              lambda p: p.segment.choose_postprocess, lambda p: {"segment.choose_postprocess": False,
                                                                   "segment.postprocess": []}),
    Component("tta", "flip test-time augmentation along the left-right axis",
              lambda p: {"segment.tta_flip_axes": [p.data.spatial_dims - 1]},
              lambda p: bool(p.segment.tta_flip_axes), lambda p: {"segment.tta_flip_axes": []}),
]}


def components_for(plan: Plan) -> dict[str, Component]:
    return SEG_COMPONENTS if plan.task == "segment" else COMPONENTS


def baseline_overrides(full: Plan) -> dict[str, Any]:
    """Overrides that turn the planner's full plan into the plain baseline."""
    ov: dict[str, Any] = {}
    for c in components_for(full).values():
        ov.update(c.off(full))
    ov["augment"] = {}
    ov["choices"] = []
    ov["data.preprocess"] = []
    ov["model.params"] = {k: v for k, v in full.model.params.items() if k in ("dropout", "deep_supervision")}
    return ov


def arms(full: Plan, components: list[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """``(name, overrides)`` of every arm, in table order."""
    table = components_for(full)
    names = list(table) if components is None else list(components)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise MeddxError(f"unknown ablation component(s) {unknown} for task {full.task}",
                         fix=f"use some of: {', '.join(table)}")
    base = baseline_overrides(full)
    out = [("baseline", base)]
    comps = [table[n] for n in names if table[n].applies(full)]
    for c in comps:
        out.append((f"+ {c.name}", {**base, **c.on(full)}))
    for c in comps:
        if c.in_plan(full):
            out.append((f"full - {c.name}", c.off(full)))
    out.append(("full", {}))
    return out


def run_finished(rdir: Path) -> bool:
    """A run the ablation may reuse: its metrics are written and run.json says it completed (metrics.json
    comes before the report and the final status, so a run stopped between them has metrics but is not
    finished; a run without run.json, from before it existed, is taken as it is)."""
    from meddx.training.run import read_run_info

    if not (rdir / "metrics.json").exists():
        return False
    try:
        return read_run_info(rdir).get("status", "complete") == "complete"
    except MeddxError:  # a damaged run.json: train the run again
        return False


def eta_text(trained: int, seconds: float, left: int) -> str:
    """``, about N min left`` from the mean time of the runs trained so far (none yet, or none left: empty)."""
    if not trained or not left:
        return ""
    return f", about {seconds / trained * left / 60:.1f} min left"


def _read_probs(run: Path, split: str, class_names: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    ids, ys, ps = [], [], []
    with open(run / "predictions.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["split"] != split:
                continue
            ids.append(row["case_id"])
            ys.append(class_names.index(row["label"]))
            ps.append([float(row[f"p_{n}"]) for n in class_names])
    return np.array(ys, dtype=np.int64), np.array(ps, dtype=np.float64), ids


def _read_dice(run: Path) -> tuple[np.ndarray, float]:
    """Per-test-case mean Dice (``per_case.csv``) and the best validation Dice of a segmentation run."""
    with open(run / "per_case.csv", newline="") as f:
        dice = np.array([float(r["mean_dice"]) for r in csv.DictReader(f)])
    m = json.loads((run / "metrics.json").read_text())
    return dice, float(m["training"]["best_val_metric"])


def paired_bootstrap_mean(a: list[np.ndarray], b: list[np.ndarray], n_boot: int = 2000, seed: int = 0) -> float:
    """Two-sided paired-bootstrap p-value that per-case scores ``a`` and ``b`` (lists over seeds, the same
    cases in each) have the same mean; resamples cases, centred on the observed difference."""
    d = np.mean([x - y for x, y in zip(a, b)], axis=0)
    rng = np.random.default_rng(seed)
    obs = float(d.mean())
    boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(1)
    return float((1 + np.count_nonzero(np.abs(boots - obs) >= abs(obs) - 1e-12)) / (1 + n_boot))


def _positive(full: Plan) -> int:
    """Index of the class whose sensitivity a binary classification ablation reports: the plan's positive
    class (R18: the disease's, as in every run's report)."""
    from meddx.evaluation.metrics import positive_index

    names = list(full.data.class_names)
    return positive_index(names, full.evaluate.positive_class) if full.task == "classify" and len(names) == 2 else 1


def _scores(y: np.ndarray, p: np.ndarray, positive: int = 1) -> dict[str, float]:
    """Test or validation scores of one run; a binary task's sensitivity is its ``positive`` class's."""
    from meddx.evaluation.metrics import classification_metrics

    ov = classification_metrics(y, p, positive=positive, n_boot=0)["overall"]
    sens = ov.get("sensitivity", ov["sensitivity_macro"])
    return {"accuracy": ov["accuracy"]["value"], "balanced_accuracy": ov["balanced_accuracy"]["value"],
            "auc": (ov.get("auc") or ov["auc_macro"])["value"], "sensitivity": sens["value"]}


def run_ablation(dataset: str, out: str | Path, *, budget_s: float | None = None, epochs: int | None = None,
                 seeds: list[int] | tuple[int, ...] = (0, 1, 2), components: list[str] | None = None,
                 task: str = "classify", resample_masks: bool = False, progress: bool = True, log=print) -> dict:
    """Train every arm with every seed (skipping finished runs) and write ``ablation.json``/``.md``/``.png``.

    Give either ``budget_s`` (every arm trains for the same time) or ``epochs`` (the same number of
    epochs; an ensemble's members share them): epochs make the comparison independent of how busy
    the CPU is.
    """
    if (budget_s is None) == (epochs is None):
        raise MeddxError("give the ablation either a time budget or a number of epochs", fix="--time-budget or --epochs")
    amount = {"train.time_budget_s": budget_s} if budget_s else {"train.epochs": int(epochs), "train.time_budget_s": None}
    from meddx.planning.planner import make_plan, make_seg_plan
    from meddx.training.run import fingerprint_dataset, planned_split, train_run

    out = Path(out)
    src = Path(dataset)
    if src.is_dir() and out.resolve().is_relative_to(src.resolve()):
        # every arm re-reads the dataset: the first run's folder would become a class (or hold stray images)
        raise MeddxError(f"--out {out} is inside the dataset folder {src}", fix="choose an --out outside the dataset")
    if task == "segment":
        from meddx.data.segsources import open_seg_dataset
        from meddx.training.seg_run import train_seg_run

        cs = open_seg_dataset(dataset, resample_masks=resample_masks)
        fp = fingerprint_dataset(cs, progress, split=planned_split(cs, overrides={"data.split_seed": 0}))
        full = make_seg_plan(fp, source=str(Path(cs.source).resolve()), time_budget_s=budget_s)
        if epochs:
            full.train.epochs = int(epochs)

        def train(rdir, ov):
            return train_seg_run(dataset, rdir, overrides=ov, resample_masks=resample_masks, task="segment",
                                 progress=False, log=lambda *a, **k: None)
    else:
        from meddx.data.sources import open_dataset

        cs = open_dataset(dataset)
        fp = fingerprint_dataset(cs, progress, split=planned_split(cs, overrides={"data.split_seed": 0}))
        full = make_plan(fp, source=str(Path(cs.source).resolve()) if cs.kind != "synthetic" else cs.source,
                         time_budget_s=budget_s)
        if epochs:
            full.train.epochs = int(epochs)

        def train(rdir, ov):
            return train_run(dataset, rdir, overrides=ov, progress=False, log=lambda *a, **k: None)
    seeds = list(dict.fromkeys(int(s) for s in seeds))  # a repeated seed would count one run twice
    arm_list = arms(full, None if components is None else list(dict.fromkeys(components)))
    if components:  # asked for by name but not for this dataset (e.g. tta, 3D only, on 2D images): say so
        table = components_for(full)
        for n in dict.fromkeys(components):
            if not table[n].applies(full):
                log(f"{n}: does not apply to this dataset ({table[n].what}); it gets no arm")
    out.mkdir(parents=True, exist_ok=True)  # once the dataset and the components are known good
    # a summary from an earlier (or other) ablation in this folder must not look like this one's result
    # while it runs or after it is interrupted: it is written again once every run has finished
    for name in ("ablation.json", "ablation.md", "ablation.png"):
        (out / name).unlink(missing_ok=True)
    names = list(full.data.class_names)
    task = full.task
    pos = _positive(full)
    total = len(arm_list) * len(seeds)
    done = 0
    t0 = time.perf_counter()
    trained, train_time = 0, 0.0  # runs trained by this call (finished ones found in OUT cost nothing)
    results: dict[str, dict] = {}
    from meddx.planning.planner import apply_overrides

    seen: dict[str, str] = {}  # resolved plan -> first arm with it: identical arms share their runs
    test_ids: list[str] = []
    for arm, ov in arm_list:
        key = arm.replace(" ", "").replace("+", "plus_").replace("-", "minus_")
        resolved = apply_overrides(full.model_copy(deep=True), {**amount, **ov}).model_dump(mode="json",
                                                                                            exclude={"decisions"})
        sig = json.dumps(resolved, sort_keys=True, default=str)
        if sig in seen:
            results[arm] = {**results[seen[sig]], "overrides": ov, "same_as": seen[sig]}
            done += len(seeds)
            log(f"{arm}: the same plan as {seen[sig]} (runs shared)")
            continue
        seen[sig] = arm
        runs = []
        # the arm's whole resolved plan: a change of the planner's full plan shows here too
        stale = (out / key / "arm.json").exists() and (out / key / "arm.json").read_text() != sig
        if stale:  # the arm's definition changed (e.g. the planner's full plan): its runs no longer count
            import shutil

            shutil.rmtree(out / key)
        (out / key).mkdir(parents=True, exist_ok=True)
        (out / key / "arm.json").write_text(sig)
        for seed in seeds:
            rdir = out / key / f"seed{seed}"
            if not run_finished(rdir):
                if rdir.exists():
                    import shutil

                    shutil.rmtree(rdir)  # an interrupted run: start it again
                # one split for every seed and arm (seeded splits included), so test cases pair up
                t_run = time.perf_counter()
                train(rdir, {**amount, **ov, "seed": seed, "data.split_seed": 0})
                trained, train_time = trained + 1, train_time + time.perf_counter() - t_run
            done += 1
            el = time.perf_counter() - t0
            log(f"[{done}/{total}] {arm} seed {seed} ({el / 60:.1f} min elapsed{eta_text(trained, train_time, total - done)})")
            runs.append(rdir)
        t_sec = [json.loads((r / "metrics.json").read_text())["training"]["train_seconds"] for r in runs]
        if task == "segment":
            dice, val = zip(*[_read_dice(r) for r in runs])
            results[arm] = {"overrides": ov, "runs": [str(r) for r in runs], "case_dice": list(dice),
                            "test": [{"dice": float(np.mean(d))} for d in dice], "val": [{"dice": v} for v in val],
                            "train_seconds": t_sec}
            continue
        y_te, p_te, ids_te = zip(*[_read_probs(r, "test", names) for r in runs])
        y_va, p_va, _ = zip(*[_read_probs(r, "val", names) for r in runs])
        test_ids = test_ids or ids_te[0]
        for r, ids in zip(runs, ids_te):  # the p-values pair cases by position: every run must list the same ones
            if list(ids) != list(test_ids):
                raise MeddxError(f"{r / 'predictions.csv'} has other test cases than the ablation's first run",
                                 fix=f"delete {r} and run the ablation again (one split is shared by every arm)")
        results[arm] = {"overrides": ov, "runs": [str(r) for r in runs], "y_test": y_te[0],
                        "p_test": list(p_te), "test": [_scores(y_te[0], p, pos) for p in p_te],
                        "val": [_scores(y, p, pos) for y, p in zip(y_va, p_va)], "train_seconds": t_sec}
    return summarise(results, out, dataset=cs.name, budget_s=budget_s, epochs=epochs, seeds=list(seeds), full=full)


def summarise(results: dict[str, dict], out: Path, *, dataset: str, budget_s: float | None, epochs: int | None,
              seeds: list[int], full: Plan) -> dict:
    """Means, spreads and p-values against the baseline; writes the JSON, Markdown and plot."""
    from meddx.evaluation.metrics import paired_bootstrap_pvalue

    base = results["baseline"]
    seg = full.task == "segment"
    table = []
    for arm, r in results.items():
        row = {"arm": arm, "overrides": r["overrides"]}
        if r.get("same_as"):
            row["same_as"] = r["same_as"]
        if seg:
            for split in ("test", "val"):
                v = np.array([s["dice"] for s in r[split]], dtype=float)
                row[f"{split}_dice_mean"] = float(v.mean())
                row[f"{split}_dice_sd"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
            row["delta_dice"] = row["test_dice_mean"] - float(np.mean([s["dice"] for s in base["test"]]))
            if arm != "baseline":
                row["p_dice"] = paired_bootstrap_mean(r["case_dice"], base["case_dice"])
            row["train_seconds_mean"] = float(np.mean(r["train_seconds"]))
            row["runs"] = r["runs"]
            table.append(row)
            continue
        for split in ("test", "val"):
            for m in ("accuracy", "balanced_accuracy", "auc", "sensitivity"):
                v = np.array([s[m] for s in r[split]], dtype=float)
                row[f"{split}_{m}_mean"] = float(np.mean(v))
                row[f"{split}_{m}_sd"] = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
        row["delta_accuracy"] = row["test_accuracy_mean"] - float(np.mean([s["accuracy"] for s in base["test"]]))
        row["delta_auc"] = row["test_auc_mean"] - float(np.mean([s["auc"] for s in base["test"]]))
        if arm != "baseline":
            row["p_accuracy"] = paired_bootstrap_pvalue(base["y_test"], r["p_test"], base["p_test"], "accuracy",
                                                        n_boot=2000)
            row["p_auc"] = paired_bootstrap_pvalue(base["y_test"], r["p_test"], base["p_test"], "auc", n_boot=2000)
        row["train_seconds_mean"] = float(np.mean(r["train_seconds"]))
        row["runs"] = r["runs"]
        table.append(row)
    res = {"dataset": dataset, "task": full.task, "budget_s": budget_s, "epochs": epochs, "seeds": seeds,
           "date": time.strftime("%Y-%m-%d"),
           "full_plan": {"augment": full.augment.model_dump(), "train": full.train.model_dump(),
                         "ensemble": full.ensemble.model_dump(), "model": full.model.model_dump(),
                         "segment": full.segment.model_dump() if full.segment else None},
           "components": {c.name: c.what for c in components_for(full).values()}, "arms": table}
    if not seg:  # which class "sensitivity" is about (a summary written before this key: class 1, or macro)
        names = list(full.data.class_names)
        res["sensitivity_of"] = names[_positive(full)] if len(names) == 2 else "macro"
    from meddx.training.run import write_json

    write_json(out / "ablation.json", res)
    (out / "ablation.md").write_text(markdown_table(res))
    plot_ablation(res, out / "ablation.png")
    return res


def amount_text(res: dict) -> str:
    return f"{res['budget_s']:g} s per run" if res.get("budget_s") else f"{res['epochs']} epochs per run"


def _fmt(mean: float, sd: float, one_seed: bool = False) -> str:
    return f"{mean:.3f}" if one_seed else f"{mean:.3f} ± {sd:.3f}"  # one seed has no spread to show


def _p(p: float) -> str:
    """A bootstrap p-value (never 0: at least 1 / (1 + resamples)) as the table shows it."""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def markdown_table(res: dict) -> str:
    one = len(res.get("seeds") or (0, 1)) < 2

    def _f(mean, sd):
        return _fmt(mean, sd, one)

    if res.get("task") == "segment":
        lines = [f"### {res['dataset']} (segmentation, {amount_text(res)}, seeds "
                 f"{', '.join(map(str, res['seeds']))})", "",
                 "| arm | test Dice | Δ Dice | p (Dice) | val Dice |", "|---|---|---|---|---|"]
        for r in res["arms"]:
            p = _p(r['p_dice']) if "p_dice" in r else ""
            name = r["arm"] + (f" (= {r['same_as']})" if r.get("same_as") else "")
            lines.append(f"| {name} | {_f(r['test_dice_mean'], r['test_dice_sd'])} | {r['delta_dice']:+.3f} | {p} "
                         f"| {_f(r['val_dice_mean'], r['val_dice_sd'])} |")
        return "\n".join(lines) + "\n"
    sens = f"sensitivity ({res['sensitivity_of']})" if res.get("sensitivity_of") else "sensitivity"
    lines = [f"### {res['dataset']} ({amount_text(res)}, seeds {', '.join(map(str, res['seeds']))})", "",
             f"| arm | test ACC | Δ ACC | p (ACC) | balanced ACC | test AUC | Δ AUC | p (AUC) | {sens} | val ACC | val AUC |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["arms"]:
        p_acc = _p(r['p_accuracy']) if "p_accuracy" in r else ""
        p_auc = _p(r['p_auc']) if "p_auc" in r else ""
        name = r["arm"] + (f" (= {r['same_as']})" if r.get("same_as") else "")
        lines.append(
            f"| {name} | {_f(r['test_accuracy_mean'], r['test_accuracy_sd'])} | {r['delta_accuracy']:+.3f} | {p_acc} "
            f"| {_f(r['test_balanced_accuracy_mean'], r['test_balanced_accuracy_sd'])} "
            f"| {_f(r['test_auc_mean'], r['test_auc_sd'])} | {r['delta_auc']:+.3f} | {p_auc} "
            f"| {_f(r['test_sensitivity_mean'], r['test_sensitivity_sd'])} "
            f"| {_f(r['val_accuracy_mean'], r['val_accuracy_sd'])} | {_f(r['val_auc_mean'], r['val_auc_sd'])} |")
    return "\n".join(lines) + "\n"


def plot_ablation(res: dict, path: Path) -> None:
    """Horizontal bars: test accuracy change against the baseline, with the seed spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in res["arms"] if r["arm"] != "baseline"]
    metric = "dice" if res.get("task") == "segment" else "accuracy"
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    y = np.arange(len(rows))
    d = [r[f"delta_{metric}"] for r in rows]
    colors = ["#2a7" if v > 0 else "#c44" for v in d]
    ax.barh(y, d, xerr=[r[f"test_{metric}_sd"] for r in rows], color=colors, alpha=0.8)
    ax.set_yticks(y, [r["arm"] + (" *" if r.get(f"p_{metric}", 1) < 0.05 else "") for r in rows])
    ax.axvline(0, color="k", lw=0.8)
    ax.invert_yaxis()
    ax.set_xlabel(f"test {metric} - baseline (mean over seeds; bar = sd; * p < 0.05)")
    ax.set_title(f"ablation: {res['dataset']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
