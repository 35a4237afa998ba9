"""Classification training on in-memory tensors; the shared epoch loop (checkpoints, resume,
time budget, EMA, progress) is ``training.loop.run_epochs``."""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from meddx.losses import create_loss
from meddx.losses.classification import LogitAdjusted
from meddx.planning.plan import Plan
from meddx.training.loop import FitResult, bn_refresh_seconds, run_epochs, training_layout
from meddx.training.optim import create_optimizer, create_scheduler
from meddx.transforms.augment import AugmentRecorder, BatchAugment


def get_device() -> torch.device:
    """CUDA when present, never required."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 256,
                  device: torch.device | None = None, tta_flip_axes: tuple[int, ...] | list[int] = ()) -> np.ndarray:
    """Softmax probabilities for a preprocessed, standardised tensor ``(N, C, ...)``.

    With ``tta_flip_axes`` the probabilities are averaged over the image and its flip
    along each listed spatial axis (test-time augmentation).
    """
    device = device or next(model.parameters()).device
    model.eval()
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size].to(device)
        p = F.softmax(model(xb).float(), dim=1)
        for ax in tta_flip_axes:
            p = p + F.softmax(model(xb.flip(2 + ax)).float(), dim=1)
        out.append((p / (1 + len(tta_flip_axes))).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def val_scores(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """AUC (macro one-vs-rest), accuracy and loss on the validation split."""
    from sklearn.metrics import roc_auc_score

    k = proba.shape[1]
    try:
        auc = roc_auc_score(y, proba[:, 1]) if k == 2 else roc_auc_score(y, proba, multi_class="ovr",
                                                                        labels=list(range(k)))
    except ValueError:  # a class absent from validation: AUC is undefined
        auc = float("nan")
    acc = float((proba.argmax(1) == y).mean())
    loss = float(-np.log(np.clip(proba[np.arange(len(y)), y], 1e-7, 1)).mean())
    return {"auc": float(auc), "accuracy": acc, "loss": loss}


def mixup(x: torch.Tensor, alpha: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mixup (Zhang et al., 2018): ``lam * x + (1 - lam) * x[perm]`` with ``lam ~ Beta(alpha, alpha)``."""
    lam = _beta(alpha, gen)
    perm = torch.randperm(x.shape[0], generator=gen)
    return lam * x + (1 - lam) * x[perm], perm, lam


