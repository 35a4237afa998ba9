"""Training engine: repeatable, resumable after a kill, time-budgeted."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from meddx.training.run import train_run


def _weights(run):
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_numbers(tmp_path):
    ov = {"train.epochs": 2, "seed": 3}
    a = train_run("synthetic:phantoms:200", tmp_path / "a", overrides=dict(ov), progress=False, log=lambda *_: None)
    b = train_run("synthetic:phantoms:200", tmp_path / "b", overrides=dict(ov), progress=False, log=lambda *_: None)
    assert _same(_weights(a), _weights(b))
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (a, b))
    assert ma["operating_points"] == mb["operating_points"]
    c = train_run("synthetic:phantoms:200", tmp_path / "c", overrides={"train.epochs": 2, "seed": 4}, progress=False,
                  log=lambda *_: None)
    assert not _same(_weights(a), _weights(c))


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    args = ["synthetic:phantoms:200", "--epochs", "4", "--seed", "1", "--no-progress"]
    full = tmp_path / "full"
    subprocess.run([sys.executable, "-m", "meddx.cli", "train", *args, "--out", str(full)], check=True,
                   capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "meddx.cli", "train", *args, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = killed / "log.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists() and not (killed / "report.html").exists()
    assert json.loads((killed / "run.json").read_text())["status"] == "running"
    done = len(log.read_text().splitlines())
    assert done < 4, "the run finished before it could be killed"
    r = subprocess.run([sys.executable, "-m", "meddx.cli", "train", "--resume", "--out", str(killed),
                        "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert _same(_weights(full), _weights(killed))
    m_full = json.loads((full / "metrics.json").read_text())
    m_res = json.loads((killed / "metrics.json").read_text())
    assert m_full["operating_points"] == m_res["operating_points"]


def test_time_budget_sizes_the_schedule(tmp_path):
    run = train_run("synthetic:phantoms:200", tmp_path / "tb", overrides={"train.time_budget_s": 8.0}, progress=False,
                    log=lambda *_: None)
    plan = (run / "plan.yaml").read_text()
    assert "R9 epochs" in plan
    m = json.loads((run / "metrics.json").read_text())
    assert m["training"]["train_seconds"] < 8.0 * 1.6 + 2
    assert m["training"]["epochs_planned"] >= 1


def test_ema_weights_get_batchnorm_statistics_of_their_own():
    """The averaged weights' BatchNorm statistics are re-estimated on training batches (cumulative
    average, not the stale EMA of past running statistics); momentum and mode are restored."""
    import torch.nn as nn

    from meddx.training.loop import refresh_batchnorm

    m = nn.Sequential(nn.Conv2d(1, 3, 1, bias=False), nn.BatchNorm2d(3)).eval()
    with torch.no_grad():
        m[0].weight.fill_(2.0)
        m[1].running_mean.fill_(-7.0)
        m[1].running_var.fill_(100.0)
    g = torch.Generator().manual_seed(0)
    data = [5.0 + torch.randn(16, 1, 4, 4, generator=g) for _ in range(6)]
    seen = []

    def step(model, xb):
        seen.append(1)
        return model(xb).mean()

    refresh_batchnorm(m, iter(data), step, max_batches=4)
    assert len(seen) == 4 and not m.training and m[1].momentum == 0.1
    x = 2.0 * torch.cat(data[:4])
    assert torch.allclose(m[1].running_mean, x.mean().expand(3), atol=1e-4)
    assert torch.allclose(m[1].running_var, torch.stack([d.var() * 4 for d in data[:4]]).mean().expand(3), rtol=0.05)


def test_ema_classifier_validates_weights_with_refreshed_batchnorm(tmp_path, monkeypatch):
    import meddx.training.loop as loop

    calls = []
    real = loop.refresh_batchnorm

    def spy(model, batches, step, **kw):
        bn = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        before = bn[0].running_mean.clone()
        real(model, batches, step, **kw)
        calls.append(not torch.equal(before, bn[0].running_mean))
        return None

    monkeypatch.setattr(loop, "refresh_batchnorm", spy)
    train_run("synthetic:phantoms:60", tmp_path / "r", overrides={"train.epochs": 2, "train.ema_decay": 0.9},
              progress=False, log=lambda *_: None)
    assert calls == [True, True]  # every epoch, and the statistics changed


def test_ema_tracks_weights_and_tta_averages_flips():
    import torch.nn as nn

    from meddx.training.engine import predict_proba
    from meddx.training.loop import EMA

    m = nn.Linear(2, 2)
    ema = EMA(m, decay=0.5)
    w0 = m.weight.detach().clone()
    with torch.no_grad():
        m.weight.add_(2.0)
    ema.update(m)
    assert torch.allclose(ema.state["weight"], w0 + 1.0)  # 0.5 * w0 + 0.5 * (w0 + 2)

    class LeftRight(nn.Module):  # logits = mean of the left half vs the right half
        def forward(self, x):
            w = x.shape[-1] // 2
            return torch.stack([x[..., :w].mean((1, 2, 3)), x[..., w:].mean((1, 2, 3))], 1) * 10

        def parameters(self):
            return iter([torch.zeros(1)])

    x = torch.zeros(1, 1, 4, 4)
    x[..., :2] = 1.0
    p = predict_proba(LeftRight(), x, device=torch.device("cpu"))
    assert p[0, 0] > 0.99
    p_tta = predict_proba(LeftRight(), x, device=torch.device("cpu"), tta_flip_axes=[1])
    assert abs(p_tta[0, 0] - 0.5) < 1e-6  # the flip swaps the halves; the average is even


def test_test_time_flips_are_kept_only_when_validation_rises():
    """R16: the candidate flips survive only if they raise the validation AUC; the choice is recorded."""
    import numpy as np
    import torch.nn as nn

    from meddx.planning.plan import Plan
    from meddx.training.run import choose_tta

    class LeftHalf(nn.Module):  # class 1 when the left half is bright; blind to the right half
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            s = x[..., : x.shape[-1] // 2].mean((1, 2, 3, 4)) * 10
            return torch.stack([-s, s], 1)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 4, 4, 4, generator=g)
    y_left = (x[..., :2].mean((1, 2, 3, 4)) > 0).long().numpy()   # what the network sees: flips only blur it
    y_right = (x[..., 2:].mean((1, 2, 3, 4)) > 0).long().numpy()  # what only the flipped copy sees
    for y, kept in ((y_left, []), (y_right, [2])):
        plan = Plan.model_validate({"task": "classify", "data": {"source": "x", "kind": "npz",
                                                                 "class_names": ["a", "b"], "spatial_dims": 3,
                                                                 "channels": 1, "input_size": [4, 4, 4]},
                                    "evaluate": {"tta_flip_axes": [2], "choose_tta": True}})
        choose_tta(plan, LeftHalf(), x, np.asarray(y), torch.device("cpu"), log=lambda m: None)
        assert plan.evaluate.tta_flip_axes == kept and plan.evaluate.choose_tta is False
        d = plan.decisions[-1]
        assert d.rule.startswith("R16") and d.kind == "empirical" and d.reads["candidate_flip_axes"] == [2]
        assert (d.reads["validation_score"]["with"] > d.reads["validation_score"]["without"]) == bool(kept)


def _tiny_plan(**train):
    from meddx.planning.plan import DataConfig, Plan, TrainConfig

    return Plan(data=DataConfig(source="t", kind="synthetic", class_names=["a", "b"], spatial_dims=2, channels=1,
                                input_size=[12, 12]), train=TrainConfig(**train))


def _tiny_data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 12, 12, generator=g)
    y = (x[:, 0, :6].mean((1, 2)) > 0).long()
    x[y == 1, :, :6] += 1.0
    return x, y


@pytest.mark.parametrize("aucs, epochs, patience, stopped_by, epochs_run", [
    ([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], 6, 2, "early_stopping", 3),
    # patience reached at the last planned epoch: nothing was cut short, so metrics.json and the report say
    # 'completed' (they said 'early_stopping')
    ([0.9, 0.8], 2, 1, "completed", 2),
])
def test_early_stopping_stops_after_patience(tmp_path, monkeypatch, aucs, epochs, patience, stopped_by, epochs_run):
    from meddx.models import create_model
    from meddx.training import engine

    scores = iter(aucs)
    monkeypatch.setattr(engine, "val_scores", lambda y, p: {"auc": next(scores), "accuracy": 0.5, "loss": 1.0})
    plan = _tiny_plan(epochs=epochs, batch_size=16, early_stopping_patience=patience)
    model = create_model("small_cnn", spatial_dims=2, in_channels=1, num_classes=2, input_size=(12, 12))
    x, y = _tiny_data()
    res = engine.Trainer(plan, model, tmp_path, progress=False).fit(x, y, x[:16], y[:16])
    assert res.stopped_by == stopped_by and res.epochs_run == epochs_run and res.best_epoch == 1


def test_a_diverging_run_stops_in_one_line_naming_the_learning_rate(tmp_path):
    """A learning rate far too large: the loss went NaN in the first steps, every planned epoch still
    trained on NaN weights, and evaluation then failed with 'score contains NaN or Inf'. It stops at
    the first non-finite loss with a RunError (one line, exit 2) naming optim.lr, before the epoch is
    checkpointed (so train_run's guard removes a run that diverged in its first epoch)."""
    from meddx.errors import RunError
    from meddx.models import create_model
    from meddx.planning.plan import OptimConfig
    from meddx.training.engine import Trainer

    plan = _tiny_plan(epochs=3, batch_size=16)
    plan.optim = OptimConfig(name="sgd", lr=1e8)
    torch.manual_seed(0)
    model = create_model("small_cnn", spatial_dims=2, in_channels=1, num_classes=2, input_size=(12, 12))
    x, y = _tiny_data()
    with pytest.raises(RunError, match=r"diverged in epoch 1.*optim\.lr \(now 1e\+08\)"):
        Trainer(plan, model, tmp_path, progress=False).fit(x, y, x[:16], y[:16])
    assert not (tmp_path / "checkpoints" / "last.pt").exists()


@pytest.mark.parametrize("opt", ["sgd", "adam", "adamw", "rmsprop"])
def test_every_optimiser_and_l1_shrinks_weights(tmp_path, opt):
    from meddx.models import create_model
    from meddx.planning.plan import OptimConfig
    from meddx.training.engine import Trainer

    x, y = _tiny_data()
    norms = {}
    for l1 in (0.0, 1e-3):
        plan = _tiny_plan(epochs=3, batch_size=16)
        plan.optim = OptimConfig(name=opt, lr=0.01, weight_decay=0.0, l1=l1)
        torch.manual_seed(0)
        model = create_model("small_cnn", spatial_dims=2, in_channels=1, num_classes=2, input_size=(12, 12))
        Trainer(plan, model, tmp_path / f"{opt}{l1}", progress=False).fit(x, y, x[:16], y[:16])
        last = torch.load(tmp_path / f"{opt}{l1}" / "checkpoints" / "last.pt", weights_only=True)["model"]
        norms[l1] = sum(v.abs().sum().item() for k, v in last.items() if k.endswith("weight") and v.ndim > 1)
    assert norms[1e-3] < norms[0.0]


def test_time_budget_shortens_the_schedule_when_epochs_run_slower_than_estimated(tmp_path, monkeypatch):
    """A start-of-run estimate that is 3x too optimistic: the cosine schedule is re-sized so the
    learning rate still anneals inside the budget, instead of being cut off at full height.

    The loop's clock is a fake one that advances 1 s per reading (the loop reads it once per epoch):
    every epoch takes exactly 1 s whatever else the machine is doing, so the test cannot flake under
    load; the estimate says 1/3 s."""
    import json
    import types

    import meddx.training.engine as eng
    import meddx.training.loop as loop

    ticks = iter(range(10**6))
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    monkeypatch.setattr(eng.Trainer, "measure_epoch_seconds", lambda self, *a, **k: 1 / 3)
    run = train_run("synthetic:phantoms:60", tmp_path / "r", overrides={"train.time_budget_s": 12.5},
                    progress=False, log=lambda *_: None)
    m = json.loads((run / "metrics.json").read_text())["training"]
    hist = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert m["epochs_planned"] >= 24 and m["epochs_run"] == 12  # planned for 1/3 s epochs; 12 x 1 s fit in 12.5 s
    assert [h["elapsed_s"] for h in hist] == [float(k) for k in range(1, 13)]
    assert hist[-1]["lr"] < 0.02 * max(h["lr"] for h in hist)  # annealed to ~0, not cut off near the peak


def test_machine_names_the_cpu_generation():
    """Results files name the CPU with family/model and clock: VMs report one generic name
    ("AMD EPYC") for processor generations that differ 2x in speed."""
    from pathlib import Path

    from meddx.training.run import machine

    m = machine()
    assert m["cores"] >= 1 and m["device"] in ("cpu", "cuda", "cuda:0")
    info = Path("/proc/cpuinfo")
    if info.exists() and "cpu family" in info.read_text():
        assert "family" in m["cpu"] and "model" in m["cpu"]


@pytest.mark.parametrize("dims", [2, 3])
def test_training_layout_follows_the_cpu_and_keeps_the_numbers(dims):
    from meddx.models.registry import create_model
    from meddx.training.loop import channels_last_pays, training_layout

    torch.manual_seed(0)
    model = create_model("small_cnn", spatial_dims=dims, in_channels=1, num_classes=3, input_size=28).eval()
    x = torch.randn(2, 1, *(28,) * dims)
    before = model(x)
    fmt = torch.channels_last if dims == 2 else torch.channels_last_3d
    conv = next(m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))
                and m.in_channels > 1 and m.kernel_size[0] > 1)
    assert training_layout(model) is model
    want = channels_last_pays(dims)
    assert want == (dims == 3 or "AVX512" in torch.backends.cpu.get_cpu_capability())
    assert conv.weight.is_contiguous(memory_format=fmt) == want and conv.weight.is_contiguous() != want
    assert torch.allclose(model(x), before, atol=1e-5)
    training_layout(model, on=False)
    assert conv.weight.is_contiguous()
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 2))
    assert training_layout(mlp) is mlp and mlp[0].weight.is_contiguous()


