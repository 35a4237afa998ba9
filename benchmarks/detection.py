#!/usr/bin/env python
"""Detection benchmark: boxes from a segmenter's components against the centre-heatmap detector.

Writes benchmarks/results/detection.md and .json (datasets run one at a time are merged
into the previous file, each block with its own command, date and commit).

* nih: NIH ChestX-ray14, 984 expert boxes of 8 findings on 880 images; the boxes (1024 px)
  are scaled by 0.25 onto the 256 px thumbnails. 5-fold cross-validation by image, with
  every image of one patient in the same fold (stricter than by image alone), stratified
  by the first finding; AP at IoU 0.5 and FROC per finding, each test image scored once.
* busi: BUSI subset (90 images, 60 with lesions), boxes = the lesion masks' connected
  components; the same 5 class-stratified folds as benchmarks/segmentation.py.

Both methods train with ``meddx train --task detect`` (``--detector components`` or
``--detector heatmap``) for the same time budget per fold.

Usage: python benchmarks/detection.py [--datasets nih busi] [--budget-scale 1.0]
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from _common import DATA, HERE, earlier_lines, git_commit, inference_fields, keep_earlier, run_meddx
BUDGET = {"nih": 120, "busi": 120}
METHODS = ("components", "heatmap")
FOLDS = 5


def train(manifest: Path, out: Path, method: str, budget: float) -> dict:
    wall, rss = run_meddx(["train", str(manifest), "--task", "detect", "--detector", method, "--out", str(out),
                           "--time-budget", f"{budget:.0f}s", "--no-progress"], out.name)
    m = json.loads((out / "metrics.json").read_text())
    return {"detection": m["detection"], "train_s": m["training"]["train_seconds"],
            "epochs": m["training"]["epochs_run"], "wall_s": wall, "peak_rss_mib": rss, **inference_fields(m)}


def nih_rows(fold_of_patient: dict, k: int) -> list[list]:
    root = DATA / "det" / "nih_chestxray14_bbox"
    rows = []
    with open(root / "BBox_List_2017.csv", newline="") as f:
        r = csv.reader(f)
        next(r)
        for cells in r:
            name, lab, x, y, w, h = cells[:6]
            pid = name.split("_")[0]
            rows.append([root / "thumbnails" / name, x, y, w, h, lab, 0.25,
                         "test" if fold_of_patient[pid] == k else "train", pid])
    return rows


def nih_folds() -> dict:
    root = DATA / "det" / "nih_chestxray14_bbox"
    first: dict[str, str] = {}
    with open(root / "BBox_List_2017.csv", newline="") as f:
        r = csv.reader(f)
        next(r)
        for cells in r:
            first.setdefault(cells[0].split("_")[0], cells[1])
    rng = np.random.default_rng(0)
    fold = {}
    for lab in sorted(set(first.values())):
        pids = sorted(p for p, v in first.items() if v == lab)
        for j, p in enumerate(rng.permutation(pids)):
            fold[str(p)] = j % FOLDS
    return fold


def busi_rows(k: int) -> list[list]:
    from scipy import ndimage

    from meddx.io import read_image

    root = DATA / "seg" / "busi_subset"
    items = []
    for cls in ("benign", "malignant", "normal"):
        for img in sorted((root / cls).glob("*.png")):
            if "_mask" not in img.stem:
                items.append((cls, img))
    rng = np.random.default_rng(0)  # the same folds as benchmarks/segmentation.py
    fold_of = {}
    for cls in ("benign", "malignant", "normal"):
        idx = [i for i, it in enumerate(items) if it[0] == cls]
        for j, i in enumerate(rng.permutation(idx)):
            fold_of[int(i)] = j % FOLDS
    rows = []
    for i, (cls, img) in enumerate(items):
        masks = [img.with_name(img.stem + "_mask.png")]
        extra = img.with_name(img.stem + "_mask_1.png")
        if extra.exists() and img.name != "benign (4).png":  # that extra mask belongs to another image
            masks.append(extra)
        m = np.max([read_image(q).array[:3].max(0) for q in masks], axis=0) > 0
        comp, n = ndimage.label(m)
        split = "test" if fold_of[i] == k else "train"
        if n == 0:
            rows.append([img, "", "", "", "", "", 1.0, split, ""])
        for sl in ndimage.find_objects(comp):
            rows.append([img, sl[1].start, sl[0].start, sl[1].stop - sl[1].start, sl[0].stop - sl[0].start,
                         "lesion", 1.0, split, ""])
    return rows


def pooled(results: list[dict]) -> dict:
    """Mean and sd over folds of AP per finding and of the pooled FROC."""
    names = list(results[0]["detection"]["per_class"])
    out = {}
    for n in names:
        aps = [r["detection"]["per_class"][n]["ap"] for r in results]
        fr = [r["detection"]["per_class"][n]["froc"]["mean"] for r in results]
        out[n] = {"ap": float(np.nanmean(aps)), "ap_sd": float(np.nanstd(aps, ddof=1)),
                  "froc": float(np.nanmean(fr)), "froc_sd": float(np.nanstd(fr, ddof=1))}
    sens = {}
    for r_ in results[0]["detection"]["froc_pooled"]["sensitivity"]:
        sens[r_] = float(np.mean([r["detection"]["froc_pooled"]["sensitivity"][r_] for r in results]))
    out["all findings"] = {"ap": float(np.nanmean([r["detection"]["ap_mean"] for r in results])),
                           "ap_sd": float(np.nanstd([r["detection"]["ap_mean"] for r in results], ddof=1)),
                           "froc": float(np.mean(list(sens.values()))), "froc_sd": float(np.std(
                               [r["detection"]["froc_pooled"]["mean"] for r in results], ddof=1)),
                           "sensitivity": sens}
    return out


def run_dataset(name: str, td: Path, scale: float) -> dict:
    fold_of = nih_folds() if name == "nih" else None
    res: dict[str, list] = {m: [] for m in METHODS}
    for k in range(FOLDS):
        rows = nih_rows(fold_of, k) if name == "nih" else busi_rows(k)
        man = td / f"{name}_{k}.csv"
        with open(man, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "x", "y", "w", "h", "label", "scale", "split", "patient_id"])
            w.writerows(rows)
        for m in METHODS:
            r = train(man, td / f"{name}_{m}_{k}", m, BUDGET[name] * scale)
            res[m].append(r)
            print(json.dumps({"dataset": name, "fold": k, "method": m, "ap_mean": r["detection"]["ap_mean"],
                              "froc": r["detection"]["froc_pooled"]["mean"], "train_s": r["train_s"]}), flush=True)
    summary = {m: pooled(res[m]) for m in METHODS}
    runs = {m: [dict(r) for r in res[m]] for m in METHODS}
    lines, win = render_lines(summary, runs)
    return {"lines": lines, "summary": summary, "winner": win, "runs": runs}


def render_lines(summary: dict, runs: dict) -> tuple[list[str], str]:
    """The markdown block of one dataset, from its pooled summary and runs."""
    finds = [n for n in summary["components"] if n != "all findings"]
    lines = ["| finding | components AP@0.5 | heatmap AP@0.5 | components FROC | heatmap FROC |", "|---|---|---|---|---|"]
    for n in [*finds, "all findings"]:
        c, h = summary["components"][n], summary["heatmap"][n]
        lines.append(f"| {n} | {c['ap']:.3f} ± {c['ap_sd']:.3f} | {h['ap']:.3f} ± {h['ap_sd']:.3f} | "
                     f"{c['froc']:.3f} ± {c['froc_sd']:.3f} | {h['froc']:.3f} ± {h['froc_sd']:.3f} |")
    rates = list(summary["components"]["all findings"]["sensitivity"])
    lines += ["", "FROC, all findings pooled (mean over folds): sensitivity at each false-positive rate per image", "",
              "| method | " + " | ".join(f"{r} FP" for r in rates) + " |", "|---|" + "---|" * len(rates)]
    for m in METHODS:
        s = summary[m]["all findings"]["sensitivity"]
        lines.append(f"| {m} | " + " | ".join(f"{s[r]:.3f}" for r in rates) + " |")
    fr = {m: summary[m]["all findings"]["froc"] for m in METHODS}
    win = max(METHODS, key=lambda m: fr[m])
    if abs(fr["components"] - fr["heatmap"]) < 0.01:
        win = "neither"
    verdict = ("Neither method wins: their mean FROC differs by less than 0.01." if win == "neither"
               else f"Higher mean FROC: **{win}**.")
    lines += ["", f"Mean ± sd over {FOLDS} folds. {verdict} Training "
              f"{np.mean([r['train_s'] for m in METHODS for r in runs[m]]):.0f} s per fold and method."]
    if all("infer_s_per_case" in r for m in METHODS for r in runs[m]):
        lines += ["", "| method | inference ms per image (mean; slowest) | peak RSS MiB (whole `meddx train`) |",
                  "|---|---|---|"]
        for m in METHODS:
            lines.append(f"| {m} | {1000 * np.mean([r['infer_s_per_case'] for r in runs[m]]):.0f}; "
                         f"{1000 * max(r['infer_s_max'] for r in runs[m]):.0f} | "
                         f"{max(r['peak_rss_mib'] for r in runs[m]):.0f} |")
    return lines, win


TITLES = {"nih": "NIH ChestX-ray14 boxes (8 findings, 256 px thumbnails)",
          "busi": "BUSI lesions (boxes from the lesion masks)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["nih", "busi"], choices=["nih", "busi"])
    ap.add_argument("--budget-scale", type=float, default=1.0)
    ap.add_argument("--render-only", action="store_true", help="Rewrite the .md from the stored .json (no training).")
    args = ap.parse_args()
    commit = git_commit()  # the code that runs, even if the tree moves on while it does
    res = HERE / "results"
    res.mkdir(exist_ok=True)
    jpath = res / "detection.json"
    results = dict(json.loads(jpath.read_text()).get("datasets", {})) if jpath.exists() else {}
    from meddx.training.run import machine, versions

    info = {"machine": machine(), "versions": versions()}
    if args.render_only:
        for r in results.values():
            r["lines"], r["winner"] = render_lines(r["summary"], r["runs"])
        args.datasets = []
    with tempfile.TemporaryDirectory(prefix="meddx-detbench-") as td:
        for name in args.datasets:
            out = run_dataset(name, Path(td), args.budget_scale)
            out.update({"command": "python benchmarks/detection.py " + " ".join(sys.argv[1:]),
                        "date": _dt.date.today().isoformat(), "commit": commit,
                        "budget_s": BUDGET[name] * args.budget_scale, **info})
            keep_earlier(results, name, out)
            print("\n".join(out["lines"]), flush=True)
            jpath.write_text(json.dumps({"datasets": results}, indent=2, default=str))
    lines = ["# Detection benchmark", "",
             "`meddx train --task detect` with `--detector components` (a segmenter trained on the drawn boxes; "
             "connected components of its prediction, scored by mean probability) and `--detector heatmap` "
             "(centre-heatmap head on the same U-Net), equal time per fold. A detection is a hit at IoU >= 0.5. "
             "Every number below was printed by the command in its block.", ""]
    for name in ("nih", "busi"):
        if name in results:
            r = results[name]
            m = r.get("machine", {})
            lines += [f"## {TITLES[name]}", "", f"Command: `{r['command'].strip()}` ({r['date']}, commit {r['commit']}; "
                      f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores); training budget {r['budget_s']:.0f} s per "
                      "fold and method.", "", *r["lines"], "", *earlier_lines(r)]
    (res / "detection.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
