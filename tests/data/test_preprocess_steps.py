"""Plan preprocessing steps (data.preprocess) and the denoising rule R11."""

import numpy as np
import pytest

from meddx.data.preprocess import PreprocessSpec, prepare
from meddx.errors import PlanError
from meddx.io.base import ImageData
from meddx.planning.plan import PreprocessStep
from meddx_testutils import make_plan_for


def _noisy(seed=0):
    rng = np.random.default_rng(seed)
    clean = np.zeros((1, 28, 28), np.float32)
    clean[:, 8:20, 8:20] = 200
    noisy = clean.copy()
    idx = rng.random(clean.shape) < 0.08
    noisy[idx] = 255 - noisy[idx]  # salt-and-pepper
    return clean, noisy


def test_steps_run_before_the_intensity_scheme():
    clean, noisy = _noisy()
    plan = make_plan_for()
    plain = prepare(ImageData(array=noisy), PreprocessSpec.from_plan(plan.data), "x")
    plan.data.preprocess = [PreprocessStep(name="median", params={"radius": 1})]
    spec = PreprocessSpec.from_plan(plan.data)
    assert spec.steps == (("median", {"radius": 1}),)
    out = prepare(ImageData(array=noisy), spec, "x")
    target = clean / 255.0
    assert np.abs(out - target).mean() < 0.5 * np.abs(plain - target).mean()


def test_unknown_step_or_bad_params_are_plan_errors():
    plan = make_plan_for()
    plan.data.preprocess = [PreprocessStep(name="magic")]
    with pytest.raises(PlanError, match="unknown preprocessing step"):
        prepare(ImageData(array=_noisy()[1]), PreprocessSpec.from_plan(plan.data), "x")
    plan.data.preprocess = [PreprocessStep(name="median", params={"size_of_moon": 3})]
    with pytest.raises(PlanError, match="median"):
        prepare(ImageData(array=_noisy()[1]), PreprocessSpec.from_plan(plan.data), "x")
    # a bad value of a known param: the plan field and a fix, not the bare check ("median: radius must ...")
    plan.data.preprocess = [PreprocessStep(name="median", params={"radius": "x"})]
    with pytest.raises(PlanError, match=r"data.preprocess step median: radius must be an integer .*Fix: "):
        prepare(ImageData(array=_noisy()[1]), PreprocessSpec.from_plan(plan.data), "x")


def test_rule_r11_denoises_only_noisy_datasets():
    from meddx.planning.planner import make_plan

    base = {"kind": "folder", "class_names": ["a", "b"], "class_counts": {"a": 500, "b": 500}, "split_counts": {},
            "official_split": False, "spatial_dims": [2], "channels": {"1": 1000}, "shape_median": [28, 28],
            "shape_min": [28, 28], "shape_max": [28, 28], "distinct_shapes": 1,
            "intensity": {"min": 0.0, "max": 255.0, "integer_valued": True, "p00_5": 0.0, "p99_5": 255.0}}
    quiet = {"relative_median": 0.01, "threshold": 0.03, "denoise_recommended": False}
    loud = {"relative_median": 0.08, "threshold": 0.03, "denoise_recommended": True}
    assert make_plan({**base, "noise": quiet}, source="x", cuda=False).data.preprocess == []
    p = make_plan({**base, "noise": loud}, source="x", cuda=False)
    assert [s.name for s in p.data.preprocess] == ["nlm"]
    r11 = next(d for d in p.decisions if d.rule.startswith("R11"))
    assert r11.reads["relative_noise_median"] == 0.08
    p3 = make_plan({**base, "noise": loud, "spatial_dims": [3], "shape_median": [28, 28, 28],
                    "shape_max": [28, 28, 28], "channels": {"1": 1000}}, source="x", cuda=False)
    assert [s.name for s in p3.data.preprocess] == ["median"]
