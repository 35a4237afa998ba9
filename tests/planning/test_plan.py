import pytest
import yaml

from meddx.errors import PlanError
from meddx.planning.plan import Plan, TrainConfig
from meddx.planning.planner import EPOCHS_FROM_BUDGET, apply_overrides, make_plan, refit_batch


def _fp(**kw):
    fp = {"kind": "folder", "class_names": ["a", "b"], "class_counts": {"a": 500, "b": 1500},
          "split_counts": {}, "official_split": False, "spatial_dims": [2], "channels": {"1": 2000},
          "shape_median": [28, 28], "shape_min": [28, 28], "shape_max": [28, 28], "distinct_shapes": 1,
          "intensity": {"min": 0.0, "max": 255.0, "integer_valued": True, "p00_5": 0.0, "p99_5": 255.0}}
    fp.update(kw)
    return fp


def test_yaml_round_trip(tmp_path):
    p = make_plan(_fp(), source="x")
    p.save(tmp_path / "plan.yaml")
    q = Plan.load(tmp_path / "plan.yaml")
    assert q == p


def test_invalid_plan_names_the_field(tmp_path):
    p = make_plan(_fp(), source="x")
    text = p.to_yaml().replace("name: adamw", "name: lbfgs")
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(PlanError, match="optim.name"):
        Plan.load(tmp_path / "bad.yaml")
    (tmp_path / "junk.yaml").write_text("data: [unclosed")
    with pytest.raises(PlanError, match="YAML"):
        Plan.load(tmp_path / "junk.yaml")


def test_rules_small_grey_images():
    p = make_plan(_fp(), source="x")
    assert p.data.spatial_dims == 2 and p.data.channels == 1 and p.data.input_size == [28, 28]
    assert p.data.intensity == "scale255" and p.train.batch_size == 64
    assert {d.rule.split()[0] for d in p.decisions} >= {"R1", "R2", "R3", "R4", "R5", "R6"}


def test_rules_count_training_cases_not_the_whole_dataset():
    """R6/R14/R15 read the number of training cases: without a split of its own the dataset's 2000
    cases train on the seeded split's 70 % (1400 < 2000: batch 64); an official training split of
    2000 gets batch 128."""
    seeded = make_plan(_fp(), source="x", time_budget_s=600)
    r6 = next(d for d in seeded.decisions if d.rule.startswith("R6"))
    assert r6.reads["n_train"] == 1400 and seeded.train.batch_size == 64
    official = make_plan(_fp(split_counts={"train": {"a": 500, "b": 1500}, "val": {"a": 60, "b": 180}},
                             official_split=True), source="x", time_budget_s=600)
    assert official.train.batch_size == 128
    # R15: 400 cases without a split train on 280 (< 300): the PCA head; the same 400 as an official
    # training split do not
    small = make_plan(_fp(class_counts={"a": 100, "b": 300}), source="x")
    assert small.train.head == "pca_linear"
    big = make_plan(_fp(class_counts={"a": 100, "b": 300}, split_counts={"train": {"a": 100, "b": 300}}), source="x")
    assert big.train.head == "deep"


def test_rules_large_rgb_mixed_sizes_and_ct():
    p = make_plan(_fp(channels={"3": 90, "1": 10}, shape_median=[300, 420], shape_max=[600, 800], distinct_shapes=40),
                  source="x")
    assert p.data.channels == 3 and p.data.input_size == [128, 128]
    ct = make_plan(_fp(spatial_dims=[3], shape_median=[40, 120, 120], shape_max=[60, 200, 200], distinct_shapes=5,
                       intensity={"min": -1024.0, "max": 3000.0, "integer_valued": True, "p00_5": -1000.0,
                                  "p99_5": 1500.0}), source="x", cuda=False)
    assert ct.data.spatial_dims == 3 and ct.data.input_size == [32, 32, 32]
    assert ct.data.intensity == "clip_scale" and ct.data.clip == [-1000.0, 1500.0]
    clip = next(d for d in ct.decisions if d.field == "data.clip")  # the window names the percentiles it read
    assert clip.rule.startswith("R4") and clip.reads == {"p00_5": -1000.0, "p99_5": 1500.0}
    # R16: 3D tries, on validation after training, averaging over the flips it was trained with; 2D none
    assert ct.evaluate.tta_flip_axes == ct.augment.flip_axes == [0, 1, 2] and ct.evaluate.choose_tta
    assert p.evaluate.tta_flip_axes == [] and p.augment.flip_axes == []
    assert any(d.rule.startswith("R16") for d in ct.decisions)
    mr = make_plan(_fp(intensity={"min": 0.0, "max": 4000.5, "integer_valued": False, "p00_5": 0, "p99_5": 3000}),
                   source="x")
    assert mr.data.intensity == "image_zscore"


