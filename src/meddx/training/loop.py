"""The epoch loop every task shares: optimiser, schedule, EMA, checkpoints, resume,
early stopping, time budget, JSONL log and the progress bar.

A task supplies three functions: ``batches(epoch)`` yields what ``step`` consumes (all
randomness derived from ``(seed, epoch)``, so a resumed run repeats exactly),
``step(model, batch) -> loss`` computes the training loss, and ``validate(model) ->
(score, fields)`` scores the model on validation data (higher is better).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from meddx.evaluation._checks import atomic_write_bytes, json_text
from meddx.errors import RunError
from meddx.training.checkpoint import load_checkpoint, save_checkpoint
from meddx.training.optim import create_optimizer, create_scheduler, shorten_schedule
from meddx.transforms.augment import AugmentRecorder


@dataclass
class FitResult:
    best_epoch: int
    best_metric: float
    epochs_run: int
    epochs_planned: int
    train_seconds: float
    history: list[dict] = field(default_factory=list)
    stopped_by: str = "completed"


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


BN_REFRESH_BATCHES = 32


@torch.no_grad()
def refresh_batchnorm(model: nn.Module, batches: Iterable[Any], step: Callable[[nn.Module, Any], torch.Tensor],
                      max_batches: int = BN_REFRESH_BATCHES) -> None:
    """Re-estimate ``model``'s BatchNorm running statistics on training batches (forward passes only).

    An EMA of the running statistics describes the raw weights' activations at past steps, not the
    averaged weights' own; with a short horizon (decay 0.99, a few steps per epoch, a large learning
    rate) the mismatch shifted every logit: BreastMNIST 5-fold CV accuracy 0.58, below always
    answering the majority class. SWA re-estimates them for the same reason
    (``torch.optim.swa_utils.update_bn``); ours runs the task's own training step, so it serves every
    task's batch format.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = {m: m.momentum for m in bns}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    was_training = model.training
    model.train()
    for i, batch in enumerate(batches):
        if i >= max_batches:
            break
        step(model, batch)
    for m, mom in momenta.items():
        m.momentum = mom
    model.train(was_training)


def bn_refresh_seconds(plan, forward: Callable[[], Any], steps_per_epoch: int) -> float:
    """Seconds ``refresh_batchnorm`` adds to an epoch under EMA (0 without): one timed forward pass
    of a training batch (``forward()``, no gradients) times the batches it runs."""
    if not plan.train.ema_decay:
        return 0.0
    t0 = time.perf_counter()
    with torch.no_grad():
        forward()
    return (time.perf_counter() - t0) * min(BN_REFRESH_BATCHES, steps_per_epoch)


def channels_last_pays(dims: int, device: torch.device | str = "cpu") -> bool:
    """Whether training a ``dims``-D conv net in channels-last order is used on ``device``.

    3D: always (measured here on an AVX2-only AMD EPYC, 3D small CNN, batch 16 at 28³: 152 against
    216 ms per step). 2D: on CUDA, and on CPUs whose PyTorch kernels use AVX-512, where it was
    measured faster (small CNN 1.4x, MobileNetV2 and EfficientNet-B0 1.5-1.7x). Not on AVX2-only
    CPUs: there it is slower (2D small CNN at 28 px, batch 64: 131 against 99 ms per step), and
    oneDNN 3.12's AVX2 1x1 strided convolution backward (the residual shortcut) corrupts memory
    and hangs for narrow layers in channels-last order (6 -> 6 channels, stride 2, 28 px: the
    pruning and distillation students), which stalled CI.
    """
    return dims == 3 or torch.device(device).type == "cuda" or "AVX512" in torch.backends.cpu.get_cpu_capability()


