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
        # its cycle draws its own batches and augmentation (the engine seeds epochs from the seed)
        from meddx.training.ensemble import member_plan

        assert len({member_plan(plan, i).seed for i in range(members)}) == members
    if kind == "kfold":
        sizes = [len(r) for r in __import__("meddx.training.ensemble", fromlist=["x"]).kfold_train_indices(
            np.array([0, 1] * 42), 3, 0)]
        assert sizes == [56, 56, 56]


def test_kfold_folds_keep_each_patient_on_one_side():
    from meddx.training.ensemble import kfold_splits

    rng = np.random.default_rng(0)
    groups = np.repeat([f"p{i}" for i in range(30)], 3)  # 30 patients, 3 images each
    y = np.repeat(rng.integers(0, 2, 30), 3)
    folds = kfold_splits(y, 5, 0, groups)
    held = np.concatenate([h for _, h in folds])
    assert sorted(held.tolist()) == list(range(90))  # every case held out once
    for fit, h in folds:
        assert not set(groups[fit]) & set(groups[h])  # no patient on both sides
        assert set(y[h]) == {0, 1}  # still stratified
    # one case per patient: exactly the ungrouped folds, so datasets without patients are unchanged
    y2 = np.array([0, 1] * 20)
    plain = kfold_splits(y2, 4, 3)
    same = kfold_splits(y2, 4, 3, [f"c{i}" for i in range(40)])
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(plain, same))
    with pytest.raises(PlanError, match="5 folds need at least 5 patients, but the training split has 3"):
        kfold_splits(np.array([0, 1] * 6), 5, 0, np.repeat(["a", "b", "c"], 4))


def test_trial_splits_count_patients_when_grouped():
    from meddx.training.empirical import trial_splits

    x = torch.arange(40, dtype=torch.float32).view(40, 1, 1, 1)
    y = torch.tensor([0, 1] * 20)
    groups = [f"p{i // 8}" for i in range(40)]  # 5 patients, each with both classes
    splits = trial_splits(5, x, y, x[:2], y[:2], 0, groups)
    for xf, _, xh, _ in splits:
        fit_p = {groups[int(v)] for v in xf.flatten()}
        held_p = {groups[int(v)] for v in xh.flatten()}
        assert len(held_p) == 1 and not fit_p & held_p
    with pytest.raises(PlanError, match="class 0 has only 5 patients in the training split"):
        trial_splits(6, x, y, x[:2], y[:2], 0, groups)


def test_kfold_members_fit_their_pca_head_on_their_own_training_folds(tmp_path):
    ov = {"train.epochs": 1, "train.head": "pca_linear", "train.pca_components": 4, "ensemble.kind": "kfold",
          "ensemble.members": 3}
    run = train_run("synthetic:phantoms:90", tmp_path / "r", overrides=ov, progress=False, log=_quiet)
    fits = json.loads((run / "fitted_inputs.json").read_text())["pca_head"]
    import csv

    n_train = sum(r["split"] == "train" for r in csv.DictReader((run / "split.csv").open()))
    assert len(fits) == 3 and n_train > 0
    assert sum(f["train_cases"] for f in fits) == 2 * n_train  # each case in 2 of the 3 members' folds


def test_ensemble_needs_two_members():
    with pytest.raises(PlanError, match="members >= 2"):
        train_run("synthetic:phantoms:60", "/nonexistent/never", overrides={"ensemble.kind": "seeds"},
                  progress=False, log=_quiet)


def test_pca_head_replaces_the_linear_layer_and_predicts(tmp_path):
    ov = {"train.epochs": 2, "train.head": "pca_linear", "train.pca_components": 8, "train.sampler": "weighted"}
    run = train_run("synthetic:phantoms:160", tmp_path / "r", overrides=ov, progress=False, log=_quiet)
    plan, model = load_run(run)
    assert type(model).__name__ == "PCALinearHead"
    assert model.pca.out_features == 8 and model.fc.in_features == 8
    fits = json.loads((run / "fitted_inputs.json").read_text())["pca_head"]
    assert [f["class_weight"] for f in fits] == ["balanced"]  # the head keeps the sampler's class balance
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


