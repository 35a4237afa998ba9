import pytest
import torch
from torch import nn

from meddx.errors import PlanError
from meddx.models import count_parameters, create_model, list_models, model_options, register_model
from meddx.models import registry

EXPECTED = {"small_cnn", "resnet18", "resnet34", "resnet50", "densenet121", "efficientnet_b0", "mobilenet_v2"}


def test_all_models_registered_and_sorted():
    names = list_models()
    assert EXPECTED <= set(names)
    assert names == sorted(names)


def test_unknown_model_lists_available_names():
    with pytest.raises(PlanError) as err:
        create_model("resnet19", spatial_dims=2, in_channels=1, num_classes=2)
    msg = str(err.value)
    assert "resnet19" in msg
    for name in EXPECTED:
        assert name in msg


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_unknown_option_is_named(name):
    with pytest.raises(PlanError) as err:
        create_model(name, spatial_dims=2, in_channels=1, num_classes=2, dropuot=0.1, colour="red")
    msg = str(err.value)
    assert "dropuot" in msg and "colour" in msg
    assert "dropout" in msg  # the accepted options are listed


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"attention": "transformer"}, "attention"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"width": 0}, "width"),
        ({"spatial_dims": 1}, "spatial_dims"),
        ({"num_classes": 0}, "num_classes"),
        ({"input_size": (28, 28, 28)}, "input_size"),
        ({"depth": 0}, "depth"),
        ({"first_stride": 3}, "first_stride"),
        ({"width": "abc"}, "width must be a number"),  # a --set / --student value: was a ValueError
        ({"dropout": [0.1]}, "dropout must be a number"),  # was a TypeError
        ({"dropout": None}, "dropout must be a number"),
        # past any address space (1e9 can pass a lazily-committing allocator): was torch's RuntimeError
        ({"width": 1e12}, "more weights than this machine's memory holds"),
    ],
)
def test_invalid_values_raise_plan_error(kwargs, word):
    args = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2, **kwargs}
    with pytest.raises(PlanError, match=word):
        create_model("small_cnn", **args)


def test_attention_none_string_means_no_attention():
    a = create_model("small_cnn", spatial_dims=2, in_channels=1, num_classes=2, attention="none")
    b = create_model("small_cnn", spatial_dims=2, in_channels=1, num_classes=2)
    assert count_parameters(a) == count_parameters(b)


def test_common_options_accepted_by_every_model():
    for name in list_models("classify"):
        opts = model_options(name)
        assert {"attention", "dropout", "width"} <= set(opts), name
        assert opts["attention"] is None and opts["dropout"] == 0.0 and opts["width"] == 1.0


def test_model_config_rebuilds_same_architecture():
    m = create_model("small_cnn", spatial_dims=2, in_channels=3, num_classes=4, input_size=(32, 32), width=0.5)
    cfg = dict(m.model_config)
    assert cfg["name"] == "small_cnn" and cfg["input_size"] == [32, 32] and cfg["width"] == 0.5
    again = create_model(cfg.pop("name"), **cfg)
    assert [k for k, _ in again.state_dict().items()] == [k for k, _ in m.state_dict().items()]
    assert count_parameters(again) == count_parameters(m)


def test_register_rejects_a_second_builder_under_the_same_name():
    with pytest.raises(ValueError, match="already registered"):

        @register_model("small_cnn")
        def other(*, spatial_dims, in_channels, num_classes, input_size):  # pragma: no cover
            return nn.Identity()


def test_register_and_create_custom_model():
    @register_model("_test_linear")
    def _test_linear(*, spatial_dims, in_channels, num_classes, input_size, bias: bool = True):
        return nn.Linear(in_channels, num_classes, bias=bias)

    try:
        m = create_model("_test_linear", spatial_dims=2, in_channels=3, num_classes=2, bias=False)
        assert "_test_linear" in list_models()
        assert count_parameters(m) == 6
        with pytest.raises(PlanError, match="bias2"):
            create_model("_test_linear", spatial_dims=2, in_channels=3, num_classes=2, bias2=False)
    finally:
        registry._REGISTRY.pop("_test_linear", None)


def test_count_parameters_trainable_only():
    m = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    assert count_parameters(m) == 8 + 3
    m[0].requires_grad_(False)
    assert count_parameters(m, trainable_only=True) == 3
    assert count_parameters(m) == 11


def test_builder_without_fixed_arguments_is_rejected():
    with pytest.raises(TypeError, match="input_size"):

        @register_model("_bad")
        def _bad(*, spatial_dims, in_channels, num_classes):  # pragma: no cover
            return torch.nn.Identity()

    assert "_bad" not in list_models()


@pytest.mark.parametrize("value", ["abc", 1.5, None])
def test_unet_res_units_that_are_not_a_count_raise_plan_error(value):
    """--set model.params.res_units=abc was a TypeError from inside MONAI."""
    with pytest.raises(PlanError, match="res_units"):
        create_model("unet", spatial_dims=2, in_channels=1, num_classes=2, input_size=16, res_units=value)
