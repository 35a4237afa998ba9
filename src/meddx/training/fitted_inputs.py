"""Components fitted on the training split before the network trains: the self-supervised
denoiser (plan ``data.learned_denoise``) and GAN minority samples (plan ``train.synthetic``).

Both are fitted on training cases only, charge their time to the run's budget, are saved in
the run directory (so ``--resume`` reuses them rather than refitting) and record what they
did in ``RUN/fitted_inputs.json``, where the PCA head fitted after training (plan
``train.head: pca_linear``) records its fit too.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from meddx.planning.plan import Plan


def _budget(plan: Plan, fraction: float) -> float | None:
    return plan.train.time_budget_s * fraction if plan.train.time_budget_s else None


def record_fit(out: Path, key: str, value: dict | list) -> None:
    """Write ``value`` under ``key`` in ``RUN/fitted_inputs.json``, keeping the other keys."""
    from meddx.training.run import write_json

    p = out / "fitted_inputs.json"
    rec = json.loads(p.read_text()) if p.exists() else {}
    rec[key] = value
    write_json(p, rec)


def _uncharged_seconds(out: Path, key: str) -> float:
    """Seconds a fit recorded under ``key`` spent that the run's time budget was not yet charged with:
    a run killed after saving the fitted component but before its plan.yaml held the reduced budget
    would otherwise get that time back on ``--resume``."""
    p = out / "fitted_inputs.json"
    rec = (json.loads(p.read_text()) if p.exists() else {}).get(key)
    if not isinstance(rec, dict) or rec.get("charged", True):
        return 0.0
    return float(rec.get("seconds", 0.0)) + float(rec.get("denoise_seconds", 0.0))


def mark_charged(out: Path, key: str) -> None:
    """The time of the fit under ``key`` is now out of the budget in the saved plan.yaml."""
    p = out / "fitted_inputs.json"
    rec = json.loads(p.read_text()) if p.exists() else {}
    if isinstance(rec.get(key), dict) and not rec[key].get("charged", True):
        record_fit(out, key, {**rec[key], "charged": True})


def input_fit_seconds(out: Path) -> float | None:
    """Seconds the run spent before training its classifier on fitting inputs (the learned denoiser and its
    pass over the images, the GAN): they came out of the same budget. None when nothing was fitted."""
    p = out / "fitted_inputs.json"
    rec = json.loads(p.read_text()) if p.exists() else {}
    parts = [r for k in ("learned_denoise", "synthetic") if isinstance(r := rec.get(k), dict)]
    seconds = [float(r.get("seconds", 0.0)) + float(r.get("denoise_seconds", 0.0)) for r in parts if "seconds" in r]
    return round(sum(seconds), 1) if seconds else None


def denoise_inputs(plan: Plan, out: Path, x_train: torch.Tensor, x_val: torch.Tensor, log=print,
                   progress: bool = False):
    """Fit the learned denoiser on the training tensor (or, when resuming, load it) and denoise
    both tensors, which the network then trains and is selected on. Returns ``(denoiser, x_train,
    x_val, seconds)``: the seconds of a fit made now, denoising included, which the caller takes
    from the time budget (0 when loaded on resume: the schedule was sized, this cost taken out, the
    first time)."""
    from meddx.training.run import progress_callback
    from meddx.transforms.learned_denoise import SelfSupervisedDenoiser

    cfg = plan.data.learned_denoise
    path = out / "denoiser.pt"
    t0 = time.perf_counter()
    fitted_now = not path.exists()
    if fitted_now:
        den = SelfSupervisedDenoiser(spatial_dims=plan.data.spatial_dims, channels=plan.data.channels,
                                     mask_fraction=cfg.mask_fraction, epochs=cfg.epochs,
                                     time_budget_s=_budget(plan, cfg.budget_fraction), seed=plan.seed)
        den.fit(x_train, progress=progress)
        fit_s = time.perf_counter() - t0
        loss = den.loss_history_
        # recorded before the file is saved: a resumed run that loads the denoiser finds its record
        # (and the seconds its budget still owes, "charged": False until the caller saved the plan)
        rec = {"epochs_run": den.epochs_run_, "seconds": round(fit_s, 1),
               "masked_loss_first": loss[0] if loss else None, "masked_loss_last": loss[-1] if loss else None,
               "charged": False}
        record_fit(out, "learned_denoise", rec)
        den.save(path)
    else:
        den = SelfSupervisedDenoiser.load(path)
        owed = _uncharged_seconds(out, "learned_denoise")  # fitted by a session killed before charging it
    fit_s = time.perf_counter() - t0
    cb, stop = progress_callback(progress, len(x_train) + len(x_val), "denoising")
    try:
        x_train, x_val = den.transform(x_train, progress=cb), den.transform(x_val, progress=cb)
    finally:
        stop()
    spent = time.perf_counter() - t0
    if not fitted_now:
        return den, x_train, x_val, (owed + spent - fit_s) if owed else 0.0
    record_fit(out, "learned_denoise", {**rec, "denoise_seconds": round(spent - fit_s, 1)})
    log(f"learned denoiser: {den.epochs_run_} epochs in {fit_s:.0f} s (masked loss {loss[0]:.4f} -> "
        f"{loss[-1]:.4f}), {len(x_train) + len(x_val)} images denoised in {spent - fit_s:.0f} s")
    return den, x_train, x_val, spent


def synthetic_counts(y: torch.Tensor, target_ratio: float, max_per_real: float) -> dict[int, int]:
    """Fakes to generate per class: up to ``target_ratio`` x the largest class, at most
    ``max_per_real`` per real image of that class."""
    counts = torch.bincount(y).tolist()
    top = max(counts)
    out = {}
    for c, n in enumerate(counts):
        want = int(round(target_ratio * top)) - n
        k = int(min(want, np.floor(max_per_real * n)))
        if k > 0 and n > 0:
            out[c] = k
    return out


def add_synthetic(plan: Plan, out: Path, x_train: torch.Tensor, y_train: torch.Tensor, log=print
                  ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Fit the conditional GAN on the training split, measure its minority samples and add them to the
    training data only if the quality check passes. Returns ``(x, y, seconds spent)``."""
    from meddx.data.synthesis import ConditionalGAN, quality_check

    cfg = plan.train.synthetic
    saved = out / "synthetic.pt"
    if saved.exists():  # resume: the same samples (or the same refusal) as before
        st = torch.load(saved, weights_only=True)
        owed = _uncharged_seconds(out, "synthetic")  # fitted by a session killed before charging it
        if st["x"].shape[0]:
            return torch.cat([x_train, st["x"]]), torch.cat([y_train, st["y"]]), owed
        return x_train, y_train, owed
    t0 = time.perf_counter()
    todo = synthetic_counts(y_train, cfg.target_ratio, cfg.max_per_real)
    if not todo:
        record_fit(out, "synthetic", {"added": 0, "why": "the classes are already balanced to the target ratio"})
        torch.save({"x": x_train[:0], "y": y_train[:0]}, saved)
        return x_train, y_train, 0.0
    size = plan.data.input_size[0]
    budget = _budget(plan, cfg.budget_fraction)
    gan = ConditionalGAN(spatial_dims=plan.data.spatial_dims, channels=plan.data.channels, size=size,
                         n_classes=len(plan.data.class_names), epochs=cfg.epochs,
                         time_budget_s=budget * 0.7 if budget else None, seed=plan.seed).fit(x_train, y_train)
    fx = torch.cat([gan.sample(n, c) for c, n in todo.items()])
    fy = torch.cat([torch.full((n,), c, dtype=torch.long) for c, n in todo.items()])
    check = quality_check(x_train, y_train, fx, fy, seed=plan.seed,
                          classifier_time_budget_s=budget * 0.3 if budget else 60.0)
    spent = time.perf_counter() - t0
    passed = bool(check["passed"])
    rec = {"generated": {plan.data.class_names[c]: n for c, n in todo.items()}, "passed": passed,
           "added": int(fx.shape[0]) if passed else 0, "gan_epochs": gan.epochs_run_, "seconds": round(spent, 1),
           "quality_check": check, "charged": False}  # the caller charges the budget, then marks it
    record_fit(out, "synthetic", rec)
    torch.save({"x": fx if passed else x_train[:0], "y": fy if passed else y_train[:0]}, saved)
    log(f"synthetic samples: {'added' if passed else 'REFUSED by the quality check:'} "
        f"{int(fx.shape[0])} ({', '.join(f'{k}: {v}' for k, v in rec['generated'].items())}) in {spent:.0f} s")
    if not passed:
        return x_train, y_train, spent
    return torch.cat([x_train, fx]), torch.cat([y_train, fy]), spent