def test_empirical_choice_on_folds_scores_each_option_on_held_out_training_folds(tmp_path):
    ov = {"train.time_budget_s": 12, "choices": [{"name": "structure", "budget_fraction": 0.5, "folds": 3,
                                                  "options": [{"model.params.attention": None},
                                                              {"model.params.attention": "se"}]}]}
    run = train_run("synthetic:phantoms:120", tmp_path / "r", overrides=ov, progress=False, log=_quiet)
    plan = Plan.load(run / "plan.yaml")
    ch = plan.choices[0]
    dec = next(d for d in plan.decisions if d.kind == "empirical" and d.field == "structure")
    assert dec.reads["scored_on"] == "3-fold cross-validation of the training split"
    folds = dec.reads["fold_scores"]
    assert [len(f) for f in folds] == [3, 3]
    assert ch.val_scores == [pytest.approx(float(np.mean(f)), abs=1e-4) for f in folds]
    assert ch.val_scores[ch.chosen] == max(ch.val_scores)
    for i in (0, 1):
        for f in range(3):
            assert (run / "choices" / "structure" / str(i) / f"fold{f}" / "checkpoints" / "best.pt").exists()


def test_empirical_trials_train_the_network_the_run_trains_not_a_pca_bottleneck(tmp_path):
    """With R15's PCA head in the plan, the run trains a network with its own linear layer and fits
    PCA + logistic regression afterwards; the trials must score that network (a random trainable
    16-unit bottleneck is not what gets used). And a trial of the "plain" option of a plan that
    already has attention must really be plain."""
    from meddx.planning.plan import Choice
    from meddx.training.empirical import run_choices
    from meddx.training.run import build_single_model

    plan = make_plan_for(n_classes=2, size=16)
    plan.train.head, plan.train.time_budget_s, plan.model.params = "pca_linear", 4.0, {"attention": "se"}
    plan.choices = [Choice(name="structure", options=[{"model.params.attention": None},
                                                      {"model.params.attention": "se"}], budget_fraction=0.5)]
    seen = []

    def make_model(p):
        seen.append((p.train.head, p.model.params.get("attention")))
        return build_single_model(p)

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(24, 1, 16, 16, generator=g), torch.tensor([0, 1] * 12)
    run_choices(plan, tmp_path, x, y, x[:8], y[:8], make_model=make_model,
                make_trainer=lambda p, m, d: Trainer(p, m, d, progress=False), log=_quiet)
    assert seen == [("deep", None), ("deep", "se")]
    assert plan.train.head == "pca_linear"  # the run's own head is kept for after training


def test_fold_splits_hold_out_each_training_case_once_and_never_touch_validation():
    from meddx.errors import PlanError
    from meddx.training.empirical import trial_splits

    x = torch.arange(40, dtype=torch.float32).view(40, 1, 1, 1)
    y = torch.tensor([0] * 30 + [1] * 10)
    xv, yv = torch.full((7, 1, 1, 1), -1.0), torch.zeros(7, dtype=torch.long)
    assert trial_splits(0, x, y, xv, yv, 0)[0][2] is xv
    splits = trial_splits(5, x, y, xv, yv, 0)
    held = torch.cat([s[2] for s in splits]).flatten().sort().values
    assert torch.equal(held, x.flatten())  # every training case scored exactly once, no validation case
    for xf, yf, xh, yh in splits:
        assert len(set(xf.flatten().tolist()) & set(xh.flatten().tolist())) == 0
        assert int(yh.sum()) == 2  # stratified: 10 positives over 5 folds
    with pytest.raises(PlanError, match="class 1 has only 10"):
        trial_splits(11, x, y, xv, yv, 0)


def test_choice_folds_of_one_is_rejected():
    from meddx.planning.plan import Choice

    with pytest.raises(Exception, match="at least 2"):
        Choice(name="c", options=[{}], folds=1)


