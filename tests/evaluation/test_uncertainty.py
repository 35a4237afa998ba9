"""Uncertainty scores (TTA, MC dropout, ensemble), the refer rule and accuracy against coverage."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from meddx.errors import MeddxError
from meddx.evaluation import uncertainty as U
from meddx.planning.plan import AugmentConfig, DataConfig, Plan


def _plan(augment: AugmentConfig | None = None, **ev) -> Plan:
    p = Plan(data=DataConfig(source="x", kind="folder", class_names=["a", "b"], spatial_dims=2, channels=1,
                             input_size=[8, 8]), augment=augment or AugmentConfig())
    for k, v in ev.items():
        setattr(p.evaluate, k, v)
    return p


class Tiny(nn.Module):
    def __init__(self, dropout: float = 0.0, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(64, 32)
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc2 = nn.Linear(32, 2)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.fc1(x.flatten(1)))))


def test_accuracy_coverage_keeps_the_most_certain_first():
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    proba = np.tile([[0.9, 0.1]], (10, 1))  # always predicts class 0: correct on the even cases
    score = np.array([0, 9, 1, 8, 2, 7, 3, 6, 4, 5], float)  # the wrong ones are the most uncertain
    c = U.accuracy_coverage(y, proba, score, coverages=(0.5, 0.6, 1.0))
    assert c["accuracy"] == [1.0, pytest.approx(5 / 6), 0.5]
    assert c["n_kept"] == [5, 6, 10]
    # AURC: errors 0 for the first five coverages, then 1/6, 2/7, 3/8, 4/9, 5/10
    assert c["aurc"] == pytest.approx(np.mean([0, 0, 0, 0, 0, 1 / 6, 2 / 7, 3 / 8, 4 / 9, 5 / 10]))
    worst = U.accuracy_coverage(y, proba, -score, coverages=(0.5,))
    assert worst["accuracy"] == [0.0] and worst["aurc"] > c["aurc"]


def test_refer_threshold_is_a_validation_quantile():
    val = np.arange(100, dtype=float)
    thr = U.refer_threshold(val, 0.1)
    assert U.refer(val, thr).sum() == 10  # exactly the top 10 % of validation refers
    assert U.refer_threshold(val, 0.0) == np.inf and not U.refer(val, np.inf).any()
    assert U.refer_threshold(np.zeros(0), 0.1) is None and not U.refer(np.ones(3), None).any()
    with pytest.raises(MeddxError, match="refer_fraction"):
        U.refer_threshold(val, 1.0)


def test_triage_summary_counts():
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.8, 0.2]])
    s = U.triage_summary(y, proba, np.array([0.1, 0.9, 0.2, 0.95]), threshold=0.5)
    assert s["referred"] == 2 and s["accuracy_kept"] == 1.0 and s["accuracy_referred"] == 0.0
    assert s["accuracy_all"] == 0.5


def test_mc_dropout_varies_only_with_dropout():
    x = torch.randn(6, 1, 8, 8)
    plan = _plan()
    s = U.sample_proba([Tiny(0.5)], x, "mc_dropout", plan, n_samples=5, seed=3)
    assert s.shape == (5, 6, 2) and (U.variance_score(s) > 0).all()
    again = U.sample_proba([Tiny(0.5)], x, "mc_dropout", plan, n_samples=5, seed=3)
    assert np.array_equal(s, again)  # seeded: the same scores every time
    m = Tiny(0.5)
    U.sample_proba([m], x, "mc_dropout", plan, n_samples=2)
    assert not m.drop.training  # dropout switched back off afterwards
    assert U.unavailable_reason("mc_dropout", plan, Tiny(0.0), 1).startswith("MC dropout needs")


def test_tta_uses_the_plan_augmentation():
    x = torch.randn(4, 1, 8, 8)
    none = _plan()
    assert U.unavailable_reason("tta", none, Tiny(), 1).startswith("test-time augmentation needs")
    aug = _plan(AugmentConfig(rotate_deg=20, scale=0.1, brightness=0.3))
    s = U.sample_proba([Tiny()], x, "tta", aug, n_samples=6)
    assert s.shape == (6, 4, 2) and (U.variance_score(s) > 0).all()


def test_ensemble_variance_is_zero_for_identical_members():
    x = torch.randn(5, 1, 8, 8)
    plan = _plan()
    same = U.sample_proba([Tiny(seed=1), Tiny(seed=1)], x, "ensemble", plan)
    diff = U.sample_proba([Tiny(seed=1), Tiny(seed=2), Tiny(seed=3)], x, "ensemble", plan)
    assert same.shape == (2, 5, 2) and np.allclose(U.variance_score(same), 0)
    assert diff.shape == (3, 5, 2) and (U.variance_score(diff) > 0).all()


def test_uncertainty_scores_fall_back_to_confidence_with_the_reason():
    x = torch.randn(3, 1, 8, 8)
    proba = np.array([[0.9, 0.1], [0.5, 0.5], [0.3, 0.7]])
    s, used, why = U.uncertainty_scores(_plan(uncertainty="ensemble"), [Tiny()], x, proba)
    assert used == "confidence" and "ensemble_runs" in why
    assert np.allclose(s, [0.1, 0.5, 0.3])


@pytest.mark.slow
def test_training_run_writes_triage_and_report_sections(busi_for_uncertainty):
    run = busi_for_uncertainty
    tri = json.loads((run / "triage.json").read_text())
    assert tri["method"] == "tta" and tri["method_used"] == "tta" and tri["samples"] == 4
    assert tri["refer_fraction"] == 0.1 and tri["threshold"] is not None
    # chosen on validation: there, at most ~10 % (ties aside) of cases are above it
    assert tri["val"]["referred_fraction"] <= 0.1 + 1e-9
    curves = tri["accuracy_coverage_test"]
    assert set(curves) == {"tta", "confidence"} and curves["tta"]["coverage"][-1] == 1.0
    m = json.loads((run / "metrics.json").read_text())
    assert m["triage"]["threshold"] == tri["threshold"]
    assert curves["tta"]["accuracy"][-1] == pytest.approx(m["operating_points"]["argmax / 0.5"]["overall"]
                                                          ["accuracy"]["value"])
    html = (run / "report.html").read_text()
    for s in ("Accuracy against coverage", "after temperature scaling", "Triage operating point",
              "Calibration (top-label ECE"):
        assert s in html
    assert (run / "reliability_calibrated.png").exists() and (run / "accuracy_coverage.png").exists()


@pytest.fixture(scope="module")
def busi_for_uncertainty(tmp_path_factory):
    from trained_runs import busi_run

    return busi_run(tmp_path_factory.getbasetemp())


def test_a_run_trained_as_an_ensemble_scores_the_spread_of_its_own_members():
    from meddx.models.ensemble import EnsembleModel

    x = torch.randn(5, 1, 8, 8)
    plan = _plan()
    ens = EnsembleModel([Tiny(seed=1), Tiny(seed=2), Tiny(seed=3)])
    assert U.unavailable_reason("ensemble", plan, ens, len(U.ensemble_members([ens]))) is None
    s = U.sample_proba([ens], x, "ensemble", plan)
    assert s.shape == (3, 5, 2) and (U.variance_score(s) > 0).all()


def test_an_ensemble_member_that_turns_volumes_another_way_is_refused(tmp_path):
    """R20: a member planned with another orientation (or before R20) sees every volume turned another
    way than the run it joins; its mean and std cannot tell, so the orientation is compared too."""
    from deploy_testutils import make_run

    from meddx.errors import RunError
    from meddx.evaluation.uncertainty import load_ensemble

    kw = dict(dims=3, size=16, intensity="image_zscore", mean=0.0, std=1.0, temperature=None, threshold=None)
    a, b = make_run(tmp_path / "a", **kw), make_run(tmp_path / "b", seed=1, **kw)
    plan = Plan.load(a / "plan.yaml")
    assert len(load_ensemble(plan, [str(b)])) == 1
    other = Plan.load(b / "plan.yaml")
    other.data.orientation = ["L", "P", "S"]
    other.save(b / "plan.yaml")
    with pytest.raises(RunError, match="orientation"):
        load_ensemble(plan, [str(b)])
