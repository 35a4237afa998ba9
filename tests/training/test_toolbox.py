"""Issue 4's training components: samplers, focal loss, logit adjustment, mixup/cutmix,
ensembles (seeds, k-fold, snapshot) and the PCA head."""

import json

import numpy as np
import pytest
import torch

from meddx.errors import PlanError
from meddx.losses import create_loss
from meddx.losses.classification import LogitAdjusted
from meddx.planning.plan import Plan
from meddx.training.engine import Trainer, cutmix, mixup
from meddx.training.run import load_run, train_run
from meddx_testutils import make_plan_for


def _quiet(*_a, **_k):
    pass


def _plan(**train):
    p = make_plan_for(n_classes=2)
    for k, v in train.items():
        setattr(p.train, k, v)
    return p


@pytest.mark.parametrize("sampler", ["weighted", "oversample", "undersample"])
def test_samplers_balance_the_batches(tmp_path, sampler):
    y = torch.tensor([0] * 90 + [1] * 10)
    t = Trainer(_plan(sampler=sampler, batch_size=20), torch.nn.Linear(1, 2), tmp_path, progress=False)
    t._setup_loss(y)
    order = t._epoch_order(100, torch.Generator().manual_seed(0))
    share = float((y[order] == 1).float().mean())
    assert 0.35 < share < 0.65, share  # 10 % minority in the data, about half in the batches
    expect = {"weighted": 100, "oversample": 180, "undersample": 20}[sampler]
    assert len(order) == expect == t._epoch_len(100)
    if sampler == "oversample":
        assert set(order.tolist()) == set(range(100))  # every case still seen each epoch
    if sampler == "undersample":
        assert len(set(order.tolist())) == 20  # no repeats


def test_focal_loss_matches_its_formula_and_downweights_easy_cases():
    logits = torch.tensor([[2.0, -1.0], [0.2, 0.1], [-0.5, 1.5]])
    y = torch.tensor([0, 1, 1])
    fl = create_loss("focal", gamma=2.0)
    p = logits.softmax(1)[torch.arange(3), y]
    assert torch.allclose(fl(logits, y), (-(1 - p) ** 2 * p.log()).mean(), atol=1e-6)
    ce = create_loss("ce")
    assert fl(logits, y) < ce(logits, y)
    assert torch.allclose(create_loss("focal", gamma=0.0)(logits, y), ce(logits, y), atol=1e-6)
    with pytest.raises(PlanError):
        create_loss("focal", label_smoothing=0.1)


def test_logit_adjustment_adds_the_log_prior():
    prior = torch.tensor([0.9, 0.1])
    la = LogitAdjusted(create_loss("ce"), prior, tau=1.0)
    logits = torch.zeros(4, 2)
    y = torch.tensor([1, 1, 0, 0])
    expect = create_loss("ce")(logits + prior.log(), y)
    assert torch.allclose(la(logits, y), expect)
    # the rare class costs more than under plain CE at equal logits: larger margin wanted
    assert la(logits[:1], y[:1]) > create_loss("ce")(logits[:1], y[:1])


def test_mixup_and_cutmix_mix_pairs_with_the_stated_weight():
    g = torch.Generator().manual_seed(0)
    x = torch.stack([torch.zeros(1, 8, 8), torch.ones(1, 8, 8)])
    out, perm, lam = mixup(x, 0.4, g)
    assert 0 <= lam <= 1 and torch.allclose(out, lam * x + (1 - lam) * x[perm])
    x3 = torch.stack([torch.zeros(1, 8, 8, 8), torch.ones(1, 8, 8, 8)])
    out, perm, lam = cutmix(x3, 1.0, torch.Generator().manual_seed(3))
    for i in range(2):
        if perm[i] != i:  # the pasted share equals 1 - lam exactly
            assert abs(float((out[i] != x3[i]).float().mean()) - (1 - lam)) < 1e-6


