"""Segmentation networks (MONAI), registered by name with ``task="segment"``.

Every builder takes the registry's fixed arguments (``num_classes`` = output channels,
background included) and sets ``divisor``: the input size per axis must be a multiple
of it (the planner picks patch and image sizes accordingly). ``deep_supervision``
(DynUNet) makes the network return ``(N, heads, C, ...)`` in training mode; the
segmentation loss weights the heads. ``width`` scales the number of filters (base 16,
sized for CPU; nnU-Net uses 32).
"""

from __future__ import annotations

import math

from monai.networks import nets
from torch import nn

from meddx.errors import PlanError
from meddx.models.registry import register_model


def _filters(levels: int, width: float, base: int = 16, cap: int = 320) -> list[int]:
    return [min(cap, max(4, int(round(base * width * 2 ** i)))) for i in range(levels)]


def _levels(input_size: tuple[int, ...], max_levels: int = 5, min_size: int = 4) -> int:
    """Number of resolution levels: halve while every axis stays >= ``min_size``."""
    return max(2, min(max_levels, 1 + int(math.floor(math.log2(max(1, min(input_size) / min_size))))))


def _check_divisible(name: str, input_size: tuple[int, ...], divisor: int) -> None:
    bad = [s for s in input_size if s % divisor]
    if bad:
        raise PlanError(f"model {name!r} needs input sizes divisible by {divisor}, got {list(input_size)}",
                        fix=f"set data.input_size (or segment.patch_size) to multiples of {divisor}")


def _finish(model: nn.Module, divisor: int, cam_layer: nn.Module | None) -> nn.Module:
    model.divisor = divisor
    model.cam_layer = cam_layer
    model.classifier_layer = None
    return model


class _AttentionUNet(nets.UNet):
    """MONAI's UNet with an attention block (SE, spatial or CBAM) after every encoder level and the
    bottleneck; MONAI's UNet has no such option, so its layer factory is extended here."""

    def __init__(self, *args, attention: str | None = None, **kwargs):
        object.__setattr__(self, "_attention_kind", attention)  # read while the parent builds its layers
        super().__init__(*args, **kwargs)

    def _get_down_layer(self, in_channels: int, out_channels: int, strides: int, is_top: bool) -> nn.Module:
        from meddx.models.attention import make_attention

        layer = super()._get_down_layer(in_channels, out_channels, strides, is_top)
        return nn.Sequential(layer, make_attention(self._attention_kind, self.dimensions, out_channels))

    def _get_bottom_layer(self, in_channels: int, out_channels: int) -> nn.Module:
        from meddx.models.attention import make_attention

        layer = super()._get_bottom_layer(in_channels, out_channels)
        return nn.Sequential(layer, make_attention(self._attention_kind, self.dimensions, out_channels))


