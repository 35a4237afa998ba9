#!/usr/bin/env python
"""Segmentation benchmark: meddx's default segmentation plan on the real sets in ../shared/data/seg.

Writes benchmarks/results/segmentation.md and .json. Each dataset's block records the
command, date, git commit, budget and every run, so datasets can be run one at a time
(``--datasets hippocampus``); results of datasets not run this time are kept from the
previous file. Each run is a separate ``meddx train --task segment`` process (its peak
RSS is its own); splits are written as CSV manifests with a split column, and meddx
carves its validation cases out of the training part (model selection and
post-processing never see the test cases).

* hippocampus: MSD Task04 (3D MRI, labels 1 anterior, 2 posterior); fixed 80/20 split by
  case (seed 0); bar: mean Dice >= 0.89 with <= 20 minutes of training on 2 CPU cores.
* lgg: 5 patients, leave-one-patient-out; per-patient Dice pooled over the patient's slices
  (Buda et al. 2019 report a mean per-patient Dice of 82 % on 110 patients).
* busi: 90 images (30 benign, 30 malignant, 30 normal), 5-fold CV stratified by class;
  lesion Dice and IoU on benign + malignant test images, next to U-Net 0.770 / 0.686.
  ``benign (4)_mask_1.png`` (555x465) does not match its 416x416 image and is left out.
* covid: 400 chest X-rays with lung masks (masks 256 px, images 299 px: run with
  ``--resample-masks``); fixed 80/20 split (seed 0); bar: Dice >= 0.95.

Usage: python benchmarks/segmentation.py [--datasets hippocampus lgg busi covid] [--budget-scale 1.0]
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

from _common import DATA, HERE, busi_items, earlier_lines, git_commit, inference_fields, keep_earlier, run_meddx
SEG = DATA / "seg"

BUDGET = {"hippocampus": 1200, "lgg": 120, "busi": 120, "covid": 360}  # training seconds per run
REFERENCE = {
    "hippocampus": "nnU-Net (MSD Task04): about 0.90 / 0.89 Dice (anterior / posterior); bar mean Dice 0.89",
    "lgg": "Buda et al. 2019 (110 patients): mean per-patient Dice 0.82",
    "busi": "U-Net (256 px, 70/30 splits): Dice 0.770, IoU 0.686; CMUNeXt Dice 0.799",
    "covid": "Lung segmentation on adult CXR (Idiap U-Net): Dice 0.95-0.98; bar Dice 0.95",
}


def write_manifest(path: Path, rows: list[tuple]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mask", "split"])
        for r in rows:
            w.writerow(r)
    return path


def train(manifest: Path, out: Path, budget: float, seed: int = 0, extra: tuple[str, ...] = ()) -> dict:
    wall, rss = run_meddx(["train", str(manifest), "--task", "segment", "--out", str(out), "--seed", str(seed),
                           "--time-budget", f"{budget:.0f}s", "--no-progress", *extra], out.name)
    m = json.loads((out / "metrics.json").read_text())
    with open(out / "per_case.csv", newline="") as f:
        per_case = list(csv.DictReader(f))
    return {"metrics": m, "per_case": per_case, "wall_s": wall, "train_s": m["training"]["train_seconds"],
            "epochs": m["training"]["epochs_run"], "peak_rss_mib": rss, **inference_fields(m)}


def cost_line(runs: list[dict], unit: str = "case") -> str:
    """Training time, inference time per test case and peak memory over a dataset's runs."""
    tr = [r["train_s"] for r in runs]
    inf = [r["infer_s_per_case"] for r in runs]
    per = "per run" if len(runs) == 1 else f"per run (mean of {len(runs)})"
    return (f"Cost: training {np.mean(tr):.0f} s {per}; inference {1000 * np.mean(inf):.0f} ms per {unit} "
            f"(mean; slowest {1000 * max(r['infer_s_max'] for r in runs):.0f} ms; preprocessing, network (sliding "
            f"window in 3D) and return to the {unit}'s geometry, file reading excluded); peak RSS "
            f"{max(r['peak_rss_mib'] for r in runs):.0f} MiB (training and evaluation, the whole `meddx train`).")


def _ci(m: dict) -> str:
    return f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"