def test_mixed_dimensionality_refused():
    from meddx.errors import DatasetError

    with pytest.raises(DatasetError, match="mixed 2D and 3D"):
        make_plan(_fp(spatial_dims=[2, 3]), source="x")


def test_overrides_are_recorded_and_validated():
    p = apply_overrides(make_plan(_fp(), source="x"), {"train.epochs": 3, "optim.lr": 0.1})
    assert p.train.epochs == 3 and p.optim.lr == 0.1
    assert p.decisions[-1].kind == "user"
    with pytest.raises(Exception):
        apply_overrides(p, {"train.epochs": 0})



def test_an_override_to_null_removes_a_setting():
    """`--set train.synthetic=null`, an ablation arm's "off" and an empirical choice's plain option
    all set fields to None: that must take the setting away, not be skipped."""
    p = apply_overrides(make_plan(_fp(), source="x"), {"model.params.attention": "se", "train.synthetic": {"epochs": 5},
                                                       "train.class_weights": "balanced"})
    assert p.model.params["attention"] == "se" and p.train.synthetic is not None
    q = apply_overrides(p, {"model.params.attention": None, "train.synthetic": None, "train.class_weights": None})
    assert "attention" not in q.model.params and q.train.synthetic is None and q.train.class_weights is None


def test_a_nested_override_wins_over_its_parent_in_any_order():
    p0 = make_plan(_fp(), source="x")
    for ov in ({"model.params.attention": "se", "model.params": {"dropout": 0.2}},
               {"model.params": {"dropout": 0.2}, "model.params.attention": "se"}):
        p = apply_overrides(p0, ov)
        assert p.model.params == {"dropout": 0.2, "attention": "se"}
        assert ov["model.params"] == {"dropout": 0.2}  # the caller's dict is not written into


@pytest.mark.parametrize("key, value", [("train.mixup", 0.2), ("train.sampler", "weighted"), ("train.loss", "focal"),
                                        ("train.class_weights", "balanced"), ("train.head", "pca_linear"),
                                        ("data.learned_denoise", {"epochs": 2}), ("evaluate.tta_flip_axes", [1])])
def test_a_segmentation_plan_refuses_keys_only_classifiers_read(tmp_path, key, value):
    """Segmentation's trainer never reads these: a plan that sets them is refused, naming the key,
    instead of training as if they were not there."""
    seg = make_plan(_fp(), source="x").model_dump(mode="json")
    seg.update(task="segment", segment={"label_values": [0, 1], "label_names": ["background", "lesion"]})
    seg["evaluate"]["positive_class"] = None  # R18's, which the classifier plan this starts from has
    base = Plan.model_validate(seg)  # the planner's segmentation defaults pass
    with pytest.raises(PlanError, match=key.replace(".", r"\.")):
        apply_overrides(base, {key: value})
    raw = apply_overrides(make_plan(_fp(), source="x"), {key: value}).model_dump(mode="json")
    raw.update(task="segment", segment=seg["segment"])
    raw["evaluate"]["positive_class"] = None
    import yaml

    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(PlanError, match=f"{key.replace('.', '[.]')}.*only to classification"):
        Plan.load(tmp_path / "plan.yaml")


def test_a_classifier_plan_refuses_a_target_spacing():
    with pytest.raises(PlanError, match="target_spacing"):
        apply_overrides(make_plan(_fp(), source="x"), {"data.target_spacing": [1.0, 1.0]})


@pytest.mark.parametrize("ov, match", [
    ({"evaluate.target_sensitivity": 0.9}, "only applies to threshold_rule 'sensitivity'"),
    ({"evaluate.threshold_rule": "sensitivity"}, "needs evaluate.target_sensitivity"),
    ({"evaluate.threshold_rule": "sensitivity", "evaluate.target_sensitivity": 1.5}, r"\(0, 1\]"),
    ({"evaluate.threshold_rule": "sensitivity", "evaluate.target_sensitivity": 0.0}, r"\(0, 1\]"),
])
def test_an_unusable_operating_point_rule_is_refused_by_the_plan(ov, match):
    """choose_threshold refuses these only after training, failing the whole run: the plan refuses them first."""
    with pytest.raises(PlanError, match=match):
        apply_overrides(make_plan(_fp(), source="x"), ov)
    p = apply_overrides(make_plan(_fp(), source="x"),
                        {"evaluate.threshold_rule": "sensitivity", "evaluate.target_sensitivity": 0.9})
    assert p.evaluate.target_sensitivity == 0.9


