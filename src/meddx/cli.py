"""The ``meddx`` command line: thin, parses arguments and calls the modules."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape  # file paths, class and label names may hold [brackets]
from rich.table import Table

from meddx.errors import DatasetError, MeddxError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="meddx: inspect, plan, train, evaluate, predict, explain, serve and export medical image classifiers, "
                       "segmenters and lesion detectors.")
console = Console()
err_console = Console(stderr=True)
MAX_SEED = 2**32 - 1  # meddx.planning.plan.MAX_SEED, not imported here: it would load pydantic at every start


def say(message) -> None:
    """Progress messages of long jobs: plain text (no Rich markup in a user's file or label names)."""
    console.print(message, markup=False, highlight=False, soft_wrap=True)


def _warn_if_unfinished(run: Path) -> None:
    from meddx.training.run import unfinished_note

    if run.is_dir() and (note := unfinished_note(run)):
        err_console.print(note, markup=False, highlight=False, soft_wrap=True)


def parse_duration(text: str | None) -> float | None:
    """'90', '90s', '10m', '1.5h' -> seconds."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", text)
    if not m:
        raise MeddxError(f"cannot read the duration '{text}'", fix="use e.g. 90s, 10m or 1h")
    seconds = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if seconds <= 0:
        raise MeddxError(f"the duration '{text}' is not positive", fix="use e.g. 90s, 10m or 1h")
    return seconds


SET_HELP = ("Override any plan field, KEY=VALUE with a dotted key (repeatable), e.g. --set ensemble.kind=seeds "
            "--set ensemble.members=5 --set augment.flip_axes=[1]; VALUE is read as YAML.")


def parse_sets(items: list[str] | None) -> dict:
    """``["a.b=1", "c=[1, 2]"]`` -> ``{"a.b": 1, "c": [1, 2]}`` (values read as YAML)."""
    import yaml

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MeddxError(f"cannot read --set '{item}'", fix="write --set key=value, e.g. --set train.epochs=5")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise MeddxError(f"cannot read the value of --set '{item}'", fix="give a number, word or [list]") from None
    return out


DURATION_HELP = "s, m or h; a bare number is seconds"
NO_PROGRESS_HELP = "No progress bars (e.g. in CI logs)."


def _progress_enabled(no_progress: bool) -> bool:
    return not no_progress


TASK_HELP = ("classify (labels per image) | segment (masks: NAME_mask.png beside images, images/ + masks/, or "
             "image,mask CSV) | detect (boxes: CSV image,x1,y1,x2,y2,label)")
RESAMPLE_HELP = "Segmentation: resize masks whose size differs from their image (nearest neighbour) instead of failing."
GROUP_HELP = "Segmentation: each image's folder is one patient; no patient is split across train/val/test."


def _open(path: str, task: str, resample_masks: bool = False, group_by_folder: bool = False):
    if task == "detect":
        from meddx.data.detsources import open_det_dataset

        return open_det_dataset(path)
    if task == "segment":
        from meddx.data.segsources import open_seg_dataset

        return open_seg_dataset(path, resample_masks=resample_masks, group_by_folder=group_by_folder)
    if task != "classify":
        raise MeddxError(f"unknown task '{task}'", fix="use --task classify, segment or detect")
    from meddx.data.sources import open_dataset

    return open_dataset(path)


# ---------------------------------------------------------------------------------------
@app.command()
def inspect(path: str = typer.Argument(..., help="Dataset: MedMNIST .npz, class folder or CSV manifest; "
                                                   "with --task segment or detect, images with masks or a box CSV."),
            task: str = typer.Option("classify", "--task", help=TASK_HELP),
            resample_masks: bool = typer.Option(False, "--resample-masks", help=RESAMPLE_HELP),
            json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the fingerprint to this JSON file."),
            no_progress: bool = typer.Option(False, "--no-progress", help=NO_PROGRESS_HELP)):
    """Print a dataset's fingerprint and the files that cannot be read.

    Cases, classes, splits, shapes, spacing, intensities, duplicates and findings; exits 2 if any case is unreadable."""
    from meddx.training.run import fingerprint_dataset, write_json

    cs = _open(path, task, resample_masks)
    fp = fingerprint_dataset(cs, _progress_enabled(no_progress), strict=False)
    t = Table(title=escape(f"{cs.name} ({cs.kind})"), show_header=False)
    t.add_row("cases", f"{fp['n_cases']} ({fp['n_readable']} readable)")
    t.add_row("classes", escape(", ".join(f"{k}: {v}" for k, v in fp["class_counts"].items())))
    t.add_row("imbalance ratio", str(fp["imbalance_ratio"]))
    if fp["split_counts"]:
        t.add_row("splits", "; ".join(f"{s}: {sum(c.values())}" for s, c in fp["split_counts"].items())
                  + (" (official)" if fp["official_split"] else ""))
    if "spatial_dims" in fp:
        t.add_row("dimensionality", ", ".join(f"{d}D" for d in fp["spatial_dims"]))
        t.add_row("channels", ", ".join(f"{k} ch: {v}" for k, v in fp["channels"].items())
                  + (escape(f" (dataset.json: {', '.join(fp['channel_names'])})") if fp.get("channel_names") else ""))
        if set(fp.get("channel_files") or {}) - {"1"}:  # nnU-Net cases of one file per channel
            t.add_row("files per case", ", ".join(f"{k}: {v}" for k, v in fp["channel_files"].items()))
        t.add_row("shape (median / min / max)", f"{fp['shape_median']} / {fp['shape_min']} / {fp['shape_max']}"
                  f" ({fp['distinct_shapes']} distinct)")
        t.add_row("spacing (median)", str(fp["spacing_median"]) if fp["spacing_median"] else "unknown")
        if fp.get("orientations"):  # volumes per orientation (RAS letters of the array axes; R20)
            t.add_row("orientation", ", ".join(f"{k}: {v}" for k, v in fp["orientations"].items()))
        it = fp["intensity"]
        t.add_row("intensity", f"min {it['min']:.4g}, max {it['max']:.4g}, mean {it['mean']:.4g}, sd {it['std']:.4g}, "
                  f"p0.5 {it['p00_5']:.4g}, p99.5 {it['p99_5']:.4g}")
        cross = fp["duplicates"]["across_splits"]
        t.add_row("duplicates", f"{fp['duplicates']['cases']} cases in {fp['duplicates']['groups']} groups"
                  + (f" ({cross} across splits)" if cross is not None else
                     " (no split yet: `meddx plan` and `train` check the seeded one)"))
    t.add_row("patient groups", "yes" if fp["has_patient_groups"] else "no")
    if "segmentation" in fp:
        sg = fp["segmentation"]
        t.add_row("mask labels", escape(", ".join(f"{v}={n}" for v, n in zip(sg["label_values"], sg["label_names"]))
                                        + f" ({sg['labels_from']})"))
        t.add_row("foreground share", escape(", ".join(f"{k}: {v:.2%}" for k, v in sg["label_fraction"].items())))
        t.add_row("objects", f"{sg['objects']['count']} (median {sg['objects']['size_median']:.0f} px/voxels); "
                  f"{sg['empty_masks']} empty mask(s)")
    console.print(t)
    for n in fp.get("notes", []):
        console.print(f"[cyan]note:[/] {n}")
    for f in fp.get("findings", []):
        console.print("[yellow]finding:[/] " + escape(f))
    for p in fp["problems"][:20]:
        console.print("[red]unreadable:[/] " + escape(p["error"]), soft_wrap=True)  # one line per file, path unbroken
    if len(fp["problems"]) > 20:
        console.print(f"... and {len(fp['problems']) - 20} more")
    if json_out:
        write_json(Path(json_out), fp)
    if fp["problems"]:  # listed above; the exit code tells a script that training would refuse this dataset
        raise DatasetError(f"{len(fp['problems'])} of {fp['n_cases']} cases cannot be used (listed above as "
                           "unreadable)", path=cs.source, fix="fix or remove those files; training refuses them")


@app.command()
def plan(path: str = typer.Argument(..., help="Dataset, as for `meddx inspect`."),
         out: Path = typer.Option(Path("plan.yaml"), "--out", "-o", help="Where to write the plan."),
         seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Seed recorded in the plan; it also draws the seeded "
                                  "train/val/test split when the dataset has none."),
         task: str = typer.Option("classify", "--task", help=TASK_HELP),
         resample_masks: bool = typer.Option(False, "--resample-masks", help=RESAMPLE_HELP),
         group_by_folder: bool = typer.Option(False, "--group-by-folder", help=GROUP_HELP),
         time_budget: Optional[str] = typer.Option(None, "--time-budget", help="Training time the plan is sized "
                                                   f"for (epochs, ensemble, empirical choices), e.g. 10m ({DURATION_HELP}); "
                                                   "default: none, 30 epochs."),
         memory_budget: Optional[float] = typer.Option(None, "--memory-budget", min=0.01, help="GiB one training step may "
                                                       "use (caps the batch size); default 4 (2D) / 8 (3D)."),
         set_: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
         no_progress: bool = typer.Option(False, "--no-progress", help=NO_PROGRESS_HELP)):
    """Write the plan (editable YAML) that `meddx train --plan` runs.

    Every decision is listed with the rule that made it."""
    from meddx.planning.planner import make_plan, make_seg_plan
    from meddx.data.split import apply_split
    from meddx.training.run import fingerprint_dataset, planned_split, planning_budgets

    cs = _open(path, task, resample_masks, group_by_folder)
    sets = parse_sets(set_)
    # the rules read a budget given either way, as `meddx train` does (--set wins, given last)
    budgets = planning_budgets({"train.time_budget_s": parse_duration(time_budget),
                                "train.memory_budget_gb": memory_budget, **sets})
    # planned on the cases `meddx train` will train and validate on, as `meddx train` plans (the seed of
    # `--set seed=N`, which the plan takes over --seed, draws that split too)
    split = planned_split(cs, overrides={"seed": seed, **sets})
    apply_split(cs, split)  # a split the run cannot use (e.g. an empty val split) is refused, as `meddx train` does
    fp = fingerprint_dataset(cs, _progress_enabled(no_progress), split=split, log=say)
    if task in ("segment", "detect"):
        p = make_seg_plan(fp, source=str(Path(path).resolve()), seed=seed, group_by_folder=group_by_folder,
                          overrides=sets, **budgets)
    else:
        p = make_plan(fp, source=str(Path(path).resolve()), seed=seed, overrides=sets, **budgets)
    p.save(out)
    console.print(f"plan written to {out}")
    for d in p.decisions:
        console.print(f"  {d.field} = {d.value}  [dim]({d.rule}, {d.kind})[/]")


@app.command()
def train(path: Optional[str] = typer.Argument(None, help="Dataset path (optional with --plan or --resume)."),
          out: Path = typer.Option(..., "--out", "-o", help="Run directory to create (new or empty; with "
                                                     "--resume, the run to continue)."),
          plan_file: Optional[Path] = typer.Option(None, "--plan", help="Run this plan.yaml instead of planning."),
          resume: bool = typer.Option(False, "--resume", help="Continue a stopped run in --out exactly."),
          seed: Optional[int] = typer.Option(None, min=0, max=MAX_SEED, help="Random seed (default 0): "
                                             "initialisation, batch order, augmentation, and the seeded "
                                             "train/val/test split when the dataset has none."),
          time_budget: Optional[str] = typer.Option(None, "--time-budget",
                                                    help=f"Training time, e.g. 10m ({DURATION_HELP}); "
                                                    "the epochs and the schedule are sized to fit it "
                                                    "(default: none, 30 epochs)."),
          epochs: Optional[int] = typer.Option(None, help="Number of epochs (default 30, R9; ignored with "
                                               "--time-budget)."),
          model: Optional[str] = typer.Option(None, help="Model name from the registry (see `meddx models`; "
                                               "default: the plan's, R5 / S3)."),
          batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Training batch size (default: the plan's, R6)."),
          lr: Optional[float] = typer.Option(None, help="Learning rate (default: the plan's: 2e-3 for a "
                                                        "classifier, R7; 3e-3 for a segmenter)."),
          optimizer: Optional[str] = typer.Option(None, help="Optimiser: sgd | adam | adamw | rmsprop (default adamw, R7)."),
          schedule: Optional[str] = typer.Option(None, help="Learning-rate schedule: constant | step | cosine | "
                                                 "onecycle (default cosine with 1 warm-up epoch, R7)."),
          image_size: Optional[int] = typer.Option(None, "--image-size", min=8, help="Network input size in "
                                                   "pixels/voxels, the same on every axis (default: the plan's, "
                                                   "R3 / S2); 3D segmentation: the training patch and sliding "
                                                   "window."),
          positive_class: Optional[str] = typer.Option(None, "--positive-class",
                                                       help="Binary: the class sensitivity, PPV, AUC and the "
                                                       "threshold are about (default: planner rule R18)."),
          threshold_rule: Optional[str] = typer.Option(None, "--threshold-rule", help="How the second operating "
                                                       "point's threshold is chosen on validation: youden (max "
                                                       "sensitivity + specificity - 1; default) | sensitivity "
                                                       "(needs --target-sensitivity)."),
          target_sensitivity: Optional[float] = typer.Option(None, "--target-sensitivity",
                                                             help="Choose the threshold on validation for this "
                                                             "sensitivity, in (0, 1], e.g. 0.9 (implies "
                                                             "--threshold-rule sensitivity)."),
          task: Optional[str] = typer.Option(None, "--task", help=TASK_HELP + " (default: classify, or the plan's)."),
          loss: Optional[str] = typer.Option(None, "--loss", help="Segmentation: dice | dice_ce | dice_focal | tversky "
                                        "(default dice_ce, S5)."),
          detector: Optional[str] = typer.Option(None, "--detector", help="Detection: components (boxes from a "
                                                 "segmenter) | heatmap (centre-heatmap head, 2D); default components."),
          resample_masks: bool = typer.Option(False, "--resample-masks", help=RESAMPLE_HELP),
          group_by_folder: bool = typer.Option(False, "--group-by-folder", help=GROUP_HELP),
          set_: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
          no_progress: bool = typer.Option(False, "--no-progress", help=NO_PROGRESS_HELP)):
    """Train a classifier, segmenter or detector into a run directory.

    Plans (or runs --plan), splits, trains, evaluates and writes the run: plan, split, checkpoints, metrics, report.html."""
    from meddx.planning.plan import Plan
    from meddx.training.run import train_run

    budget = parse_duration(time_budget)
    if target_sensitivity is not None and threshold_rule is None:
        threshold_rule = "sensitivity"  # a target only means something to that rule
    ov = {"seed": seed, "train.time_budget_s": budget, "train.epochs": epochs, "model.name": model,
          "train.batch_size": batch_size, "optim.lr": lr, "optim.name": optimizer, "schedule.name": schedule,
          "evaluate.threshold_rule": threshold_rule, "evaluate.target_sensitivity": target_sensitivity,
          "evaluate.positive_class": positive_class,
          "segment.loss": loss, "segment.detector": detector}
    ov = {k: v for k, v in ov.items() if v is not None}
    ov.update(parse_sets(set_))
    if task is None:
        src = (out / "plan.yaml") if resume else plan_file
        task = Plan.load(src).task if src is not None and Path(src).exists() else "classify"
    if task in ("segment", "detect"):
        from meddx.training.seg_run import train_seg_run

        run = train_seg_run(path, out, plan_path=str(plan_file) if plan_file else None, overrides=ov, resume=resume,
                            image_size=image_size, resample_masks=resample_masks, group_by_folder=group_by_folder,
                            task=task,
                            progress=_progress_enabled(no_progress), log=say)
        _print_seg_summary(run)
        return
    if task != "classify":
        raise MeddxError(f"unknown task '{task}'", fix="use --task classify, segment or detect")
    run = train_run(path, out, plan_path=str(plan_file) if plan_file else None, overrides=ov, resume=resume,
                    image_size=image_size, progress=_progress_enabled(no_progress), log=say)
    _print_summary(run)


def _print_seg_summary(run: Path, sub: str = "") -> None:
    from rich.markup import escape

    from meddx.evaluation.report import format_metric, format_value

    m = json.loads((run / sub / "metrics.json").read_text())
    det = m.get("detection")
    if det:
        t = Table(title=f"detection on {m['dataset']} (n={m['n_test']}, IoU >= {det['iou_threshold']})")
        for c in ("finding", "AP", "FROC mean sensitivity"):
            t.add_column(c)
        for name, v in det["per_class"].items():  # n/a: no reference box of this finding among the test cases
            t.add_row(name, format_value(v["ap"]), format_value(v["froc"]["mean"]))
        console.print(t)
    if "summary" not in m:
        console.print(f"report: {run / sub / 'report.html'}")
        return
    t = Table(title=f"test metrics: {m['dataset']} (n={m['n_test']}, distances in {m['distance_units']})")
    for c in ("class", "Dice", "IoU", "HD95", "ASD"):
        t.add_column(c)

    def f(x):  # escaped: rich reads "[n/a, n/a]" (a CI over fewer than 2 cases) as markup and drops it
        return escape(format_metric(x))

    for name, v in m["summary"]["per_class"].items():
        t.add_row(name, *(f(v[k]) for k in ("dice", "iou", "hd95", "asd")))
    t.add_row("mean", *(f(m["summary"]["mean"][k]) for k in ("dice", "iou", "hd95", "asd")))
    console.print(t)
    console.print(f"report: {run / sub / 'report.html'}")


def _print_summary(run: Path, sub: str = "") -> None:
    from meddx.evaluation.thresholds import stored_positive

    m = json.loads((run / sub / "metrics.json").read_text()) if sub else json.loads((run / "metrics.json").read_text())
    first = next(iter(m["operating_points"].values()), {})
    names = first.get("class_names") or []
    pos = (f", positive class: {names[stored_positive(names, first.get('operating_point'))]}" if len(names) == 2
           else ", sensitivity/specificity: macro")
    t = Table(title=f"test metrics: {m['dataset']} (n={m['n_test']}{pos})")
    t.add_column("operating point")
    for c in ("AUC", "accuracy", "balanced acc.", "sensitivity", "specificity"):
        t.add_column(c)

    def f(x):
        return "n/a" if not x or x.get("value") is None else (
            f"{x['value']:.3f} [{x['ci_low']:.3f}, {x['ci_high']:.3f}]" if x.get("ci_low") is not None
            else f"{x['value']:.3f}")

    for label, s in m["operating_points"].items():
        o = s["overall"]
        t.add_row(label.replace("validation-chosen threshold", "val. threshold"), f(o.get("auc") or o.get("auc_macro")), f(o["accuracy"]), f(o["balanced_accuracy"]),
                  f(o.get("sensitivity") or o.get("sensitivity_macro")),
                  f(o.get("specificity") or o.get("specificity_macro")))
    console.print(t)
    console.print(f"report: {run / sub / 'report.html'}")


@app.command()
def evaluate(run: Path = typer.Argument(..., help="Run directory written by `meddx train`."),
             path: Optional[str] = typer.Argument(None, help="Labelled dataset to evaluate on "
                                                  "(default: the run's own test split)."),
             no_progress: bool = typer.Option(False, "--no-progress", help=NO_PROGRESS_HELP)):
    """Score a trained run on its test split or another labelled dataset.

    Writes RUN/evaluations/test/ or RUN/evaluations/<dataset name>/."""
    from meddx.evaluation.evaluate_run import evaluate_run

    sub = evaluate_run(run, path, progress=_progress_enabled(no_progress))
    if json.loads((sub / "metrics.json").read_text()).get("task") in ("segment", "detect"):
        _print_seg_summary(run, str(sub.relative_to(run)))
    else:
        _print_summary(run, str(sub.relative_to(run)))


@app.command()
def predict(run: Path = typer.Argument(..., help="Run directory written by `meddx train`."),
            target: Path = typer.Argument(..., help="An image, DICOM file or series folder, NIfTI, or a folder."),
            out: Optional[Path] = typer.Option(None, "--out", "-o", help="Classifier: write .csv or .json (default: "
                                               "CSV to stdout). Segmenter or detector: folder for masks or box "
                                               "overlays and predictions.csv (default RUN/predictions)."),
            no_progress: bool = typer.Option(False, "--no-progress", help=NO_PROGRESS_HELP)):
    """Predict with a trained run: class probabilities, masks or boxes.

    Classifier: class probabilities. Segmenter: masks in the input's geometry plus overlays. Detector: scored boxes plus overlays."""
    from meddx.evaluation.predict import predict_paths, write_predictions_file
    from meddx.planning.plan import Plan

    _warn_if_unfinished(run)
    task = Plan.load(run / "plan.yaml").task if (run / "plan.yaml").exists() else "classify"
    if task == "segment":
        from meddx.evaluation.seg_predict import predict_seg_paths

        rows = predict_seg_paths(run, target, out, progress=_progress_enabled(no_progress))
        for r in rows:
            console.print(f"{Path(r['file']).name}: mask {r['mask']}, overlay {r['overlay']}")
        return
    if task == "detect":
        from meddx.evaluation.seg_predict import predict_seg_paths

        rows = predict_seg_paths(run, target, out, progress=_progress_enabled(no_progress))
        n = sum(1 for r in rows if r["finding"])
        console.print(f"{n} detection(s) in {len({r['file'] for r in rows})} image(s): "
                      f"{Path(rows[0]['overlay']).parent / 'predictions.csv'}")
        return

    if out is not None and out.suffix.lower() not in (".csv", ".json"):  # before predicting, not after
        raise MeddxError(f"--out {out}: a classifier's predictions are written as .csv or .json, by the suffix",
                         fix=f"use --out {out.with_suffix('.csv')} or {out.with_suffix('.json')}")
    rows = predict_paths(run, target, progress=_progress_enabled(no_progress))
    write_predictions_file(rows, out)
    if out:
        console.print(f"{len(rows)} prediction(s) written to {out}")


@app.command()
def models():
    """List the models in the registry (classifiers and segmenters)."""
    from meddx.models import list_models

    for task in ("classify", "segment"):
        console.print(f"{task}: " + ", ".join(list_models(task)))


@app.command()
def ablate(path: str = typer.Argument(..., help="Dataset (classification, or segmentation with --task segment)."),
           out: Path = typer.Option(..., "--out", "-o", help="Folder for the runs and ablation.md/.json/.png "
                                    "(an interrupted ablation continues in it)."),
           time_budget: Optional[str] = typer.Option(None, "--time-budget",
                                                     help=f"Training time of every run, e.g. 60s ({DURATION_HELP}); "
                                                     "instead of --epochs."),
           epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs of every run instead of a time budget "
                                                "(an ensemble's members share them); default 20."),
           seeds: str = typer.Option("0,1,2", "--seeds", help="Comma-separated seeds."),
           components: Optional[str] = typer.Option(None, "--components",
                                                    help="Comma-separated subset of the components (default: "
                                                    "all). Classify: denoising, learned_denoising, clahe, "
                                                    "augmentation, extra_augmentation, balanced_sampling, "
                                                    "class_weights, focal_loss, logit_adjustment, synthetic_gan, "
                                                    "mixup_cutmix, attention, pca_head, ensemble, tta. Segment: "
                                                    "denoising, augmentation, extra_augmentation, dice_ce_loss, "
                                                    "attention, postprocess, tta."),
           task: str = typer.Option("classify", "--task", help="classify | segment"),
           resample_masks: bool = typer.Option(False, "--resample-masks", help=RESAMPLE_HELP),
           no_progress: bool = typer.Option(False, "--no-progress", help=NO_PROGRESS_HELP)):
    """Measure every optimisation against a plain baseline.

    Trains the baseline, the baseline + each component, the full plan - each component and the full plan, for every seed."""
    from meddx.evaluation.ablation import COMPONENTS, SEG_COMPONENTS, run_ablation

    if task not in ("classify", "segment"):
        raise MeddxError(f"ablation of task '{task}' is not available", fix="use --task classify or segment")

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise MeddxError(f"cannot read --seeds '{seeds}'", fix="give integers, e.g. --seeds 0,1,2") from None
    if not seed_list:
        raise MeddxError(f"--seeds '{seeds}' lists no seed", fix="give integers, e.g. --seeds 0,1,2")
    if not all(0 <= s <= MAX_SEED for s in seed_list):
        raise MeddxError(f"--seeds '{seeds}' holds a seed outside 0..{MAX_SEED}", fix="give seeds such as 0,1,2")
    comps = [c.strip() for c in components.split(",") if c.strip()] if components else None  # 'a,b,' is a,b
    budget = parse_duration(time_budget)
    if budget and epochs:
        raise MeddxError("give --time-budget or --epochs, not both", fix="drop one of them")
    if not budget and not epochs:
        epochs = 20
    res = run_ablation(path, out, budget_s=budget, epochs=epochs, seeds=seed_list, components=comps, task=task,
                       resample_masks=resample_masks, progress=_progress_enabled(no_progress), log=say)
    # plain text, unwrapped: the Markdown table stays one row per line (and a folder name such as
    # 'scans[2024]' is not taken for Rich markup)
    say((out / "ablation.md").read_text())
    names = SEG_COMPONENTS if task == "segment" else COMPONENTS
    say(f"components: {', '.join(names)}; plot: {out / 'ablation.png'}")
    return res