def test_narrow_2d_student_trains_without_hanging():
    """Regression: on AVX2-only CPUs, oneDNN's 1x1 stride-2 backward in channels-last order
    corrupted memory and hung after ~18 steps for a 6-channel shortcut (CI stalled in the
    distillation test). Runs in a child process so that a hang fails this test instead of the suite."""
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from meddx.models.registry import create_model\n"
        "from meddx.training.loop import training_layout\n"
        "torch.manual_seed(0)\n"
        "m = training_layout(create_model('small_cnn', spatial_dims=2, in_channels=1, num_classes=2,\n"
        "                                 input_size=28, width=0.25, first_stride=2))\n"
        "opt = torch.optim.Adam(m.parameters(), 1e-3)\n"
        "for _ in range(60):\n"
        "    x = torch.randn(64, 1, 28, 28); y = torch.randint(0, 2, (64,))\n"
        "    loss = torch.nn.functional.cross_entropy(m(x), y)\n"
        "    opt.zero_grad(); loss.backward(); opt.step()\n"
        "assert torch.isfinite(loss)\n"
        "print('done')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "done" in r.stdout, r.stderr[-2000:]


def test_trained_model_comes_back_in_the_default_layout(tmp_path):
    run = train_run("synthetic:phantoms:200", tmp_path / "r", overrides={"train.epochs": 1}, progress=False,
                    log=lambda *_: None)
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["model"]
    convs = [v for v in best.values() if v.ndim in (4, 5)]
    assert convs and all(v.is_contiguous() for v in convs)


