import pytest
import torch
from monai.networks.nets import EfficientNetBN
from monai.visualize import GradCAM
from torch import nn

from meddx.errors import PlanError
from meddx.models import count_parameters, create_model, list_models

MODELS = list_models("classify")
NARROW = 0.25  # structural tests use narrow copies: same code and layout, a fraction of the time


def build(name, dims=2, in_channels=1, num_classes=3, size=28, **kw):
    torch.manual_seed(0)
    kw.setdefault("width", NARROW)
    return create_model(
        name, spatial_dims=dims, in_channels=in_channels, num_classes=num_classes, input_size=size, **kw
    )


def first_conv_output(model, x):
    """Shape of the first convolution's output in forward order."""
    shapes = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: shapes.append(out.shape))
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Conv3d))
    ]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return shapes[0]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_forward_2d(name, in_channels):
    model = build(name, in_channels=in_channels, num_classes=5, width=1.0)
    out = model(torch.randn(2, in_channels, 28, 28))
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_forward_3d(name):
    model = build(name, dims=3, num_classes=2, width=1.0)
    with torch.no_grad():
        out = model(torch.randn(2, 1, 28, 28, 28))
    assert out.shape == (2, 2)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("attention", ["se", "cbam"])
def test_attention_adds_parameters_keeps_shape(name, attention):
    plain = build(name)
    att = build(name, attention=attention)
    assert count_parameters(att) > count_parameters(plain)
    assert att(torch.randn(2, 1, 28, 28)).shape == (2, 3)
    kinds = {"se": "SE", "cbam": "CBAM"}
    assert sum(type(m).__name__ == kinds[attention] for m in att.modules()) >= 3  # one per stage


@pytest.mark.parametrize("name", MODELS)
def test_stem_stride_follows_input_size(name):
    small = build(name, size=28)
    assert first_conv_output(small, torch.randn(1, 1, 28, 28))[-2:] == (28, 28)
    large = build(name, size=128)
    assert first_conv_output(large, torch.randn(1, 1, 128, 128))[-2:] == (64, 64)
    assert count_parameters(small) == count_parameters(build(name, size=64))


@pytest.mark.parametrize("name", MODELS)
def test_dropout_only_when_asked(name):
    with_dropout = [m for m in build(name, dropout=0.3).modules() if isinstance(m, nn.Dropout)]
    assert [m.p for m in with_dropout] == [0.3]
    assert not [m for m in build(name).modules() if isinstance(m, nn.Dropout) and m.p > 0]


@pytest.mark.parametrize("name", MODELS)
def test_width_scales_parameters(name):
    assert count_parameters(build(name, width=0.5)) < 0.5 * count_parameters(build(name, width=1.0))


@pytest.mark.parametrize("name", MODELS)
def test_cam_layer_works_with_monai_gradcam(name):
    model = build(name, in_channels=3, attention="cbam")
    layers = dict(model.named_modules())
    assert isinstance(layers[model.cam_layer], nn.Module)
    head = layers[model.classifier_layer]
    assert isinstance(head, nn.Linear) and head.out_features == 3
    cam = GradCAM(nn_module=model.eval(), target_layers=model.cam_layer)
    heatmap = cam(torch.randn(2, 3, 28, 28), class_idx=1)
    assert heatmap.shape == (2, 1, 28, 28)
    assert torch.isfinite(heatmap).all()


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_same_weights(name):
    a, b = build(name).state_dict(), build(name).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(1)
    c = create_model(name, spatial_dims=2, in_channels=1, num_classes=3, width=NARROW).state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)


def final_feature_size(model, x):
    shapes = []
    layer = dict(model.named_modules())[model.cam_layer]
    h = layer.register_forward_hook(lambda _m, _i, out: shapes.append(out.shape))
    with torch.no_grad():
        model.eval()(x)
    h.remove()
    return tuple(shapes[-1][2:])


@pytest.mark.parametrize(
    "name, expected",
    [("small_cnn", 7), ("resnet18", 4), ("mobilenet_v2", 4), ("efficientnet_b0", 2), ("densenet121", 3)],
)
def test_small_inputs_keep_a_usable_final_map(name, expected):
    assert final_feature_size(build(name), torch.randn(1, 1, 28, 28)) == (expected, expected)


def test_densenet_rejects_tiny_input_with_advice():
    with pytest.raises(PlanError) as err:
        build("densenet121", size=6)
    msg = str(err.value)
    assert "densenet121" in msg and ">= 8" in msg and "resize" in msg and "resnet18" in msg
    assert build("densenet121", size=32)(torch.randn(1, 1, 32, 32)).shape == (1, 3)


def test_efficientnet_is_monai_b0():
    ours = build("efficientnet_b0", in_channels=3, num_classes=4, width=1.0)
    monai_b0 = EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=2, in_channels=3, num_classes=4)
    assert count_parameters(ours) == count_parameters(monai_b0)
    ours.set_swish(memory_efficient=False)  # export path must survive attention-wrapped stages
    build("efficientnet_b0", attention="se").set_swish(memory_efficient=False)


def test_small_cnn_default_architecture():
    def stage_channels(model):
        return [stage[0].conv2[0].out_channels for stage in model.stages]

    def default(**kw):
        return create_model("small_cnn", spatial_dims=kw.pop("dims", 2), in_channels=1, num_classes=2, **kw)

    assert stage_channels(default()) == [24, 48, 96]
    assert stage_channels(default(dims=3)) == [16, 32, 64]
    assert stage_channels(default(depth=4)) == [24, 48, 96, 192]
    assert stage_channels(default(width=0.5)) == [12, 24, 48]
    assert default(depth=2).cam_layer == "stages.1"
    assert 100_000 < count_parameters(default()) < 250_000
    # 2D keeps full resolution in stage 1 (28 -> 28 -> 14 -> 7); 3D halves at once (28 -> 14 -> 7 -> 4)
    assert final_feature_size(default(), torch.randn(1, 1, 28, 28)) == (7, 7)
    assert final_feature_size(default(dims=3), torch.randn(1, 1, 28, 28, 28)) == (4, 4, 4)
    assert final_feature_size(default(first_stride=2), torch.randn(1, 1, 28, 28)) == (4, 4)


def test_anisotropic_3d_input_size():
    model = build("small_cnn", dims=3, size=(32, 32, 16))
    assert model(torch.randn(1, 1, 32, 32, 16)).shape == (1, 3)


def test_small_cnn_multiscale_reads_every_stage():
    import torch

    from meddx.models import create_model

    m = create_model("small_cnn", spatial_dims=2, in_channels=1, num_classes=3, input_size=28, multiscale=True)
    assert m.fc.in_features == 24 + 48 + 96
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 3)
    m3 = create_model("small_cnn", spatial_dims=3, in_channels=1, num_classes=2, input_size=16, multiscale=True)
    assert m3(torch.randn(2, 1, 16, 16, 16)).shape == (2, 2)
    # the first stage now reaches the output directly: its weights get gradient from the head's first block
    m.zero_grad()
    m(torch.randn(2, 1, 28, 28)).sum().backward()
    assert m.fc.weight.grad[:, :24].abs().sum() > 0