@app.command()
def demo(data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Folder holding pneumoniamnist.npz (or "
                                                    "medmnist/pneumoniamnist.npz); searched before $MEDDX_DATA_DIR, "
                                                    "the cache and a download."),
         out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run directory; an earlier run in it is replaced."),
         time_budget: str = typer.Option("100s", "--time-budget", help=f"Training time ({DURATION_HELP})."),
         no_progress: bool = typer.Option(False, "--no-progress", help=NO_PROGRESS_HELP)):
    """Train and report on PneumoniaMNIST (the `make demo` job).

    Falls back to built-in synthetic phantoms when no copy can be found or downloaded."""
    import shutil

    from meddx.errors import CorruptFileError, DataUnavailableError
    from meddx.io.medmnist import locate_medmnist
    from meddx.training.run import train_run

    try:
        source = str(locate_medmnist("pneumoniamnist", data_dir=data_dir))
    except (DataUnavailableError, CorruptFileError) as e:
        err_console.print(f"PneumoniaMNIST unavailable ({e}); running on built-in synthetic phantoms instead.",
                          markup=False, highlight=False, soft_wrap=True)
        source = "synthetic:phantoms"
    if out.exists() and (out / "plan.yaml").exists():
        shutil.rmtree(out)
    run = train_run(source, out, overrides={"train.time_budget_s": parse_duration(time_budget)},
                    progress=_progress_enabled(no_progress), log=say)
    _print_summary(run)