def test_learned_denoiser_is_fitted_on_training_images_and_kept_in_front_of_the_network(tmp_path):
    from meddx.transforms.learned_denoise import SelfSupervisedDenoiser

    ov = {"train.epochs": 1, "data.learned_denoise": {"epochs": 2}}
    run = train_run("synthetic:phantoms:100", tmp_path / "r", overrides=ov, progress=False, log=_quiet)
    rec = json.loads((run / "fitted_inputs.json").read_text())["learned_denoise"]
    assert rec["epochs_run"] == 2 and rec["masked_loss_last"] < rec["masked_loss_first"]
    assert rec["denoise_seconds"] >= 0
    # metrics.json's train_seconds is the classifier's; the time fitting the inputs is reported beside it
    training = json.loads((run / "metrics.json").read_text())["training"]
    assert training["input_fit_seconds"] == pytest.approx(rec["seconds"] + rec["denoise_seconds"], abs=0.11)
    assert "fitting the inputs first" in (run / "report.html").read_text(encoding="utf-8")
    plan, model = load_run(run)
    assert type(model).__name__ == "DenoisedInput"
    den = SelfSupervisedDenoiser.load(run / "denoiser.pt")
    x = torch.randn(3, 1, 28, 28)
    assert torch.allclose(model.denoise(x), den.transform(x), atol=1e-5)  # the same transform at inference
    model.train()
    assert not model.denoiser.training  # frozen, statistics included


def test_the_denoising_pass_is_paid_from_the_budget_once(tmp_path, monkeypatch):
    """``denoise_inputs`` returns the seconds of fitting *and* denoising both tensors (the caller
    takes them from the time budget); a resumed run loads the denoiser and is charged nothing."""
    import time as _time

    from meddx.planning.plan import LearnedDenoiseConfig
    from meddx.training.fitted_inputs import denoise_inputs
    from meddx.transforms.learned_denoise import SelfSupervisedDenoiser

    real = SelfSupervisedDenoiser.transform

    def slow(self, x, **kw):
        _time.sleep(0.4)
        return real(self, x, **kw)

    monkeypatch.setattr(SelfSupervisedDenoiser, "transform", slow)
    plan = make_plan_for()
    plan.data.learned_denoise = LearnedDenoiseConfig(epochs=1)
    xtr, xva = torch.rand(12, 1, 28, 28), torch.rand(4, 1, 28, 28)
    den, dtr, dva, spent = denoise_inputs(plan, tmp_path, xtr, xva, log=_quiet)
    rec = json.loads((tmp_path / "fitted_inputs.json").read_text())["learned_denoise"]
    # the record's two values are rounded to 0.1 s each
    assert rec["denoise_seconds"] >= 0.8 and spent >= rec["seconds"] + rec["denoise_seconds"] - 0.1
    assert dtr.shape == xtr.shape and dva.shape == xva.shape
    from meddx.training.fitted_inputs import mark_charged

    mark_charged(tmp_path, "learned_denoise")  # fit_classifier saved the plan with the reduced budget
    again = denoise_inputs(plan, tmp_path, xtr, xva, log=_quiet)  # resumed: loaded, same output, no charge
    assert again[3] == 0.0 and torch.allclose(again[1], dtr, atol=1e-6)


def test_synthetic_counts_fill_minorities_up_to_the_target():
    from meddx.training.fitted_inputs import synthetic_counts

    y = torch.tensor([0] * 100 + [1] * 30 + [2] * 80)
    assert synthetic_counts(y, 1.0, 1.0) == {1: 30, 2: 20}  # class 1 capped at one fake per real image
    assert synthetic_counts(y, 0.5, 5.0) == {1: 20}
    assert synthetic_counts(torch.tensor([0, 1] * 10), 1.0, 1.0) == {}