def cutmix(x: torch.Tensor, alpha: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """CutMix (Yun et al., 2019), 2D and 3D: a box of ``x[perm]`` pasted into each image; ``lam`` is the
    share of each image left untouched (the label weight)."""
    lam = _beta(alpha, gen)
    perm = torch.randperm(x.shape[0], generator=gen)
    spatial = x.shape[2:]
    frac = (1 - lam) ** (1 / len(spatial))  # box side as a fraction of each axis
    sl = [slice(None), slice(None)]
    area = 1.0
    for size in spatial:
        side = int(round(size * frac))
        c = int(torch.randint(0, size, (1,), generator=gen))
        lo, hi = max(0, c - side // 2), min(size, c + side - side // 2)
        sl.append(slice(lo, hi))
        area *= (hi - lo) / size
    out = x.clone()
    out[tuple(sl)] = x[perm][tuple(sl)]
    return out, perm, 1.0 - area


def _beta(alpha: float, gen: torch.Generator) -> float:
    """A Beta(alpha, alpha) draw from the seeded generator (two Gamma draws via numpy's seeded RNG)."""
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    return float(rng.beta(alpha, alpha))


class Trainer:
    """Trains ``model`` on in-memory tensors according to ``plan``.

    The run directory receives ``checkpoints/last.pt`` after every epoch (model,
    optimiser, scheduler, history, best weights) and ``log.jsonl``. All randomness of an
    epoch derives from ``(seed, epoch)``, so ``resume=True`` continues exactly where a
    killed run stopped.
    """

    def __init__(self, plan: Plan, model: nn.Module, run_dir: Path, *, device: torch.device | None = None,
                 progress: bool = True, on_epoch: Callable[[dict], None] | None = None):
        self.plan = plan
        self.device = device or get_device()
        self.model = model.to(self.device)
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.on_epoch = on_epoch
        self.augment = BatchAugment.from_config(plan.augment, plan.data.spatial_dims)
        self.recorder = AugmentRecorder.for_plan(plan, self.run_dir)
        self.loss_fn: nn.Module | None = None  # built from the training labels (``_setup_loss``)
        self._y_train: torch.Tensor | None = None

    def _setup_loss(self, y_train: torch.Tensor) -> None:
        """Build the loss from the plan and the training labels (class weights, focal, logit adjustment)."""
        cfg = self.plan.train
        k = len(self.plan.data.class_names)
        counts = torch.bincount(y_train, minlength=k).float().clamp(min=1)
        w = (counts.sum() / (k * counts)).to(self.device) if cfg.class_weights == "balanced" else None
        kw = {"gamma": cfg.focal_gamma} if cfg.loss == "focal" else {}
        loss = create_loss(cfg.loss, label_smoothing=cfg.label_smoothing, class_weights=w, **kw)
        if cfg.logit_adjust > 0:
            loss = LogitAdjusted(loss, (counts / counts.sum()).to(self.device), cfg.logit_adjust)
        self.loss_fn = loss
        self._y_train = y_train

    # -- pieces -------------------------------------------------------------------------
    def _epoch_len(self, n: int) -> int:
        """Cases an epoch draws: the sampler may change it (over-/under-sampling)."""
        y = self._y_train
        if y is None or self.plan.train.sampler in ("none", "weighted") or len(y) != n:
            return n
        counts = torch.bincount(y)
        counts = counts[counts > 0]
        per = int(counts.max()) if self.plan.train.sampler == "oversample" else int(counts.min())
        return per * len(counts)

    def _steps_per_epoch(self, n: int) -> int:
        bs = self.plan.train.batch_size
        m = self._epoch_len(n)
        return max(1, m // bs) if m >= bs else 1  # drop the ragged last batch (BatchNorm)

    def _epoch_order(self, n: int, g: torch.Generator) -> torch.Tensor:
        """Case order of one epoch under the plan's sampler (``train.sampler``)."""
        sampler = self.plan.train.sampler
        y = self._y_train
        if sampler == "none" or y is None or len(y) != n:
            return torch.randperm(n, generator=g)
        if sampler == "weighted":  # draws with replacement, each class equally likely
            w = 1.0 / torch.bincount(y).float()[y]
            return torch.multinomial(w, n, replacement=True, generator=g)
        per = self._epoch_len(n) // int((torch.bincount(y) > 0).sum())
        parts = []
        for c in torch.unique(y):
            idx = torch.nonzero(y == c).flatten()
            if per <= len(idx):  # undersample (or the majority class when oversampling): no repeats
                parts.append(idx[torch.randperm(len(idx), generator=g)[:per]])
            else:  # oversample: every case once, the rest drawn at random with replacement
                extra = idx[torch.randint(0, len(idx), (per - len(idx),), generator=g)]
                parts.append(torch.cat([idx, extra]))
        order = torch.cat(parts)
        return order[torch.randperm(len(order), generator=g)]

    def _epoch_batches(self, n: int, epoch: int):
        g = torch.Generator().manual_seed(self.plan.seed * 1_000_003 + epoch)
        perm = self._epoch_order(n, g)
        bs = min(self.plan.train.batch_size, len(perm))
        for s in range(self._steps_per_epoch(n)):
            yield perm[s * bs:(s + 1) * bs], g

    def _record(self, idx, params, mix=None) -> None:
        """Keep a batch's augmentation for ``augment.record`` (epoch-loop batches only: they carry ``idx``)."""
        if idx is not None:
            self.recorder.add(self.augment, idx, params, **({"mix": mix} if mix else {}))

    def _loss(self, model, xb, yb, gen, idx=None) -> torch.Tensor:
        """The batch's loss; ``idx`` (its cases' indices) is given by the epoch loop only, whose
        batches the recorder (plan ``augment.record``) writes down."""
        params = None
        if self.augment.active:
            xb, params = self.augment(xb, gen)
        cfg = self.plan.train
        mix = None
        if (cfg.mixup or cfg.cutmix) and float(torch.rand(1, generator=gen)) < cfg.mix_prob:
            use_cut = cfg.cutmix > 0 and (cfg.mixup == 0 or float(torch.rand(1, generator=gen)) < 0.5)
            state = gen.get_state()  # recorded: replaying cutmix/mixup from it redraws the same box and pairs
            xb, perm, lam = (cutmix if use_cut else mixup)(xb, cfg.cutmix if use_cut else cfg.mixup, gen)
            mix = (perm, lam)
        self._record(idx, params, None if mix is None else
                     {"kind": "cutmix" if use_cut else "mixup", "perm": mix[0], "lam": float(mix[1]),
                      "generator_state": state})
        xb, yb = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
        out = model(xb)
        if mix is None:
            return self.loss_fn(out, yb)
        perm, lam = mix
        return lam * self.loss_fn(out, yb) + (1 - lam) * self.loss_fn(out, yb[perm.to(yb.device)])

    def _train_step(self, model, opt, sched, xb, yb, gen) -> float:
        """One optimiser step (the epoch loop does the same; this one serves the timing probe)."""
        loss = self._loss(model, xb, yb, gen)
        if self.plan.optim.l1 > 0:
            loss = loss + self.plan.optim.l1 * sum(p.abs().sum() for p in model.parameters() if p.ndim > 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return float(loss.detach())

    def measure_epoch_seconds(self, x: torch.Tensor, y: torch.Tensor, n_val: int, probe_steps: int = 6) -> float:
        """Time a few steps on a throwaway copy of the model (the real one is untouched)."""
        self._setup_loss(y)
        model = training_layout(copy.deepcopy(self.model)).train()
        opt = create_optimizer(model.parameters(), self.plan.optim)
        sched = create_scheduler(opt, self.plan.schedule, 10, 1)
        gen = torch.Generator().manual_seed(0)
        bs = min(self.plan.train.batch_size, x.shape[0])
        steps = min(probe_steps, self._steps_per_epoch(x.shape[0]))
        times = []
        for s in range(steps + 1):
            idx = torch.randint(0, x.shape[0], (bs,), generator=gen)
            t0 = time.perf_counter()
            self._train_step(model, opt, sched, x[idx], y[idx], gen)
            if s > 0:  # the first step pays one-off allocation costs
                times.append(time.perf_counter() - t0)
        step_s = float(np.median(times)) if times else 0.0
        t0 = time.perf_counter()
        probe = x[: min(x.shape[0], self.plan.train.eval_batch_size)]
        ev = self.plan.evaluate  # validation runs the fixed test-time flips, as ``fit`` validates
        predict_proba(model, probe, self.plan.train.eval_batch_size, self.device,
                      [] if ev.choose_tta else ev.tta_flip_axes)
        val_s = (time.perf_counter() - t0) * max(1.0, n_val / max(1, probe.shape[0]))
        val_s += bn_refresh_seconds(self.plan, lambda: self._loss(model, x[idx], y[idx], gen),
                                    self._steps_per_epoch(x.shape[0]))
        return step_s * self._steps_per_epoch(x.shape[0]) + val_s

    # -- the loop ---------------------------------------------------------------------
    def fit(self, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
            *, resume: bool = False) -> FitResult:
        self._setup_loss(y_train)
        y_val_np = y_val.numpy()
        select = self.plan.train.select_metric
        n = x_train.shape[0]

        def batches(epoch):
            self.recorder.discard()  # what an epoch cut short drew is not part of this one
            for idx, gen in self._epoch_batches(n, epoch):
                yield x_train[idx], y_train[idx], gen, idx
            self.recorder.write(epoch)

        def validate(model):
            ev = self.plan.evaluate  # flips still to be chosen (R16) are tried after training, not here
            proba = predict_proba(model, x_val, self.plan.train.eval_batch_size, self.device,
                                  [] if ev.choose_tta else ev.tta_flip_axes)
            sc = val_scores(y_val_np, proba)
            score = -sc["loss"] if select == "loss" else sc[select]
            if math.isnan(score):
                score = sc["accuracy"]
            return score, {"val_loss": sc["loss"], "val_auc": sc["auc"], "val_accuracy": sc["accuracy"]}

        return run_epochs(self.plan, self.model, self.run_dir, steps_per_epoch=self._steps_per_epoch(n),
                          batches=batches, step=lambda model, b: self._loss(model, *b), validate=validate,
                          select_name=select, resume=resume, progress=self.progress, device=self.device,
                          on_epoch=self.on_epoch)
