"""``meddx ablate``: the arms it builds and an end-to-end run on phantoms."""

import json

import pytest

from meddx.evaluation.ablation import COMPONENTS, arms, baseline_overrides, run_ablation
from meddx.planning.planner import apply_overrides
from meddx_testutils import make_plan_for


def test_baseline_strips_every_component_and_each_arm_adds_one():
    full = make_plan_for()
    full.augment.rotate_deg = 10
    full.ensemble.kind, full.ensemble.members = "seeds", 3
    full.model.params = {"dropout": 0.1, "attention": "se"}
    base = apply_overrides(full, baseline_overrides(full))
    assert not base.augment.rotate_deg and base.ensemble.kind == "none"
    assert base.model.params == {"dropout": 0.1} and base.train.loss == "ce" and base.train.sampler == "none"
    names = [a for a, _ in arms(full)]
    assert names[0] == "baseline" and names[-1] == "full"
    assert "+ focal_loss" in names and "+ tta" not in names  # tta is 3D only
    # "full - X" only for what the full plan has
    assert {"full - augmentation", "full - ensemble", "full - attention"} <= set(names)
    assert "full - focal_loss" not in names
    for name, ov in arms(full):
        p = apply_overrides(full, ov)  # every arm is a valid plan
        if name == "+ focal_loss":
            assert p.train.loss == "focal" and not p.augment.rotate_deg
        if name == "full - ensemble":
            assert p.ensemble.kind == "none" and p.augment.rotate_deg == 10
    full3 = make_plan_for(spatial_dims=3)
    assert "+ tta" in dict(arms(full3))
    # as the planner plans 3D (R16): the trained flips are a candidate, chosen on validation
    full3 = apply_overrides(full3, {"evaluate.tta_flip_axes": [0, 1, 2], "evaluate.choose_tta": True})
    arms3 = dict(arms(full3))
    assert "+ tta" in arms3 and "full - tta" in arms3
    on, off = apply_overrides(full3, arms3["+ tta"]), apply_overrides(full3, arms3["full - tta"])
    assert on.evaluate.tta_flip_axes == [0, 1, 2] and not on.evaluate.choose_tta  # the arm forces it on
    assert off.evaluate.tta_flip_axes == [] and not off.evaluate.choose_tta
    assert apply_overrides(full3, arms3["baseline"]).evaluate.tta_flip_axes == []
    assert set(COMPONENTS) >= {"augmentation", "balanced_sampling", "focal_loss", "mixup_cutmix", "ensemble"}


@pytest.mark.parametrize("has_attention", [False, True])
def test_every_added_component_changes_the_baseline_plan(has_attention):
    """Regression: '+ attention' once resolved to the baseline itself (the baseline's whole
    ``model.params`` was applied after the arm's ``model.params.attention``)."""
    full = make_plan_for()
    full.augment.rotate_deg = 10
    if has_attention:
        full.model.params = {"dropout": 0.1, "attention": "se"}

    def resolved(ov):
        return apply_overrides(full, ov).model_dump(mode="json", exclude={"decisions"})

    arm_list = dict(arms(full))
    snapshot = json.dumps(arm_list, sort_keys=True, default=str)
    base = resolved(arm_list["baseline"])
    for name, ov in arm_list.items():
        if name.startswith("+ "):
            assert resolved(ov) != base, name
    assert apply_overrides(full, arm_list["+ attention"]).model.params.get("attention") == "se"
    assert json.dumps(arm_list, sort_keys=True, default=str) == snapshot  # resolving an arm leaves the others alone
    assert resolved(arm_list["+ pca_head"])["model"]["params"].get("attention") is None


def test_empty_component_list_gives_baseline_and_full_only():
    full = make_plan_for()
    full.augment.rotate_deg = 10
    assert [a for a, _ in arms(full, [])] == ["baseline", "full"]


def test_unknown_component_is_refused():
    from meddx.errors import MeddxError

    with pytest.raises(MeddxError, match="unknown ablation component"):
        arms(make_plan_for(), ["augmentation", "magic"])


