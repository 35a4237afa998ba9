"""Segmentation networks by name: 2D with any channels and 3D, divisors, deep supervision."""

from __future__ import annotations

import pytest
import torch

from meddx.errors import PlanError
from meddx.models import create_model, list_models, model_task

SEG = list_models("segment")


def test_every_issue_network_is_registered_as_a_segmenter():
    assert {"unet", "attention_unet", "segresnet", "vnet", "basic_unet", "dynunet"} <= set(SEG)
    assert all(model_task(n) == "segment" for n in SEG) and model_task("small_cnn") == "classify"
    assert not set(SEG) & set(list_models("classify"))


@pytest.mark.parametrize("name", SEG)
@pytest.mark.parametrize("dims,channels", [(2, 1), (2, 3), (3, 1)])
def test_output_is_per_pixel_logits(name, dims, channels):
    if name == "vnet" and channels == 3:
        pytest.skip("VNet needs 16 divisible by the channels (tested below)")
    size = (32,) * dims
    m = create_model(name, spatial_dims=dims, in_channels=channels, num_classes=3, input_size=size, width=0.5)
    m.eval()
    with torch.no_grad():
        y = m(torch.randn(2, channels, *size))
    assert y.shape == (2, 3, *size) and torch.isfinite(y).all()
    assert 32 % m.divisor == 0


def test_dynunet_deep_supervision_heads_in_training_only():
    m = create_model("dynunet", spatial_dims=2, in_channels=1, num_classes=2, input_size=(64, 64),
                     deep_supervision=True, width=0.5)
    m.train()
    assert m(torch.randn(2, 1, 64, 64)).shape == (2, 3, 2, 64, 64)
    m.eval()
    with torch.no_grad():
        assert m(torch.randn(2, 1, 64, 64)).shape == (2, 2, 64, 64)


def test_bad_sizes_and_channels_are_plan_errors():
    with pytest.raises(PlanError, match="divisible by 16"):
        create_model("basic_unet", spatial_dims=2, in_channels=1, num_classes=2, input_size=(40, 40))
    with pytest.raises(PlanError, match="3 input channels"):
        create_model("vnet", spatial_dims=2, in_channels=3, num_classes=2, input_size=(32, 32))


@pytest.mark.parametrize("att", ["se", "spatial", "cbam"])
def test_unet_attention_blocks_sit_after_each_encoder_level(att):
    import torch

    from meddx.models import create_model
    from meddx.models.attention import CBAM, SE, SpatialAttention

    cls = {"se": SE, "spatial": SpatialAttention, "cbam": CBAM}[att]
    m = create_model("unet", spatial_dims=2, in_channels=1, num_classes=3, input_size=(32, 32), attention=att)
    plain = create_model("unet", spatial_dims=2, in_channels=1, num_classes=3, input_size=(32, 32))
    blocks = [x for x in m.modules() if isinstance(x, cls)]
    assert len(blocks) >= 4  # every encoder level and the bottleneck (4 levels at 32 px)
    assert not any(isinstance(x, cls) for x in plain.modules())
    assert m(torch.randn(2, 1, 32, 32)).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("dims", [2, 3])
def test_unet_full_res_adds_a_stride_one_level_of_half_the_base_width(dims):
    size = (24, 32, 24)[:dims] if dims == 3 else (32, 32)
    plain = create_model("unet", spatial_dims=dims, in_channels=1, num_classes=3, input_size=size)
    full = create_model("unet", spatial_dims=dims, in_channels=1, num_classes=3, input_size=size, full_res=True)
    assert list(full.channels) == [plain.channels[0] // 2, *plain.channels]
    assert list(full.strides) == [1, *plain.strides] and full.divisor == plain.divisor
    first = next(m for m in full.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)))
    assert first.stride == (1,) * dims and first.out_channels == plain.channels[0] // 2
    with torch.no_grad():
        assert full.eval()(torch.randn(2, 1, *size)).shape == (2, 3, *size)
