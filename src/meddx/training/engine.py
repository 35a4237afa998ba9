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
from meddx.planning.plan import Plan
from meddx.training.loop import FitResult, run_epochs
from meddx.training.optim import create_optimizer, create_scheduler
from meddx.transforms.augment import BatchAugment


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
        self.loss_fn = create_loss(plan.train.loss, label_smoothing=plan.train.label_smoothing)

    def _set_class_weights(self, y_train: torch.Tensor) -> None:
        if self.plan.train.class_weights != "balanced":
            return
        k = len(self.plan.data.class_names)
        counts = torch.bincount(y_train, minlength=k).float().clamp(min=1)
        w = (counts.sum() / (k * counts)).to(self.device)
        self.loss_fn = create_loss(self.plan.train.loss, label_smoothing=self.plan.train.label_smoothing,
                                   class_weights=w)

    # -- pieces -------------------------------------------------------------------------
    def _steps_per_epoch(self, n: int) -> int:
        bs = self.plan.train.batch_size
        return max(1, n // bs) if n >= bs else 1  # drop the ragged last batch (BatchNorm)

    def _epoch_batches(self, n: int, epoch: int):
        g = torch.Generator().manual_seed(self.plan.seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=g)
        bs = min(self.plan.train.batch_size, n)
        for s in range(self._steps_per_epoch(n)):
            yield perm[s * bs:(s + 1) * bs], g

    def _loss(self, model, xb, yb, gen) -> torch.Tensor:
        if self.augment.active:
            xb, _ = self.augment(xb, gen)
        xb, yb = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
        return self.loss_fn(model(xb), yb)

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
        self._set_class_weights(y)
        model = copy.deepcopy(self.model).train()
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
        predict_proba(model, probe, self.plan.train.eval_batch_size, self.device)
        val_s = (time.perf_counter() - t0) * max(1.0, n_val / max(1, probe.shape[0]))
        return step_s * self._steps_per_epoch(x.shape[0]) + val_s

    # -- the loop ---------------------------------------------------------------------
    def fit(self, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
            *, resume: bool = False) -> FitResult:
        self._set_class_weights(y_train)
        y_val_np = y_val.numpy()
        select = self.plan.train.select_metric
        n = x_train.shape[0]

        def batches(epoch):
            for idx, gen in self._epoch_batches(n, epoch):
                yield x_train[idx], y_train[idx], gen

        def validate(model):
            proba = predict_proba(model, x_val, self.plan.train.eval_batch_size, self.device,
                                  self.plan.evaluate.tta_flip_axes)
            sc = val_scores(y_val_np, proba)
            score = -sc["loss"] if select == "loss" else sc[select]
            if math.isnan(score):
                score = sc["accuracy"]
            return score, {"val_loss": sc["loss"], "val_auc": sc["auc"], "val_accuracy": sc["accuracy"]}

        return run_epochs(self.plan, self.model, self.run_dir, steps_per_epoch=self._steps_per_epoch(n),
                          batches=batches, step=lambda model, b: self._loss(model, *b), validate=validate,
                          select_name=select, resume=resume, progress=self.progress, device=self.device,
                          on_epoch=self.on_epoch)
