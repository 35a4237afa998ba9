import pytest

from meddx.planning.plan import ScheduleConfig
from meddx.training.optim import LRFactor


def test_cosine_warmup_then_decay_to_zero():
    f = LRFactor(ScheduleConfig(name="cosine", warmup_epochs=1), steps_per_epoch=10, epochs=10)
    assert f(0) == pytest.approx(0.01)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5, abs=0.01)
    assert f(100) == pytest.approx(0.0, abs=1e-9)


def test_step_and_onecycle_shapes():
    s = LRFactor(ScheduleConfig(name="step", warmup_epochs=0, milestones=[0.5, 0.75], gamma=0.1), 10, 10)
    assert s(10) == 1.0 and s(50) == pytest.approx(0.1) and s(80) == pytest.approx(0.01)
    o = LRFactor(ScheduleConfig(name="onecycle"), 10, 10)
    assert o(0) == pytest.approx(0.04) and o(30) == pytest.approx(1.0) and o(100) == pytest.approx(1e-4)
    assert LRFactor(ScheduleConfig(name="constant", warmup_epochs=0), 10, 10)(70) == 1.0


@pytest.mark.parametrize("key, value", [
    ("train.early_stopping_patience", 0),    # was taken as "off"
    ("train.early_stopping_patience", -1),   # was a stop after the first epoch
    ("optim.momentum", -1),                  # sgd: a ValueError traceback from inside training
    ("optim.momentum", 1.5),                 # trained, diverging
    ("schedule.gamma", -1),                  # "step": a negative learning rate after the first milestone
    ("schedule.milestones", [2]),            # never reached: a constant schedule
    ("train.eval_batch_size", 0),            # a ValueError traceback at the first validation
    ("train.max_epochs_with_budget", 0),     # a budgeted run of 0 epochs
    ("train.time_budget_s", -5),             # trained as if the budget were 1 s
    ("train.select_metric", "dice"),         # a KeyError traceback after the first epoch
])
def test_a_bad_training_value_is_refused_by_the_plan_naming_its_field(key, value):
    from meddx.errors import PlanError
    from meddx.planning.planner import apply_overrides
    from meddx_testutils import make_plan_for

    with pytest.raises(PlanError, match=key.replace(".", "[.]")):
        apply_overrides(make_plan_for(), {key: value})