def test_synthetic_samples_are_added_only_when_the_quality_check_passes(tmp_path, monkeypatch):
    import meddx.data.synthesis as syn
    from meddx.data.synthetic import make_phantoms
    from meddx.planning.plan import SyntheticConfig
    from meddx.training.fitted_inputs import add_synthetic

    real_check = syn.quality_check
    verdict = {"passed": False}

    def check(*a, **k):
        res = real_check(*a, **k)
        res["passed"] = verdict["passed"]
        return res

    monkeypatch.setattr(syn, "quality_check", check)
    imgs, labels = make_phantoms(90, seed=1)
    keep = np.r_[np.nonzero(labels == 0)[0], np.nonzero(labels == 1)[0][:20]]  # 2:1 imbalance
    x = torch.from_numpy(imgs[keep, None] / 255.0).float()
    y = torch.from_numpy(labels[keep])
    plan = make_plan_for()
    plan.train.time_budget_s = 8
    plan.train.synthetic = SyntheticConfig(epochs=3)
    (tmp_path / "no").mkdir()
    x1, y1, spent = add_synthetic(plan, tmp_path / "no", x, y, log=_quiet)
    rec = json.loads((tmp_path / "no" / "fitted_inputs.json").read_text())["synthetic"]
    assert rec["passed"] is False and rec["added"] == 0 and rec["quality_check"]["classes"]
    assert torch.equal(x1, x) and spent > 0  # refused: training data untouched
    verdict["passed"] = True
    (tmp_path / "yes").mkdir()
    x2, y2, _ = add_synthetic(plan, tmp_path / "yes", x, y, log=_quiet)
    rec = json.loads((tmp_path / "yes" / "fitted_inputs.json").read_text())["synthetic"]
    n_min = int((y == 1).sum())
    assert rec["passed"] is True and rec["added"] == n_min  # up to the majority, at most 1 fake per real
    assert x2.shape[0] == x.shape[0] + n_min and int((y2 == 1).sum()) == 2 * n_min
    from meddx.training.fitted_inputs import mark_charged

    # resume before fit_classifier saved the plan charged with the GAN's time: the saved samples, and
    # the time still owed; once charged, nothing
    x3, y3, spent3 = add_synthetic(plan, tmp_path / "yes", x, y, log=_quiet)
    assert spent3 == rec["seconds"] and torch.equal(x3, x2)
    mark_charged(tmp_path / "yes", "synthetic")
    x3, y3, spent3 = add_synthetic(plan, tmp_path / "yes", x, y, log=_quiet)
    assert spent3 == 0.0 and torch.equal(x3, x2)