@register_model("unet", task="segment")
def unet(*, spatial_dims: int, in_channels: int, num_classes: int, input_size: tuple[int, ...], width: float = 1.0,
         dropout: float = 0.0, res_units: int = 2, attention: str | None = None, full_res: bool = False) -> nn.Module:
    """MONAI UNet with residual units; levels chosen from the input size; ``attention`` (se, spatial,
    cbam) adds a block after each encoder level.

    MONAI's UNet strides its first level, so its only full-resolution features are the
    ``num_classes`` channels of the last up-convolution. ``full_res`` puts a stride-1 level of
    half the base width in front (full-resolution features as in nnU-Net's networks); it costs
    about 2.7x the training time of a 3D step (40x56x40 patches, measured here)."""
    if isinstance(res_units, bool) or not isinstance(res_units, int) or res_units < 0:
        raise PlanError(f"model 'unet': res_units must be an int >= 0, got {res_units!r}")
    lv = _levels(input_size)
    channels, strides = _filters(lv, width), [2] * (lv - 1)
    if full_res:
        channels, strides = [max(4, channels[0] // 2), *channels], [1, *strides]
    kw = dict(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes,
              channels=channels, strides=strides, num_res_units=res_units, dropout=dropout)
    m = _AttentionUNet(**kw, attention=attention) if attention else nets.UNet(**kw)
    _check_divisible("unet", input_size, 2 ** (lv - 1))
    return _finish(m, 2 ** (lv - 1), None)


@register_model("attention_unet", task="segment")
def attention_unet(*, spatial_dims: int, in_channels: int, num_classes: int, input_size: tuple[int, ...],
                   width: float = 1.0, dropout: float = 0.0) -> nn.Module:
    """MONAI AttentionUnet (attention gates on the skip connections)."""
    lv = _levels(input_size)
    m = nets.AttentionUnet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes,
                           channels=_filters(lv, width), strides=[2] * (lv - 1), dropout=dropout)
    _check_divisible("attention_unet", input_size, 2 ** (lv - 1))
    return _finish(m, 2 ** (lv - 1), None)


@register_model("segresnet", task="segment")
def segresnet(*, spatial_dims: int, in_channels: int, num_classes: int, input_size: tuple[int, ...],
              width: float = 1.0, dropout: float = 0.0) -> nn.Module:
    """MONAI SegResNet (Myronenko 2018), 3 down-sampling steps."""
    init = 8 * max(1, int(round(width)))  # GroupNorm(8) needs multiples of 8
    m = nets.SegResNet(spatial_dims=spatial_dims, init_filters=init, in_channels=in_channels,
                       out_channels=num_classes, dropout_prob=dropout or None)
    _check_divisible("segresnet", input_size, 8)
    return _finish(m, 8, m.up_layers[-1])


@register_model("vnet", task="segment")
def vnet(*, spatial_dims: int, in_channels: int, num_classes: int, input_size: tuple[int, ...], width: float = 1.0,
         dropout: float = 0.0) -> nn.Module:
    """MONAI VNet (Milletari 2016); its first layer needs 16 divisible by the channels."""
    if 16 % in_channels:
        raise PlanError(f"model 'vnet' cannot take {in_channels} input channels (16 must be divisible by them)",
                        fix="use 1, 2, 4, 8 or 16 channels, or another model (unet, dynunet)")
    _check_divisible("vnet", input_size, 16)
    m = nets.VNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes,
                  dropout_prob_down=dropout, dropout_prob_up=(dropout, dropout))
    return _finish(m, 16, m.up_tr32)


@register_model("basic_unet", task="segment")
def basic_unet(*, spatial_dims: int, in_channels: int, num_classes: int, input_size: tuple[int, ...],
               width: float = 1.0, dropout: float = 0.0) -> nn.Module:
    """MONAI BasicUNet (the original U-Net layout, 4 down-sampling steps)."""
    f = _filters(5, width)
    m = nets.BasicUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes,
                       features=(*f, f[0]), dropout=dropout)
    _check_divisible("basic_unet", input_size, 16)
    return _finish(m, 16, m.upcat_1)


@register_model("dynunet", task="segment")
def dynunet(*, spatial_dims: int, in_channels: int, num_classes: int, input_size: tuple[int, ...], width: float = 1.0,
            dropout: float = 0.0, deep_supervision: bool = True, res_block: bool = False) -> nn.Module:
    """MONAI DynUNet, nnU-Net's network: levels from the input size, instance norm,
    leaky ReLU, optional deep supervision on the two coarser decoder outputs."""
    lv = _levels(input_size, max_levels=6)
    strides = [1] + [2] * (lv - 1)
    ds_num = min(2, lv - 2) if deep_supervision else 1
    m = nets.DynUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes,
                     kernel_size=[3] * lv, strides=strides, upsample_kernel_size=strides[1:],
                     filters=_filters(lv, width), dropout=dropout or None,
                     deep_supervision=bool(deep_supervision and ds_num >= 1), deep_supr_num=max(1, ds_num),
                     res_block=res_block)
    _check_divisible("dynunet", input_size, 2 ** (lv - 1))
    return _finish(m, 2 ** (lv - 1), m.upsamples[-1])