@pytest.mark.slow
def test_ablation_end_to_end_on_phantoms(tmp_path):
    res = run_ablation("synthetic:phantoms:100", tmp_path / "abl", epochs=5, seeds=[0, 1],
                       components=["augmentation", "ensemble"], progress=False, log=lambda *a: None)
    arm_names = [r["arm"] for r in res["arms"]]
    assert arm_names[0] == "baseline" and arm_names[-1] == "full" and "+ ensemble" in arm_names
    for r in res["arms"]:
        assert 0 <= r["test_accuracy_mean"] <= 1 and len(r["runs"]) == 2
        if r["arm"] != "baseline":
            assert 0 < r["p_accuracy"] <= 1 and 0 < r["p_auc"] <= 1
    assert (tmp_path / "abl" / "ablation.md").read_text().count("|") > 20
    assert (tmp_path / "abl" / "ablation.png").stat().st_size > 1000
    # an interrupted ablation continues: finished runs are reused, not retrained
    stamp = (tmp_path / "abl" / "baseline" / "seed0" / "metrics.json").stat().st_mtime
    run_ablation("synthetic:phantoms:100", tmp_path / "abl", epochs=5, seeds=[0, 1],
                 components=["augmentation", "ensemble"], progress=False, log=lambda *a: None)
    assert (tmp_path / "abl" / "baseline" / "seed0" / "metrics.json").stat().st_mtime == stamp
    saved = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert saved["epochs"] == 5 and saved["budget_s"] is None and saved["seeds"] == [0, 1]
    # epoch mode: the ensemble's 5 members share the 5 epochs (1 each), so every arm does equal work
    ens = next(r for r in saved["arms"] if r["arm"] == "+ ensemble")
    assert ens["overrides"]["train.epochs"] == 1 and ens["overrides"]["ensemble.members"] == 5


@pytest.mark.slow
def test_segmentation_ablation_reports_dice(tmp_path):
    from meddx_testutils import write_seg_pairs

    root = write_seg_pairs(tmp_path / "seg", n=20, size=32)
    res = run_ablation(str(root), tmp_path / "abl", budget_s=3, seeds=[0], components=["dice_ce_loss", "tta"],
                       task="segment", progress=False, log=lambda *a: None)
    names = [r["arm"] for r in res["arms"]]
    assert names == ["baseline", "+ dice_ce_loss", "+ tta", "full - dice_ce_loss", "full"]
    for r in res["arms"]:
        assert 0 <= r["test_dice_mean"] <= 1
    assert "test Dice" in (tmp_path / "abl" / "ablation.md").read_text()


def test_changed_arm_definition_invalidates_its_runs(tmp_path, monkeypatch):
    import meddx.evaluation.ablation as ab

    calls = []

    def fake_train_run(dataset, rdir, overrides, **kw):
        calls.append(str(rdir))
        raise RuntimeError("stop")  # only the bookkeeping before training is under test

    monkeypatch.setattr("meddx.training.run.train_run", fake_train_run)
    out = tmp_path / "abl"
    (out / "baseline" / "seed0").mkdir(parents=True)
    (out / "baseline" / "seed0" / "metrics.json").write_text("{}")
    (out / "baseline" / "arm.json").write_text('{"old": "definition"}')
    with pytest.raises(RuntimeError):
        ab.run_ablation("synthetic:phantoms:60", out, epochs=1, seeds=[0], components=["augmentation"],
                        progress=False, log=lambda *a: None)
    assert calls and calls[0].endswith("baseline/seed0")  # the stale finished run was thrown away and retrained


