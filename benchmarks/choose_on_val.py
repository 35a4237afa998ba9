#!/usr/bin/env python
"""Choose between plan variants on VALIDATION data only, and record the evidence.

Each variant (a name and ``--set`` overrides) is trained with the same time budget and seeds;
the table shows each run's validation AUC and accuracy (the model's final weights on the
dataset's validation split) and nothing from the test split. Used to justify default-plan
choices (planner rules marked "empirical") without tuning on test.

Usage:
  python benchmarks/choose_on_val.py DATASET.npz --name NAME --budget 150 --seeds 0 1 2 \\
      --variant single: --variant seeds5:ensemble.kind=seeds,ensemble.members=5

Writes benchmarks/results/choices/NAME.md and .json.
"""

from __future__ import annotations

import argparse
import json
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
    args = ap.parse_args()
    out_md = HERE / "results" / "choices" / f"{args.name}.md"
    out_md.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.variant:
            vname, _, sets = spec.partition(":")
            set_args = [a for kv in sets.split(",") if kv for a in ("--set", kv)]
            for seed in args.seeds:
                out = Path(tmp) / f"{vname}_s{seed}"
                amount = ["--time-budget", f"{args.budget}s"] if args.budget else ["--epochs", str(args.epochs)]
                wall, rss = run_meddx(["train", args.dataset, "--out", str(out), "--seed", str(seed), "--task", args.task,
                                       *amount, "--no-progress", *set_args], f"{vname} seed {seed}")
                m = json.loads((out / "metrics.json").read_text())
                v = {k: (x["value"] if isinstance(x, dict) else x) for k, x in (m.get("validation") or {}).items()}
                rows.append({"variant": vname, "sets": sets, "seed": seed, "val_auc": v.get("auc"),
                             "val_accuracy": v.get("accuracy"), "val_dice": v.get("dice"),
                             "train_s": m.get("training", {}).get("train_seconds"), "wall_s": wall})
                print(f"{vname} seed {seed}: val AUC {v.get('auc')}, val ACC {v.get('accuracy')}", flush=True)
                write(args, rows, out_md)


def write(args, rows: list[dict], out_md: Path) -> None:
    """The table so far (written after every run, so an interrupted comparison keeps its evidence)."""
    amount = f"--budget {args.budget:g}" if args.budget else f"--epochs {args.epochs}"
    lines = [f"# Validation-only choice: {args.name}", "",
             f"Command: `python benchmarks/choose_on_val.py {args.dataset} --name {args.name} {amount} "
             f"--seeds {' '.join(map(str, args.seeds))} " + " ".join(f"--variant '{v}'" for v in args.variant) + "`",
             f"Date {time.strftime('%Y-%m-%d')}, commit {COMMIT}. {amount.lstrip('-')} per run. Only validation "
             "numbers are shown; the test split played no part. Runs finished so far: "
             f"{len(rows)} of {len(args.variant) * len(args.seeds)}.", "",
             "| variant | overrides | val AUC (mean ± sd) | val ACC (mean ± sd) | per seed (AUC / ACC) |", "|---|---|---|---|---|"]
    for vname in dict.fromkeys(r["variant"] for r in rows):
        rs = [r for r in rows if r["variant"] == vname]
        auc = np.array([r["val_auc"] for r in rs], float)
        acc = np.array([r["val_accuracy"] for r in rs], float)
        per = "; ".join(f"{r['val_auc']:.3f} / {r['val_accuracy']:.3f}" for r in rs)
        lines.append(f"| {vname} | {rs[0]['sets'] or '(default plan)'} | {auc.mean():.3f} ± {auc.std(ddof=1) if len(auc) > 1 else 0:.3f} "
                     f"| {acc.mean():.3f} ± {acc.std(ddof=1) if len(acc) > 1 else 0:.3f} | {per} |")
    out_md.write_text("\n".join(lines) + "\n")
    out_md.with_suffix(".json").write_text(json.dumps({"command_args": vars(args), "commit": COMMIT, "rows": rows},
                                                      indent=2))


if __name__ == "__main__":
    main()