# -- export, compression and the edge runtime (issue 6) ------------------------------------------
@app.command()
def export(run: Path = typer.Argument(..., help="Run directory written by `meddx train` (classify or segment)."),
           out: Path = typer.Option(..., "--out", "-o", help="Bundle folder to create."),
           opset: int = typer.Option(17, "--opset", help="ONNX opset of model.onnx."),
           overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing bundle folder.")):
    """Export a run as a deployable bundle that runs without PyTorch.

    Writes model.onnx, preprocess.json, labels.json, thresholds.json, model_card.md and bundle.json (checksums)."""
    from meddx.deploy.export import export_run, read_manifest

    b = export_run(run, out, opset=opset, overwrite=overwrite)
    m = read_manifest(b)
    chk = m.get("export_check", {})
    console.print(f"bundle written to {b}: {m['model']['params']:,} weights, {m['model']['flops'] / 1e6:.2f} MFLOPs, "
                  f"{m['model']['file_bytes'] / 1024:.0f} KiB; ONNX vs torch max |dp| {chk.get('max_abs_prob_diff', 0):.1e}")


@app.command()
def compress(run: Path = typer.Argument(..., help="Run to compress (its model is the student); a segmentation run takes --int8 only."),
             out: Path = typer.Option(..., "--out", "-o", help="Bundle folder to create."),
             prune: Optional[float] = typer.Option(None, "--prune", help="Remove this fraction of every layer's "
                                                   "channels (0-1), then fine-tune."),
             prune_steps: int = typer.Option(1, "--prune-steps", help="Reach --prune in this many cuts, "
                                             "fine-tuning after each (iterative pruning)."),
             distill_from: Optional[Path] = typer.Option(None, "--distill-from", help="Teacher run: train/fine-tune "
                                                         "the student on its soft labels."),
             int8: bool = typer.Option(False, "--int8", help="Static int8 (ONNX Runtime, QDQ), calibrated on "
                                       "training images."),
             student: Optional[str] = typer.Option(None, "--student", help="Train a fresh registry model instead "
                                                   "of RUN's, e.g. small_cnn:width=0.5,first_stride=2."),
             epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs of each training phase (this or "
                                                "--time-budget is needed with --prune, --distill-from or --student)."),
             time_budget: Optional[str] = typer.Option(None, "--time-budget", help="Time of each training phase, "
                                                       f"e.g. 2m ({DURATION_HELP})."),
             lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default: the plan's; a quarter "
                                                "of it when fine-tuning, except after --prune 0.6 or more)."),
             kd_temperature: Optional[float] = typer.Option(None, "--kd-temperature", help="With --distill-from: "
                                                            "distillation temperature (default 4)."),
             kd_alpha: Optional[float] = typer.Option(None, "--kd-alpha", help="With --distill-from: weight of the "
                                                      "teacher's soft-label term, 0-1, the rest going to the true "
                                                      "labels (default 0.9)."),
             calibration_images: Optional[int] = typer.Option(None, "--calibration-images", help="With --int8: "
                                                              "training images used to calibrate activation ranges "
                                                              "(default 256; segmenters: training windows, at most "
                                                              "64)."),
             seed: Optional[int] = typer.Option(None, "--seed", min=0, max=MAX_SEED,
                                               help="Seed of the training phases and of the int8 "
                                               "calibration sample (images, or a segmenter's windows; "
                                               "default: the run's)."),
             data: Optional[str] = typer.Option(None, "--data", help="Dataset path, if it moved since training."),
             overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing bundle folder."),
             no_progress: bool = typer.Option(False, "--no-progress", help=NO_PROGRESS_HELP)):
    """Prune, distil and/or int8-quantise a run into a bundle.

    Classifiers take every step, segmenters --int8 only; the bundle also holds compression.json."""
    from meddx.deploy.compress import CompressOptions, compress_run, fmt_metric

    if prune is not None and not 0 < prune < 1:
        raise MeddxError(f"--prune must be between 0 and 1, got {prune}", fix="e.g. --prune 0.5")
    if not epochs and not time_budget and (prune or distill_from or student):
        raise MeddxError("training needs a length", fix="give --epochs N or --time-budget 2m")
    opts = CompressOptions(prune=prune, distill_from=str(distill_from) if distill_from else None, int8=int8,
                           student=student, epochs=epochs, time_budget_s=parse_duration(time_budget), lr=lr,
                           kd_temperature=kd_temperature, kd_alpha=kd_alpha, calibration_images=calibration_images,
                           seed=seed, data=data, prune_steps=prune_steps)
    b = compress_run(run, out, opts, overwrite=overwrite, progress=_progress_enabled(no_progress), log=say)
    s = json.loads((b / "compression.json").read_text())
    r, src = s["result"], s.get("source")
    if src is None:  # segmentation: int8 only
        console.print("test Dice " + ", ".join(f"{k}: {fmt_metric(r[f'{k}_test_dice'])}" for k in ("fp32", "int8")))
        return
    console.print(f"parameters {src['params']:,} -> {r['params']:,}; FLOPs {src['flops'] / 1e6:.2f} M -> "
                  f"{r['flops'] / 1e6:.2f} M; validation AUC {fmt_metric(r['val_auc'])}; test AUC "
                  f"{fmt_metric(r['test_auc'])}")


