#!/usr/bin/env python
"""Budget exploration for the NIH detection benchmark, on training images only.

The benchmark's fold-0 test images are left out entirely; fold 0's training images are split
again (patient-grouped, 80/20) and the detector is scored on that inner 20 %. Whatever this
shows (how long the detectors need to find anything) can set the benchmark's budget without
looking at any image the benchmark reports on.

Usage: python benchmarks/detection_explore.py --method components --budget 300 [--size 128]
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

import numpy as np

from _common import run_meddx
from detection import nih_folds, nih_rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="components", choices=["components", "heatmap"])
    ap.add_argument("--budget", type=float, default=300)
    ap.add_argument("--size", type=int, default=None, help="input size (default: the plan's)")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    fold_of = nih_folds()
    rows = [r for r in nih_rows(fold_of, 0) if r[7] == "train"]  # fold 0's test images never appear
    pids = sorted({r[8] for r in rows})
    rng = np.random.default_rng(123)
    inner = set(rng.choice(pids, size=len(pids) // 5, replace=False).tolist())
    for r in rows:
        r[7] = "test" if r[8] in inner else "train"
    with tempfile.TemporaryDirectory() as td:
        man = Path(td) / "inner.csv"
        with open(man, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "x", "y", "w", "h", "label", "scale", "split", "patient_id"])
            w.writerows(rows)
        out = Path(td) / "run"
        extra = (["--image-size", str(args.size)] if args.size else []) + [a for s in args.set for a in ("--set", s)]
        wall, rss = run_meddx(["train", str(man), "--task", "detect", "--detector", args.method, "--out", str(out),
                               "--time-budget", f"{args.budget:.0f}s", "--no-progress", *extra], "explore")
        m = json.loads((out / "metrics.json").read_text())
        det = m["detection"]
        print(json.dumps({"method": args.method, "budget": args.budget, "size": args.size, "sets": args.set,
                          "epochs": m["training"]["epochs_run"], "ap_mean": det["ap_mean"],
                          "froc": det["froc_pooled"]["mean"],
                          "per_class_ap": {k: round(v["ap"], 3) for k, v in det["per_class"].items()}}))


if __name__ == "__main__":
    main()
