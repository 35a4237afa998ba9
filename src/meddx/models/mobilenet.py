"""``mobilenet_v2``: our MobileNetV2 (Sandler et al., CVPR 2018), 2D and 3D.

Ours because MONAI has no MobileNet.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Pool
from torch import nn

from meddx.models._layers import conv_bn_act, init_weights, scale, small_stem
from meddx.models.attention import make_attention
from meddx.models.registry import register_model

# (expansion t, channels c, repeats n, stride s) of the seven stages, as in the paper.
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
LAST_CHANNELS = 1280


class InvertedResidual(nn.Module):
    """1x1 expand -> depthwise 3x3 -> 1x1 linear projection, residual when shapes match."""

    def __init__(self, spatial_dims: int, in_ch: int, out_ch: int, stride: int, expand: int):
        super().__init__()
        hidden = in_ch * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_act(spatial_dims, in_ch, hidden, 1, act=nn.ReLU6))
        layers.append(conv_bn_act(spatial_dims, hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6))
        layers.append(conv_bn_act(spatial_dims, hidden, out_ch, 1, act=None))
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 classifier with a width multiplier and a small-input variant.

    Up to 64 px the stem and the second stage use stride 1 (as in CIFAR
    MobileNetV2 ports), so the network reduces by 8 instead of 32 and a 28 px
    image ends at 4 px.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: output logits.
        input_size: picks the small-input variant.
        attention: None, "se" or "cbam", after each of the 7 stages.
        dropout: dropout before the classifier.
        width: channel multiplier (channels rounded to multiples of 8).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        input_size: Sequence[int],
        attention: str | None = None,
        dropout: float = 0.0,
        width: float = 1.0,
    ):
        super().__init__()
        small = small_stem(input_size)
        ch = scale(32, width, 8)
        self.stem = conv_bn_act(spatial_dims, in_channels, ch, 3, 1 if small else 2, act=nn.ReLU6)
        stages = []
        for i, (t, c, n, s) in enumerate(STAGES):
            out = scale(c, width, 8)
            stride = 1 if (small and i == 1) else s
            blocks: list[nn.Module] = []
            for j in range(n):
                blocks.append(InvertedResidual(spatial_dims, ch, out, stride if j == 0 else 1, t))
                ch = out
            blocks.append(make_attention(attention, spatial_dims, out))
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        last = scale(LAST_CHANNELS, max(1.0, width), 8)
        self.head = conv_bn_act(spatial_dims, ch, last, 1, act=nn.ReLU6)
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(last, num_classes)
        init_weights(self)
        self.cam_layer = "head"
        self.classifier_layer = "fc"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.stages(self.stem(x)))
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))


@register_model("mobilenet_v2")
def mobilenet_v2(
    *,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    input_size: Sequence[int],
    attention: str | None = None,
    dropout: float = 0.0,
    width: float = 1.0,
) -> MobileNetV2:
    """Build ``mobilenet_v2`` (ours; MONAI has none)."""
    return MobileNetV2(spatial_dims, in_channels, num_classes, input_size, attention, dropout, width)