def _boot_mean(values, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    v = np.asarray(values, float)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n_boot, len(v)))].mean(1)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


# -- datasets -----------------------------------------------------------------------------------
def run_hippocampus(td: Path, scale: float) -> dict:
    root = SEG / "msd_hippocampus_udacity"
    names = sorted(p.name for p in (root / "images").iterdir() if p.name.endswith(".nii.gz"))
    rng = np.random.default_rng(0)
    test = set(rng.permutation(len(names))[: round(0.2 * len(names))].tolist())
    man = write_manifest(td / "hippocampus.csv", [(root / "images" / n, root / "labels" / n,
                                                   "test" if i in test else "train") for i, n in enumerate(names)])
    r = train(man, td / "hippocampus_run", BUDGET["hippocampus"] * scale)
    s = r["metrics"]["summary"]
    mean = s["mean"]["dice"]["value"]
    lines = [f"80/20 split by case (seed 0): {len(names) - len(test)} train (meddx keeps 1/8 of them for "
             f"validation), {len(test)} test.", "",
             "| class | Dice [95% CI] | IoU | HD95 mm | ASD mm |", "|---|---|---|---|---|"]
    for name, v in s["per_class"].items():
        lines.append(f"| {name} | {_ci(v['dice'])} | {_ci(v['iou'])} | {_ci(v['hd95'])} | {_ci(v['asd'])} |")
    lines.append(f"| mean | {_ci(s['mean']['dice'])} | {_ci(s['mean']['iou'])} | {_ci(s['mean']['hd95'])} | "
                 f"{_ci(s['mean']['asd'])} |")
    bar = mean >= 0.89 and r["train_s"] <= 1200
    lines += ["", f"Training {r['train_s']:.0f} s ({r['epochs']} epochs), peak RSS {r['peak_rss_mib']:.0f} MiB. "
              f"Bar (mean Dice >= 0.89 within 20 min): **{'met' if bar else 'not met'}** (mean Dice {mean:.3f}).",
              "", cost_line([r], "volume")]
    return {"lines": lines, "runs": [{k: v for k, v in r.items() if k != "per_case"}], "bar_met": bool(bar),
            "mean_dice": mean}


def run_lgg(td: Path, scale: float) -> dict:
    root = SEG / "lgg_mri_kaggle_3m_subset"
    patients = sorted(p for p in root.iterdir() if p.is_dir())
    slices = {p: sorted(q for q in p.iterdir() if q.suffix == ".tif" and not q.stem.endswith("_mask"))
              for p in patients}
    rows, runs = [], []
    for k, held in enumerate(patients):
        man = write_manifest(td / f"lgg_{k}.csv", [
            (q, q.with_name(q.stem + "_mask.tif"), "test" if p == held else "train")
            for p in patients for q in slices[p]])
        r = train(man, td / f"lgg_run_{k}", BUDGET["lgg"] * scale, extra=("--group-by-folder",))
        pc = r["per_case"]
        ref = sum(int(x["ref_n_foreground"]) for x in pc)
        pred = sum(int(x["pred_n_foreground"]) for x in pc)
        inter = sum(int(x["inter_n_foreground"]) for x in pc)
        dice = 2 * inter / (ref + pred) if ref + pred else 1.0
        rows.append({"fold": k + 1, "slices": len(pc), "tumour_slices": sum(int(x["ref_n_foreground"]) > 0 for x in pc),
                     "patient_dice": dice, "slice_mean_dice": r["metrics"]["summary"]["mean"]["dice"]["value"],
                     "train_s": r["train_s"]})
        runs.append({k_: v for k_, v in r.items() if k_ not in ("per_case",)})
    m, lo, hi = _boot_mean([x["patient_dice"] for x in rows])
    lines = ["Leave-one-patient-out over the 5 patients (each fold trains on 4, meddx keeps one of them for "
             "validation). Patient names are not printed (fold = patient in sorted folder order).", "",
             "| fold (held-out patient) | slices | slices with tumour | per-patient Dice (pooled) | mean slice Dice | train s |",
             "|---|---|---|---|---|---|"]
    for x in rows:
        lines.append(f"| {x['fold']} | {x['slices']} | {x['tumour_slices']} | {x['patient_dice']:.3f} | "
                     f"{x['slice_mean_dice']:.3f} | {x['train_s']:.0f} |")
    lines += ["", f"Mean per-patient Dice {m:.3f} (bootstrap 95% CI over patients [{lo:.3f}, {hi:.3f}], n = 5); "
              f"Buda et al. report 0.82 on 110 patients.", "", cost_line(runs, "slice")]
    return {"lines": lines, "folds": rows, "runs": runs, "mean_patient_dice": m}


