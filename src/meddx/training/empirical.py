"""Empirical plan choices (plan ``choices``): each option is trained briefly and scored on the
validation split, or (``folds: k``) by k-fold cross-validation over the training split as nnU-Net
makes its empirical choices, and the winner is written into the plan with its evidence. The test
split is never touched."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from meddx.planning.plan import Decision, Plan
from meddx.planning.planner import apply_overrides


def run_choices(plan: Plan, out: Path, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor,
                y_val: torch.Tensor, *, make_model, make_trainer, groups=None, log=print) -> None:
    """Resolve every unresolved choice in place: apply the winners, record them, and take the time
    spent on trials off ``train.time_budget_s``. Trials live in ``RUN/choices/<name>/<option>/``.
    ``groups`` (optional): the training cases' patient keys, so that cross-validation folds keep
    each patient's cases together."""
    from meddx.training.engine import seed_everything

    target = plan
    for ci, choice in enumerate(plan.choices):
        if choice.chosen is not None:
            continue
        budget = plan.train.time_budget_s
        if not budget:
            raise_no_budget(choice.name)
        each = budget * choice.budget_fraction / len(choice.options)
        splits = trial_splits(choice.folds, x_train, y_train, x_val, y_val, plan.seed, groups)
        each_trial = each / len(splits)
        scores, fold_scores = [], []
        t0 = time.perf_counter()  # trials, their probes and checkpoints all spend the user's budget
        for oi, option in enumerate(choice.options):
            per_fold, per_epoch = [], None
            for fi, (xt, yt, xv, yv) in enumerate(splits):
                trial = apply_overrides(plan.model_copy(deep=True), {**option, "train.time_budget_s": each_trial})
                trial.choices = []
                # the network the run will train: members train with a linear layer, and a PCA head
                # (R15) is fitted on their features afterwards, not trained as a bottleneck here
                trial.train.head = "deep"
                trial.train.epochs = trial.train.max_epochs_with_budget
                seed_everything(trial.seed)
                d = out / "choices" / choice.name / str(oi) / (f"fold{fi}" if choice.folds else "")
                trainer = make_trainer(trial, make_model(trial), d)
                if per_epoch is None:  # the folds are the same size: one probe per option
                    per_epoch = trainer.measure_epoch_seconds(xt, yt, xv.shape[0])
                trial.train.epochs = max(1, min(trial.train.max_epochs_with_budget,
                                                int(each_trial * 0.95 // max(per_epoch, 1e-6))))
                res = trainer.fit(xt, yt, xv, yv)
                per_fold.append(round(float(res.best_metric), 5))
            scores.append(round(float(np.mean(per_fold)), 5))
            fold_scores.append(per_fold)
            where = f"mean of {len(splits)} folds {per_fold}" if choice.folds else "validation"
            log(f"choice {choice.name}: option {oi} {option} -> {where} {trial.train.select_metric} {scores[-1]:.4f}")
        best = max(range(len(scores)), key=lambda i: scores[i])
        plan = apply_overrides(plan, choice.options[best])
        plan.decisions = [d for d in plan.decisions if d.rule != "set by the user" or d.field not in choice.options[best]]
        plan.choices[ci].chosen, plan.choices[ci].val_scores = best, scores
        plan.decisions.append(Decision(field=choice.name, value=choice.options[best], rule="R17 empirical choice",
                                       kind="empirical", reads={"options": choice.options, "val_scores": scores,
                                                                "metric": plan.train.select_metric,
                                                                "scored_on": (f"{choice.folds}-fold cross-validation of "
                                                                              "the training split" if choice.folds
                                                                              else "validation split"),
                                                                **({"fold_scores": fold_scores} if choice.folds else {}),
                                                                "trial_seconds_each": round(each, 1)}))
        plan.train.time_budget_s = max(1.0, budget - (time.perf_counter() - t0))
    for field in type(plan).model_fields:
        setattr(target, field, getattr(plan, field))


def trial_splits(folds: int, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor,
                 y_val: torch.Tensor, seed: int, groups=None) -> list[tuple[torch.Tensor, ...]]:
    """``(x_fit, y_fit, x_score, y_score)`` of each trial: the training and validation splits, or
    with ``folds`` k >= 2 each stratified fold of the training split held out in turn (the same
    folds as a ``kfold`` ensemble's members; grouped by patient when ``groups`` repeat)."""
    if not folds:
        return [(x_train, y_train, x_val, y_val)]
    from meddx.errors import PlanError
    from meddx.training.ensemble import groups_per_class, kfold_splits

    y = y_train.numpy()
    counts = groups_per_class(y, groups)
    what = ("training cases" if groups is None or len(set(map(str, groups))) == len(y)
            else "patients in the training split")
    if counts.min() < folds:
        raise PlanError(f"an empirical choice asks for {folds}-fold cross-validation, but class {int(counts.argmin())} "
                        f"has only {int(counts.min())} {what}",
                        fix=f"set the choice's folds to at most {int(counts.min())}, or to 0 (score on the validation split)")
    return [(x_train[fit], y_train[fit], x_train[held], y_train[held])
            for fit, held in (map(torch.from_numpy, pair) for pair in kfold_splits(y, folds, seed, groups))]


def raise_no_budget(name: str):
    from meddx.errors import PlanError

    raise PlanError(f"the empirical choice '{name}' needs a time budget to share between its trials",
                    fix="set train.time_budget_s (--time-budget), or remove the entry from choices")
