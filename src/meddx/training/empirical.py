"""Empirical plan choices (plan ``choices``): each option is trained briefly and scored on the
validation split, and the winner is written into the plan with its evidence (nnU-Net makes its
empirical choices on validation folds in the same way). The test split is never touched."""

from __future__ import annotations

from pathlib import Path

import torch

from meddx.planning.plan import Decision, Plan
from meddx.planning.planner import apply_overrides


def run_choices(plan: Plan, out: Path, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor,
                y_val: torch.Tensor, *, make_model, make_trainer, log=print) -> None:
    """Resolve every unresolved choice in place: apply the winners, record them, and take the time
    spent on trials off ``train.time_budget_s``. Trials live in ``RUN/choices/<name>/<option>/``."""
    from meddx.training.engine import seed_everything

    target = plan
    for ci, choice in enumerate(plan.choices):
        if choice.chosen is not None:
            continue
        budget = plan.train.time_budget_s
        if not budget:
            raise_no_budget(choice.name)
        each = budget * choice.budget_fraction / len(choice.options)
        scores, spent = [], 0.0
        for oi, option in enumerate(choice.options):
            trial = apply_overrides(plan.model_copy(deep=True), {**option, "train.time_budget_s": each})
            trial.choices = []
            trial.train.epochs = trial.train.max_epochs_with_budget
            seed_everything(trial.seed)
            trainer = make_trainer(trial, make_model(trial), out / "choices" / choice.name / str(oi))
            per_epoch = trainer.measure_epoch_seconds(x_train, y_train, x_val.shape[0])
            trial.train.epochs = max(1, min(trial.train.max_epochs_with_budget, int(each * 0.95 // max(per_epoch, 1e-6))))
            res = trainer.fit(x_train, y_train, x_val, y_val)
            scores.append(round(float(res.best_metric), 5))
            spent += res.train_seconds
            log(f"choice {choice.name}: option {oi} {option} -> validation {trial.train.select_metric} {scores[-1]:.4f}")
        best = max(range(len(scores)), key=lambda i: scores[i])
        plan = apply_overrides(plan, choice.options[best])
        plan.decisions = [d for d in plan.decisions if d.rule != "set by the user" or d.field not in choice.options[best]]
        plan.choices[ci].chosen, plan.choices[ci].val_scores = best, scores
        plan.decisions.append(Decision(field=choice.name, value=choice.options[best], rule="R17 empirical choice",
                                       kind="empirical", reads={"options": choice.options, "val_scores": scores,
                                                                "metric": plan.train.select_metric,
                                                                "trial_seconds_each": round(each, 1)}))
        plan.train.time_budget_s = max(1.0, budget - spent)
    for field in type(plan).model_fields:
        setattr(target, field, getattr(plan, field))


def raise_no_budget(name: str):
    from meddx.errors import PlanError

    raise PlanError(f"the empirical choice '{name}' needs a time budget to share between its trials",
                    fix="set train.time_budget_s (--time-budget), or remove the entry from choices")