def training_layout(model: nn.Module, on: bool = True) -> nn.Module:
    """Put a 2D or 3D conv net's weights in channels-last order for training (``on``, where
    :func:`channels_last_pays`) or back in PyTorch's default order; models without convolutions
    are left alone.

    Same arithmetic, other memory order. Inference gains nothing, so the trained model goes back
    to the default order and export, pruning and explanations see the model as built.
    """
    conv = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))), None)
    if conv is None:
        return model
    dims = conv.weight.ndim - 2
    on = on and channels_last_pays(dims, conv.weight.device)
    fmt = (torch.channels_last if dims == 2 else torch.channels_last_3d) if on else torch.contiguous_format
    return model.to(memory_format=fmt)


def run_epochs(plan, model: nn.Module, run_dir: Path, *, steps_per_epoch: int,
               batches: Callable[[int], Iterable[Any]], step: Callable[[nn.Module, Any], torch.Tensor],
               validate: Callable[[nn.Module], tuple[float, dict[str, float]]], select_name: str,
               resume: bool = False, progress: bool = True, device: torch.device | None = None,
               on_epoch: Callable[[dict], None] | None = None) -> FitResult:
    """Train ``model`` for ``plan.train.epochs``; afterwards it holds the best weights.

    ``checkpoints/last.pt`` is written after every epoch (model, optimiser, scheduler,
    history, best weights, EMA) and ``checkpoints/best.pt`` at the end.
    """
    cfg = plan.train
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    log_path = run_dir / "log.jsonl"
    epochs = cfg.epochs
    training_layout(model)
    opt = create_optimizer(model.parameters(), plan.optim)
    sched = create_scheduler(opt, plan.schedule, steps_per_epoch, epochs)
    history: list[dict] = []
    start_epoch, best_metric, best_epoch, bad_epochs, elapsed = 1, -math.inf, 0, 0, 0.0
    best_state = copy.deepcopy(model.state_dict())
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
    eval_model = copy.deepcopy(model) if ema else model
    if resume and ckpt_path.exists():
        st = load_checkpoint(ckpt_path, map_location=device or "cpu")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        history, best_metric, best_epoch = st["history"], st["best_metric"], st["best_epoch"]
        bad_epochs, elapsed, best_state = st["bad_epochs"], st["elapsed"], st["best_model"]
        start_epoch = st["epoch"] + 1
        if st.get("epochs", epochs) != epochs:  # the schedule was shortened to the time budget before the stop
            epochs = st["epochs"]
            shorten_schedule(sched, steps_per_epoch, epochs)
        if ema is not None:
            ema.state = st["ema"]
        if st.get("finished"):
            start_epoch = epochs + 1
    stopped_by = "completed"
    # a schedule shortened to the time budget before the stop stays shortened (and says so at the end)
    shortened = epochs != cfg.epochs
    if resume and ckpt_path.exists() and st.get("finished"):
        stopped_by = st.get("stopped_by", stopped_by)  # why the stopped run ended its training
    # the log holds the epochs the checkpoint holds: an epoch logged but not checkpointed before a kill
    # is run again and logged again, once
    atomic_write_bytes(log_path, "".join(json_text(rec, indent=None) + "\n" for rec in history).encode())
    bar = Progress(progress, total=epochs * steps_per_epoch, completed=(start_epoch - 1) * steps_per_epoch)
    t_start = time.perf_counter() - elapsed
    try:
        for epoch in range(start_epoch, epochs + 1):
            if epoch > epochs:  # the schedule was shortened to the time budget
                break
            torch.manual_seed(plan.seed * 7919 + epoch)  # dropout etc.
            model.train()
            losses = []
            for batch in batches(epoch):
                loss = step(model, batch)
                if plan.optim.l1 > 0:
                    loss = loss + plan.optim.l1 * sum(p.abs().sum() for p in model.parameters() if p.ndim > 1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                if not math.isfinite(losses[-1]):  # the weights are lost: say why now, not after every epoch
                    raise RunError(f"training diverged in epoch {epoch}: the training loss is {losses[-1]}",
                                   fix=f"lower optim.lr (now {plan.optim.lr:g}), or check the images for NaN values")
                if ema is not None:
                    ema.update(model)
                bar.advance(f"epoch {epoch}/{epochs} loss {losses[-1]:.3f}")
            if ema is not None:
                eval_model.load_state_dict(ema.state)
                refresh_batchnorm(eval_model, batches(epoch), step)
            score, fields = validate(eval_model)
            improved = score > best_metric
            if improved:
                best_metric, best_epoch, bad_epochs = score, epoch, 0
                best_state = copy.deepcopy(eval_model.state_dict())
            else:
                bad_epochs += 1
            elapsed = time.perf_counter() - t_start
            rec = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"), **fields,
                   "val_metric": score, "val_metric_name": select_name, "lr": float(opt.param_groups[0]["lr"]),
                   "elapsed_s": round(elapsed, 3), "best": improved}
            history.append(rec)
            with open(log_path, "a") as f:
                f.write(json_text(rec, indent=None) + "\n")
            stop = None
            if cfg.early_stopping_patience and bad_epochs >= cfg.early_stopping_patience and epoch < epochs:
                stop = "early_stopping"
            if cfg.time_budget_s and epoch < epochs:
                per_epoch = elapsed / max(1, len(history))
                if len(history) >= 2:  # the first epoch pays one-off costs: leave it out of the rate
                    per_epoch = (elapsed - history[0]["elapsed_s"]) / (len(history) - 1)
                # the next epochs may run as slowly as the last one did (a CPU that got busier)
                last = elapsed - history[-2]["elapsed_s"] if len(history) >= 2 else per_epoch
                per_epoch = max(per_epoch, last)
                fit = epoch + int((cfg.time_budget_s - elapsed) // max(per_epoch, 1e-9))
                if fit < epochs and len(history) >= 2:
                    # the start-of-run estimate was optimistic (or the CPU got busier): end the
                    # schedule early instead of cutting it off before its learning rate has annealed
                    epochs = max(epoch, fit)
                    shorten_schedule(sched, steps_per_epoch, epochs)
                    bar.set_total(epochs * steps_per_epoch)
                    shortened = True
                if elapsed + per_epoch > cfg.time_budget_s or epochs == epoch:
                    # stop before an epoch that would end past the budget (the bar is a hard limit)
                    stop = "time_budget"
            save_checkpoint(ckpt_path, {
                "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "history": history, "best_metric": best_metric,
                "best_epoch": best_epoch, "bad_epochs": bad_epochs, "elapsed": elapsed, "epochs": epochs,
                "best_model": best_state, "finished": stop is not None or epoch == epochs,
                "stopped_by": stop or "completed",
                "ema": ema.state if ema is not None else None,
                # the averaged weights as validated (BatchNorm refreshed): a snapshot member's weights
                "eval_model": eval_model.state_dict() if ema is not None else None,
            })
            bar.set_note(f"val {select_name} {abs(score):.4f} (best {abs(best_metric):.4f} @ {best_epoch})")
            if on_epoch:
                on_epoch(rec)
            if stop:
                stopped_by = stop
                break
    finally:
        bar.close()
    if shortened and stopped_by == "completed":
        stopped_by = "time_budget (schedule shortened to fit)"
    training_layout(model, on=False)
    model.load_state_dict(best_state)
    save_checkpoint(run_dir / "checkpoints" / "best.pt", {"model": model.state_dict(), "epoch": best_epoch})
    return FitResult(best_epoch=best_epoch, best_metric=float(best_metric), epochs_run=len(history),
                     epochs_planned=cfg.epochs, train_seconds=float(elapsed), history=history, stopped_by=stopped_by)


def measure_epoch_seconds(trainer, train, val, probe_steps: int = 4, val_probe: int = 4) -> float:
    """Seconds per epoch of a task trainer, from a few steps and a partial validation on a
    throwaway copy of its model (the real one is untouched).

    ``trainer`` has ``model``, ``plan``, ``batches(data, epoch)``, ``step(model, batch)``,
    ``validate(model, data)`` and ``steps_per_epoch(n)``; ``val`` has ``head(n)``.
    """
    model = training_layout(copy.deepcopy(trainer.model)).train()
    opt = create_optimizer(model.parameters(), trainer.plan.optim)
    sched = create_scheduler(opt, trainer.plan.schedule, 10, 1)
    times = []
    recorder, trainer.recorder = trainer.recorder, AugmentRecorder(None)  # probe batches are not an epoch
    try:
        for i, batch in enumerate(trainer.batches(train, 10_000)):
            if i > probe_steps:
                break
            t0 = time.perf_counter()
            loss = trainer.step(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if i > 0:  # the first step pays one-off allocation costs
                times.append(time.perf_counter() - t0)
    finally:
        trainer.recorder = recorder
    sub = val.head(val_probe)
    t0 = time.perf_counter()
    trainer.validate(model, sub)
    val_s = (time.perf_counter() - t0) * max(1.0, len(val) / max(1, len(sub)))
    val_s += bn_refresh_seconds(trainer.plan, lambda: trainer.step(model, batch), trainer.steps_per_epoch(len(train)))
    return float(np.median(times) if times else 0.0) * trainer.steps_per_epoch(len(train)) + val_s


class TaskTrainer:
    """Base for trainers on lists of preprocessed cases (segmentation, detection).

    Subclasses define ``batches(data, epoch)``, ``step(model, batch)``,
    ``validate(model, data) -> (score, fields)`` and ``select_name``.
    """

    select_name = "metric"

    def __init__(self, plan, model: nn.Module, run_dir: Path, *, device: torch.device | None = None,
                 progress: bool = True):
        from meddx.training.engine import get_device

        self.plan = plan
        self.device = device or get_device()
        self.model = model.to(self.device)
        self.run_dir = Path(run_dir)
        self.recorder = AugmentRecorder.for_plan(plan, self.run_dir)  # plan augment.record
        self.progress = progress

    def steps_per_epoch(self, n: int) -> int:
        return max(1, int(np.ceil(n / self.plan.train.batch_size)))

    def epoch_indices(self, n: int, bs: int, g: torch.Generator) -> list[list[int]]:
        """Case indices of each batch of an epoch: shuffled, topped up from a new shuffle to fill the last batch."""
        steps = self.steps_per_epoch(n)
        perm = torch.randperm(n, generator=g).tolist()
        while len(perm) < steps * bs:
            perm += torch.randperm(n, generator=g).tolist()
        return [perm[s * bs:(s + 1) * bs] for s in range(steps)]

    def measure_epoch_seconds(self, train, val) -> float:
        return measure_epoch_seconds(self, train, val)

    def fit(self, train, val, *, resume: bool = False) -> FitResult:
        return run_epochs(self.plan, self.model, self.run_dir, steps_per_epoch=self.steps_per_epoch(len(train)),
                          batches=lambda e: self.batches(train, e), step=self.step,
                          validate=lambda m: self.validate(m, val), select_name=self.select_name, resume=resume,
                          progress=self.progress, device=self.device)


class Progress:
    """A rich progress bar with ETA and the live validation metric (no-op when disabled)."""

    def __init__(self, enabled: bool, total: int, completed: int = 0, desc: str = "training"):
        self.enabled = enabled
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as _RichProgress

        self.p = _RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                               TextColumn("{task.fields[note]}"), transient=False)
        self.p.start()
        self.task = self.p.add_task(desc, total=total, completed=completed, note="")

    def advance(self, desc: str) -> None:
        if self.enabled:
            self.p.update(self.task, advance=1, description=desc)

    def set_total(self, total: int) -> None:
        if self.enabled:
            self.p.update(self.task, total=total)

    def set_note(self, note: str) -> None:
        if self.enabled:
            self.p.update(self.task, note=note)

    def close(self) -> None:
        if self.enabled:
            self.p.stop()