def test_recorded_augmentation_replays_every_batch_the_network_saw(tmp_path):
    """augment.record: every training batch's drawn parameters are written per epoch, and
    BatchAugment.apply (and mixup/cutmix from the recorded generator state) rebuilds exactly the
    input the network was given."""
    from meddx.models import create_model
    from meddx.planning.plan import AugmentConfig
    from meddx.training import engine
    from meddx.transforms.augment import BatchAugment, load_augment_record

    plan = _tiny_plan(epochs=2, batch_size=16, mixup=0.4, cutmix=1.0, mix_prob=0.5)
    plan.augment = AugmentConfig(flip_axes=[1], rotate_deg=15, scale=0.1, brightness=0.1, noise_std=0.05,
                                 record=True)
    model = create_model("small_cnn", spatial_dims=2, in_channels=1, num_classes=2, input_size=(12, 12))
    seen = []
    model.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()) if m.training else None)
    x, y = _tiny_data()
    engine.Trainer(plan, model, tmp_path, progress=False).fit(x, y, x[:16], y[:16])
    aug = BatchAugment.from_config(plan.augment, 2)
    replayed, kinds = [], set()
    for e in (1, 2):
        rec = load_augment_record(tmp_path / "augment" / f"epoch_{e:04d}.pt")
        assert rec["epoch"] == e
        for b in rec["batches"]:
            xb = aug.apply(x[b["case_index"]], b["params"])
            if "mix" in b:
                mx = b["mix"]
                kinds.add(mx["kind"])
                g = torch.Generator()
                g.set_state(mx["generator_state"])
                fn, a = (engine.cutmix, 1.0) if mx["kind"] == "cutmix" else (engine.mixup, 0.4)
                xb, perm, lam = fn(xb, a, g)
                assert torch.equal(perm, mx["perm"]) and lam == mx["lam"]
            replayed.append(xb)
    assert len(replayed) == len(seen) == 2 * 4 and kinds  # 64 cases, batches of 16; some batches were mixed
    assert all(torch.equal(a, b) for a, b in zip(replayed, seen))
    plan.augment.record = False
    engine.Trainer(plan, model, tmp_path / "off", progress=False).fit(x, y, x[:16], y[:16])
    assert not (tmp_path / "off" / "augment").exists()


def test_a_run_selected_by_loss_reports_the_loss_not_its_negation(tmp_path):
    """The loop maximises its score, so it holds a loss negated; metrics.json reported that (-0.496)."""
    run = train_run("synthetic:phantoms:120", tmp_path / "r", overrides={"train.epochs": 2,
                    "train.select_metric": "loss"}, progress=False, log=lambda *_: None)
    t = json.loads((run / "metrics.json").read_text())["training"]
    best = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()][t["best_epoch"] - 1]
    assert t["select_metric"] == "loss" and t["best_val_metric"] > 0
    assert t["best_val_metric"] == pytest.approx(best["val_loss"])