def test_the_epoch_time_probe_is_charged_to_the_time_budget(tmp_path):
    """R9/S8 time a few steps before sizing the epochs; that time is the user's too."""
    import time

    from meddx.training.run import size_epochs

    plan = make_plan_for()
    plan.train.time_budget_s = 10.0
    size_epochs(plan, tmp_path, lambda: (time.sleep(0.5), 1.0)[1], "R9 epochs", 0.97)
    r9 = [d for d in plan.decisions if d.rule == "R9 epochs"]
    assert len(r9) == 1  # the planner's R9 ("sized at the start of training") is replaced, not repeated
    dec = r9[0]
    assert dec.reads["probe_s"] >= 0.5
    assert dec.reads["time_budget_s"] == 10.0
    assert plan.train.time_budget_s == dec.reads["training_budget_s"] == pytest.approx(10.0 - dec.reads["probe_s"],
                                                                                      abs=2e-3)
    assert plan.train.epochs == int(plan.train.time_budget_s * 0.97 // 1.0)


def test_kfold_members_are_sized_on_a_fold_not_the_whole_training_split(tmp_path, monkeypatch):
    """A kfold member trains on (k-1)/k of the training cases: the R9 probe times an epoch of that
    many (timing the whole split left each member a third of its share unused at k = 3)."""
    seen = []
    real = Trainer.measure_epoch_seconds

    def spy(self, x, y, n_val, *a, **k):
        seen.append(int(x.shape[0]))
        return real(self, x, y, n_val, *a, **k)

    monkeypatch.setattr(Trainer, "measure_epoch_seconds", spy)
    for kind in ("kfold", "seeds"):
        train_run("synthetic:phantoms:100", tmp_path / kind, progress=False, log=_quiet,
                  overrides={"train.time_budget_s": 6, "ensemble.kind": kind, "ensemble.members": 3})
    n = sum(json.loads((tmp_path / "seeds" / "fingerprint.json").read_text())["split_counts"]["train"].values())
    assert seen[1] == n and abs(seen[0] - 2 * n / 3) <= 1, (seen, n)


def test_trials_charge_their_whole_wall_time_to_the_budget(tmp_path, monkeypatch):
    """R17's trials spend the user's budget on probes and checkpoints as well as training: what the
    main training gets is the budget minus the trials' wall time."""
    import time

    import meddx.training.engine as eng

    real = eng.Trainer.measure_epoch_seconds

    def slow(self, *a, **k):
        time.sleep(0.5)
        return real(self, *a, **k)

    monkeypatch.setattr(eng.Trainer, "measure_epoch_seconds", slow)
    ov = {"train.time_budget_s": 10, "choices": [{"name": "structure", "budget_fraction": 0.4,
                                                  "options": [{"model.params.attention": None},
                                                              {"model.params.attention": "se"}]}]}
    run = train_run("synthetic:phantoms:100", tmp_path / "r", overrides=ov, progress=False, log=_quiet)
    trained = sum(json.loads(line)["elapsed_s"] for i in (0, 1) for line in
                  (run / "choices" / "structure" / str(i) / "log.jsonl").read_text().splitlines()[-1:])
    dec = next(d for d in Plan.load(run / "plan.yaml").decisions if d.rule == "R9 epochs")
    # two trial probes (0.5 s each) and the trials' training; then R9's own probe (0.5 s)
    assert 10 - dec.reads["training_budget_s"] >= trained + 1.5


def test_empirical_choice_folds_hold_no_gan_samples(tmp_path, monkeypatch):
    """R17 scores its options on real training cases only: the GAN's fakes are added after the
    trials (which fold the training split), and the GAN's share comes from what the trials left."""
    import meddx.training.empirical as emp
    import meddx.training.fitted_inputs as fi
    import meddx.training.run as run_mod
    from meddx.training.run import fit_classifier

    plan = Plan.model_validate(dict(seed=0, data=dict(source="x", kind="npz", class_names=["a", "b"], spatial_dims=2,
                                                      channels=1, input_size=[8, 8]),
                                    train=dict(batch_size=8, epochs=1, time_budget_s=3000, synthetic={}),
                                    choices=[dict(name="model_structure", folds=5,
                                                  options=[{"model.params.attention": None},
                                                           {"model.params.attention": "se"}])]))
    x, y = torch.zeros(60, 1, 8, 8), torch.tensor([0] * 50 + [1] * 10)
    calls = []

    class Stop(Exception):
        pass

    def choices(p, out, xt, yt, xv, yv, **kw):
        held = [xh for *_, xh, _ in emp.trial_splits(p.choices[0].folds, xt, yt, xv, yv, p.seed)]
        calls.append(("choices", int(xt.shape[0]), int(sum(float(h.abs().sum()) for h in held))))
        p.train.time_budget_s -= 1000.0  # the trials' wall time

    def gan(p, out, xt, yt, log=print):  # stands in for the GAN: 40 minority fakes of value 99
        calls.append(("synthetic", p.train.time_budget_s))
        return torch.cat([xt, torch.full((40, 1, 8, 8), 99.0)]), torch.cat([yt, torch.ones(40, dtype=torch.long)]), 0.0

    def sized(*a, **k):  # the main training is not this test's business
        raise Stop

    monkeypatch.setattr(emp, "run_choices", choices)
    monkeypatch.setattr(fi, "add_synthetic", gan)
    monkeypatch.setattr(run_mod, "size_epochs", sized)
    with pytest.raises(Stop):
        fit_classifier(plan, tmp_path, x, y, torch.zeros(10, 1, 8, 8), torch.tensor([0] * 8 + [1] * 2),
                       resume=False, progress=False, log=_quiet)
    assert calls == [("choices", 60, 0), ("synthetic", 2000.0)]


class _ScoreTask:
    """A one-step-per-epoch task whose validation score falls every epoch (best at epoch 1): early
    stopping with patience 1 would end each cycle after two epochs."""

    select_name = "score"

    @staticmethod
    def batches(data, epoch):
        yield data

    @staticmethod
    def step(model, batch):
        return model(batch).pow(2).mean()

    @staticmethod
    def validate(model, data):
        with torch.no_grad():
            return float(model(data).pow(2).mean()), {}


def _fit_toy_members(out, kind, resume=False, stop_at=None, ema=None):
    from meddx.training.ensemble import fit_members
    from meddx.training.loop import TaskTrainer

    plan = _plan(epochs=4, batch_size=8, early_stopping_patience=1)
    plan.ensemble.kind, plan.ensemble.members = kind, 2
    plan.train.ema_decay = ema
    plan.optim.lr = 0.05
    data = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    calls = []

    class Toy(_ScoreTask, TaskTrainer):
        def validate(self, model, d):
            calls.append(1)
            if stop_at is not None and len(calls) == stop_at:
                raise KeyboardInterrupt  # killed during this validation
            return _ScoreTask.validate(model, d)

    return fit_members(plan, out, lambda p: torch.nn.Linear(4, 2),
                       lambda p, m, d: Toy(p, m, d, device=torch.device("cpu"), progress=False),
                       lambda tr, idx, res: tr.fit(data, data, resume=res), np.array([0, 1] * 4),
                       resume=resume, log=_quiet)


@pytest.mark.parametrize("kind", ["snapshot", "seeds"])
def test_snapshot_members_are_the_weights_at_their_cycle_end(tmp_path, kind):
    """Huang et al. 2017 take each snapshot at the learning-rate minimum: a snapshot member runs its
    whole cosine cycle (no early stopping) and keeps its last weights; seed members keep their best."""
    from meddx.training.checkpoint import load_checkpoint

    ens, fit = _fit_toy_members(tmp_path, kind)
    for i, member in enumerate(ens.members):
        ck = tmp_path / "members" / str(i) / "checkpoints"
        last = load_checkpoint(ck / "last.pt")
        same = all(torch.equal(v, last["model"][k]) for k, v in member.state_dict().items())
        best_file = load_checkpoint(ck / "best.pt")["model"]
        assert all(torch.equal(v, best_file[k]) for k, v in member.state_dict().items())
        assert last["best_epoch"] == 1  # the score only falls
        if kind == "snapshot":
            assert len(last["history"]) == 4 and same  # the full cycle, and its end
            assert last["history"][-1]["lr"] < 0.1 * max(h["lr"] for h in last["history"])
        else:
            assert len(last["history"]) == 2 and not same  # early stopping; the best epoch
    if kind == "snapshot":
        assert fit.epochs_run == 8 and fit.best_epoch == 4


def test_snapshot_members_under_ema_are_the_averaged_weights_at_their_cycle_end(tmp_path):
    from meddx.training.checkpoint import load_checkpoint

    ens, _ = _fit_toy_members(tmp_path, "snapshot", ema=0.5)
    for i, member in enumerate(ens.members):
        last = load_checkpoint(tmp_path / "members" / str(i) / "checkpoints" / "last.pt")
        assert len(last["history"]) == 4
        state = member.state_dict()
        assert all(torch.equal(v, last["eval_model"][k]) for k, v in state.items())
        assert not all(torch.equal(v, last["model"][k]) for k, v in state.items())  # not the raw weights


def test_a_killed_snapshot_ensemble_resumes_to_the_same_members(tmp_path):
    ref, _ = _fit_toy_members(tmp_path / "ref", "snapshot")
    with pytest.raises(KeyboardInterrupt):
        _fit_toy_members(tmp_path / "cut", "snapshot", stop_at=6)  # member 2, epoch 2
    ens, fit = _fit_toy_members(tmp_path / "cut", "snapshot", resume=True)
    assert fit.epochs_run == 8
    for a, b in zip(ref.members, ens.members):
        assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


class _FeaturesAreInputs(torch.nn.Module):
    """A "trained network" whose pooled features are its inputs (the head sees them as they are)."""

    classifier_layer = "fc"

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(1))  # a backbone with a weight, as a network has
        self.fc = torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(self.gain * x)