def run_busi(td: Path, scale: float, folds: int = 5) -> dict:
    items = busi_items(SEG / "busi_subset")
    rng = np.random.default_rng(0)
    fold_of = {}
    for cls in ("benign", "malignant", "normal"):
        idx = [i for i, it in enumerate(items) if it[0] == cls]
        for j, i in enumerate(rng.permutation(idx)):
            fold_of[int(i)] = j % folds
    lesion, normal_fp, runs, det = [], [], [], []
    for k in range(folds):
        man = write_manifest(td / f"busi_{k}.csv", [(img, ";".join(str(m) for m in masks),
                                                     "test" if fold_of[i] == k else "train")
                                                    for i, (cls, img, masks) in enumerate(items)])
        r = train(man, td / f"busi_run_{k}", BUDGET["busi"] * scale)
        d = r["metrics"]["detection"]
        det.append((d["per_class"]["foreground"]["ap"], d["froc_pooled"]["mean"], d["froc_pooled"]["sensitivity"]))
        for x in r["per_case"]:
            if int(x["ref_n_foreground"]) > 0:
                lesion.append((k, float(x["dice_foreground"]), float(x["iou_foreground"])))
            else:
                normal_fp.append(int(x["pred_n_foreground"]) > 0)
        runs.append({k_: v for k_, v in r.items() if k_ != "per_case"})
    d, dlo, dhi = _boot_mean([x[1] for x in lesion])
    i_, ilo, ihi = _boot_mean([x[2] for x in lesion])
    per_fold = [np.mean([x[1] for x in lesion if x[0] == k]) for k in range(folds)]
    lines = [f"5-fold cross-validation stratified by class (seed 0), {len(items)} images; lesion metrics over the "
             f"{len(lesion)} benign + malignant test images (each image tested once).", "",
             "| metric | meddx [95% CI] | U-Net (published) | CMUNeXt |", "|---|---|---|---|",
             f"| Dice | {d:.3f} [{dlo:.3f}, {dhi:.3f}] | 0.770 | 0.799 |",
             f"| IoU | {i_:.3f} [{ilo:.3f}, {ihi:.3f}] | 0.686 | - |", "",
             f"Per-fold mean lesion Dice: {', '.join(f'{v:.3f}' for v in per_fold)} "
             f"(sd {np.std(per_fold, ddof=1):.3f}). Normal images with any predicted lesion: "
             f"{sum(normal_fp)} of {len(normal_fp)}.",
             "The published numbers come from the full BUSI (647 lesion images, 70/30 splits); this subset has 60 "
             "lesion images, so the comparison is indicative only.", "",
             "Lesion detection on the same folds, from the segmentation (connected components as boxes scored by "
             "mean probability; a hit at IoU >= 0.5; normal images count for false positives):", "",
             "| AP@0.5 (mean ± sd over folds) | FROC mean sensitivity | "
             + " | ".join(f"sens @ {r_} FP/img" for r_ in det[0][2]) + " |",
             "|---|---|" + "---|" * len(det[0][2]),
             f"| {np.mean([x[0] for x in det]):.3f} ± {np.std([x[0] for x in det], ddof=1):.3f} | "
             f"{np.mean([x[1] for x in det]):.3f} ± {np.std([x[1] for x in det], ddof=1):.3f} | "
             + " | ".join(f"{np.mean([x[2][r_] for x in det]):.3f}" for r_ in det[0][2]) + " |",
             "", cost_line(runs, "image")]
    return {"lines": lines, "runs": runs, "dice": d, "iou": i_, "per_fold_dice": per_fold,
            "detection_ap_per_fold": [x[0] for x in det], "detection_froc_per_fold": [x[1] for x in det]}