@pytest.mark.parametrize("names, positive", [
    (["malignant", "normal, benign"], "malignant"), (["normal", "pneumonia"], "pneumonia"),
    (["COVID", "Normal"], "COVID"), (["no_tumor", "tumor"], "tumor"), (["abnormal", "normal"], "abnormal"),
    (["vessel", "aneurysm"], "aneurysm"), (["benign", "normal"], "normal"), (["a", "b", "c"], None),
])
def test_r18_makes_the_disease_the_positive_class(names, positive):
    """R18: the class whose name does not read as "no disease" when exactly one does, else the second."""
    fp = _fp()
    fp.update(class_names=names, class_counts={n: 500 for n in names})
    p = make_plan(fp, source="x")
    assert p.evaluate.positive_class == positive
    assert any(d.rule.startswith("R18") for d in p.decisions) == (positive is not None)


@pytest.mark.parametrize("name,sided", [("kidney_left", True), ("Lung R", True), ("lt-adrenal", True),
                                        ("RIGHT", True), ("vertebrae_L1", False), ("liver", False),
                                        ("rectum", False), ("malignant", False)])
def test_r19_reads_a_side_in_a_name(name, sided):
    from meddx.planning.planner import sided_names

    assert sided_names([name]) == ([name] if sided else [])


def test_r19_no_flips_for_3d_classes_named_by_side():
    """R8 flips 3D volumes on every axis and R16 averages those flips at test time, unless a class
    names a side: a mirrored left-sided lesion would look right-sided and keep its label."""
    fp = _fp(spatial_dims=[3], shape_median=[28, 28, 28], shape_min=[28, 28, 28], shape_max=[28, 28, 28])
    plain = make_plan(fp, source="x")
    assert plain.augment.flip_axes == [0, 1, 2] and plain.evaluate.tta_flip_axes == [0, 1, 2]
    fp.update(class_names=["lesion_left", "lesion_right"], class_counts={"lesion_left": 500, "lesion_right": 700})
    p = make_plan(fp, source="x")
    assert p.augment.flip_axes == [] and p.evaluate.tta_flip_axes == [] and not p.evaluate.choose_tta
    r8 = next(d for d in p.decisions if d.rule.startswith("R8"))
    assert "R19" in r8.rule and r8.reads["sided_names"] == ["lesion_left", "lesion_right"]


def test_r20_reorients_to_the_orientation_most_volumes_share():
    """Under 90 % agreement the fingerprint names no single orientation, and R20 takes the most common:
    a mixed set (DICOM series beside NIfTI) is then trained one way. A hand-set orientation is checked."""
    fp = _fp(spatial_dims=[3], shape_median=[28, 28, 28], shape_min=[28, 28, 28], shape_max=[28, 28, 28],
             axcodes=None, orientations={"LPS": 700, "RAS": 600, "PIL": 200})
    p = make_plan(fp, source="x")
    r20 = next(d for d in p.decisions if d.rule == "R20 orientation")
    assert p.data.orientation == ["L", "P", "S"] and r20.reads["orientations"]["RAS"] == 600
    assert make_plan(dict(fp, axcodes=["R", "A", "S"]), source="x").data.orientation == ["R", "A", "S"]
    assert make_plan(_fp(), source="x").data.orientation is None  # 2D
    for value, match in ((["R", "L", "S"], "one of L/R, A/P and S/I"), (["R", "A"], "one of L/R")):
        with pytest.raises(PlanError, match=match):
            apply_overrides(p, {"data.orientation": value})
    with pytest.raises(PlanError, match="reorients 3D volumes"):
        apply_overrides(make_plan(_fp(), source="x"), {"data.orientation": ["R", "A", "S"]})


def test_a_positive_class_that_is_not_a_class_is_refused():
    with pytest.raises(PlanError, match="not one of the classes") as e:
        apply_overrides(make_plan(_fp(), source="x"), {"evaluate.positive_class": "tumour"})
    assert "Fix: change the option or --set value it names" in str(e.value)  # typed as --positive-class too
    assert apply_overrides(make_plan(_fp(), source="x"), {"evaluate.positive_class": "a"}).evaluate.positive_class == "a"


