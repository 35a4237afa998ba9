#!/usr/bin/env python
"""Ablation benchmark: what each optimisation is worth, on the real datasets (issue 4).

For each dataset, ``meddx ablate`` trains the plain baseline, the baseline plus each component,
the planner's full plan minus each component it chose, and the full plan, with 3 seeds and the
same number of epochs per run; test ACC, balanced ACC, AUC and sensitivity (mean ± sd), validation
numbers beside them, and paired bootstrap p-values against the baseline. Writes
benchmarks/results/ablation.md and .json; the runs are kept in ``--work`` (default
benchmarks/.ablation_runs, git-ignored), so an interrupted benchmark continues where it stopped.

Also checks the issue's bars: (1) the full plan beats the baseline by >= 5 points of test
accuracy averaged over the classification datasets (at this ablation's epochs); (2) the full plan
(the default plan of ``benchmarks/medmnist.py``, <= 10 min of training) beats the best published
MedMNIST v2 AUC on at least 3 of the 5 MedMNIST datasets, read from benchmarks/results/medmnist.json.

Usage: python benchmarks/ablation.py [--datasets pneumoniamnist breastmnist retinamnist adrenalmnist3d busi]
                                     [--seeds 0 1 2] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from _common import DATA, HERE, busi_view, git_commit, machine_line

COMMIT = git_commit()
# Epochs per run (not seconds: the comparison must not depend on how busy the CPU is while the
# hours of runs go by). About 30-60 s of training each on a quiet 2-core machine; the whole
# benchmark is some 250 runs.
EPOCHS = {"pneumoniamnist": 6, "breastmnist": 40, "retinamnist": 20, "adrenalmnist3d": 4, "busi": 15}
PATHS = {"pneumoniamnist": ("medmnist/pneumoniamnist.npz", "classify"),
         "breastmnist": ("medmnist/breastmnist.npz", "classify"),
         "retinamnist": ("medmnist/retinamnist.npz", "classify"),
         "adrenalmnist3d": ("medmnist/adrenalmnist3d.npz", "classify"),
         "busi": ("seg/busi_subset", "segment")}
# One representative per family of the toolbox (measuring every variant with 3 seeds on 4 datasets
# is more CPU than 2 cores give in a session): data quality, class imbalance, augmentation, model
# structure, feature selection, ensembles and test-time augmentation. `meddx ablate` runs all of them.
CLS_COMPONENTS = ["denoising", "learned_denoising", "augmentation", "extra_augmentation", "balanced_sampling",
                  "focal_loss", "logit_adjustment", "synthetic_gan", "mixup_cutmix", "attention", "pca_head",
                  "ensemble", "tta"]
SEG_COMPONENTS = ["denoising", "augmentation", "dice_ce_loss", "attention", "postprocess", "tta"]
BEST_PUBLISHED_AUC = {"pneumoniamnist": ("Google AutoML Vision", 0.991), "breastmnist": ("Google AutoML Vision", 0.919),
                      "retinamnist": ("Google AutoML Vision", 0.750), "adrenalmnist3d": ("ResNet-18 + ACS", 0.839),
                      "vesselmnist3d": ("ResNet-18 + ACS", 0.930)}


def component_verdicts(results: dict) -> list[str]:
    """For each component: mean change over the datasets where it was added alone, and how many were
    significant (p < 0.05) in each direction."""
    lines = ["| component | datasets | mean Δ (ACC or Dice) when added alone | significant gains | significant losses | verdict |",
             "|---|---|---|---|---|---|"]
    comps: dict[str, list[tuple[float, float]]] = {}
    for res in results.values():
        seg = res.get("task") == "segment"
        for r in res["arms"]:
            if r["arm"].startswith("+ "):
                d = r["delta_dice"] if seg else r["delta_accuracy"]
                p = r.get("p_dice" if seg else "p_accuracy", 1.0)
                comps.setdefault(r["arm"][2:], []).append((d, p))
    for name, vals in comps.items():
        d = np.array([v[0] for v in vals])
        gains = sum(1 for dv, p in vals if p < 0.05 and dv > 0)
        losses = sum(1 for dv, p in vals if p < 0.05 and dv < 0)
        verdict = ("helps" if gains and not losses and d.mean() > 0 else "hurts" if losses and not gains and d.mean() < 0
                   else "mixed" if gains and losses else "no significant effect")
        lines.append(f"| {name} | {len(vals)} | {d.mean():+.3f} | {gains} | {losses} | {verdict} |")
    return lines


def component_matrix(results: dict) -> list[str]:
    """One row per component, one column per dataset: Δ (points of ACC, or of Dice for segmentation)
    when added alone to the baseline and when removed from the full plan, with its p-value; bold
    where p < 0.05."""
    names = list(results)
    comps: list[str] = []
    for res in results.values():
        for r in res["arms"]:
            c = r["arm"][2:] if r["arm"].startswith("+ ") else r["arm"][7:] if r["arm"].startswith("full - ") else None
            if c and c not in comps:
                comps.append(c)

    def cell(res: dict, arm: str) -> str:
        r = next((x for x in res["arms"] if x["arm"] == arm), None)
        if r is None:
            return ""
        key = "dice" if res.get("task") == "segment" else "accuracy"
        d, p = r[f"delta_{key}"], r.get(f"p_{key}")
        if arm.startswith("full - "):  # its share of the full plan: full minus (full - c); no paired p
            full = next(x for x in res["arms"] if x["arm"] == "full")
            return f"{100 * (full[f'delta_{key}'] - d):+.1f}"
        txt = f"{100 * d:+.1f}" + (f" ({p:.2f})" if p is not None else "")
        return f"**{txt}**" if p is not None and p < 0.05 else txt

    lines = ["Points of test ACC (Dice for segmentation sets) against the plain baseline when the component is "
             "added alone (p from the paired bootstrap; bold: p < 0.05) and, after the slash, its share of the full plan: "
             "full minus (full without it), positive when it helps there (no p: those two arms are not compared "
             "pairwise). Empty: not run, or not in that dataset's full plan.", "",
             "| component | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for c in comps:
        cells = []
        for n in names:
            add, rem = cell(results[n], f"+ {c}"), cell(results[n], f"full - {c}")
            cells.append(add + (f" / {rem}" if rem else ""))
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return lines


def auc_bar() -> list[str]:
    p = HERE / "results" / "medmnist.json"
    if not p.exists():
        return ["(benchmarks/results/medmnist.json not found: run benchmarks/medmnist.py)"]
    rows = json.loads(p.read_text())["runs"]
    lines = ["| dataset | meddx full plan AUC (mean ± sd, 3 seeds) | best published | beats it? |", "|---|---|---|---|"]
    wins = 0
    for flag, (who, ref) in BEST_PUBLISHED_AUC.items():
        for variant in (flag, f"{flag}_64"):
            aucs = [r["auc"] for r in rows if r["dataset"] == variant]
            if not aucs:
                continue
            m = float(np.mean(aucs))
            beat = m > ref
            lines.append(f"| {variant} | {m:.3f} ± {np.std(aucs, ddof=1) if len(aucs) > 1 else 0:.3f} | {ref:.3f} ({who}) "
                         f"| {'yes' if beat else 'no'} |")
        best = max((float(np.mean([r["auc"] for r in rows if r["dataset"] == v]))
                    for v in (flag, f"{flag}_64") if any(r["dataset"] == v for r in rows)), default=0.0)
        wins += best > ref
    lines += ["", f"Datasets (of 5) where meddx beats the best published AUC, either size: **{wins}** (bar: 3)."]
    return lines


def pick(chosen: list[str] | None, default: list[str]) -> list[str]:
    """The benchmark's components for one task, restricted to ``chosen`` when given."""
    return list(default) if chosen is None else [c for c in default if c in chosen]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(PATHS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every dataset's epochs")
    ap.add_argument("--work", type=Path, default=HERE / ".ablation_runs")
    ap.add_argument("--components", nargs="*", default=None,
                    help="only these components (default: the benchmark's list; none: baseline and full plan only). "
                         "Runs are kept in --work, so a later call with more components adds their arms")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: rewrite ablation.md from ablation.json and the current medmnist.json (bar 2)")
    args = ap.parse_args()
    from meddx.evaluation.ablation import run_ablation
    from meddx.training.run import machine

    out_json = HERE / "results" / "ablation.json"
    saved = json.loads(out_json.read_text()) if out_json.exists() else {}
    results = saved.get("datasets", {})
    if args.report_only:
        if not results:
            sys.exit(f"{out_json} not found: run the ablation first")
        write(results, saved.get("command") or "(not recorded)", saved.get("machine"))
        return
    command = f"python benchmarks/ablation.py {' '.join(sys.argv[1:])}".strip()
    cpu = machine()["cpu"]
    for name in args.datasets:
        rel, task = PATHS[name]
        epochs = max(1, int(round(EPOCHS[name] * args.scale)))
        t0 = time.time()
        path = busi_view(DATA / rel, args.work / "busi_data") if name == "busi" else DATA / rel
        res = run_ablation(str(path), args.work / name, epochs=epochs, seeds=args.seeds, task=task,
                           components=pick(args.components, SEG_COMPONENTS if task == "segment" else CLS_COMPONENTS),
                           progress=False, log=lambda m: print(f"{name}: {m}", flush=True))
        for r in res["arms"]:
            r.pop("runs", None)
        res.update({"dataset": name, "command": command, "commit": COMMIT, "cpu": cpu,
                    "wall_minutes": round((time.time() - t0) / 60, 1)})
        results[name] = res
        write(results, command)


def write(results: dict, command: str | None, machine_text: str | None = None) -> None:
    """Write ablation.md and ablation.json; ``command`` is the last command that trained arms and
    ``machine_text`` the machine it ran on (default: this one)."""
    from meddx.training.run import machine, versions

    if machine_text is None:
        machine_text = machine_line({"machine": machine(), "versions": versions()})
    cls = {k: v for k, v in results.items() if v.get("task") != "segment"}
    gain = {k: next(r for r in v["arms"] if r["arm"] == "full")["delta_accuracy"] for k, v in cls.items()}
    mean_gain = float(np.mean(list(gain.values()))) if gain else float("nan")
    lines = ["# Ablation: what each optimisation is worth", "",
             f"Command (last training run): `{command}`; bar 2 is re-read from medmnist.json at every write "
             "(`--report-only` rewrites this file without training).",
             f"{machine_text} (The last training run's; each dataset's section names the CPU its arms ran on.)", "",
             "Every run is `meddx train` with the arm's plan and the dataset's number of epochs below (the same for "
             "every arm; an ensemble's 5 members get a fifth each, so every arm does the same training work); seeds 0, 1, 2 on one fixed split (MedMNIST: the official split; BUSI: "
             "seeded 70/10/20). Δ is against the baseline; p is a two-sided paired bootstrap over test cases "
             "(2000 resamples; mean over seeds of the per-seed difference). Validation columns are shown so that "
             "planner rules can be set from validation alone. Sensitivity: for binary sets, of the class its "
             "column header names (the plan's positive class, R18), or of class 1 where the header names none "
             "(sections summarised before 2026-12-07); macro (= balanced ACC) otherwise.", "",
             "## Bar 1: full plan against the plain baseline (test accuracy, at this ablation's epochs)", "",
             "| dataset | epochs per run | baseline ACC | full plan ACC | gain (points) |", "|---|---|---|---|---|"]
    for k, v in cls.items():
        b = next(r for r in v["arms"] if r["arm"] == "baseline")
        f = next(r for r in v["arms"] if r["arm"] == "full")
        lines.append(f"| {k} | {v['epochs']} | {b['test_accuracy_mean']:.3f} | {f['test_accuracy_mean']:.3f} "
                     f"| {100 * gain[k]:+.1f} |")
    lines += ["", f"Mean gain over {len(gain)} classification datasets: **{100 * mean_gain:+.1f} points** (bar: +5.0)."
              + (" Met." if mean_gain >= 0.05 else " Not met."), "",
              "## Bar 2: full plan against the best published MedMNIST v2 AUC (any method)", ""] + auc_bar()
    lines += ["", "## Which components help, which do nothing, which hurt", ""] + component_verdicts(results)
    lines += ["", "### Each component on each dataset", ""] + component_matrix(results)
    from meddx.evaluation.ablation import markdown_table

    lines += ["", "## Per dataset", ""]
    for k, v in results.items():
        lines += [markdown_table(v), (f"`{v['command']}`, " if v.get("command") else "")
                  + f"commit {v.get('commit')}, {v.get('date')}, {v.get('wall_minutes')} min wall"
                  + f", {v.get('cpu') or 'CPU not recorded'}.", ""]
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "ablation.md").write_text("\n".join(lines) + "\n")
    saved = {"command": command, "machine": machine_text, "datasets": results, "mean_full_gain": mean_gain}
    (HERE / "results" / "ablation.json").write_text(json.dumps(saved, indent=2, default=float))


if __name__ == "__main__":
    main()
