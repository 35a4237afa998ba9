"""The planner's rules on fingerprints of the real datasets (../shared/data)."""

import pytest

from meddx.data.fingerprint import compute_fingerprint
from meddx.data.segsources import open_seg_dataset
from meddx.data.sources import open_dataset
from meddx.planning.planner import make_plan, make_seg_plan

pytestmark = pytest.mark.slow


def _fp(path):
    cs = open_dataset(str(path))
    return compute_fingerprint(cs), cs


def _rules(plan):
    return {d.rule.split()[0]: d for d in plan.decisions}


def test_medmnist_2d_rules(real_data):
    mm = real_data / "medmnist"
    fp, _ = _fp(mm / "pneumoniamnist.npz")
    p = make_plan(fp, source="x", cuda=False, time_budget_s=120)
    r = _rules(p)
    assert p.data.input_size == [28, 28] and p.data.channels == 1 and p.data.intensity == "scale255"
    assert p.train.batch_size == 128  # >= 2000 training cases
    assert p.train.sampler == "none" and r["R12"].reads["imbalance_ratio"] == pytest.approx(2.699, abs=0.01)
    assert p.ensemble.kind == "none" and p.choices == [] and p.train.head == "deep"
    assert p.evaluate.tta_flip_axes == []  # R16: no flips in 2D (laterality)
    assert r["R6"].reads["estimated_gb"] < 1.0
    assert p.evaluate.positive_class == "pneumonia" and r["R18"].reads["reads_as_no_disease"] == ["normal"]
    assert p.data.orientation is None and "R20" not in r  # 2D: nothing to reorient, nothing noted

    fp, _ = _fp(mm / "retinamnist.npz")
    p = make_plan(fp, source="x", cuda=False)
    assert p.data.channels == 3 and p.train.batch_size == 64  # RGB, under 2000 training cases
    assert fp["imbalance_ratio"] > 7 and p.train.sampler == "none"  # below the sampler threshold (10)
    assert p.evaluate.positive_class is None and "R18" not in _rules(p)  # 5 grades: no positive class

    fp, _ = _fp(mm / "breastmnist.npz")
    short = make_plan(fp, source="x", cuda=False, time_budget_s=150)
    ten = make_plan(fp, source="x", cuda=False, time_budget_s=600)
    long = make_plan(fp, source="x", cuda=False, time_budget_s=3600)
    assert short.ensemble.kind == "none" and short.choices == []
    assert short.evaluate.positive_class == "malignant"  # R18: class 0; class 1 is "normal, benign"
    assert ten.ensemble.kind == "seeds" and ten.ensemble.members == 3 and ten.choices == []  # R14 from 10 min
    assert [c.name for c in long.choices] == ["model_structure"]      # R17: empirical choice from 20 min
    assert long.choices[0].folds == 5 and _rules(long)["R17"].reads["n_val"] == 78  # 78 validation images: CV
    fp, _ = _fp(mm / "pneumoniamnist.npz")
    assert make_plan(fp, source="x", cuda=False, time_budget_s=3600).choices[0].folds == 0  # 524: validation split
    tight = make_plan(fp, source="x", cuda=False, memory_budget_gb=0.05)
    assert 2 <= tight.train.batch_size < 64  # R6 halves the batch to fit the memory budget


def test_medmnist_3d_rules(real_data):
    fp, _ = _fp(real_data / "medmnist" / "adrenalmnist3d.npz")
    p = make_plan(fp, source="x", cuda=False, time_budget_s=150)
    assert p.data.spatial_dims == 3 and p.data.input_size == [28, 28, 28]
    assert p.train.batch_size == 16 and p.augment.flip_axes == [0, 1, 2]
    assert p.data.orientation is None and _rules(p)["R20"].reads == {"axcodes": None, "orientations": {}}  # no geometry
    assert p.evaluate.tta_flip_axes == [0, 1, 2] and p.evaluate.choose_tta  # R16: candidates, kept if val rises
    assert p.evaluate.positive_class == "hyperplasia"  # R18
    assert p.data.antialias_3d  # R3: volumes are filtered when they shrink to the input size
    assert [d.rule for d in p.decisions if d.field == "data.antialias_3d"] == ["R3 input size"]
    fp64, _ = _fp(real_data / "medmnist" / "adrenalmnist3d_64.npz")
    assert make_plan(fp64, source="x", cuda=False).data.input_size == [32, 32, 32]  # CPU cap
    assert make_plan(fp64, source="x", cuda=True).data.input_size == [64, 64, 64]


def test_segmentation_rules_hippocampus_and_busi(real_data):
    cs = open_seg_dataset(str(real_data / "seg" / "msd_hippocampus_udacity"))
    fp = compute_fingerprint(cs)
    p = make_seg_plan(fp, source="x", cuda=False, time_budget_s=1200)
    assert p.segment.patch_size == [40, 56, 40] and p.model.name == "unet" and p.train.batch_size == 4
    assert p.segment.label_values == [0, 1, 2]
    # S7: mirror only along the left-right axis, found from the NIfTI orientation
    assert len(p.augment.flip_axes) == 1 and fp["axcodes"][p.augment.flip_axes[0]] in ("L", "R")
    # R20: every volume is stored one way (260 NIfTI), so training reorients nothing and predict turns
    # inputs stored otherwise to it
    assert p.data.orientation == fp["axcodes"] and sum(fp["orientations"].values()) == fp["n_cases"]
    assert p.train.time_budget_s == 1200
    assert _rules(p)["S8"].reads == {"time_budget_s": 1200} and _rules(p)["S9"].value == "dice"
    small = make_seg_plan(fp, source="x", cuda=False, memory_budget_gb=0.03)
    assert small.train.batch_size == 2 and small.segment.patch_size != [40, 56, 40]  # patch shrunk to fit
    assert make_seg_plan(fp, source="x", cuda=True).model.name == "dynunet"
    # R19: had the labels been named by side, a left-right mirror would teach "left" on the right
    sided = {**fp, "segmentation": {**fp["segmentation"],
                                    "label_names": ["background", "hippocampus_left", "hippocampus_right"]}}
    q = make_seg_plan(sided, source="x", cuda=False)
    assert q.augment.flip_axes == [] and q.segment.tta_flip_axes == []
    assert _rules(q)["S7"].reads["sided_names"] == ["hippocampus_left", "hippocampus_right"]
