"""Optimisers and per-step learning-rate schedules from the plan."""

from __future__ import annotations

import math

import torch

from meddx.planning.plan import OptimConfig, ScheduleConfig


def create_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.momentum > 0)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(cfg.name)


class LRFactor:
    """Multiplier of the base learning rate at a given optimiser step.

    ``constant`` / ``step`` / ``cosine`` start with a linear warm-up from 1 % over
    ``warmup_epochs``; ``onecycle`` follows Smith's one-cycle shape (30 % rise from 4 %,
    cosine fall to 1e-4), where the rise is its warm-up.
    """

    def __init__(self, cfg: ScheduleConfig, steps_per_epoch: int, epochs: int):
        self.cfg = cfg
        self.total = max(1, steps_per_epoch * epochs)
        self.warmup = min(int(cfg.warmup_epochs * steps_per_epoch), self.total // 2)

    def __call__(self, step: int) -> float:
        c = self.cfg
        if c.name == "onecycle":
            up = max(1, int(0.3 * self.total))
            if step < up:
                return 0.04 + 0.96 * (1 - math.cos(math.pi * step / up)) / 2
            t = (step - up) / max(1, self.total - up)
            return 1e-4 + (1 - 1e-4) * (1 + math.cos(math.pi * min(t, 1.0))) / 2
        if step < self.warmup:
            return 0.01 + 0.99 * step / self.warmup
        t = (step - self.warmup) / max(1, self.total - self.warmup)
        if c.name == "constant":
            return 1.0
        if c.name == "step":
            return c.gamma ** sum(step >= m * self.total for m in c.milestones)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))  # cosine


def create_scheduler(opt: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int, epochs: int):
    factor = LRFactor(cfg, steps_per_epoch, epochs)
    # A plain function (not the callable object) keeps the scheduler's state_dict to
    # numbers only, so checkpoints load with weights_only=True.
    def fn(step):
        return factor(step)

    fn.factor = factor  # so a time-budgeted run can shorten the schedule it follows (not saved in state_dict)
    return torch.optim.lr_scheduler.LambdaLR(opt, fn)


def shorten_schedule(sched, steps_per_epoch: int, epochs: int) -> None:
    """Re-size a running schedule to end after ``epochs`` (the steps taken so far are kept)."""
    f = sched.lr_lambdas[0].factor
    f.total = max(1, steps_per_epoch * epochs)
    f.warmup = min(f.warmup, f.total // 2)
    for group, base in zip(sched.optimizer.param_groups, sched.base_lrs):
        group["lr"] = base * f(sched.last_epoch)
