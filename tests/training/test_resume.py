"""``--resume`` after a kill at awkward moments: what the finished run reports must not depend on
where the first session stopped, and options that would change the run are refused."""

import json
import subprocess
import sys

import pytest
import torch

from meddx.errors import DatasetError, RunError
from meddx.training.loop import TaskTrainer
from meddx_testutils import make_plan_for


def _quiet(*_a, **_k):
    pass


class _Falling(TaskTrainer):
    """One step per epoch; the validation score falls every epoch (best at epoch 1)."""

    select_name = "score"

    def batches(self, data, epoch):
        yield data

    def step(self, model, batch):
        return model(batch).pow(2).mean()

    def validate(self, model, data):
        with torch.no_grad():
            return float(model(data).pow(2).mean()), {}


def _fit(out, resume=False, **train):
    plan = make_plan_for()
    plan.train.epochs, plan.train.batch_size = 5, 8
    for k, v in train.items():
        setattr(plan.train, k, v)
    plan.optim.lr = 0.05
    torch.manual_seed(0)
    data = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    trainer = _Falling(plan, torch.nn.Linear(4, 2), out, device=torch.device("cpu"), progress=False)
    return trainer.fit(data, data, resume=resume)


def test_resumed_run_keeps_why_its_training_stopped(tmp_path):
    """Killed after training stopped early (during evaluation, or a later ensemble member): the resumed
    run said 'completed' in run.json, metrics.json and the report, not 'early_stopping'."""
    ref = _fit(tmp_path / "a", early_stopping_patience=1)
    assert ref.stopped_by == "early_stopping" and ref.epochs_run == 2
    res = _fit(tmp_path / "a", resume=True, early_stopping_patience=1)  # finished checkpoint, nothing to train
    assert res.stopped_by == "early_stopping" and res.epochs_run == 2 and res.best_epoch == ref.best_epoch


def test_an_epoch_logged_but_not_checkpointed_is_logged_once(tmp_path, monkeypatch):
    """log.jsonl is written before the checkpoint: a kill between the two made the resumed run log that
    epoch twice (epochs 1, 2, 2, 3, ...)."""
    import meddx.training.loop as loop

    ref = _fit(tmp_path / "ref")
    real, calls = loop.save_checkpoint, []

    def killed_at_second(path, state):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(path, state)

    monkeypatch.setattr(loop, "save_checkpoint", killed_at_second)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "cut")
    monkeypatch.setattr(loop, "save_checkpoint", real)
    res = _fit(tmp_path / "cut", resume=True)
    logged = [json.loads(line) for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in logged] == [1, 2, 3, 4, 5] == [r["epoch"] for r in res.history]
    assert [r["val_metric"] for r in logged] == [r["val_metric"] for r in ref.history]


def test_a_denoiser_saved_before_a_kill_keeps_its_record_and_its_charge(tmp_path, monkeypatch):
    """Killed while denoising the images (the denoiser was saved, plan.yaml not yet charged with its
    time): the resumed run loaded it with no fitted_inputs.json record and charged the budget nothing."""
    from meddx.planning.plan import LearnedDenoiseConfig
    from meddx.training.fitted_inputs import denoise_inputs, mark_charged
    from meddx.transforms.learned_denoise import SelfSupervisedDenoiser

    real = SelfSupervisedDenoiser.transform

    def killed(self, x, **kw):
        raise KeyboardInterrupt

    plan = make_plan_for()
    plan.data.learned_denoise = LearnedDenoiseConfig(epochs=1)
    xtr, xva = torch.rand(12, 1, 28, 28), torch.rand(4, 1, 28, 28)
    monkeypatch.setattr(SelfSupervisedDenoiser, "transform", killed)
    with pytest.raises(KeyboardInterrupt):
        denoise_inputs(plan, tmp_path, xtr, xva, log=_quiet)
    assert (tmp_path / "denoiser.pt").exists()
    monkeypatch.setattr(SelfSupervisedDenoiser, "transform", real)
    _, _, _, spent = denoise_inputs(plan, tmp_path, xtr, xva, log=_quiet)
    rec = json.loads((tmp_path / "fitted_inputs.json").read_text())["learned_denoise"]
    assert rec["epochs_run"] == 1 and spent >= rec["seconds"] > 0  # the fit is charged once, now
    mark_charged(tmp_path, "learned_denoise")
    assert denoise_inputs(plan, tmp_path, xtr, xva, log=_quiet)[3] == 0.0


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A classifier run killed after its first epoch (run.json 'running', no metrics)."""
    from meddx.training.run import train_run

    out = tmp_path_factory.mktemp("stopped") / "run"
    import meddx.training.loop as loop

    real = loop.run_epochs

    def stop(*a, **kw):
        def kill(rec):
            raise KeyboardInterrupt
        return real(*a, **{**kw, "on_epoch": kill})

    loop_mp = pytest.MonkeyPatch()
    loop_mp.setattr("meddx.training.engine.run_epochs", stop)
    try:
        with pytest.raises(KeyboardInterrupt):
            train_run("synthetic:phantoms:120", out, overrides={"train.epochs": 2, "seed": 1}, progress=False,
                      log=_quiet)
    finally:
        loop_mp.undo()
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    return out


@pytest.mark.parametrize("kw", [{"overrides": {"train.epochs": 9}}, {"overrides": {"seed": 5}},
                                {"overrides": {"train.ema_decay": 0.9}}, {"image_size": 32},
                                {"plan_path": "plan.yaml"}])
def test_resume_refuses_options_that_would_change_the_run(stopped_run, kw):
    """They were ignored without a word: `--resume --epochs 9` trained the planned 2 epochs."""
    from meddx.training.run import train_run

    with pytest.raises(RunError, match="takes no other plan options"):
        train_run(None, stopped_run, resume=True, progress=False, log=_quiet, **kw)
    assert json.loads((stopped_run / "run.json").read_text())["status"] == "interrupted"


def test_resume_refuses_another_dataset(stopped_run):
    """A dataset holding part of the run's cases passed apply_split and trained on other data."""
    from meddx.training.run import train_run

    with pytest.raises(DatasetError, match="not the dataset the run was trained on"):
        train_run("synthetic:phantoms:110", stopped_run, resume=True, progress=False, log=_quiet)


def test_resume_with_another_task_is_one_line_not_a_traceback(stopped_run):
    r = subprocess.run([sys.executable, "-m", "meddx.cli", "train", "--resume", "--out", str(stopped_run),
                        "--task", "segment", "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "'classify' run" in r.stderr, r.stderr


def test_resumed_run_says_so_in_run_json_and_report(stopped_run, tmp_path):
    import shutil

    from meddx.training.run import train_run

    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    train_run(None, run, resume=True, progress=False, log=_quiet)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "complete" and len(info["resumed"]) == 1 and "versions" in info["resumed"][0]
    assert "resumed (train --resume)" in (run / "report.html").read_text()
    with pytest.raises(RunError, match="already complete"):
        train_run(None, run, resume=True, progress=False, log=_quiet)