def _ablation_stopped_at_its_first_run(tmp_path, monkeypatch):
    """An ablation of phantoms (baseline only, seed 0) whose first training raises: ``(out, calls, kw)``,
    ``calls`` the run folders training was asked for since, ``kw`` the arguments to run it again."""
    import meddx.evaluation.ablation as ab

    calls = []

    def fake_train_run(dataset, rdir, overrides, **kw):
        calls.append(str(rdir))
        raise RuntimeError("stop")

    monkeypatch.setattr("meddx.training.run.train_run", fake_train_run)
    out = tmp_path / "abl"
    kw = dict(epochs=1, seeds=[0], components=[], progress=False, log=lambda *a: None)
    with pytest.raises(RuntimeError):  # writes baseline/arm.json, then "trains"
        ab.run_ablation("synthetic:phantoms:60", out, **kw)
    return out, calls, kw


def test_a_changed_full_plan_invalidates_finished_runs_whose_overrides_did_not_change(tmp_path, monkeypatch):
    """The baseline's overrides are the same after the planner changes, but the plan they are applied
    to is not: its finished runs must not be mixed with new ones."""
    import meddx.evaluation.ablation as ab
    import meddx.planning.planner as planner

    out, calls, kw = _ablation_stopped_at_its_first_run(tmp_path, monkeypatch)
    (out / "baseline" / "seed0").mkdir(parents=True)
    (out / "baseline" / "seed0" / "metrics.json").write_text("{}")  # as if it had finished
    real = planner.make_plan

    def other_planner(*a, **k):
        p = real(*a, **k)
        p.optim.lr *= 2  # a planner rule changed since the runs were made
        return p

    monkeypatch.setattr(planner, "make_plan", other_planner)
    calls.clear()
    with pytest.raises(RuntimeError):
        ab.run_ablation("synthetic:phantoms:60", out, **kw)
    assert calls and calls[0].endswith("baseline/seed0")  # thrown away and retrained


def test_ablation_sensitivity_is_the_positive_classs_when_it_sorts_first(tmp_path, monkeypatch):
    """Folders "cancer" and "normal": R18 makes cancer (index 0) the positive class, so the ablation's
    sensitivity column is cancer's recall, as in each run's report, not normal's."""
    import meddx.evaluation.ablation as ab
    from meddx.data.synthetic import make_phantoms
    from meddx_testutils import write_png

    imgs, labels = make_phantoms(n=24, size=16, seed=1)
    for i, (im, y) in enumerate(zip(imgs, labels)):
        write_png(tmp_path / "data" / ("cancer" if y else "normal") / f"{i}.png", im)
    # 4 cancer cases (all called cancer) and 4 normal ones (two called cancer): cancer recall 1, normal's 0.5
    rows = [("c", "cancer", 0.9)] * 4 + [("n", "normal", 0.1)] * 2 + [("n", "normal", 0.8)] * 2

    def fake_train_run(dataset, rdir, overrides, **kw):
        rdir.mkdir(parents=True)
        lines = ["case_id,split,label,predicted,predicted_at_threshold,p_cancer,p_normal"]
        for split in ("val", "test"):
            lines += [f"{split}{i},{split},{lab},x,x,{p:.6f},{1 - p:.6f}" for i, (_, lab, p) in enumerate(rows)]
        (rdir / "predictions.csv").write_text("\n".join(lines) + "\n")
        (rdir / "metrics.json").write_text(json.dumps({"training": {"train_seconds": 1.0}}))
        return rdir

    monkeypatch.setattr("meddx.training.run.train_run", fake_train_run)
    res = ab.run_ablation(str(tmp_path / "data"), tmp_path / "abl", epochs=1, seeds=[0], components=[],
                          progress=False, log=lambda *a, **k: None)
    for r in res["arms"]:
        assert r["test_sensitivity_mean"] == pytest.approx(1.0)
    assert res["sensitivity_of"] == "cancer" and "| sensitivity (cancer) |" in (tmp_path / "abl" / "ablation.md").read_text()