def test_pca_head_keeps_the_plans_class_balance():
    """R12 + R15 on a small imbalanced set: a refit without class weights learns the 9:1 training
    prior back and calls almost every minority case majority; the balanced fit does not."""
    from meddx.training.heads import fit_pca_head, head_class_weight

    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0] * 180 + [1] * 20)
    x = torch.randn(200, 2, generator=g) + 1.2 * y[:, None]
    yv = torch.tensor([0] * 50 + [1] * 50)
    xv = torch.randn(100, 2, generator=g) + 1.2 * yv[:, None]
    recall = {}
    for cw in (None, "balanced"):
        head, rec = fit_pca_head(_FeaturesAreInputs(), x, y, xv, yv, 2, 2, class_weight=cw)
        assert rec["class_weight"] == cw
        with torch.no_grad():
            recall[cw] = float((head(xv[yv == 1]).argmax(1) == 1).float().mean())
    assert recall[None] < 0.3 and recall["balanced"] > 0.6, recall
    for ov, want in [({}, None), ({"sampler": "weighted"}, "balanced"), ({"sampler": "undersample"}, "balanced"),
                     ({"class_weights": "balanced"}, "balanced"), ({"logit_adjust": 1.0}, "balanced"),
                     ({"loss": "focal"}, None)]:
        assert head_class_weight(_plan(**ov).train) == want, ov
