"""The training loop: seeded, checkpointed every epoch, resumable, time-budgeted."""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from meddx.losses import create_loss
from meddx.planning.plan import Plan
from meddx.training.checkpoint import load_checkpoint, save_checkpoint
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


class EMA:
    """Exponential moving average of a model's parameters and buffers (ours: a few lines)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.state[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)
            else:
                self.state[k].copy_(v)


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


@dataclass
class FitResult:
    best_epoch: int
    best_metric: float
    epochs_run: int
    epochs_planned: int
    train_seconds: float
    history: list[dict] = field(default_factory=list)
    stopped_by: str = "completed"


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

    def _train_step(self, model, opt, sched, xb, yb, gen) -> float:
        if self.augment.active:
            xb, _ = self.augment(xb, gen)
        xb, yb = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
        logits = model(xb)
        loss = self.loss_fn(logits, yb)
        if self.plan.optim.l1 > 0:
            loss = loss + self.plan.optim.l1 * sum(p.abs().sum() for n, p in model.named_parameters()
                                                   if p.ndim > 1)
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
        cfg = self.plan.train
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._set_class_weights(y_train)
        ckpt_path = self.run_dir / "checkpoints" / "last.pt"
        log_path = self.run_dir / "log.jsonl"
        n = x_train.shape[0]
        epochs = cfg.epochs
        steps = self._steps_per_epoch(n)
        model = self.model
        opt = create_optimizer(model.parameters(), self.plan.optim)
        sched = create_scheduler(opt, self.plan.schedule, steps, epochs)
        history: list[dict] = []
        start_epoch, best_metric, best_epoch, bad_epochs, elapsed = 1, -math.inf, 0, 0, 0.0
        best_state = copy.deepcopy(model.state_dict())
        ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
        eval_model = copy.deepcopy(model) if ema else model
        if resume and ckpt_path.exists():
            st = load_checkpoint(ckpt_path, map_location=self.device)
            model.load_state_dict(st["model"])
            opt.load_state_dict(st["optimizer"])
            sched.load_state_dict(st["scheduler"])
            history, best_metric, best_epoch = st["history"], st["best_metric"], st["best_epoch"]
            bad_epochs, elapsed, best_state = st["bad_epochs"], st["elapsed"], st["best_model"]
            start_epoch = st["epoch"] + 1
            if ema is not None:
                ema.state = st["ema"]
            if st.get("finished"):
                start_epoch = epochs + 1
        y_val_np = y_val.numpy()
        select = cfg.select_metric
        stopped_by = "completed"
        bar = _Progress(self.progress, total=epochs * steps, completed=(start_epoch - 1) * steps)
        t_start = time.perf_counter() - elapsed
        try:
            for epoch in range(start_epoch, epochs + 1):
                torch.manual_seed(self.plan.seed * 7919 + epoch)  # dropout etc.
                model.train()
                losses = []
                for idx, gen in self._epoch_batches(n, epoch):
                    losses.append(self._train_step(model, opt, sched, x_train[idx], y_train[idx], gen))
                    if ema is not None:
                        ema.update(model)
                    bar.advance(f"epoch {epoch}/{epochs} loss {losses[-1]:.3f}")
                if ema is not None:
                    eval_model.load_state_dict(ema.state)
                proba = predict_proba(eval_model, x_val, cfg.eval_batch_size, self.device,
                                      self.plan.evaluate.tta_flip_axes)
                sc = val_scores(y_val_np, proba)
                score = -sc["loss"] if select == "loss" else sc[select]
                if math.isnan(score):
                    score = sc["accuracy"]
                improved = score > best_metric
                if improved:
                    best_metric, best_epoch, bad_epochs = score, epoch, 0
                    best_state = copy.deepcopy(eval_model.state_dict())
                else:
                    bad_epochs += 1
                elapsed = time.perf_counter() - t_start
                rec = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": sc["loss"],
                       "val_auc": sc["auc"], "val_accuracy": sc["accuracy"], "val_metric": score,
                       "val_metric_name": select, "lr": float(opt.param_groups[0]["lr"]),
                       "elapsed_s": round(elapsed, 3), "best": improved}
                history.append(rec)
                with open(log_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                stop = None
                if cfg.early_stopping_patience and bad_epochs >= cfg.early_stopping_patience:
                    stop = "early_stopping"
                if cfg.time_budget_s and epoch < epochs:
                    per_epoch = elapsed / max(1, len(history))
                    if elapsed + per_epoch > cfg.time_budget_s * 1.03:
                        stop = "time_budget"
                save_checkpoint(ckpt_path, {
                    "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "history": history, "best_metric": best_metric,
                    "best_epoch": best_epoch, "bad_epochs": bad_epochs, "elapsed": elapsed,
                    "best_model": best_state, "finished": stop is not None or epoch == epochs,
                    "ema": ema.state if ema is not None else None,
                })
                bar.set_note(f"val {select} {sc[select] if select != 'loss' else sc['loss']:.4f} "
                             f"(best {abs(best_metric):.4f} @ {best_epoch})")
                if self.on_epoch:
                    self.on_epoch(rec)
                if stop:
                    stopped_by = stop
                    break
        finally:
            bar.close()
        model.load_state_dict(best_state)
        save_checkpoint(self.run_dir / "checkpoints" / "best.pt", {"model": best_state, "epoch": best_epoch})
        return FitResult(best_epoch=best_epoch, best_metric=float(best_metric), epochs_run=len(history),
                         epochs_planned=epochs, train_seconds=float(elapsed), history=history,
                         stopped_by=stopped_by)


class _Progress:
    """A rich progress bar with ETA and the live validation metric (no-op when disabled)."""

    def __init__(self, enabled: bool, total: int, completed: int = 0):
        self.enabled = enabled
        self.note = ""
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                          TextColumn("{task.fields[note]}"), transient=False)
        self.p.start()
        self.task = self.p.add_task("training", total=total, completed=completed, note="")

    def advance(self, desc: str) -> None:
        if self.enabled:
            self.p.update(self.task, advance=1, description=desc)

    def set_note(self, note: str) -> None:
        if self.enabled:
            self.p.update(self.task, note=note)

    def close(self) -> None:
        if self.enabled:
            self.p.stop()