def _fake_finished_run(rdir, names=("cancer", "normal")):
    """What the ablation reads of a finished run: predictions.csv, metrics.json, run.json."""
    rdir.mkdir(parents=True)
    rows = [("cancer", 0.9)] * 4 + [("normal", 0.2)] * 4
    lines = ["case_id,split,label,predicted,predicted_at_threshold," + ",".join(f"p_{n}" for n in names)]
    for split in ("val", "test"):
        lines += [f"{split}{i},{split},{lab},x,x,{p:.6f},{1 - p:.6f}" for i, (lab, p) in enumerate(rows)]
    (rdir / "predictions.csv").write_text("\n".join(lines) + "\n")
    (rdir / "metrics.json").write_text(json.dumps({"training": {"train_seconds": 1.0}}))
    (rdir / "run.json").write_text(json.dumps({"status": "complete"}))
    return rdir


def _two_class_folder(root):
    from meddx.data.synthetic import make_phantoms
    from meddx_testutils import write_png

    imgs, labels = make_phantoms(n=24, size=16, seed=1)
    for i, (im, y) in enumerate(zip(imgs, labels)):
        write_png(root / ("cancer" if y else "normal") / f"{i}.png", im)
    return root


def test_a_run_stopped_after_writing_its_metrics_is_trained_again(tmp_path, monkeypatch):
    """metrics.json is written before the report and run.json's "complete": a run Ctrl-C'd between them
    (run.json "interrupted") was taken as finished, and the resumed ablation then failed on, or
    counted, a run that never completed."""
    import meddx.evaluation.ablation as ab

    out, calls, kw = _ablation_stopped_at_its_first_run(tmp_path, monkeypatch)
    run = out / "baseline" / "seed0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    (run / "run.json").write_text(json.dumps({"status": "interrupted"}))
    calls.clear()
    with pytest.raises(RuntimeError):
        ab.run_ablation("synthetic:phantoms:60", out, **kw)
    assert calls and calls[0].endswith("baseline/seed0")


