#!/usr/bin/env python
"""Denoising benchmark: noise estimation, where classical denoising pays, and the learned denoiser.

Writes benchmarks/results/denoise.md and .json. Three measurements on real images from
MEDDX_DATA_DIR (2D: BreastMNIST and PneumoniaMNIST test images, 28 px; paediatric chest
X-rays (COVID-19 Radiography, viral pneumonia), LGG FLAIR MRI and BUSI ultrasound, central
128 px crops at native resolution; 3D: MSD hippocampus MRI volumes):

1. Noise estimate against known added Gaussian noise: the added sigma is a fraction of the
   image's robust range (p0.5-p99.5), and the estimate (``estimate_noise``) should follow
   sqrt(sigma_0^2 + sigma_added^2), sigma_0 being the estimate without added noise.
2. Where denoising starts to pay: for each added level, each classical denoiser's PSNR and
   SSIM gain against the original image (mean over images); "pays" = the best method gains
   on both. The planner's threshold (``DENOISE_RELATIVE_THRESHOLD``) is the estimated
   relative noise above which it paid on every dataset.
3. The learned self-supervised denoiser (``SelfSupervisedDenoiser``) against median,
   Gaussian, bilateral and NLM on BreastMNIST and PneumoniaMNIST with added noise (sigma 25
   grey levels by default, ``--sigmas``): it trains on the noisy training images only, is scored on noisy test
   images against their originals (PSNR / SSIM, mean with bootstrap 95 % CI over test images,
   3 seeds); and, trained on the images without added noise, how much it changes them
   (SSIM to the input, and the removed residual's standard deviation against the estimated
   noise sigma: about 1 means it removes noise-sized detail only).

Usage: python benchmarks/denoise.py [--learned-3d] [--quick] [--seeds 0 1 2] [--epochs 20] [--sigmas 25] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from _common import DATA, HERE, git_commit, machine_line

COMMIT = git_commit()
METHODS = ("median", "gaussian", "bilateral", "nlm")
LEVELS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12)  # added sigma / robust range


def load_sets(n28: int, nbig: int, n3d: int) -> dict[str, list[np.ndarray]]:
    """Real images as (1, *spatial) float32 raw intensities."""
    from meddx.io import read_image
    from meddx.transforms.intensity import to_channels

    out: dict[str, list[np.ndarray]] = {}
    for flag in ("breastmnist", "pneumoniamnist"):
        d = np.load(DATA / "medmnist" / f"{flag}.npz")
        out[flag] = [im.astype(np.float32)[None] for im in d["test_images"][:n28]]

    def crops(files, channel=None):
        """Central 128 px crops with mostly non-background content, evenly spaced over the files."""
        res = []
        for f in files:
            a = read_image(f).array.astype(np.float32)
            a = a[channel:channel + 1] if channel is not None else to_channels(a, 1)
            h, w = a.shape[1:]
            top, left = max(0, (h - 128) // 2), max(0, (w - 128) // 2)
            c = np.ascontiguousarray(a[:, top:top + 128, left:left + 128])
            if (c > 0.05 * c.max()).mean() > 0.5:  # skip crops that are mostly background (MRI edge slices)
                res.append(c)
        step = max(1, len(res) // nbig)
        return res[::step][:nbig]

    seg = DATA / "seg"
    out["cxr_viral_pneumonia"] = crops(sorted((seg / "covid19_radiography_viral_pneumonia_subset").glob("*/images/*.png")))
    lgg = [f for f in sorted((seg / "lgg_mri_kaggle_3m_subset").glob("*/*.tif")) if not f.name.endswith("_mask.tif")]
    out["lgg_flair"] = crops(lgg, channel=1)
    busi = [f for f in sorted((seg / "busi_subset").glob("*/*.png")) if "_mask" not in f.name]
    out["busi"] = crops(busi)
    vols = sorted((seg / "msd_hippocampus_udacity" / "images").glob("*.nii.gz"))[:n3d]
    out["hippocampus_3d"] = [read_image(f).array.astype(np.float32) for f in vols]
    return out


def robust_range(a: np.ndarray) -> float:
    lo, hi = np.percentile(a, [0.5, 99.5])
    return float(hi - lo)


def add_noise(a: np.ndarray, level: float, rng) -> np.ndarray:
    return (a + rng.normal(0, level * robust_range(a), a.shape)).astype(np.float32)


def psnr_ssim(ref: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rng = float(ref.max() - ref.min()) or 1.0
    ps = peak_signal_noise_ratio(ref[0], out[0], data_range=rng)
    ws = 7 if min(ref.shape[1:]) >= 7 else (min(ref.shape[1:]) // 2) * 2 - 1
    ss = structural_similarity(ref[0], out[0], data_range=rng, win_size=ws)
    return float(ps), float(ss)


def estimation_table(sets, seed: int) -> dict:
    from meddx.transforms.noise import estimate_noise

    rng = np.random.default_rng(seed)
    res = {}
    for name, imgs in sets.items():
        base = np.array([estimate_noise(a) for a in imgs])
        rows = []
        for lv in LEVELS[1:]:
            added = np.array([lv * robust_range(a) for a in imgs])
            noisy = [add_noise(a, lv, rng) for a in imgs]
            est = np.array([estimate_noise(n) for n in noisy])
            expected = np.sqrt(base**2 + added**2)
            est_rel = np.array([estimate_noise(n, relative=True) for n in noisy])
            rows.append({"level": lv, "added_sigma_median": float(np.median(added)),
                         "estimate_median": float(np.median(est)), "ratio_to_expected_median": float(np.median(est / expected)),
                         "ratio_p10": float(np.percentile(est / expected, 10)),
                         "ratio_p90": float(np.percentile(est / expected, 90)),
                         "estimated_relative_median": float(np.median(est_rel))})
        res[name] = {"n": len(imgs), "sigma0_median": float(np.median(base)),
                     "relative0_median": float(np.median([estimate_noise(a, relative=True) for a in imgs])),
                     "levels": rows}
        print(f"[estimate] {name}: " + ", ".join(f"{r['level']}: x{r['ratio_to_expected_median']:.2f}" for r in rows),
              flush=True)
    return res


def threshold_table(sets, seed: int) -> dict:
    from meddx.transforms.denoise import denoise
    from meddx.transforms.noise import estimate_noise

    rng = np.random.default_rng(seed + 1)
    res = {}
    for name, imgs in sets.items():
        rows = []
        for lv in LEVELS:
            noisy = [add_noise(a, lv, rng) if lv > 0 else a for a in imgs]
            est_rel = float(np.median([estimate_noise(n, relative=True) for n in noisy]))
            base = np.array([psnr_ssim(a, n) if lv > 0 else (np.inf, 1.0) for a, n in zip(imgs, noisy)])
            row = {"level": lv, "estimated_relative_median": est_rel, "methods": {}}
            for m in METHODS:
                sc = np.array([psnr_ssim(a, denoise(n, m)) for a, n in zip(imgs, noisy)])
                if lv > 0:
                    row["methods"][m] = {"dpsnr": float(np.mean(sc[:, 0] - base[:, 0])),
                                         "dssim": float(np.mean(sc[:, 1] - base[:, 1]))}
                else:  # without added noise there is no "noisy" baseline: report distance to the original
                    row["methods"][m] = {"psnr_to_original": float(np.mean(sc[:, 0])),
                                         "ssim_to_original": float(np.mean(sc[:, 1])), "dpsnr": None,
                                         "dssim": float(np.mean(sc[:, 1]) - 1.0)}
            if lv > 0:
                best = max(METHODS, key=lambda m: row["methods"][m]["dpsnr"])
                row["best"] = best
                row["pays"] = bool(row["methods"][best]["dpsnr"] > 0 and row["methods"][best]["dssim"] > 0)
            else:
                row["best"], row["pays"] = None, None  # nothing added: "closer to the original" cannot apply
            rows.append(row)
        res[name] = rows
        print(f"[threshold] {name}: " + ", ".join(f"{r['level']}->{r['estimated_relative_median']:.3f} "
                                                  f"{'pays' if r['pays'] else 'no'}" for r in rows), flush=True)
    pairs = [(r["estimated_relative_median"], r["pays"]) for rows in res.values() for r in rows if r["level"] > 0]
    # smallest estimate t such that every measurement above t paid
    not_paying = [e for e, p in pairs if not p]
    t = max(not_paying) if not_paying else 0.0
    return {"datasets": res, "threshold_measured": t,
            "rule": "largest estimated relative noise, over all datasets and added levels, at which no method "
                    "gained both PSNR and SSIM"}


def bootstrap_ci(v: np.ndarray, seed: int = 0, n: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n, len(v)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def learned_table(flags, sigmas, seeds, epochs: int, n_train: int, n_test: int) -> dict:
    import torch

    from meddx.transforms.denoise import denoise
    from meddx.transforms.learned_denoise import SelfSupervisedDenoiser
    from meddx.transforms.noise import estimate_noise

    res = {}
    for flag in flags:
        d = np.load(DATA / "medmnist" / f"{flag}.npz")
        train = d["train_images"][:n_train].astype(np.float32)[:, None]
        test = d["test_images"][:n_test].astype(np.float32)[:, None]
        res[flag] = {"n_train": len(train), "n_test": len(test), "noise": {}}
        for sigma in sigmas:
            rng = np.random.default_rng(100 + int(sigma))
            ntrain = (train + rng.normal(0, sigma, train.shape)).astype(np.float32)
            ntest = (test + rng.normal(0, sigma, test.shape)).astype(np.float32)
            scores = {"noisy": np.array([psnr_ssim(c, n) for c, n in zip(test, ntest)])}
            for m in METHODS:
                scores[m] = np.array([psnr_ssim(c, denoise(n, m)) for c, n in zip(test, ntest)])
            runs = []
            for seed in seeds:
                t0, c0 = time.perf_counter(), time.process_time()
                dn = SelfSupervisedDenoiser(2, 1, epochs=epochs, time_budget_s=None, seed=seed).fit(torch.from_numpy(ntrain))
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                out = dn.transform(torch.from_numpy(ntest)).numpy()
                sc = np.array([psnr_ssim(c, o) for c, o in zip(test, out)])
                scores[f"learned_s{seed}"] = sc
                runs.append({"seed": seed, "psnr": float(sc[:, 0].mean()), "ssim": float(sc[:, 1].mean()),
                             "epochs": dn.epochs_run_, "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1),
                             "loss_first": dn.loss_history_[0], "loss_last": dn.loss_history_[-1]})
                print(f"[learned] {flag} sigma {sigma} seed {seed}: PSNR {runs[-1]['psnr']:.2f} "
                      f"SSIM {runs[-1]['ssim']:.3f} ({wall:.0f} s wall, {cpu:.0f} s CPU)", flush=True)
            table = {}
            for k, sc in scores.items():
                if k.startswith("learned_s"):
                    continue
                table[k] = {"psnr": float(sc[:, 0].mean()), "psnr_ci": bootstrap_ci(sc[:, 0]),
                            "ssim": float(sc[:, 1].mean()), "ssim_ci": bootstrap_ci(sc[:, 1])}
            lp = np.array([r["psnr"] for r in runs])
            ls = np.array([r["ssim"] for r in runs])
            s0 = scores[f"learned_s{seeds[0]}"]
            table["learned"] = {"psnr": float(lp.mean()), "psnr_sd": float(lp.std(ddof=1)) if len(lp) > 1 else 0.0,
                                "ssim": float(ls.mean()), "ssim_sd": float(ls.std(ddof=1)) if len(ls) > 1 else 0.0,
                                "psnr_ci_seed0": bootstrap_ci(s0[:, 0]), "ssim_ci_seed0": bootstrap_ci(s0[:, 1])}
            res[flag]["noise"][str(sigma)] = {"table": table, "runs": runs}
        # no added noise: how much each method changes the original images
        clean = {}
        for m in METHODS:
            outs = [denoise(c, m) for c in test]
            clean[m] = _change_stats(test, outs, estimate_noise)
        dn = SelfSupervisedDenoiser(2, 1, epochs=epochs, time_budget_s=None, seed=seeds[0]).fit(torch.from_numpy(train))
        clean["learned"] = _change_stats(test, list(dn.transform(torch.from_numpy(test)).numpy()), estimate_noise)
        res[flag]["no_added_noise"] = clean
        print(f"[learned] {flag} no added noise: " + ", ".join(f"{k} SSIM {v['ssim_to_input']:.3f} "
                                                              f"resid/sigma {v['residual_over_sigma']:.2f}"
                                                              for k, v in clean.items()), flush=True)
    return res


LAYOUTS_3D = {"full-resolution level (16, 32, 64, 64)": (16, 32, 64, 64),
              "narrow (8, 16, 32, 32)": (8, 16, 32, 32),
              "no full-resolution level (16, 32, 64)": (16, 32, 64)}
CROP_3D = (28, 36, 24)  # central crop of every MSD hippocampus volume (the smallest is 31 x 40 x 24)


def learned_3d_table(seeds, budget_s: float, n_train: int, n_test: int, level: float) -> dict:
    """3D: the learned denoiser's UNet layouts at an equal training time, against 3D median,
    Gaussian and non-local-means filtering, on MSD hippocampus MRI volumes (central crops, each scaled by its
    p99.5) with Gaussian noise of ``level`` x the robust range added; the first ``n_train``
    volumes train, the last ``n_test`` are scored. Also times denoising per volume, the cost
    the classifier's inputs pay once per run and every prediction pays again."""
    import nibabel as nib
    import torch

    from meddx.transforms.denoise import denoise
    from meddx.transforms.learned_denoise import SelfSupervisedDenoiser

    files = sorted((DATA / "seg" / "msd_hippocampus_udacity" / "images").glob("*.nii.gz"))
    vols = []
    for f in files[:n_train] + files[-n_test:]:
        a = np.asarray(nib.load(f).dataobj, dtype=np.float32)
        st = [(s - c) // 2 for s, c in zip(a.shape, CROP_3D)]
        a = a[tuple(slice(o, o + c) for o, c in zip(st, CROP_3D))]
        vols.append((a / max(float(np.percentile(a, 99.5)), 1e-6))[None])
    vols = np.stack(vols).astype(np.float32)
    rng = np.random.default_rng(7)
    noisy = np.stack([add_noise(v, level, rng) for v in vols])
    tr, te, clean_te = noisy[:n_train], noisy[n_train:], vols[n_train:]
    scores = {"noisy": np.array([psnr_ssim(c, n) for c, n in zip(clean_te, te)])}
    for m in ("median", "gaussian", "nlm"):
        t0 = time.perf_counter()
        outs = [denoise(n, m) for n in te]
        scores[m] = np.array([psnr_ssim(c, o) for c, o in zip(clean_te, outs)])
        print(f"[3d] {m}: PSNR {scores[m][:, 0].mean():.2f} ({(time.perf_counter() - t0) / len(te) * 1000:.0f} ms/volume)",
              flush=True)
    table = {k: {"psnr": float(v[:, 0].mean()), "psnr_ci": bootstrap_ci(v[:, 0]), "ssim": float(v[:, 1].mean())}
             for k, v in scores.items()}
    layouts = {}
    for name, feats in LAYOUTS_3D.items():
        runs = []
        for seed in seeds:
            dn = SelfSupervisedDenoiser(3, 1, epochs=10_000, time_budget_s=budget_s, features=feats, seed=seed)
            dn.fit(torch.from_numpy(tr))
            t0 = time.perf_counter()
            out = dn.transform(torch.from_numpy(te)).numpy()
            per_vol = (time.perf_counter() - t0) / len(te)
            sc = np.array([psnr_ssim(c, o) for c, o in zip(clean_te, out)])
            runs.append({"seed": seed, "psnr": float(sc[:, 0].mean()), "ssim": float(sc[:, 1].mean()),
                         "epochs": dn.epochs_run_, "train_wall_s": round(dn.train_seconds_, 1),
                         "denoise_ms_per_volume": round(per_vol * 1000, 1)})
            print(f"[3d] {name} seed {seed}: PSNR {runs[-1]['psnr']:.2f} SSIM {runs[-1]['ssim']:.3f}, "
                  f"{dn.epochs_run_} epochs in {dn.train_seconds_:.0f} s, {per_vol * 1000:.0f} ms/volume", flush=True)
        ps = np.array([r["psnr"] for r in runs])
        layouts[name] = {"features": list(feats), "runs": runs, "psnr": float(ps.mean()),
                         "psnr_sd": float(ps.std(ddof=1)) if len(ps) > 1 else 0.0,
                         "ssim": float(np.mean([r["ssim"] for r in runs])),
                         "epochs": float(np.mean([r["epochs"] for r in runs])),
                         "denoise_ms_per_volume": float(np.mean([r["denoise_ms_per_volume"] for r in runs]))}
    return {"n_train": n_train, "n_test": n_test, "level": level, "budget_s": budget_s, "crop": list(CROP_3D),
            "seeds": list(seeds), "table": table, "layouts": layouts}


def write_3d(res: dict, args) -> None:
    from meddx.training.run import machine, versions

    info = {"machine": machine(), "versions": versions()}
    cmd = "python benchmarks/denoise.py " + " ".join(sys.argv[1:])
    L = ["# Learned denoiser in 3D: UNet layout at an equal training time", "",
         f"Command: `{cmd.strip()}` (from the repo root, `.venv` active; data from `MEDDX_DATA_DIR`).", "",
         machine_line(info, f", torch threads {args.threads}") + f" Date {time.strftime('%Y-%m-%d')}, commit {COMMIT}.",
         "", f"MSD hippocampus MRI: central {' x '.join(map(str, res['crop']))} crops, each scaled by its p99.5; "
         f"Gaussian noise of {res['level']} x the robust range added; the first {res['n_train']} volumes train the "
         f"denoiser (noisy only), the last {res['n_test']} are scored against their originals. Each layout trains "
         f"for {res['budget_s']:.0f} s (seeds {res['seeds']}). PSNR (dB) with bootstrap 95 % CI over volumes; "
         "learned rows: mean ± sd over seeds.", "",
         "| method | PSNR | SSIM | epochs in the budget | denoising, ms per volume |", "|---|---|---|---|---|"]
    for k, t in res["table"].items():
        L.append(f"| {k} | {t['psnr']:.2f} [{t['psnr_ci'][0]:.2f}, {t['psnr_ci'][1]:.2f}] | {t['ssim']:.3f} | | |")
    for k, t in res["layouts"].items():
        L.append(f"| learned, {k} | {t['psnr']:.2f} ± {t['psnr_sd']:.2f} | {t['ssim']:.3f} | {t['epochs']:.1f} | "
                 f"{t['denoise_ms_per_volume']:.0f} |")
    save_results("denoise_3d", L, {"command": cmd, **info, "threads": args.threads, **res})


def save_results(stem: str, lines: list[str], data: dict) -> None:
    """Write ``results/<stem>.md`` (the lines) and ``.json`` (``data`` with the date and commit); print the table."""
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (out / f"{stem}.json").write_text(json.dumps({**data, "date": time.strftime("%Y-%m-%d"), "commit": COMMIT},
                                                 indent=1, default=float))
    print("\n".join(lines))


def _change_stats(test, outs, estimate_noise) -> dict:
    sc = np.array([psnr_ssim(c, o) for c, o in zip(test, outs)])
    resid = np.array([float(np.std(c - o)) for c, o in zip(test, outs)])
    sig = np.array([estimate_noise(c) for c in test])
    ok = sig > 0
    return {"ssim_to_input": float(sc[:, 1].mean()), "psnr_to_input": float(sc[:, 0].mean()),
            "residual_sd_median": float(np.median(resid)), "sigma_est_median": float(np.median(sig)),
            "residual_over_sigma": float(np.median(resid[ok] / sig[ok])) if ok.any() else float("nan")}


def write(results: dict, args) -> None:
    from meddx.training.run import machine, versions

    info = {"machine": machine(), "versions": versions()}
    cmd = "python benchmarks/denoise.py " + " ".join(sys.argv[1:])
    L = ["# Denoising benchmark", "", f"Command: `{cmd.strip()}` (from the repo root, `.venv` active; data from "
         "`MEDDX_DATA_DIR`).", "",
         machine_line(info, f", torch threads {args.threads}")
         + f" Date {time.strftime('%Y-%m-%d')}, commit {COMMIT}. Noise seeds fixed in the script.", ""]
    est = results["estimation"]
    L += ["## 1. Noise estimate against known added noise", "",
          "Gaussian noise with sigma = level x the image's p0.5-p99.5 range is added; the table gives the median "
          "ratio of the estimate to sqrt(sigma_0² + sigma_added²) (1 = exact; p10-p90 in brackets) and, in the "
          "last column, the estimated relative noise (what the planner reads) at each level.", "",
          "| dataset | n | sigma_0 (units) | relative_0 | " + " | ".join(f"level {lv}" for lv in LEVELS[1:]) + " |",
          "|---|---|---|---|" + "---|" * (len(LEVELS) - 1)]
    for name, v in est.items():
        cells = [f"x{r['ratio_to_expected_median']:.2f} [{r['ratio_p10']:.2f}, {r['ratio_p90']:.2f}] "
                 f"(rel {r['estimated_relative_median']:.3f})" for r in v["levels"]]
        L.append(f"| {name} | {v['n']} | {v['sigma0_median']:.3g} | {v['relative0_median']:.3f} | " + " | ".join(cells) + " |")
    thr = results["threshold"]
    L += ["", "## 2. Where denoising starts to pay", "",
          "Mean gain in PSNR (dB) / SSIM against the original image of each classical denoiser (default parameters) "
          "at each added level; at level 0 (nothing added) the distance of the output to the original is shown as "
          "SSIM loss. **pays** = the best method (by PSNR) gains on both.", ""]
    for name, rows in thr["datasets"].items():
        L += [f"**{name}**", "", "| added level | estimated relative noise | " + " | ".join(METHODS) + " | pays? |",
              "|---|---|" + "---|" * len(METHODS) + "---|"]
        for r in rows:
            cells = []
            for m in METHODS:
                v = r["methods"][m]
                cells.append(f"SSIM {v['dssim']:+.3f}" if r["level"] == 0 else f"{v['dpsnr']:+.2f} / {v['dssim']:+.3f}")
            verdict = "-" if r["pays"] is None else ("yes (" + r["best"] + ")" if r["pays"] else "no")
            L.append(f"| {r['level']} | {r['estimated_relative_median']:.3f} | " + " | ".join(cells) + f" | {verdict} |")
        L.append("")
    L += [f"Measured threshold ({thr['rule']}): **{thr['threshold_measured']:.3f}**. "
          "The planner's `DENOISE_RELATIVE_THRESHOLD` is set from it (src/meddx/transforms/noise.py).", ""]
    if "learned" in results:
        L += ["## 3. Learned self-supervised denoiser against classical ones", "",
              f"Trained only on the noisy training images ({args.epochs} epochs, seeds {args.seeds}); scored on "
              "noisy test images against their originals. Mean PSNR (dB) / SSIM with bootstrap 95 % CI over test "
              "images; the learned row gives mean ± sd over seeds (CI of seed "
              f"{args.seeds[0]}).", ""]
        for flag, v in results["learned"].items():
            for sigma, s in v["noise"].items():
                L += [f"**{flag}, sigma {sigma} grey levels** ({v['n_train']} training / {v['n_test']} test images)", "",
                      "| method | PSNR | SSIM |", "|---|---|---|"]
                for k, t in s["table"].items():
                    if k == "learned":
                        L.append(f"| learned (N2V/N2S) | {t['psnr']:.2f} ± {t['psnr_sd']:.2f} [{t['psnr_ci_seed0'][0]:.2f}, "
                                 f"{t['psnr_ci_seed0'][1]:.2f}] | {t['ssim']:.3f} ± {t['ssim_sd']:.3f} |")
                    else:
                        L.append(f"| {k} | {t['psnr']:.2f} [{t['psnr_ci'][0]:.2f}, {t['psnr_ci'][1]:.2f}] | "
                                 f"{t['ssim']:.3f} [{t['ssim_ci'][0]:.3f}, {t['ssim_ci'][1]:.3f}] |")
                r = s["runs"]
                L += ["", "Training: " + "; ".join(f"seed {x['seed']} {x['epochs']} epochs, {x['train_wall_s']} s wall / "
                                                   f"{x['train_cpu_s']} s CPU, masked loss {x['loss_first']:.3f} -> "
                                                   f"{x['loss_last']:.3f}" for x in r) + ".", ""]
            L += [f"**{flag}, no added noise**: how much each method changes the original test images (SSIM to the "
                  "input; residual sd / estimated noise sigma, about 1 = removes noise-sized detail only)", "",
                  "| method | SSIM to input | PSNR to input | residual sd / sigma |", "|---|---|---|---|"]
            for k, t in v["no_added_noise"].items():
                L.append(f"| {k} | {t['ssim_to_input']:.3f} | {t['psnr_to_input']:.2f} | {t['residual_over_sigma']:.2f} |")
            L.append("")
    save_results("denoise", L, {"command": cmd, **info, "threads": args.threads, **results})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Few images and one seed (a smoke run).")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=20, help="Learned denoiser epochs (fixed, not timed).")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[25.0], help="Added noise sd (grey levels) for part 3.")
    ap.add_argument("--n-train", type=int, default=500, help="Noisy training images for the learned denoiser.")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-learned", action="store_true")
    ap.add_argument("--learned-3d", action="store_true",
                    help="Only the 3D learned-denoiser layouts (writes results/denoise_3d.md and .json).")
    ap.add_argument("--budget-3d", type=float, default=120.0, help="Training seconds per 3D layout and seed.")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.learned_3d:
        q = args.quick
        write_3d(learned_3d_table(args.seeds[:1] if q else args.seeds, 10.0 if q else args.budget_3d,
                                  n_train=20 if q else 200, n_test=6 if q else 60, level=0.12), args)
        return
    if args.quick:
        args.seeds, args.epochs = args.seeds[:1], min(args.epochs, 2)
    sets = load_sets(n28=10 if args.quick else 50, nbig=3 if args.quick else 8, n3d=2 if args.quick else 4)
    results = {"estimation": estimation_table(sets, seed=0), "threshold": threshold_table(sets, seed=0)}
    if not args.skip_learned:
        results["learned"] = learned_table(["breastmnist", "pneumoniamnist"], args.sigmas, args.seeds, args.epochs,
                                           n_train=60 if args.quick else args.n_train, n_test=20 if args.quick else 200)
    write(results, args)


if __name__ == "__main__":
    main()
