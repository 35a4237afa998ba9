#!/usr/bin/env python
"""Synthetic minority samples: the conditional GAN on MedMNIST, measured by its quality check.

Writes benchmarks/results/synthesis.md and .json (and a PNG of real and generated images per
dataset). For BreastMNIST (minority: malignant, class 0) and PneumoniaMNIST (minority:
normal, class 0), and AdrenalMNIST3D (minority: hyperplasia, class 1) with ``--with-3d``:

* the GAN trains on the official training split only (images /255, then standardised with the
  training split's mean and sd, as the plan does), a fixed number of generator steps per seed
  (not a wall-clock budget, so runs are comparable on a loaded machine; wall and CPU seconds
  are recorded);
* as many minority images as the training split has are generated and ``quality_check``
  measures them against the training split (FD ratio, the real-data classifier's accuracy on
  the fakes beside its held-out accuracy on real images of the class, memorised share) and
  applies the pass rule;
* the check itself is calibrated on the same data (seed 0): held-out real images of the class
  (the validation split) should pass; copies of training images, images of the other class
  labelled as the minority, and Gaussian noise should each fail.

``--calibration-only`` re-runs only the calibration (a minute) and keeps the GAN runs of the results
file; ``--merge`` keeps the runs and calibration of datasets not named. Every row records the date,
commit, command and pass rule it was measured under, and the tables name them.

Usage: python benchmarks/synthesis.py [--seeds 0 1 2] [--steps 1500] [--datasets ...] [--with-3d] [--threads 2]
                                      [--calibration-only] [--merge]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from _common import DATA, HERE, git_commit, machine_line

COMMIT = git_commit()
MINORITY = {"breastmnist": 0, "pneumoniamnist": 0, "adrenalmnist3d": 1}


def load(flag: str):
    import torch

    d = np.load(DATA / "medmnist" / f"{flag}.npz")
    tr = d["train_images"].astype(np.float32) / 255.0
    va = d["val_images"].astype(np.float32) / 255.0
    mean, sd = float(tr.mean()), float(tr.std())
    x = torch.from_numpy((tr - mean) / sd)[:, None]
    vx = torch.from_numpy((va - mean) / sd)[:, None]
    y = torch.from_numpy(d["train_labels"].reshape(-1).astype(np.int64))
    vy = torch.from_numpy(d["val_labels"].reshape(-1).astype(np.int64))
    return x, y, vx, vy


def summarise(c: dict) -> dict:
    return {k: c[k] for k in ("n_fake", "fd_ratio", "fd_fake", "fd_real", "fake_accuracy", "real_accuracy",
                              "n_real_heldout", "accuracy_margin", "memorised_share", "memorised_share_allowed",
                              "nn_fake_median", "nn_real_median", "passed", "failed")}


def gan_runs(flag: str, seeds, steps: int, check_kw: dict) -> tuple[list[dict], object]:
    import torch

    from meddx.data.synthesis import ConditionalGAN, quality_check

    x, y, _, _ = load(flag)
    dims = x.ndim - 2
    cls = MINORITY[flag]
    n_min = int((y == cls).sum())
    bs = 64 if dims == 2 else 16
    epochs = max(1, int(np.ceil(steps / max(1, len(y) // bs))))
    runs, first = [], None
    for seed in seeds:
        t0, c0 = time.perf_counter(), time.process_time()
        gan = ConditionalGAN(dims, 1, x.shape[-1], 2, epochs=epochs, batch_size=bs, time_budget_s=None,
                             seed=seed).fit(x, y)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        fake = gan.sample(n_min, cls)
        t1 = time.perf_counter()
        r = quality_check(x, y, fake, torch.full((n_min,), cls), seed=seed, **check_kw)
        row = {"dataset": flag, "seed": seed, "steps": gan.steps_, "epochs": gan.epochs_run_,
               "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1),
               "check_wall_s": round(time.perf_counter() - t1, 1),
               "loss_d_last": gan.history_[-1]["loss_d"], "loss_g_last": gan.history_[-1]["loss_g"],
               "classifier_heldout_accuracy": r["classifier"]["heldout_accuracy"], **summarise(r["classes"][cls]),
               "passed_all": r["passed"], **provenance()}
        print(json.dumps(row), flush=True)
        runs.append(row)
        if first is None:
            first = (x, y, fake, cls)
    return runs, first


def calibration(flag: str, check_kw: dict) -> list[dict]:
    import torch

    from meddx.data.synthesis import quality_check

    x, y, vx, vy = load(flag)
    cls = MINORITY[flag]
    other = 1 - cls
    n = int(min((vy == cls).sum(), 200))
    gen = torch.Generator().manual_seed(0)
    cases = {
        "held-out real images of the class (validation split)": vx[vy == cls][:n],
        "copies of training images (+ noise sd 0.01)": x[y == cls][torch.randperm(int((y == cls).sum()), generator=gen)[:n]]
        + 0.01 * torch.randn((n,) + tuple(x.shape[1:]), generator=gen),
        "images of the other class labelled as this one": vx[vy == other][:n] if int((vy == other).sum()) >= n
        else x[y == other][:n],
        "Gaussian noise (mean 0, sd 1)": torch.randn((n,) + tuple(x.shape[1:]), generator=gen),
    }
    out = []
    for name, fx in cases.items():
        r = quality_check(x, y, fx, torch.full((len(fx),), cls), seed=0, **check_kw)
        row = {"dataset": flag, "case": name, **summarise(r["classes"][cls]), **provenance()}
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def sample_png(flag: str, first, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y, fake, cls = first
    real = x[y == cls][:8]
    fk = fake[:8]
    if x.ndim == 5:  # 3D: the middle slice
        real, fk = real[:, :, real.shape[2] // 2], fk[:, :, fk.shape[2] // 2]
    fig, axes = plt.subplots(2, 8, figsize=(8, 2.3))
    for i in range(8):
        for row, src in ((0, real), (1, fk)):
            axes[row, i].imshow(src[i, 0].numpy(), cmap="gray", vmin=float(x.min()), vmax=float(x.max()))
            axes[row, i].axis("off")
    axes[0, 0].set_title("real", fontsize=8, loc="left")
    axes[1, 0].set_title("generated (seed 0)", fontsize=8, loc="left")
    fig.suptitle(f"{flag}, class {cls}", fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)


def fmt(v, sd=None, p=3):
    return f"{v:.{p}f}" + (f" ± {sd:.{p}f}" if sd is not None else "")


def rule_text(rule: dict) -> str:
    z = rule.get("z")
    acc = f"{rule['class_accuracy_margin']:g}" + (f" (or {z:g} standard errors of the difference, if larger)" if z else "")
    mem = f"{rule['memorised_share_max']:g}" + (f" (or {rule['memorisation_quantile']:g} + {z:g} binomial standard "
                                                "errors over the fakes, if larger)" if z else "")
    return (f"FD ratio <= {rule['fd_ratio_max']:g}, fake accuracy >= held-out real accuracy - {acc}, memorised "
            f"share <= {mem} (nearest training image closer than the {rule['memorisation_quantile']:.0%} quantile "
            "of real leave-one-out distances)")


def first_per_dataset(rows: list[dict]) -> dict[str, dict]:
    """Each dataset's first row (it carries the provenance), in the tables' order of datasets."""
    first: dict[str, dict] = {}
    for r in rows:
        first.setdefault(r["dataset"], r)
    return first


def provenance() -> dict:
    from meddx.data.synthesis import PASS_RULE

    return {"date": time.strftime("%Y-%m-%d"), "commit": COMMIT,
            "command": "python benchmarks/synthesis.py " + " ".join(sys.argv[1:]), "pass_rule": dict(PASS_RULE)}


def load_saved() -> tuple[list[dict], list[dict]]:
    """Runs and calibration rows of results/synthesis.json, each with its provenance (rows written before
    provenance was kept per row take the file's own, or ``runs_kept_from`` for its runs)."""
    path = HERE / "results" / "synthesis.json"
    if not path.exists():
        sys.exit(f"{path} not found: run the benchmark without --merge / --calibration-only first")
    saved = json.loads(path.read_text())
    top = {k: saved.get(k) for k in ("date", "commit", "command", "pass_rule")}
    runs = [{**(saved.get("runs_kept_from") or top), **r} for r in saved["runs"]]
    calib = [{**top, **r} for r in saved["calibration"]]
    return runs, calib


def write(runs, calib, args) -> None:
    from meddx.data.synthesis import PASS_RULE
    from meddx.training.run import machine, versions

    info = {"machine": machine(), "versions": versions()}
    cmd = "python benchmarks/synthesis.py " + " ".join(sys.argv[1:])
    L = ["# Synthetic minority samples (conditional GAN) and their quality check", "",
         f"Command: `{cmd.strip()}` (from the repo root, `.venv` active; data from `MEDDX_DATA_DIR`).", "",
         machine_line(info, f", torch threads {args.threads}")
         + f" Date {time.strftime('%Y-%m-%d')}, commit {COMMIT}.", "",
         f"Pass rule (`PASS_RULE`, `pass_margins` in `meddx.data.synthesis`): {rule_text(PASS_RULE)}.", "",
         "## GAN runs (mean ± sd over seeds)", "",
         *[f"{flag}: `{r0['command']}` ({r0['date']}, commit {r0['commit']})"
           + ("." if r0["pass_rule"] == PASS_RULE else f", checked under the rule of that time: {rule_text(r0['pass_rule'])}.")
           for flag, r0 in first_per_dataset(runs).items()], "",
         "| dataset | class | seeds | steps | train s (wall / CPU) | FD ratio | fake acc | real held-out acc | memorised share | passed |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for flag in dict.fromkeys(r["dataset"] for r in runs):
        rs = [r for r in runs if r["dataset"] == flag]

        def ms(k, rs=rs):
            v = np.array([r[k] for r in rs], dtype=float)
            return fmt(v.mean(), v.std(ddof=1) if len(v) > 1 else None)

        L.append(f"| {flag} | {MINORITY[flag]} | {len(rs)} | {rs[0]['steps']} | "
                 f"{np.mean([r['train_wall_s'] for r in rs]):.0f} / {np.mean([r['train_cpu_s'] for r in rs]):.0f} | "
                 f"{ms('fd_ratio')} | {ms('fake_accuracy')} | {ms('real_accuracy')} | {ms('memorised_share')} | "
                 f"{sum(r['passed'] for r in rs)} of {len(rs)} |")
    L += ["", "Every run:", "", "| dataset | seed | FD fake / FD real | fake acc | memorised | failed checks |",
          "|---|---|---|---|---|---|"]
    for r in runs:
        L.append(f"| {r['dataset']} | {r['seed']} | {r['fd_fake']:.3f} / {r['fd_real']:.3f} | {r['fake_accuracy']:.3f} | "
                 f"{r['memorised_share']:.3f} | {'; '.join(r['failed']) or 'none'} |")
    L += ["", "## Calibration of the check (seed 0): what passes and what fails", "",
          "| dataset | images presented as the class | n | FD ratio | fake acc | real held-out acc (n) | allowed drop "
          "| memorised share (allowed) | passed |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in calib:
        L.append(f"| {r['dataset']} | {r['case']} | {r['n_fake']} | {r['fd_ratio']:.2f} | {r['fake_accuracy']:.3f} | "
                 f"{r['real_accuracy']:.3f} ({r.get('n_real_heldout', '?')}) | {r.get('accuracy_margin', float('nan')):.3f} "
                 f"| {r['memorised_share']:.3f} ({r.get('memorised_share_allowed', float('nan')):.3f}) | "
                 f"{'yes' if r['passed'] else 'no: ' + '; '.join(r['failed'])} |")
    L += ["", *[f"{flag}: `{r0['command']}` ({r0['date']}, commit {r0['commit']})."
                for flag, r0 in first_per_dataset(calib).items()]]
    L += ["", "Samples: " + ", ".join(f"`results/synthesis_{f}.png`" for f in dict.fromkeys(r["dataset"] for r in runs)),
          ""]
    res = HERE / "results"
    (res / "synthesis.md").write_text("\n".join(L) + "\n")
    (res / "synthesis.json").write_text(json.dumps({"command": cmd, **info, "date": time.strftime("%Y-%m-%d"),
                                                    "commit": COMMIT, "threads": args.threads,
                                                    "pass_rule": PASS_RULE, "runs": runs, "calibration": calib},
                                                   indent=1))
    print("\n".join(L))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["breastmnist", "pneumoniamnist"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=1500, help="Generator steps per 2D run.")
    ap.add_argument("--steps-3d", type=int, default=300)
    ap.add_argument("--with-3d", action="store_true", help="Add AdrenalMNIST3D (one seed).")
    ap.add_argument("--classifier-epochs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calibration-only", action="store_true",
                    help="Re-run the check's calibration only; keep the GAN runs of results/synthesis.json.")
    ap.add_argument("--merge", action="store_true",
                    help="Keep the runs and calibration of datasets not named from results/synthesis.json.")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    (HERE / "results").mkdir(exist_ok=True)
    check_kw = {"classifier_epochs": args.classifier_epochs, "classifier_time_budget_s": None}
    jobs = [(f, args.seeds, args.steps) for f in args.datasets]
    if args.with_3d:
        jobs.append(("adrenalmnist3d", args.seeds[:1], args.steps_3d))
    runs, calib = load_saved() if (args.merge or args.calibration_only) else ([], [])
    for flag, seeds, steps in jobs:
        calib = [r for r in calib if r["dataset"] != flag]
        if not args.calibration_only:
            runs = [r for r in runs if r["dataset"] != flag]
            r, first = gan_runs(flag, seeds, steps, check_kw)
            runs += r
            sample_png(flag, first, HERE / "results" / f"synthesis_{flag}.png")
        calib += calibration(flag, check_kw)
        write(runs, calib, args)  # after every dataset: an interrupted run keeps what it finished


if __name__ == "__main__":
    main()
