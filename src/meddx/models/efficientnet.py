"""``efficientnet_b0``: MONAI's EfficientNet-B0 with a size-aware stem."""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.layers.factories import Act, Pad
from monai.networks.nets import EfficientNet
from monai.networks.nets.efficientnet import MBConvBlock, efficientnet_params
from torch import nn

from meddx.models._layers import small_stem
from meddx.models.attention import make_attention
from meddx.models.registry import register_model

# The block definitions MONAI's EfficientNetBN("efficientnet-b0") uses; spelled out
# here because EfficientNetBN cannot change width or the stem stride.
B0_BLOCKS = [
    "r1_k3_s11_e1_i32_o16_se0.25",
    "r2_k3_s22_e6_i16_o24_se0.25",
    "r2_k5_s22_e6_i24_o40_se0.25",
    "r3_k3_s22_e6_i40_o80_se0.25",
    "r3_k5_s11_e6_i80_o112_se0.25",
    "r4_k5_s22_e6_i112_o192_se0.25",
    "r1_k3_s11_e6_i192_o320_se0.25",
]


class _EfficientNet(EfficientNet):
    """MONAI's EfficientNet whose ``set_swish`` also works with attention-wrapped stages."""

    def set_swish(self, memory_efficient: bool = True) -> None:
        """Memory-efficient swish for training, plain swish for export (JIT/ONNX)."""
        self._swish = Act["memswish"]() if memory_efficient else Act["swish"](alpha=1.0)
        for m in self.modules():
            if isinstance(m, MBConvBlock):
                m.set_swish(memory_efficient)


@register_model("efficientnet_b0")
def efficientnet_b0(
    *,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    input_size: Sequence[int],
    attention: str | None = None,
    dropout: float = 0.0,
    width: float = 1.0,
) -> EfficientNet:
    """EfficientNet-B0 from MONAI (random init; same network as ``EfficientNetBN("efficientnet-b0")``).

    Up to 64 px the stem conv has stride 1 (28 px ends at 2 px, not 1).
    ``width`` is EfficientNet's width coefficient; ``dropout`` replaces B0's
    0.2 before the classifier (drop-connect 0.2 is kept). Attention follows
    each of the 7 MBConv stages.
    """
    _, depth_coeff, _, _, drop_connect = efficientnet_params["efficientnet-b0"]
    small = small_stem(input_size)
    size = min(input_size)
    model = _EfficientNet(
        blocks_args_str=list(B0_BLOCKS),
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        num_classes=num_classes,
        width_coefficient=width,
        depth_coefficient=depth_coeff,
        dropout_rate=dropout,
        # "same" padding is precomputed per size: with a stride-1 stem the blocks see the full size
        image_size=2 * size if small else size,
        drop_connect_rate=drop_connect,
    )
    if small:
        model._conv_stem.stride = (1,) * spatial_dims
        model._conv_stem_padding = Pad["constantpad", spatial_dims](padding=(1,) * (2 * spatial_dims), value=0.0)
    if attention is not None:
        for i, args in enumerate(model._blocks_args):
            stage = model._blocks[i]
            model._blocks[i] = nn.Sequential(stage, make_attention(attention, spatial_dims, args.output_filters))
    if dropout <= 0:
        model._dropout = nn.Identity()
    model.cam_layer = "_bn1"
    model.classifier_layer = "_fc"
    return model