def test_an_interrupted_ablation_leaves_no_earlier_summary_behind(tmp_path, monkeypatch):
    """Re-running in a folder that holds an earlier ablation.md/.json/.png (other seeds, epochs or
    components) and pressing Ctrl-C left the old summary there, looking like this ablation's result."""
    import meddx.evaluation.ablation as ab

    def interrupted(dataset, rdir, overrides, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr("meddx.training.run.train_run", interrupted)
    out = tmp_path / "abl"
    out.mkdir()
    for name in ("ablation.md", "ablation.json", "ablation.png"):
        (out / name).write_text("an earlier ablation")
    with pytest.raises(KeyboardInterrupt):
        ab.run_ablation("synthetic:phantoms:60", out, epochs=1, seeds=[0], components=[], progress=False,
                        log=lambda *a: None)
    assert not [p.name for p in out.glob("ablation.*")]


def test_ablation_progress_shows_time_left_and_a_repeated_seed_runs_once(tmp_path, monkeypatch):
    """The progress lines gave the elapsed time only; --seeds 0,0 trained seed 0 once but counted it
    twice (a zero spread over 'two seeds')."""
    import meddx.evaluation.ablation as ab

    monkeypatch.setattr("meddx.training.run.train_run", lambda dataset, rdir, overrides, **kw: _fake_finished_run(rdir))
    lines = []
    res = ab.run_ablation(str(_two_class_folder(tmp_path / "data")), tmp_path / "abl", epochs=1, seeds=[0, 0, 1],
                          components=["focal_loss", "focal_loss"], progress=False, log=lines.append)
    assert res["seeds"] == [0, 1]
    assert [r["arm"] for r in res["arms"]].count("+ focal_loss") == 1
    counted = [ln for ln in lines if ln.startswith("[")]
    assert counted[-1].startswith(f"[{len(counted)}/{len(counted)}]")
    assert "min left" in counted[0] and "min left" not in counted[-1]


def test_cli_prints_the_ablation_table_one_row_per_line(tmp_path, monkeypatch):
    """The table was printed through Rich at the terminal's width: rows wrapped mid-cell (and a
    folder name in brackets would have been read as markup)."""
    from typer.testing import CliRunner

    import meddx.evaluation.ablation as ab
    from meddx.cli import app

    row = "| baseline [b] | 0.333 ± 0.000 | +0.000 |  | 0.333 ± 0.000 | 0.537 ± 0.013 | +0.000 |  | 0.333 ± 0.000 |"

    def fake(path, out, **kw):
        out.mkdir(parents=True)
        (out / "ablation.md").write_text(f"### scans[2024]\n\n{row}\n")
        return {}

    monkeypatch.setattr(ab, "run_ablation", fake)
    r = CliRunner().invoke(app, ["ablate", str(tmp_path), "--out", str(tmp_path / "abl"), "--epochs", "1",
                                 "--no-progress"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    assert row in r.output.splitlines() and "### scans[2024]" in r.output


def test_a_component_named_that_does_not_apply_is_reported(tmp_path, monkeypatch):
    """--components tta on 2D images ran the baseline and full plan only, without a word about tta."""
    import meddx.evaluation.ablation as ab

    monkeypatch.setattr("meddx.training.run.train_run", lambda dataset, rdir, overrides, **kw: _fake_finished_run(rdir))
    lines = []
    res = ab.run_ablation(str(_two_class_folder(tmp_path / "data")), tmp_path / "abl", epochs=1, seeds=[0],
                          components=["tta"], progress=False, log=lines.append)
    assert [r["arm"] for r in res["arms"]][:1] == ["baseline"] and "+ tta" not in [r["arm"] for r in res["arms"]]
    assert any(ln.startswith("tta: does not apply") for ln in lines), lines


def test_cli_components_ignore_empty_entries(tmp_path, monkeypatch):
    """--components 'augmentation,' was refused as the unknown component ''."""
    from typer.testing import CliRunner

    import meddx.evaluation.ablation as ab
    from meddx.cli import app

    seen = {}

    def fake(path, out, **kw):
        seen.update(kw)
        out.mkdir(parents=True)
        (out / "ablation.md").write_text("table\n")
        return {}

    monkeypatch.setattr(ab, "run_ablation", fake)
    r = CliRunner().invoke(app, ["ablate", str(tmp_path), "--out", str(tmp_path / "abl"), "--epochs", "1",
                                 "--components", "augmentation, ,attention,", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert seen["components"] == ["augmentation", "attention"]


def test_out_inside_the_dataset_folder_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    """`meddx ablate data --out data/abl` made data/abl/baseline/ and then failed on its own folder
    ("class folder 'abl' holds no readable images"), leaving it inside the user's dataset."""
    import meddx.evaluation.ablation as ab
    from meddx.errors import MeddxError

    monkeypatch.setattr("meddx.training.run.train_run", lambda dataset, rdir, overrides, **kw: _fake_finished_run(rdir))
    data = _two_class_folder(tmp_path / "data")
    with pytest.raises(MeddxError, match="inside the dataset"):
        ab.run_ablation(str(data), data / "abl", epochs=1, seeds=[0], components=[], progress=False,
                        log=lambda *a: None)
    assert not (data / "abl").exists()


def test_markdown_shows_small_p_values_as_under_0001_and_no_spread_for_one_seed():
    """A p-value of 1/2001 printed as 0.000 (a bootstrap p is never 0), and one seed printed '± 0.000'
    as if the seeds had agreed."""
    from meddx.evaluation.ablation import markdown_table

    res = {"task": "segment", "dataset": "d", "epochs": 1, "budget_s": None, "seeds": [0],
           "arms": [{"arm": "baseline", "test_dice_mean": 0.5, "test_dice_sd": 0.0, "delta_dice": 0.0,
                     "val_dice_mean": 0.4, "val_dice_sd": 0.0},
                    {"arm": "+ tta", "test_dice_mean": 0.6, "test_dice_sd": 0.0, "delta_dice": 0.1, "p_dice": 1 / 2001,
                     "val_dice_mean": 0.5, "val_dice_sd": 0.0}]}
    md = markdown_table(res)
    assert "| + tta | 0.600 | +0.100 | < 0.001 | 0.500 |" in md and "±" not in md
    assert "0.500 ± 0.000" in markdown_table({**res, "seeds": [0, 1]})