def test_a_target_sensitivity_without_its_rule_fails_before_training(tmp_path):
    from meddx.training.run import train_run

    with pytest.raises(PlanError, match="threshold_rule"):
        train_run("synthetic:phantoms:60", tmp_path / "r", overrides={"evaluate.target_sensitivity": 0.9,
                                                                       "train.epochs": 1},
                  progress=False, log=lambda *a, **k: None)
    assert not (tmp_path / "r").exists()


def test_a_missing_ensemble_run_fails_before_training(tmp_path):
    """evaluate.ensemble_runs was first read after training, failing the finished run."""
    from meddx.errors import MeddxError
    from meddx.training.run import train_run

    with pytest.raises(MeddxError, match="nope"):
        train_run("synthetic:phantoms:60", tmp_path / "r", overrides={"evaluate.ensemble_runs": ["nope"],
                                                                       "train.epochs": 1},
                  progress=False, log=lambda *a, **k: None)
    assert not (tmp_path / "r").exists()


def test_the_early_ensemble_check_accepts_a_member_of_the_same_plan_and_split(tmp_path):
    """The check before training ran while the new run's normalisation was still the plan's default
    (prepare_tensors measures it later), so every real member read as differing and was refused."""
    import json

    from meddx.training.run import train_run

    ov = {"train.epochs": 1, "evaluate.n_boot": 10, "data.split_seed": 0, "data.input_size": [28, 28]}
    a = train_run("synthetic:phantoms:60", tmp_path / "a", overrides={**ov, "seed": 0},
                  progress=False, log=lambda *a, **k: None)
    b = train_run("synthetic:phantoms:60", tmp_path / "b",
                  overrides={**ov, "seed": 1, "evaluate.ensemble_runs": [str(a)], "evaluate.uncertainty": "ensemble"},
                  progress=False, log=lambda *a, **k: None)
    assert json.loads((b / "triage.json").read_text())["method_used"] == "ensemble"


def test_a_plan_path_that_is_a_folder_names_the_plan_inside(tmp_path):
    with pytest.raises(PlanError, match="a folder, not a plan file") as e:
        Plan.load(tmp_path)
    make_plan(_fp(), source="x").save(tmp_path / "plan.yaml")
    with pytest.raises(PlanError, match="plan.yaml itself") as e:
        Plan.load(tmp_path)
    assert str(tmp_path / "plan.yaml") in str(e.value)



@pytest.mark.parametrize("budget, epochs", [(None, 30), (600, EPOCHS_FROM_BUDGET)])
def test_the_fixed_rules_are_in_the_written_plan_too(tmp_path, budget, epochs):
    """R7, R9 and R10 were noted after the Plan had copied the decisions list, so plan.yaml never listed
    them (nor S8, S9 for segmentation; tests/planning/test_rules_real.py)."""
    make_plan(_fp(), source="x", time_budget_s=budget).save(tmp_path / "plan.yaml")
    rules = {d.rule.split()[0]: d for d in Plan.load(tmp_path / "plan.yaml").decisions}
    assert {"R7", "R9", "R10", "R17"} <= set(rules)  # R17 also when the budget is too short for it
    assert rules["R9"].value == epochs and rules["R9"].reads == {"time_budget_s": budget}
    assert rules["R17"].value == [] and rules["R17"].reads == {"time_budget_s": budget, "min_budget_s": 1200.0}
    assert rules["R10"].value == "auc" and rules["R7"].kind == "fixed"


@pytest.mark.parametrize("epochs, text", [(1, "1 epoch"), (2, "2 epochs"), (30, "30 epochs")])
def test_log_lines_count_epochs_in_words_that_agree(epochs, text):
    train = TrainConfig(epochs=epochs)
    assert train.epochs_text == text
    assert "epochs_text" not in train.model_dump()   # not a plan field


