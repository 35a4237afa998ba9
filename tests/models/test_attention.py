import pytest
import torch
from monai.networks.blocks import ChannelSELayer
from torch import nn

from meddx.errors import PlanError
from meddx.models import CBAM, SE, make_attention
from meddx.models.attention import SpatialAttention


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kind, cls", [("se", SE), ("cbam", CBAM), ("spatial", SpatialAttention)])
def test_shape_preserved_and_output_reweighted(dims, kind, cls):
    torch.manual_seed(0)
    block = make_attention(kind, dims, 16)
    assert isinstance(block, cls)
    x = torch.randn(2, 16, *([6] * dims))
    y = block(x)
    assert y.shape == x.shape
    assert not torch.allclose(y, x)
    # gates are sigmoids: each output is the input scaled by a factor in (0, 1)
    ratio = y / x
    assert ratio.min() > 0 and ratio.max() < 1


def test_se_uses_monai_channel_se():
    block = SE(2, 64)
    assert any(isinstance(m, ChannelSELayer) for m in block.modules())
    # narrow layers keep >= 8 hidden units instead of 64 // 16 = 4
    assert block.se.fc[0].out_features == 8


def test_cbam_gate_depends_on_position():
    torch.manual_seed(0)
    block = CBAM(2, 8).eval()
    x = torch.ones(1, 8, 9, 9)
    x[..., 4, 4] = 10.0  # one bright spot
    ratio = block(x) / x
    # channel attention alone would scale every position of a channel equally
    assert not torch.allclose(ratio[0, 0, 0, 0], ratio[0, 0, 4, 4])


def test_cbam_kernel_sizes():
    assert CBAM(2, 8).spatial[0].kernel_size == (7, 7)
    assert CBAM(3, 8).spatial[0].kernel_size == (5, 5, 5)


def test_none_is_identity_and_unknown_raises():
    assert isinstance(make_attention(None, 2, 8), nn.Identity)
    with pytest.raises(PlanError, match="se, spatial, cbam"):
        make_attention("eca", 2, 8)


def test_spatial_attention_is_the_same_for_every_channel_at_a_position():
    torch.manual_seed(0)
    block = SpatialAttention(2, 4).eval()
    x = torch.rand(1, 4, 7, 7) + 0.5
    x[..., 3, 3] = 5.0
    ratio = block(x) / x
    assert torch.allclose(ratio[0, 0], ratio[0, 1]) and not torch.allclose(ratio[0, 0, 0, 0], ratio[0, 0, 3, 3])
