"""Small shared pieces for our own networks: stems, conv-BN-act, channel scaling."""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.layers.factories import Conv, Norm, Pool
from torch import nn

SMALL_INPUT_MAX = 64
"""Inputs whose smallest side is at most this get a stride-1 stem without max-pool."""


def small_stem(input_size: Sequence[int]) -> bool:
    """Whether ``input_size`` is small enough for a stride-1 stem (MedMNIST-style)."""
    return min(input_size) <= SMALL_INPUT_MAX


def scale(channels: int, width: float, divisor: int = 1) -> int:
    """``channels * width`` rounded to a multiple of ``divisor`` (never below ``divisor``)."""
    if divisor == 1:
        return max(1, int(round(channels * width)))
    v = channels * width
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new < 0.9 * v:  # don't round down by more than 10 %
        new += divisor
    return new


def conv_bn_act(
    spatial_dims: int,
    in_ch: int,
    out_ch: int,
    kernel_size: int = 3,
    stride: int = 1,
    groups: int = 1,
    act: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> activation (none when ``act`` is None)."""
    layers: list[nn.Module] = [
        Conv[Conv.CONV, spatial_dims](
            in_ch, out_ch, kernel_size=kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias=False
        ),
        Norm[Norm.BATCH, spatial_dims](out_ch),
    ]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


def make_stem(spatial_dims: int, in_ch: int, out_ch: int, input_size: Sequence[int]) -> nn.Sequential:
    """3x3 stride-1 stem for small inputs, else 7x7 stride-2 conv + 3x3 stride-2 max-pool."""
    if small_stem(input_size):
        return conv_bn_act(spatial_dims, in_ch, out_ch, 3, 1)
    stem = conv_bn_act(spatial_dims, in_ch, out_ch, 7, 2)
    stem.append(Pool[Pool.MAX, spatial_dims](kernel_size=3, stride=2, padding=1))
    return stem


def init_weights(module: nn.Module) -> None:
    """He init for convs, unit/zero BatchNorm, small normal for linear layers."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