def test_r6_refits_the_batch_for_the_network_and_size_the_user_chose():
    """R6 fitted the batch to the planned small_cnn at the planned size; a --model or --image-size (an
    override) kept that batch, so a 3D ResNet-18 trained at batch 16 (about 5 GiB at 32^3) whatever
    the memory budget, and 64^3 volumes at 16 instead of R6's 4."""
    fp = _fp(spatial_dims=[3], shape_median=[28, 28, 28], shape_min=[28, 28, 28], shape_max=[28, 28, 28])
    assert make_plan(fp, source="x", memory_budget_gb=2).train.batch_size == 16
    deep = make_plan(fp, source="x", memory_budget_gb=2, overrides={"model.name": "resnet18"})
    r6 = [d for d in deep.decisions if d.rule.startswith("R6")][-1]
    assert 2 <= deep.train.batch_size < 16 and r6.reads["estimated_gb"] <= 2 and r6.reads["model"] == "resnet18"
    assert make_plan(fp, source="x", overrides={"data.input_size": [64, 64, 64]}).train.batch_size == 4
    # a batch the user gives is the user's; one set in the plan earlier is kept where it fits
    assert make_plan(fp, source="x", memory_budget_gb=2,
                     overrides={"model.name": "resnet18", "train.batch_size": 16}).train.batch_size == 16
    edited = make_plan(fp, source="x", overrides={"train.batch_size": 6})
    assert refit_batch(apply_overrides(edited, {"model.name": "resnet18"}), {"model.name": "resnet18"},
                       "x").train.batch_size == 6


def test_a_network_over_the_memory_budget_at_batch_2_is_refused_before_training(tmp_path):
    from meddx.training.run import train_run

    fp = _fp(spatial_dims=[3], shape_median=[28, 28, 28], shape_min=[28, 28, 28], shape_max=[28, 28, 28])
    with pytest.raises(PlanError, match="more than the memory budget") as e:
        make_plan(fp, source="x", memory_budget_gb=0.01)
    assert "--image-size" in str(e.value)
    with pytest.raises(PlanError, match="densenet121 at input size .* more than the memory budget"):
        train_run("synthetic:phantoms:60", tmp_path / "r", overrides={"model.name": "densenet121", "train.epochs": 1,
                                                                       "train.memory_budget_gb": 0.05},
                  progress=False, log=lambda *a, **k: None)
    assert not (tmp_path / "r").exists()


