#!/usr/bin/env python
"""3D resize benchmark: what filtering a shrinking volume (R3, ``data.antialias_3d``) is worth.

Writes benchmarks/results/antialias.md and .json. AdrenalMNIST3D at 64^3 is the one real 3D set
here that the CPU plan shrinks (to 32^3, R3's cap). Each seed trains the default plan twice with the
MedMNIST benchmark's budget (``benchmarks/medmnist.py``, 200 s), the official split and the same
seed: ``filtered`` (the default: the triangle filter widened by the scale, as 2D's antialiased
resize) and ``sampled`` (``--set data.antialias_3d=false``: trilinear, what meddx did before).
Reported: test AUC and ACC (argmax / 0.5) per run with their bootstrap 95 % CIs, mean +- sd per arm,
and the per-seed difference. Nothing here is chosen from these numbers: the filter is the default
because sampling is wrong, not because it scored higher.

Usage: python benchmarks/antialias.py [--seeds 0 1 2] [--dataset adrenalmnist3d_64]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import HERE, git_commit, machine_line
from medmnist import BUDGET, machine_info, run_one

ARMS = {"filtered": (), "sampled": ("--set", "data.antialias_3d=false")}


def _ms(vals) -> str:
    return f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1):.3f}" if len(vals) > 1 else f"{vals[0]:.3f}"


def write(rows: list[dict], cmd: str, flag: str) -> None:
    res = HERE / "results"
    res.mkdir(exist_ok=True)
    info = machine_info()
    (res / "antialias.json").write_text(json.dumps({"command": cmd, **info, "runs": rows}, indent=1) + "\n")
    seeds = sorted({r["seed"] for r in rows})
    by = {(r["arm"], r["seed"]): r for r in rows}
    lines = ["# Shrinking 3D volumes: filtered or sampled (R3, `data.antialias_3d`)", "",
             f"Command: `{cmd}` (from the repo root, `.venv` active; data from `MEDDX_DATA_DIR`).", "",
             f"{machine_line(info)} Commit {rows[0]['commit']}, {rows[0]['date']}.", "",
             f"{flag}: the default plan of `meddx train --time-budget {BUDGET[flag]}s`, official split, each volume "
             "64³ brought to the CPU plan's 32³. `filtered` is the default (triangle filter widened by the scale on "
             "each axis); `sampled` adds `--set data.antialias_3d=false` (trilinear, as before). Test metrics at "
             "argmax / 0.5; model chosen on validation AUC.", "",
             "| arm | test AUC (mean ± sd) | test ACC (mean ± sd) | epochs (mean) |", "|---|---|---|---|"]
    for arm in ARMS:
        rs = [by[(arm, s)] for s in seeds if (arm, s) in by]
        if rs:
            lines.append(f"| {arm} | {_ms([r['auc'] for r in rs])} | {_ms([r['acc'] for r in rs])} | "
                         f"{np.mean([r['epochs'] for r in rs]):.0f} |")
    lines += ["", "| seed | arm | test AUC [95% CI] | test ACC [95% CI] | epochs (best) | train s |", "|---|---|---|---|---|---|"]
    for s in seeds:
        for arm in ARMS:
            r = by.get((arm, s))
            if r:
                lines.append(f"| {s} | {arm} | {r['auc']:.3f} [{r['auc_ci'][0]:.3f}, {r['auc_ci'][1]:.3f}] | "
                             f"{r['acc']:.3f} [{r['acc_ci'][0]:.3f}, {r['acc_ci'][1]:.3f}] | {r['epochs']} "
                             f"({r['best_epoch']}) | {r['train_s']:.0f} |")
    pairs = [(by[("filtered", s)], by[("sampled", s)]) for s in seeds if ("filtered", s) in by and ("sampled", s) in by]
    if pairs:
        d_auc = [f["auc"] - p["auc"] for f, p in pairs]
        d_acc = [f["acc"] - p["acc"] for f, p in pairs]
        lines += ["", f"Filtered minus sampled, per seed: AUC {', '.join(f'{d:+.3f}' for d in d_auc)} "
                      f"(mean {np.mean(d_auc):+.3f}); ACC {', '.join(f'{d:+.3f}' for d in d_acc)} "
                      f"(mean {np.mean(d_acc):+.3f})."]
    (res / "antialias.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--dataset", default="adrenalmnist3d_64")
    args = ap.parse_args()
    cmd = "python benchmarks/antialias.py " + " ".join(sys.argv[1:])
    commit, rows = git_commit(), []
    with tempfile.TemporaryDirectory(prefix="meddx-aa-") as td:
        for seed in args.seeds:
            for arm, extra in ARMS.items():
                r = run_one(args.dataset, seed, Path(td), extra, tag=f"_{arm}")
                r.update(arm=arm, commit=commit, date=time.strftime("%Y-%m-%d"))
                print(json.dumps(r), flush=True)
                rows.append(r)
                write(rows, cmd, args.dataset)


if __name__ == "__main__":
    main()