@app.command()
def bench(target: Path = typer.Argument(..., help="Run directory (torch fp32 eager) or bundle (ONNX Runtime)."),
          threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Threads (default: the library's choice)."),
          seconds: float = typer.Option(2.0, "--seconds", min=0.01, help="Seconds of timing for the batch-1 "
                                                                  "latency (half that for each batch size's throughput)."),
          json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the results as JSON.")):
    """Measure a run's or bundle's speed and size on this machine.

    Latency (batch 1, p50/p99), throughput (best batch), parameters, FLOPs and file size."""
    from meddx.deploy.bench import bench_path

    if (target / "plan.yaml").exists():
        _warn_if_unfinished(target)  # its speed is the finished model's, but not its threshold or calibration
    r = bench_path(target, threads=threads, seconds=seconds, progress=True)
    t = Table(title=f"{target} ({r['kind']})", show_header=False)
    t.add_row("latency, batch 1", f"p50 {r['latency_ms_p50']:.3f} ms, p99 {r['latency_ms_p99']:.3f} ms "
              f"({r['latency_calls']} calls)")
    t.add_row("throughput", f"{r['throughput']:.1f} inputs/s at batch {r['best_batch']} ("
              + ", ".join(f"{b}: {v:.0f}" for b, v in r["throughput_by_batch"].items()) + ")")
    t.add_row("parameters", f"{r['params']:,}")
    t.add_row("FLOPs per input", f"{r['flops'] / 1e6:.2f} M")
    t.add_row("file size", f"{r['file_bytes'] / 1024:.1f} KiB")
    peak = r["cpu_peak"]
    t.add_row("achieved", f"{r['gflops_achieved']:.2f} GFLOP/s"
              + (f" = {r['fraction_of_peak']:.1%} of {peak['peak_gflops']} GFLOP/s peak ({peak['formula']})"
                 if r.get("fraction_of_peak") is not None else ""))
    console.print(t)
    if json_out:
        from meddx.training.run import write_json

        write_json(Path(json_out), r)


# -- explanations and serving (issue 5) -------------------------------------------------
@app.command()
def explain(run: Path = typer.Argument(..., help="Run directory written by `meddx train` (classifier or segmenter)."),
            target: Path = typer.Argument(..., help="An image, DICOM file or series folder, NIfTI, or a folder."),
            out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for the overlays (default "
                                               "RUN/explanations)."),
            method: str = typer.Option("gradcam", "--method", "-m", help="Classifiers: gradcam | gradcampp | "
                                       "occlusion; segmenters (class-region): gradcam | gradcampp; or a "
                                       "comma-separated list, or all."),
            class_name: Optional[str] = typer.Option(None, "--class", help="Class to explain (default: the "
                                                     "predicted class; segmenters: the largest predicted region)."),
            no_progress: bool = typer.Option(False, "--no-progress", help=NO_PROGRESS_HELP)):
    """Write heatmaps of where the model looked.

    One overlay PNG per input and method; volumes also get a NIfTI heatmap in the input's geometry."""
    from meddx.explain.run_explain import explain_paths

    _warn_if_unfinished(run)
    rows = explain_paths(run, target, out, method=method, class_name=class_name,
                         progress=_progress_enabled(no_progress))
    for r in rows:
        extra = f", heatmap {r['heatmap_nifti']}" if r["heatmap_nifti"] else ""
        console.print(f"{Path(r['file']).name}: {r['method']} for '{r['class']}' -> {r['overlay']}{extra}",
                      markup=False, highlight=False)


@app.command()
def serve(run: Path = typer.Argument(..., help="Run directory to serve (classifier or segmenter)."),
          host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
          port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
          api_key: Optional[str] = typer.Option(None, "--api-key", help="Key clients must send in X-API-Key "
                                                "(default: $MEDDX_API_KEY; one of them is required)."),
          max_upload_mb: float = typer.Option(64.0, "--max-upload-mb", min=0.01, help="Uploads over this many MiB get HTTP 413."),
          max_megapixels: float = typer.Option(64.0, "--max-megapixels", min=0.01,
                                               help="Images decoding to more than this many 2^20 pixels (x channels) get HTTP 413."),
          explain_method: str = typer.Option("gradcam", "--explain-method",
                                             help="Heatmap method when a request names none: "
                                             "gradcam | gradcampp | occlusion (segmenters: gradcam | gradcampp).")):
    """Serve a run over HTTP: the diagnosis API and the web viewer.

    The API is under /v1 (OpenAPI at /openapi.json), the viewer at /."""
    from meddx.deploy.server import serve as run_server

    run_server(run, host=host, port=port, api_key=api_key, max_upload_bytes=int(max_upload_mb * 2**20),
               max_pixels=int(max_megapixels * 2**20), explain_method=explain_method,
               banner=f"meddx serving {run} on http://{host}:{port}/ (API under /v1; Ctrl-C stops)")


def main() -> None:
    try:
        rv = app(standalone_mode=False)
        # typer (0.29 here) turns Ctrl-C into Exit(130) and, outside standalone mode, returns that code instead of
        # raising: without this a stopped train or ablate exited 0, silently, as if it had finished
        if isinstance(rv, int) and not isinstance(rv, bool) and rv != 0:
            raise KeyboardInterrupt if rv == 130 else SystemExit(rv)
    except MeddxError as e:
        err_console.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except OSError as e:  # a path the user gave: a missing folder, no permission, a file where a folder goes
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        err_console.print(f"error:{where}: {e.strerror or e}. Fix: check that the path exists and is writable.",
                          markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted", markup=False, highlight=False)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors arrive here in standalone_mode=False
        import click

        # typer may bring its own copy of click (typer._click): match either by what they do
        if isinstance(e, click.exceptions.ClickException) or (hasattr(e, "show") and hasattr(e, "format_message")):
            if str(e.format_message()).strip():  # empty: a bare `meddx`, whose help is already printed
                err_console.print(usage_error_line(e), markup=False, highlight=False, soft_wrap=True)
            sys.exit(2)
        raise


def usage_error_line(e) -> str:
    """A command-line mistake (unknown option, missing or invalid value) as the one-line error every other
    mistake gets, with where to look instead of click's three-line usage block."""
    ctx = getattr(e, "ctx", None)
    cmd = ctx.command_path if ctx is not None and getattr(ctx, "command_path", None) else "meddx"
    msg = " ".join(str(e.format_message()).split()).rstrip(".")
    return f"error: {msg}. Fix: see `{cmd} --help`."


if __name__ == "__main__":
    main()