def test_meddx_plan_reads_a_budget_given_by_set_as_by_its_option(tmp_path):
    """`meddx plan --set train.time_budget_s=...` recorded the budget but planned as if there were none
    (no R14 ensemble, no R17 choice, R9 30 epochs, R6 batch not fitted to a --set memory budget),
    unlike `meddx train --set`; the plan must be the one the trainer would run."""
    import subprocess
    import sys

    def plan(name, *args):
        r = subprocess.run([sys.executable, "-m", "meddx", "plan", "synthetic:phantoms:60", "-o", tmp_path / name,
                            "--no-progress", *args], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return Plan.load(tmp_path / name)

    flags = plan("flags.yaml", "--time-budget", "20m", "--memory-budget", "0.01")
    sets = plan("sets.yaml", "--set", "train.time_budget_s=1200", "--set", "train.memory_budget_gb=0.01")
    assert flags.ensemble.kind == sets.ensemble.kind == "seeds" and [c.name for c in sets.choices] == ["model_structure"]
    assert flags.train.batch_size == sets.train.batch_size < 64 and sets.train.epochs == flags.train.epochs
    assert {d.rule: d.value for d in sets.decisions}["R9 epochs"] == EPOCHS_FROM_BUDGET


@pytest.mark.parametrize("key, value", [("train.time_budget_s", "abc"), ("train.memory_budget_gb", "abc"),
                                        ("train.time_budget_s", -5), ("train.time_budget_s", 0)])
def test_a_budget_that_is_not_a_positive_number_is_refused_in_one_line(tmp_path, key, value):
    """A text budget reached the planner's arithmetic (a TypeError traceback); a budget of 0 or below
    trained 30 epochs, or 1 s, without a word."""
    from meddx.training.run import train_run

    with pytest.raises(PlanError, match=f"'{key}'"):
        train_run("synthetic:phantoms:60", tmp_path / "r", overrides={key: value, "train.epochs": 1},
                  progress=False, log=lambda *a, **k: None)
    assert not (tmp_path / "r").exists()
    if key == "train.time_budget_s" and value != "abc":
        (tmp_path / "plan.yaml").write_text(make_plan(_fp(), source="x").to_yaml().replace(
            "time_budget_s: null", f"time_budget_s: {value}"))
        with pytest.raises(PlanError, match="train.time_budget_s"):
            Plan.load(tmp_path / "plan.yaml")


def test_meddx_plan_reads_the_split_of_a_seed_given_by_set(tiny_folder, tmp_path):
    """`meddx plan --set seed=7` wrote a plan of seed 7 whose statistics came from the seed-0 split, so
    the run (split with seed 7) had been planned on some of its own test cases."""
    import subprocess
    import sys

    def plan(name, *args):
        r = subprocess.run([sys.executable, "-m", "meddx", "plan", tiny_folder, "-o", tmp_path / name,
                            "--no-progress", *args], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return Plan.load(tmp_path / name)

    by_set, by_option = plan("set.yaml", "--set", "seed=7"), plan("option.yaml", "--seed", "7")
    assert by_set.seed == by_option.seed == 7
    reads = [{d.rule: d.reads for d in p.decisions if d.kind != "user"} for p in (by_set, by_option)]
    assert reads[0] == reads[1]


def test_r3_and_s2_read_each_images_own_short_and_long_side(tmp_path):
    """R3 (S2) are the median short (long) side, but read the smaller (larger) per-axis median: half
    portrait, half landscape 48x120 images made an 84x84 'median' and an input of 80 px (S2: 96 px)
    where every image's short side is 48 (long side 120)."""
    import numpy as np

    from meddx.data.fingerprint import compute_fingerprint
    from meddx.data.segsources import open_seg_dataset
    from meddx.data.sources import open_dataset
    from meddx.planning.planner import make_seg_plan
    from meddx_testutils import write_png

    rng = np.random.default_rng(0)
    for i in range(12):
        shape = (48, 120) if i % 2 else (120, 48)
        im = rng.integers(0, 255, shape, dtype=np.uint8)
        write_png(tmp_path / "cls" / ("a" if i < 6 else "b") / f"im{i}.png", im)
        write_png(tmp_path / "seg" / f"im{i}.png", im)
        write_png(tmp_path / "seg" / f"im{i}_mask.png", (im > 128).astype(np.uint8) * 255)
    fp = compute_fingerprint(open_dataset(str(tmp_path / "cls")))
    assert fp["short_side_median"] == 48 and fp["long_side_median"] == 120
    assert make_plan(fp, source="x", cuda=False).data.input_size == [48, 48]
    seg = make_seg_plan(compute_fingerprint(open_seg_dataset(str(tmp_path / "seg"))), source="x", cuda=False)
    assert seg.data.input_size == [128, 128]  # 120 rounded up to 32


def test_meddx_plan_refuses_a_dataset_whose_split_train_would_refuse(tmp_path):
    """Two images per class leave the seeded val split empty: `meddx train` refused it in one line, but
    `meddx plan` wrote a plan (n_val 0) that no run could use."""
    import subprocess
    import sys

    import numpy as np

    from meddx_testutils import write_png

    for i in range(4):
        write_png(tmp_path / "data" / "ab"[i % 2] / f"im{i}.png", np.full((28, 28), 40 * i + 10, np.uint8))
    r = subprocess.run([sys.executable, "-m", "meddx", "plan", tmp_path / "data", "-o", tmp_path / "plan.yaml",
                        "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "the val split is empty (4 cases in all)" in r.stderr and "Fix: add cases" in r.stderr
    assert not (tmp_path / "plan.yaml").exists()


def test_a_memory_budget_given_to_a_written_plan_refits_its_batch_and_versions_are_checked(tmp_path):
    """--set train.memory_budget_gb on a given plan (train --plan) was recorded and the batch, fitted to the
    planned budget, kept; a plan of another format version trained as if it were this one."""
    fp = _fp(spatial_dims=[3], shape_median=[28, 28, 28], shape_min=[28, 28, 28], shape_max=[28, 28, 28])
    plan = make_plan(fp, source="x", overrides={"model.name": "resnet18"})
    ov = {"train.memory_budget_gb": 2.0}
    small = refit_batch(apply_overrides(plan.model_copy(deep=True), ov), ov, "x")
    assert small.train.batch_size < plan.train.batch_size
    assert small.decisions[-1].reads["memory_budget_gb"] == 2.0 and small.decisions[-1].rule.startswith("R6")
    same = {"train.memory_budget_gb": [d for d in plan.decisions if d.rule.startswith("R6")][-1].reads["memory_budget_gb"]}
    assert len(refit_batch(apply_overrides(plan.model_copy(deep=True), same), same, "x").decisions) == \
        len(plan.decisions) + 1   # the override's own record only: no second R6
    raw = plan.model_dump(mode="json")
    raw["version"] = 9
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(PlanError, match="plan format version 9 is not 1") as e:
        Plan.load(tmp_path / "plan.yaml")
    assert "Value error" not in str(e.value)