def run_covid(td: Path, scale: float) -> dict:
    root = SEG / "covid19_radiography_viral_pneumonia_subset" / "Viral Pneumonia"
    names = sorted((p.name for p in (root / "images").glob("*.png")), key=lambda n: int(n.split("-")[-1][:-4]))
    rng = np.random.default_rng(0)
    test = set(rng.permutation(len(names))[: round(0.2 * len(names))].tolist())
    man = write_manifest(td / "covid.csv", [(root / "images" / n, root / "masks" / n,
                                             "test" if i in test else "train") for i, n in enumerate(names)])
    r = train(man, td / "covid_run", BUDGET["covid"] * scale, extra=("--resample-masks",))
    s = r["metrics"]["summary"]
    mean = s["mean"]["dice"]["value"]
    lines = [f"80/20 split (seed 0): {len(names) - len(test)} train (1/8 kept for validation), {len(test)} test; "
             "masks resized to their 299 px images (nearest neighbour, `--resample-masks`).", "",
             "| class | Dice [95% CI] | IoU | HD95 px | ASD px |", "|---|---|---|---|---|"]
    for name, v in s["per_class"].items():
        lines.append(f"| lungs | {_ci(v['dice'])} | {_ci(v['iou'])} | {_ci(v['hd95'])} | {_ci(v['asd'])} |")
    lines += ["", f"Training {r['train_s']:.0f} s ({r['epochs']} epochs). Bar Dice >= 0.95: "
              f"**{'met' if mean >= 0.95 else 'not met'}** ({mean:.3f}).", "", cost_line([r], "image")]
    return {"lines": lines, "runs": [{k: v for k, v in r.items() if k != "per_case"}], "mean_dice": mean}


RUNNERS = {"hippocampus": run_hippocampus, "lgg": run_lgg, "busi": run_busi, "covid": run_covid}
TITLES = {"hippocampus": "MSD Hippocampus (3D MRI)", "lgg": "LGG FLAIR abnormality (2D MRI, 3 channels)",
          "busi": "BUSI breast-ultrasound lesions", "covid": "Lungs on paediatric chest X-ray (COVID-19 Radiography)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(RUNNERS), choices=list(RUNNERS))
    ap.add_argument("--budget-scale", type=float, default=1.0, help="Multiply every training budget (quick checks).")
    args = ap.parse_args()
    commit = git_commit()  # the code that runs, even if the tree moves on while it does
    res = HERE / "results"
    res.mkdir(exist_ok=True)
    jpath = res / "segmentation.json"
    old = json.loads(jpath.read_text()) if jpath.exists() else {}
    from meddx.training.run import machine, versions

    info = {"machine": machine(), "versions": versions()}
    results = dict(old.get("datasets", {}))
    with tempfile.TemporaryDirectory(prefix="meddx-segbench-") as td:
        for name in args.datasets:
            out = RUNNERS[name](Path(td), args.budget_scale)
            out.update({"command": "python benchmarks/segmentation.py " + " ".join(sys.argv[1:]),
                        "date": _dt.date.today().isoformat(), "commit": commit,
                        "budget_s": BUDGET[name] * args.budget_scale, "reference": REFERENCE[name], **info})
            keep_earlier(results, name, out)
            print("\n".join(out["lines"]), flush=True)
            jpath.write_text(json.dumps({"datasets": results}, indent=2, default=str))
    lines = ["# Segmentation benchmark", "",
             "Default segmentation plan of `meddx train --task segment` (2 CPU cores unless stated); every number "
             "below was printed by the command in its block. Metrics per test case in the image's own geometry; "
             "95% CIs are percentile bootstrap over cases (or patients/folds where said).", ""]
    for name in RUNNERS:
        if name not in results:
            continue
        r = results[name]
        m = r.get("machine", {})
        lines += [f"## {TITLES[name]}", "",
                  f"Command: `{r['command'].strip()}` ({r['date']}, commit {r['commit']}; {m.get('cpu', '?')}, "
                  f"{m.get('cores', '?')} cores, {m.get('device', '?')}); training budget {r['budget_s']:.0f} s per run.",
                  f"Reference: {r['reference']}.", "", *r["lines"], ""]
        lines += earlier_lines(r)
    (res / "segmentation.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
