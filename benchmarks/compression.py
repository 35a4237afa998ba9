#!/usr/bin/env python
"""Compression benchmark: what pruning, distillation and static int8 cost in accuracy and buy in speed.

For PneumoniaMNIST and BreastMNIST (official splits) a teacher is trained with meddx's
default plan (``small_cnn``), then each variant is made with the library
(``meddx.deploy``), exactly as ``meddx export`` / ``meddx compress`` make them:

* torch fp32 eager: the teacher run itself;
* ONNX fp32: ``meddx export``;
* int8: ``meddx compress --int8`` (static, QDQ, 256 training images);
* pruned: ``meddx compress --prune 0.5`` (fine-tuned with cross-entropy);
* student alone / distilled student: a fresh ``small_cnn:width=0.5,first_stride=2``
  trained with cross-entropy, and the same student with the same budget and seed trained
  on the teacher's soft labels (``--student ... --distill-from TEACHER``);
* pruned + distilled + int8: ``meddx compress --prune 0.7 --distill-from TEACHER --int8``, with
  ``KD_FINETUNE_S`` (240 s) of training after the cut (the network keeps 30 % of its channels,
  1/11 of the FLOPs, and needs longer than the 50 % cut to recover: on the seed-0 teachers'
  validation splits, PneumoniaMNIST AUC 0.9916 after 45 s at a quarter of the learning rate,
  0.9962 after 120 s and 0.9968 after 240 s at the full rate, against the teacher's 0.9968);
  the row "pruned 70 % + distilled" is the same network before int8 (torch, from the bundle's
  ``student.pt``).

Every variant's test AUC comes from the same code (probabilities on the preprocessed
test split; bundles through ``meddx.runtime``), with a bootstrap 95 % CI and a paired
bootstrap p-value against the teacher. Speeds are measured in this process, variant
after variant, ``--repeats`` times: latency is batch 1 (p50 / p99), throughput the best
of batch 1, 32, 128 and 256; each is reported as the ratio to torch fp32 eager of the
same repeat (median and range over repeats). ONNX Runtime and torch both use all cores.

The hippocampus segmenter (MSD Task04, 80/20 split by case, seed 0, as in
``benchmarks/segmentation.py``) is trained with a short budget (``--hippo-budget``, default
300 s: far from the 20-minute segmentation benchmark, so its Dice is lower) and
compared as torch fp32 eager, ONNX fp32 and int8: Dice per test case through the
sliding window (torch: MONAI; bundles: the runtime's numpy copy), window throughput
and whole-volume latency.

Usage: python benchmarks/compression.py [--datasets pneumoniamnist breastmnist hippocampus]
       [--seed 0] [--repeats 3] [--budget-scale 1.0] [--hippo-budget 300] [--merge]
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import DATA, HERE, CpuShare, git_commit, machine_line

COMMIT = git_commit()
# seconds of training: teacher, fresh students, fine-tuning after pruning
KD_FINETUNE_S = 240  # see "pruned + distilled" in the module docstring
BUDGET = {"pneumoniamnist": {"teacher": 120, "student": 60, "finetune": 45, "kd_finetune": KD_FINETUNE_S},
          "breastmnist": {"teacher": 150, "student": 60, "finetune": 45, "kd_finetune": KD_FINETUNE_S}}
STUDENT = "small_cnn:width=0.5,first_stride=2"
PRUNE_ALONE, PRUNE_WITH_KD = 0.5, 0.7
PD = f"pruned {PRUNE_WITH_KD:.0%} + distilled"  # the fp32 row; its int8 bundle is PD + " + int8"
REFERENCE = {
    "int8": "issue bar: int8 >= 4x the throughput of torch fp32 eager, <= 0.5 AUC points lost; ONNX Runtime's "
            "ResNet-18 example: 3.95x smaller, 0.10 points of accuracy lost",
    "pruned_distilled": "issue bar: pruned + distilled student >= 10x fewer FLOPs than the teacher, <= 1 AUC point lost",
}


def quiet(*_a, **_k):
    return None


# -- speed ------------------------------------------------------------------------------------------
def speed_round(runners: dict, shape: tuple[int, ...], batches, seconds: float) -> dict:
    from meddx.deploy.bench import measure

    return {name: measure(run, shape, batches=batches, seconds=seconds) for name, run in runners.items()}


def speed_summary(rounds: list[dict], base: str = "torch fp32 eager") -> dict:
    out = {}
    for name in rounds[0]:
        thr = [r[name]["throughput"] for r in rounds]
        lat = [r[name]["latency_ms_p50"] for r in rounds]
        p99 = [r[name]["latency_ms_p99"] for r in rounds]
        thr_ratio = [r[name]["throughput"] / r[base]["throughput"] for r in rounds]
        lat_ratio = [r[base]["latency_ms_p50"] / r[name]["latency_ms_p50"] for r in rounds]
        out[name] = {"throughput": float(np.median(thr)), "best_batch": rounds[-1][name]["best_batch"],
                     "latency_ms_p50": float(np.median(lat)), "latency_ms_p99": float(np.median(p99)),
                     "throughput_ratio": float(np.median(thr_ratio)),
                     "throughput_ratio_range": [float(min(thr_ratio)), float(max(thr_ratio))],
                     "latency_speedup": float(np.median(lat_ratio)),
                     "latency_speedup_range": [float(min(lat_ratio)), float(max(lat_ratio))],
                     "per_repeat": [{k: r[name][k] for k in ("throughput", "latency_ms_p50", "latency_ms_p99",
                                                             "best_batch")} for r in rounds]}
    return out


# -- classification ---------------------------------------------------------------------------------
def classification(flag: str, work: Path, seed: int, scale: float, repeats: int, seconds: float) -> dict:
    import torch

    from meddx.deploy.bench import ort_runner, torch_runner, torch_size_bytes
    from meddx.deploy.compress import CompressOptions, compress_run, load_split_tensors, load_student
    from meddx.deploy.export import export_run
    from meddx.deploy.flops import torch_flops
    from meddx.evaluation.metrics import classification_metrics, paired_bootstrap_pvalue
    from meddx.models.registry import count_parameters
    from meddx.runtime import load
    from meddx.training.engine import predict_proba
    from meddx.training.run import load_run, train_run

    b = {k: v * scale for k, v in BUDGET[flag].items()}
    npz = DATA / "medmnist" / f"{flag}.npz"
    t0 = time.perf_counter()
    teacher = train_run(str(npz), work / "teacher", overrides={"seed": seed, "train.time_budget_s": b["teacher"]},
                        progress=False, log=quiet)
    timings = {"teacher": round(time.perf_counter() - t0, 1)}
    made = {}

    def make(name, fn):
        t = time.perf_counter()
        made[name] = fn()
        timings[name] = round(time.perf_counter() - t, 1)
        print(f"  {flag}: {name} done in {timings[name]:.0f} s", flush=True)

    make("ONNX fp32", lambda: export_run(teacher, work / "onnx_fp32"))
    make("int8", lambda: compress_run(teacher, work / "int8", CompressOptions(int8=True, seed=seed),
                                      progress=False, log=quiet))
    make(f"pruned {PRUNE_ALONE:.0%}", lambda: compress_run(
        teacher, work / "pruned", CompressOptions(prune=PRUNE_ALONE, time_budget_s=b["finetune"], seed=seed),
        progress=False, log=quiet))
    make("student alone", lambda: compress_run(
        teacher, work / "student_alone", CompressOptions(student=STUDENT, time_budget_s=b["student"], seed=seed),
        progress=False, log=quiet))
    make("distilled student", lambda: compress_run(
        teacher, work / "student_distilled",
        CompressOptions(student=STUDENT, distill_from=str(teacher), time_budget_s=b["student"], seed=seed),
        progress=False, log=quiet))
    make(f"{PD} + int8", lambda: compress_run(
        teacher, work / "pruned_distilled_int8",
        CompressOptions(prune=PRUNE_WITH_KD, distill_from=str(teacher), int8=True, time_budget_s=b["kd_finetune"],
                        seed=seed), progress=False, log=quiet))
    # the same pruned + distilled network before int8 (its torch weights are in the bundle's student.pt)
    _, pd_model = load_student(made[f"{PD} + int8"])
    pd_model.eval()

    plan, model = load_run(teacher)
    _, _, tensors = load_split_tensors(teacher, plan)
    xte, yte = tensors["test"]
    y = yte.numpy()
    names = list(plan.data.class_names)
    flips = list(plan.evaluate.tta_flip_axes)
    shape = (plan.data.channels, *plan.data.input_size)
    probs = {"torch fp32 eager": predict_proba(model, xte, 256, torch.device("cpu"), flips)}
    bundles = {k: load(v) for k, v in made.items()}
    for k, bd in bundles.items():
        if k == f"{PD} + int8":  # fp32 row first, then its int8 bundle
            probs[PD] = predict_proba(pd_model, xte, 256, torch.device("cpu"), flips)
        x = xte.numpy()
        probs[k] = np.concatenate([bd.predict_proba(x[i:i + 256]) for i in range(0, len(x), 256)])
    rows = {}
    teacher_flops = torch_flops(model, torch.zeros(1, *shape))
    for k, p in probs.items():
        m = classification_metrics(y, p, class_names=names, n_boot=1000, seed=0)["overall"]
        auc = m.get("auc") or m.get("auc_macro")
        if k in ("torch fp32 eager", PD):
            mk = model if k == "torch fp32 eager" else pd_model
            info = {"params": int(count_parameters(mk)),
                    "flops": teacher_flops if mk is model else torch_flops(mk, torch.zeros(1, *shape)),
                    "file_bytes": torch_size_bytes(mk), "precision": "fp32 (torch)", "train_s": None}
        else:
            man = bundles[k].manifest["model"]
            comp = made[k] / "compression.json"
            steps = json.loads(comp.read_text())["steps"] if comp.exists() else []
            train_s = sum(s.get("seconds", 0) + s.get("fine_tune", {}).get("seconds", 0) for s in steps) or None
            info = {"params": int(man["params"]), "flops": int(man["flops"]),
                    "file_bytes": int((made[k] / "model.onnx").stat().st_size), "precision": man["precision"],
                    "train_s": train_s, "steps": steps}
        rows[k] = {**info, "test_auc": auc, "test_accuracy": m["accuracy"],
                   "auc_drop_points": 100 * (rows.get("torch fp32 eager", {}).get("test_auc", auc)["value"]
                                             - auc["value"]) if rows else 0.0,
                   "p_vs_teacher": None if k == "torch fp32 eager" else
                   float(paired_bootstrap_pvalue(y, probs["torch fp32 eager"], p, metric="auc", n_boot=2000))}
    runners = {"torch fp32 eager": torch_runner(model), PD: torch_runner(pd_model)}
    runners.update({k: ort_runner(v / "model.onnx") for k, v in made.items()})
    rounds = [speed_round(runners, shape, (1, 32, 128, 256), seconds) for _ in range(repeats)]
    sp = speed_summary(rounds)
    for k in rows:
        rows[k]["speed"] = sp[k]
        rows[k]["flops_ratio"] = teacher_flops / rows[k]["flops"]
    return {"dataset": flag, "seed": seed, "budgets_s": b, "student": STUDENT, "timings_s": timings,
            "teacher_epochs": json.loads((teacher / "run.json").read_text()).get("best_epoch"), "variants": rows}


# -- hippocampus --------------------------------------------------------------------------------------
def hippocampus(work: Path, seed: int, budget: float, repeats: int, seconds: float) -> dict:
    import copy

    import torch

    from meddx.data.segprep import build_seg_data
    from meddx.data.split import apply_split, read_split
    from meddx.deploy.bench import ort_runner, time_calls, torch_runner, torch_size_bytes
    from meddx.deploy.compress import CompressOptions, compress_run, mean_ci
    from meddx.deploy.export import export_run, model_input_shape
    from meddx.deploy.flops import torch_flops
    from meddx.models.registry import count_parameters
    from meddx.runtime import load
    from meddx.runtime.postprocess import postprocess
    from meddx.training.run import load_run
    from meddx.training.seg_engine import dice_per_class, segment_probs
    from meddx.training.seg_run import open_for_plan, train_seg_run

    root = DATA / "seg" / "msd_hippocampus_udacity"
    names = sorted(p.name for p in (root / "images").iterdir() if p.name.endswith(".nii.gz"))
    rng = np.random.default_rng(0)
    test = set(rng.permutation(len(names))[: round(0.2 * len(names))].tolist())
    man = work / "hippocampus.csv"
    with open(man, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mask", "split"])
        for i, n in enumerate(names):
            w.writerow([root / "images" / n, root / "labels" / n, "test" if i in test else "train"])
    t0 = time.perf_counter()
    run = train_seg_run(str(man), work / "hippo_run", overrides={"seed": seed, "train.time_budget_s": budget},
                        progress=False, log=quiet)
    timings = {"train_run": round(time.perf_counter() - t0, 1)}
    fp32 = export_run(run, work / "hippo_fp32")
    t0 = time.perf_counter()
    int8 = compress_run(run, work / "hippo_int8", CompressOptions(int8=True, seed=seed), progress=False, log=quiet)
    timings["int8"] = round(time.perf_counter() - t0, 1)
    plan, model = load_run(run)
    cs = open_for_plan(plan.data.source, plan)
    parts = apply_split(cs, read_split(run / "split.csv"))
    data = build_seg_data(cs, {"test": parts["test"], "train": parts["train"]}, copy.deepcopy(plan))["test"]
    k = len(plan.segment.label_values)
    sg = plan.segment
    bundles = {"ONNX fp32": load(fp32), "int8": load(int8)}

    def torch_proba(x):
        return segment_probs(model, torch.from_numpy(x), plan).numpy()

    predictors = {"torch fp32 eager": torch_proba, **{n: b.segment_proba for n, b in bundles.items()}}
    rows = {}
    shape = model_input_shape(plan)
    flops = torch_flops(model, torch.zeros(1, *shape))
    for name, fn in predictors.items():
        scores = []
        for x, y in zip(data.images, data.labels):
            idx = postprocess(fn(x.numpy()).argmax(0).astype(np.uint8), sg.postprocess, k, sg.min_size)
            scores.append(dice_per_class(idx, y.numpy(), k))
        s = np.array(scores)
        if name == "torch fp32 eager":
            info = {"params": int(count_parameters(model)), "flops": flops, "file_bytes": torch_size_bytes(model),
                    "precision": "fp32 (torch)"}
        else:
            m = bundles[name].manifest["model"]
            info = {"params": int(m["params"]), "flops": int(m["flops"]), "precision": m["precision"],
                    "file_bytes": int(((fp32 if name == "ONNX fp32" else int8) / "model.onnx").stat().st_size)}
        rows[name] = {**info, "test_dice": mean_ci(s.mean(1)),
                      "test_dice_per_class": {n: float(v) for n, v in zip(sg.label_names[1:], s.mean(0))}}
    base = rows["torch fp32 eager"]["test_dice"]["value"]
    for r in rows.values():
        r["dice_drop_points"] = 100 * (base - r["test_dice"]["value"])
    runners = {"torch fp32 eager": torch_runner(model), "ONNX fp32": ort_runner(fp32 / "model.onnx"),
               "int8": ort_runner(int8 / "model.onnx")}
    vol = sorted(data.images, key=lambda t: t.numel())[len(data.images) // 2].numpy()
    rounds = []
    for _ in range(repeats):
        r = speed_round(runners, shape, (1, 2, 4, 8), seconds)
        for name, fn in predictors.items():  # whole-volume latency: sliding window + blending + flips
            t = time_calls(lambda: fn(vol), seconds=seconds, min_calls=3, warmup=1)
            r[name]["volume_ms_p50"] = float(np.median(t) * 1e3)
        rounds.append(r)
    sp = speed_summary(rounds)
    for name in rows:
        rows[name]["speed"] = sp[name]
        v = [r[name]["volume_ms_p50"] for r in rounds]
        vt = [r["torch fp32 eager"]["volume_ms_p50"] / r[name]["volume_ms_p50"] for r in rounds]
        rows[name]["speed"]["volume_ms_p50"] = float(np.median(v))
        rows[name]["speed"]["volume_speedup"] = float(np.median(vt))
        rows[name]["speed"]["volume_speedup_range"] = [float(min(vt)), float(max(vt))]
        rows[name]["flops_ratio"] = flops / rows[name]["flops"]
    info = json.loads((run / "run.json").read_text())
    return {"dataset": "hippocampus", "seed": seed, "budget_s": budget, "timings_s": timings,
            "train_seconds": info.get("train_seconds"), "patch": list(shape[1:]), "volume_shape": list(vol.shape[1:]),
            "postprocess": list(sg.postprocess), "tta_flip_axes": list(sg.tta_flip_axes),
            "n_test": len(data.images), "variants": rows}


# -- report -----------------------------------------------------------------------------------------
def ci(m: dict) -> str:
    return f"{m['value']:.4f} [{m['ci_low']:.4f}, {m['ci_high']:.4f}]"


def rng_s(r) -> str:
    return f"{r[0]:.2f}-{r[1]:.2f}"


def share_line(r: dict) -> list[str]:
    """What other processes took of the CPU while this model was trained and timed (if recorded)."""
    c = r.get("cpu_share")
    if not c or "other_share" not in c:
        return []
    return [f"CPU while this model was trained and timed: {c['wall_s']:.0f} s wall, this process {c['own_cpu_s']:.0f} "
            f"CPU-s, other processes {c['other_cpu_s']:.0f} CPU-s ({100 * c['other_share']:.1f} % of the cores), "
            f"hypervisor steal {c['steal_s']:.0f} s."]


def write(results: dict, info: dict, args) -> None:
    from meddx.deploy.bench import cpu_peak

    peak = cpu_peak()
    res = HERE / "results"
    res.mkdir(exist_ok=True)
    cmd = "python benchmarks/compression.py " + " ".join(sys.argv[1:])
    lines = ["# Compression benchmark", "",
             f"Command: `{cmd.strip()}` (from the repo root, `.venv` active; data from `MEDDX_DATA_DIR`).", "",
             machine_line(info, f", no GPU; torch threads {info['machine']['torch_threads']}, ONNX Runtime "
                                "intra-op threads = its default (physical cores)"), "",
             f"CPU peak (fp32): {peak.get('peak_gflops')} GFLOP/s = {peak.get('formula')}; {peak.get('why')}; "
             f"clock = /proc/cpuinfo `cpu MHz` (base clock as the VM reports it), vector width and FMA from its flags, "
             f"int8 dot-product instructions (VNNI): {'yes' if peak.get('vnni') else 'no'}.", "",
             "Speeds are medians over the repeats of each measurement in one process, as ratios to torch fp32 eager "
             "of the same repeat (range in brackets). Under each model: the CPU time other processes used while it "
             "was trained and timed (from /proc/stat, less this process's own), and the hypervisor's steal; where "
             "that is more than a few per cent, absolute numbers are noisy and the ratios less so.", ""]
    for flag, r in results.items():
        if flag == "hippocampus":
            continue
        v = r["variants"]
        lines += [f"## {flag} (seed {r['seed']}; teacher {r['budgets_s']['teacher']:.0f} s, students "
                  f"{r['budgets_s']['student']:.0f} s, fine-tuning {r['budgets_s']['finetune']:.0f} s (pruned + distilled "
                  f"{r['budgets_s'].get('kd_finetune', r['budgets_s']['finetune']):.0f} s) of training; "
                  f"{r.get('date', '')}, commit {r.get('commit', '')})", "",
                  "| variant | test AUC [95% CI] | Δ AUC (points) | p vs teacher | params | MFLOPs | FLOPs ÷ | size KiB | "
                  "latency p50 / p99 ms | × speed-up (batch 1) | throughput /s (batch) | × throughput | GFLOP/s (% peak) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, x in v.items():
            s = x["speed"]
            g = x["flops"] * s["throughput"] / 1e9
            pk = f" ({100 * g / peak['peak_gflops']:.1f} %)" if peak.get("peak_gflops") else ""
            p = "—" if x["p_vs_teacher"] is None else f"{x['p_vs_teacher']:.3f}"
            lines.append(f"| {name} | {ci(x['test_auc'])} | {x['auc_drop_points']:+.2f} | {p} | {x['params']:,} | "
                         f"{x['flops'] / 1e6:.2f} | {x['flops_ratio']:.1f} | {x['file_bytes'] / 1024:.0f} | "
                         f"{s['latency_ms_p50']:.3f} / {s['latency_ms_p99']:.3f} | {s['latency_speedup']:.2f} "
                         f"({rng_s(s['latency_speedup_range'])}) | {s['throughput']:.0f} ({s['best_batch']}) | "
                         f"{s['throughput_ratio']:.2f} ({rng_s(s['throughput_ratio_range'])}) | {g:.2f}{pk} |")
        i8 = v["int8"]
        pdi = v[f"{PD} + int8"]
        pd = v.get(PD, pdi)  # runs before 2026-12-02 had only the int8 row
        sa, sd = v["student alone"], v["distilled student"]
        lines += ["", "Bars:",
                  f"* int8: throughput × {i8['speed']['throughput_ratio']:.2f} (bar ≥ 4), AUC lost "
                  f"{i8['auc_drop_points']:.2f} points (bar ≤ 0.5): "
                  f"**{'met' if i8['speed']['throughput_ratio'] >= 4 and i8['auc_drop_points'] <= 0.5 else 'not met'}**.",
                  f"* pruned + distilled: {pd['flops_ratio']:.1f}x fewer FLOPs (bar ≥ 10), AUC lost "
                  f"{pd['auc_drop_points']:.2f} points (bar ≤ 1): "
                  f"**{'met' if pd['flops_ratio'] >= 10 and pd['auc_drop_points'] <= 1 else 'not met'}**; "
                  f"with int8 on top: {pdi['auc_drop_points']:.2f} points lost, throughput × "
                  f"{pdi['speed']['throughput_ratio']:.2f}.",
                  f"* distillation: the student `{r['student']}` reaches test AUC {sd['test_auc']['value']:.4f} with "
                  f"the teacher's soft labels against {sa['test_auc']['value']:.4f} alone (same seed, budget and "
                  f"epochs sized to the budget).", *share_line(r), ""]
    if "hippocampus" in results:
        r = results["hippocampus"]
        lines += [f"## Hippocampus 3D segmenter (MSD Task04; {r['n_test']} test cases; seed {r['seed']}; "
                  f"{r['budget_s']:.0f} s training budget, a short run; {r.get('date', '')}, commit "
                  f"{r.get('commit', '')})", "",
                  f"Sliding window {r['patch']} (overlap 0.5, Gaussian blending), flips along axes "
                  f"{r['tta_flip_axes']}, post-processing {r['postprocess'] or 'none'}; whole-volume latency on a "
                  f"median test volume {r['volume_shape']}; window throughput at batch 1-8.", "",
                  "| variant | test mean Dice [95% CI] | Δ Dice (points) | params | GFLOPs / window | size KiB | "
                  "volume ms | × (volume) | windows/s (batch) | × throughput | GFLOP/s (% peak) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, x in r["variants"].items():
            s = x["speed"]
            g = x["flops"] * s["throughput"] / 1e9
            pk = f" ({100 * g / peak['peak_gflops']:.1f} %)" if peak.get("peak_gflops") else ""
            lines.append(f"| {name} | {ci(x['test_dice'])} | {x['dice_drop_points']:+.2f} | {x['params']:,} | "
                         f"{x['flops'] / 1e9:.3f} | {x['file_bytes'] / 1024:.0f} | {s['volume_ms_p50']:.0f} | "
                         f"{s['volume_speedup']:.2f} ({rng_s(s['volume_speedup_range'])}) | {s['throughput']:.1f} "
                         f"({s['best_batch']}) | {s['throughput_ratio']:.2f} ({rng_s(s['throughput_ratio_range'])}) | "
                         f"{g:.2f}{pk} |")
        lines += ["", *share_line(r)]
    lines += ["References: " + "; ".join(REFERENCE.values()) + ".", ""]
    (res / "compression.md").write_text("\n".join(lines))
    (res / "compression.json").write_text(json.dumps({"command": cmd, **info, "cpu_peak": peak,
                                                      "results": results, "reference": REFERENCE},
                                                     indent=2, default=str))
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["pneumoniamnist", "breastmnist", "hippocampus"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.5, help="timing length of each speed measurement")
    ap.add_argument("--budget-scale", type=float, default=1.0)
    ap.add_argument("--hippo-budget", type=float, default=300.0)
    ap.add_argument("--merge", action="store_true", help="keep earlier results of datasets not run now")
    args = ap.parse_args()
    from meddx.training.run import machine, versions

    import onnxruntime

    info = {"machine": machine(), "versions": {**versions(), "onnxruntime": onnxruntime.__version__}}
    results = {}
    if args.merge and (HERE / "results" / "compression.json").exists():
        results = json.loads((HERE / "results" / "compression.json").read_text())["results"]
    stamp = {"date": _dt.date.today().isoformat(), "commit": COMMIT}
    with tempfile.TemporaryDirectory(prefix="meddx-compression-") as td:
        for flag in args.datasets:
            print(f"{flag} ...", flush=True)
            work = Path(td) / flag
            work.mkdir()
            with CpuShare() as share:
                if flag == "hippocampus":
                    results[flag] = {**hippocampus(work, args.seed, args.hippo_budget * args.budget_scale,
                                                   args.repeats, args.seconds), **stamp}
                else:
                    results[flag] = {**classification(flag, work, args.seed, args.budget_scale, args.repeats,
                                                      args.seconds), **stamp}
            results[flag]["cpu_share"] = share.result
    write(results, info, args)


if __name__ == "__main__":
    main()
