#!/usr/bin/env python
"""Choose between plan variants on VALIDATION data only, and record the evidence.

Each variant (a name and ``--set`` overrides) is trained with the same time budget and seeds;
the table shows each run's validation AUC and accuracy (the model's final weights on the
dataset's validation split) and nothing from the test split. Used to justify default-plan
choices (planner rules marked "empirical") without tuning on test.

Usage:
  python benchmarks/choose_on_val.py DATASET.npz --name NAME --budget 150 --seeds 0 1 2 \\
      --variant single: --variant seeds5:ensemble.kind=seeds,ensemble.members=5

With ``--folds K`` (MedMNIST .npz files) the choice is made by cross-validation of the TRAINING
split instead: fold i of it is held out, the rest trains, the official validation split selects the
checkpoint as usual, and the held-out fold is scored; the K held-out folds together score every
training case once (BreastMNIST: 546 cases instead of 78). The test arrays are never written to the
fold files. The table gives pooled out-of-fold ACC and AUC per variant, and a paired bootstrap
p-value against the first variant.

  python benchmarks/choose_on_val.py DATASET.npz --name NAME --folds 5 --epochs 60 --seeds 0 \
      --variant default: --variant resnet18:model.name=resnet18

Writes benchmarks/results/choices/NAME.md and .json.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import HERE, git_commit, run_meddx

COMMIT = git_commit()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("--name", required=True)
    grp = ap.add_mutually_exclusive_group(required=True)
    grp.add_argument("--budget", type=float, help="training seconds per run (depends on how busy the CPU is)")
    grp.add_argument("--epochs", type=int, help="epochs per run (the same work however busy the CPU is)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variant", action="append", required=True,
                    help="NAME:key=value,key=value (empty after ':' = the default plan)")
    ap.add_argument("--task", default="classify")
    ap.add_argument("--folds", type=int, default=0,
                    help="K >= 2: score by K-fold cross-validation of the training split (MedMNIST .npz)")
    args = ap.parse_args()
    if args.folds:
        return main_folds(args)
    out_md = HERE / "results" / "choices" / f"{args.name}.md"
    out_md.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.variant:
            vname, sets, set_args = parse_variant(spec)
            for seed in args.seeds:
                out = Path(tmp) / f"{vname}_s{seed}"
                wall, rss = run_meddx(["train", args.dataset, "--out", str(out), "--seed", str(seed), "--task", args.task,
                                       *amount_args(args), "--no-progress", *set_args], f"{vname} seed {seed}")
                m = json.loads((out / "metrics.json").read_text())
                v = {k: (x["value"] if isinstance(x, dict) else x) for k, x in (m.get("validation") or {}).items()}
                rows.append({"variant": vname, "sets": sets, "seed": seed, "val_auc": v.get("auc"),
                             "val_accuracy": v.get("accuracy"), "val_dice": v.get("dice"),
                             "train_s": m.get("training", {}).get("train_seconds"), "wall_s": wall})
                print(f"{vname} seed {seed}: val AUC {v.get('auc')}, val ACC {v.get('accuracy')}", flush=True)
                write(args, rows, out_md)


def parse_variant(spec: str) -> tuple[str, str, list[str]]:
    """``NAME:k=v,k=v`` -> (name, the overrides as given, the ``--set`` arguments).

    A comma starts a new override only where ``key=`` follows it, so list values such as
    ``data.input_size=[56,56]`` stay whole.
    """
    vname, _, sets = spec.partition(":")
    return vname, sets, [a for kv in re.split(r",(?=[\w.]+=)", sets) if kv for a in ("--set", kv)]


def amount_args(args) -> list[str]:
    return ["--time-budget", f"{args.budget}s"] if args.budget else ["--epochs", str(args.epochs)]


def command_line(args) -> str:
    amount = f"--budget {args.budget:g}" if args.budget else f"--epochs {args.epochs}"
    folds = f" --folds {args.folds}" if args.folds else ""
    return (f"python benchmarks/choose_on_val.py {args.dataset} --name {args.name}{folds} {amount} "
            f"--seeds {' '.join(map(str, args.seeds))} " + " ".join(f"--variant '{v}'" for v in args.variant))


def mean_sd(values) -> str:
    v = np.asarray(values, float)
    return f"{v.mean():.3f}" + (f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else "")


def save(args, lines: list[str], rows: list[dict], out_md: Path) -> None:
    out_md.write_text("\n".join(lines) + "\n")
    out_md.with_suffix(".json").write_text(json.dumps({"command_args": vars(args), "commit": COMMIT, "rows": rows},
                                                      indent=2))


def fold_files(npz: Path, k: int, tmp: Path) -> tuple[list[Path], list[np.ndarray], np.ndarray]:
    """K copies of a MedMNIST file (same name, so class names resolve) in which training fold i is
    the test split; the real test split is left out. Returns the files, each fold's held-out
    training indices, and the training labels."""
    from meddx.training.ensemble import kfold_splits

    d = np.load(npz)
    y = d["train_labels"].reshape(len(d["train_labels"]), -1)[:, 0].astype(int)
    files, held = [], []
    for i, (fit, out) in enumerate(kfold_splits(y, k, 0)):
        f = tmp / f"fold{i}" / npz.name
        f.parent.mkdir(parents=True)
        np.savez(f, train_images=d["train_images"][fit], train_labels=d["train_labels"][fit],
                 val_images=d["val_images"], val_labels=d["val_labels"],
                 test_images=d["train_images"][out], test_labels=d["train_labels"][out])
        files.append(f)
        held.append(out)
    return files, held, y


def main_folds(args) -> None:
    """Cross-validation of the training split (see the module docstring)."""
    import csv

    from meddx.evaluation.ablation import _scores
    from meddx.evaluation.metrics import paired_bootstrap_pvalue

    out_md = HERE / "results" / "choices" / f"{args.name}.md"
    out_md.parent.mkdir(parents=True, exist_ok=True)
    rows, oof = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        files, held, y = fold_files(Path(args.dataset), args.folds, Path(tmp))
        for spec in args.variant:
            vname, sets, set_args = parse_variant(spec)
            for seed in args.seeds:
                proba, wall_s = None, 0.0
                for i, f in enumerate(files):
                    out = Path(tmp) / f"{vname}_s{seed}_f{i}"
                    wall, _ = run_meddx(["train", str(f), "--out", str(out), "--seed", str(seed), "--task", args.task,
                                         *amount_args(args), "--no-progress", *set_args], f"{vname} seed {seed} fold {i}")
                    wall_s += wall
                    with open(out / "predictions.csv", newline="") as fh:
                        test = [r for r in csv.DictReader(fh) if r["split"] == "test"]
                    pcols = [c for c in test[0] if c.startswith("p_")]
                    p = np.array([[float(r[c]) for c in pcols] for r in test])
                    proba = np.zeros((len(y), p.shape[1])) if proba is None else proba
                    proba[held[i][[int(r["case_id"].split("/")[1]) for r in test]]] = p
                oof[(vname, seed)] = proba
                sc = _scores(y, proba)
                rows.append({"variant": vname, "sets": sets, "seed": seed, "cv_accuracy": sc["accuracy"],
                             "cv_auc": sc["auc"], "cv_balanced_accuracy": sc["balanced_accuracy"], "wall_s": wall_s})
                print(f"{vname} seed {seed}: {args.folds}-fold CV ACC {sc['accuracy']:.4f}, AUC {sc['auc']:.4f}", flush=True)
                write_folds(args, rows, oof, y, out_md, paired_bootstrap_pvalue)


def write_folds(args, rows: list[dict], oof: dict, y: np.ndarray, out_md: Path, pvalue) -> None:
    """The cross-validation table so far, with paired p-values against the first variant."""
    amount = f"--budget {args.budget:g}" if args.budget else f"--epochs {args.epochs}"
    names = list(dict.fromkeys(r["variant"] for r in rows))
    lines = [f"# Choice by {args.folds}-fold cross-validation of the training split: {args.name}", "",
             f"Command: `{command_line(args)}`",
             f"Date {time.strftime('%Y-%m-%d')}, commit {COMMIT}. {amount.lstrip('-')} per fold run. Each training fold "
             f"is held out in turn ({len(y)} training cases scored once each); the official validation split picks "
             "each run's checkpoint; the test split is not read. Runs finished so far: "
             f"{len(rows)} of {len(args.variant) * len(args.seeds)} (x {args.folds} folds).", "",
             f"p: paired bootstrap over the {len(y)} cases against `{names[0]}` (seeds paired by seed).", "",
             "| variant | overrides | CV ACC (mean ± sd over seeds) | CV AUC | CV balanced ACC | p (ACC) | p (AUC) | per seed (ACC / AUC) |",
             "|---|---|---|---|---|---|---|---|"]
    for vname in names:
        rs = [r for r in rows if r["variant"] == vname]
        common = [r["seed"] for r in rs if (names[0], r["seed"]) in oof]
        if vname != names[0] and common:
            a, b = [oof[(vname, s)] for s in common], [oof[(names[0], s)] for s in common]
            pa, pu = (f"{pvalue(y, a, b, metric=m):.3f}" for m in ("accuracy", "auc"))
        else:
            pa = pu = ""
        per = "; ".join(f"{r['cv_accuracy']:.3f} / {r['cv_auc']:.3f}" for r in rs)
        lines.append(f"| {vname} | {rs[0]['sets'] or '(default plan)'} | {mean_sd([r['cv_accuracy'] for r in rs])} "
                     f"| {mean_sd([r['cv_auc'] for r in rs])} | {mean_sd([r['cv_balanced_accuracy'] for r in rs])} "
                     f"| {pa} | {pu} | {per} |")
    save(args, lines, rows, out_md)


def write(args, rows: list[dict], out_md: Path) -> None:
    """The table so far (written after every run, so an interrupted comparison keeps its evidence)."""
    amount = f"--budget {args.budget:g}" if args.budget else f"--epochs {args.epochs}"
    lines = [f"# Validation-only choice: {args.name}", "",
             f"Command: `{command_line(args)}`",
             f"Date {time.strftime('%Y-%m-%d')}, commit {COMMIT}. {amount.lstrip('-')} per run. Only validation "
             "numbers are shown; the test split played no part. Runs finished so far: "
             f"{len(rows)} of {len(args.variant) * len(args.seeds)}.", "",
             "| variant | overrides | val AUC (mean ± sd) | val ACC (mean ± sd) | per seed (AUC / ACC) |", "|---|---|---|---|---|"]
    for vname in dict.fromkeys(r["variant"] for r in rows):
        rs = [r for r in rows if r["variant"] == vname]
        per = "; ".join(f"{r['val_auc']:.3f} / {r['val_accuracy']:.3f}" for r in rs)
        lines.append(f"| {vname} | {rs[0]['sets'] or '(default plan)'} | {mean_sd([r['val_auc'] for r in rs])} "
                     f"| {mean_sd([r['val_accuracy'] for r in rs])} | {per} |")
    save(args, lines, rows, out_md)


if __name__ == "__main__":
    main()