@pytest.mark.parametrize("kind, members", [("seeds", 2), ("kfold", 3), ("snapshot", 2)])
def test_ensembles_train_each_member_and_load_as_one_model(tmp_path, kind, members):
    ov = {"train.epochs": 2, "ensemble.kind": kind, "ensemble.members": members}
    run = train_run("synthetic:phantoms:120", tmp_path / "r", overrides=ov, progress=False, log=_quiet)
    for i in range(members):
        assert (run / "members" / str(i) / "checkpoints" / "best.pt").exists()
    plan, model = load_run(run)
    assert type(model).__name__ == "EnsembleModel" and len(model.members) == members
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        mean_p = model.member_probabilities(x).mean(0)
        assert torch.allclose(model(x).softmax(1), mean_p, atol=1e-5)
    m = json.loads((run / "metrics.json").read_text())
    assert m["training"]["epochs_run"] == 2 * members
    if kind == "snapshot":  # member 2 started from member 1's final weights, not from scratch
        first = torch.load(run / "members" / "0" / "checkpoints" / "last.pt", weights_only=True)["model"]
        second_log = (run / "members" / "1" / "log.jsonl").read_text().splitlines()
        assert len(second_log) == 2 and first
    if kind == "kfold":
        sizes = [len(r) for r in __import__("meddx.training.ensemble", fromlist=["x"]).kfold_train_indices(
            np.array([0, 1] * 42), 3, 0)]
        assert sizes == [56, 56, 56]


def test_ensemble_needs_two_members():
    with pytest.raises(PlanError, match="members >= 2"):
        train_run("synthetic:phantoms:60", "/nonexistent/never", overrides={"ensemble.kind": "seeds"},
                  progress=False, log=_quiet)


def test_pca_head_replaces_the_linear_layer_and_predicts(tmp_path):
    ov = {"train.epochs": 2, "train.head": "pca_linear", "train.pca_components": 8}
    run = train_run("synthetic:phantoms:160", tmp_path / "r", overrides=ov, progress=False, log=_quiet)
    plan, model = load_run(run)
    assert type(model).__name__ == "PCALinearHead"
    assert model.pca.out_features == 8 and model.fc.in_features == 8
    m = json.loads((run / "metrics.json").read_text())
    assert m["operating_points"]["argmax / 0.5"]["overall"]["auc"]["value"] > 0.5


def test_set_overrides_on_the_command_line(tmp_path):
    from meddx.cli import parse_sets

    assert parse_sets(["train.epochs=3", "augment.flip_axes=[0, 1]", "ensemble.kind=seeds"]) == {
        "train.epochs": 3, "augment.flip_axes": [0, 1], "ensemble.kind": "seeds"}
    from meddx.errors import MeddxError

    with pytest.raises(MeddxError):
        parse_sets(["no-equals-sign"])


def test_empirical_choice_trains_each_option_on_validation_and_records_the_winner(tmp_path):
    ov = {"train.time_budget_s": 8, "choices": [{"name": "structure", "budget_fraction": 0.5,
                                                 "options": [{"model.params.attention": None},
                                                             {"model.params.attention": "se"}]}]}
    run = train_run("synthetic:phantoms:120", tmp_path / "r", overrides=ov, progress=False, log=_quiet)
    plan = Plan.load(run / "plan.yaml")
    ch = plan.choices[0]
    assert ch.chosen in (0, 1) and len(ch.val_scores) == 2
    assert ch.val_scores[ch.chosen] == max(ch.val_scores)
    dec = next(d for d in plan.decisions if d.kind == "empirical" and d.field == "structure")
    assert dec.value == ch.options[ch.chosen] and dec.reads["val_scores"] == ch.val_scores
    assert plan.model.params.get("attention") == ch.options[ch.chosen]["model.params.attention"]
    assert plan.train.time_budget_s < 8  # the trials' time came off the main training's budget
    for i in (0, 1):
        assert (run / "choices" / "structure" / str(i) / "checkpoints" / "best.pt").exists()
