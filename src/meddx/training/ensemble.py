"""Ensembles of classifiers (plan ``ensemble``): members trained one after another inside the
run's time budget, each in ``RUN/members/<i>/`` with its own checkpoints (so ``--resume`` skips
finished members and continues a killed one), then joined into one ``EnsembleModel``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from meddx.models.ensemble import EnsembleModel
from meddx.planning.plan import EnsembleConfig, Plan
from meddx.training.checkpoint import load_checkpoint, save_checkpoint
from meddx.training.loop import FitResult


def n_members(plan: Plan) -> int:
    return plan.ensemble.members if plan.ensemble.kind != "none" else 1


def member_plan(plan: Plan, i: int) -> Plan:
    """Plan of member ``i``: its own seed, a share of the time budget, no ensemble of its own.

    A snapshot member continues the previous one's weights, so its seed only draws the batch order,
    augmentation, mixup and dropout of its cycle: with the run's seed every cycle would replay the
    first one's draws (the engine seeds each epoch from ``(seed, epoch)``). Its cycle runs to the
    end (no early stopping): the snapshot is taken at the learning-rate minimum."""
    mp = plan.model_copy(deep=True)
    k = n_members(plan)
    mp.seed = plan.seed + 1009 * i
    if plan.train.time_budget_s:
        mp.train.time_budget_s = plan.train.time_budget_s / k
    if plan.ensemble.kind == "snapshot":
        mp.train.early_stopping_patience = None
    mp.ensemble = EnsembleConfig()
    return mp


def groups_per_class(y: np.ndarray, groups=None) -> np.ndarray:
    """Distinct patients (with ``groups``; else cases) of each class ``0..max(y)``."""
    y = np.asarray(y)
    keys = np.arange(len(y)) if groups is None else np.asarray([str(g) for g in groups])
    return np.array([len(np.unique(keys[y == c])) for c in range(int(y.max()) + 1)])


def kfold_splits(y: np.ndarray, k: int, seed: int, groups=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(fit, held_out)`` indices of each of k folds: stratified by ``y`` when every class has k
    cases, else plain shuffled folds. With ``groups`` (one patient key per case) in which some
    patient has several cases, the folds are grouped so that no patient is on both sides
    (``StratifiedGroupKFold``); all-distinct groups give exactly the ungrouped folds."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    from meddx.errors import PlanError

    y = np.asarray(y)
    idx = np.arange(len(y))
    counts = np.bincount(y)
    stratify = counts[counts > 0].min() >= k
    if groups is not None:
        codes = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)[1]
        if len(codes) != len(y):
            raise ValueError(f"{len(codes)} groups for {len(y)} labels")
        n_groups = int(codes.max()) + 1 if len(codes) else 0
        if n_groups < len(y):  # some patient has several cases
            if n_groups < k:
                raise PlanError(f"{k} folds need at least {k} patients, but the training split has {n_groups}",
                                fix=f"use at most {n_groups} folds")
            per_class = groups_per_class(y, codes)[counts > 0].min()
            splitter = (StratifiedGroupKFold(k, shuffle=True, random_state=seed) if per_class >= k
                        else GroupKFold(k, shuffle=True, random_state=seed))
            return list(splitter.split(idx, y, codes))
    splitter = StratifiedKFold(k, shuffle=True, random_state=seed) if stratify else KFold(k, shuffle=True, random_state=seed)
    return list(splitter.split(idx, y))


def kfold_train_indices(y: np.ndarray, k: int, seed: int, groups=None) -> list[np.ndarray]:
    """Training indices of each member for ``kfold``: all but one stratified (and, with ``groups``,
    patient-grouped) fold of the training split."""
    return [fit for fit, _ in kfold_splits(y, k, seed, groups)]


def member_cases(plan: Plan, n_train: int) -> int:
    """How many training cases one member trains on, which an epoch-time probe (R9/S8) should time:
    all of them, or for ``kfold`` all but one fold (the folds differ by a case or so per class)."""
    return n_train - n_train // n_members(plan) if plan.ensemble.kind == "kfold" else n_train


def fit_members(plan: Plan, out: Path, make_model, make_trainer, fit_member, fold_labels: np.ndarray, *,
                resume: bool, post=None, fold_groups=None, log=print) -> tuple[EnsembleModel, FitResult]:
    """Train each member and return the ensemble: ``seeds`` and ``kfold`` members at their
    best-validation weights, ``snapshot`` members at the weights that end their cosine cycle (the
    learning-rate minimum, as Huang et al. 2017 take snapshots: ``checkpoints/last.pt``'s model, or
    under EMA its averaged weights as validated; the next cycle still continues from the raw
    weights), with the member's ``best.pt`` rewritten to match.

    ``make_model(member_plan)`` builds a fresh member and ``make_trainer(member_plan, model, dir)`` its
    trainer; ``fit_member(trainer, train_indices_or_None, resume) -> FitResult`` trains it (on the
    training cases at those indices for ``kfold``, else on all of them); ``fold_labels`` are the
    training cases' labels the k folds are stratified by, and ``fold_groups`` (optional) their
    patient keys, so that no patient's cases are split between a member's training and held-out
    folds; ``post(model, member_plan, train_indices_or_None) -> model`` (optional) runs on each
    trained member (e.g. the PCA head, fitted on that member's own training cases).
    """
    from meddx.training.engine import seed_everything

    k = n_members(plan)
    kind = plan.ensemble.kind
    folds = kfold_train_indices(np.asarray(fold_labels), k, plan.seed, fold_groups) if kind == "kfold" else None
    members, results = [], []
    prev_final = None
    for i in range(k):
        mp = member_plan(plan, i)
        mdir = out / "members" / str(i)
        seed_everything(mp.seed)
        model = make_model(mp)
        started = (mdir / "checkpoints" / "last.pt").exists()
        if kind == "snapshot" and prev_final is not None and not started:
            model.load_state_dict(prev_final)  # warm restart from the previous cycle's final weights
        idx = None if folds is None else folds[i]
        n = len(fold_labels) if idx is None else len(idx)
        log(f"member {i + 1}/{k} ({kind}): {n} training cases, {mp.train.epochs_text}")
        trainer = make_trainer(mp, model, mdir)
        res = fit_member(trainer, idx, resume and started)
        if kind == "snapshot":
            last = load_checkpoint(mdir / "checkpoints" / "last.pt")
            prev_final = last["model"]  # the next cycle's start
            snap = last.get("eval_model") or prev_final  # under EMA: the averaged weights
            trainer.model.load_state_dict(snap)  # the snapshot: the cycle's end, not its best epoch
            save_checkpoint(mdir / "checkpoints" / "best.pt", {"model": snap, "epoch": last["epoch"]})
            res = replace(res, best_epoch=last["epoch"], best_metric=float(last["history"][-1]["val_metric"]))
        model = post(trainer.model, mp, idx) if post else trainer.model
        members.append(model)
        results.append(res)
    history = []
    for i, r in enumerate(results):
        for rec in r.history:
            history.append({**rec, "member": i, "epoch": len(history) + 1})
    fit = FitResult(best_epoch=results[-1].best_epoch, best_metric=float(np.mean([r.best_metric for r in results])),
                    epochs_run=sum(r.epochs_run for r in results), epochs_planned=sum(r.epochs_planned for r in results),
                    train_seconds=float(sum(r.train_seconds for r in results)), history=history,
                    stopped_by=",".join(sorted({r.stopped_by for r in results})))
    return EnsembleModel(members), fit
