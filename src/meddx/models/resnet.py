"""``resnet18``, ``resnet34``, ``resnet50``: MONAI's ``ResNet`` with a size-aware stem."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from monai.networks.nets import ResNet
from torch import nn

from meddx.models._layers import scale, small_stem
from meddx.models.attention import make_attention
from meddx.models.registry import register_model

INPLANES = (64, 128, 256, 512)


def build_resnet(
    block: str,
    layers: Sequence[int],
    *,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    input_size: Sequence[int],
    attention: str | None = None,
    dropout: float = 0.0,
    width: float = 1.0,
) -> ResNet:
    """MONAI ResNet; 3x3/1 stem without max-pool up to 64 px, else 7x7/2 + max-pool.

    Attention wraps each ``layerN`` as ``Sequential(layer, attention)``; dropout
    follows the global pool.
    """
    small = small_stem(input_size)
    planes = [scale(c, width) for c in INPLANES]
    model = ResNet(
        block=block,
        layers=list(layers),
        block_inplanes=planes,
        spatial_dims=spatial_dims,
        n_input_channels=in_channels,
        conv1_t_size=3 if small else 7,
        conv1_t_stride=1 if small else 2,
        no_max_pool=small,
        shortcut_type="B",
        num_classes=num_classes,
    )
    expansion = 4 if block == "bottleneck" else 1
    if attention is not None:
        for i, ch in enumerate(planes, start=1):
            name = f"layer{i}"
            attn = make_attention(attention, spatial_dims, ch * expansion)
            setattr(model, name, nn.Sequential(getattr(model, name), attn))
    if dropout > 0:
        model.avgpool = nn.Sequential(model.avgpool, nn.Dropout(dropout))
    model.cam_layer = "layer4"
    model.classifier_layer = "fc"
    return model


# name -> (block, layers): the three variants differ only in these.
VARIANTS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet34": ("basic", (3, 4, 6, 3)),
            "resnet50": ("bottleneck", (3, 4, 6, 3))}

for _name, (_block, _layers) in VARIANTS.items():
    register_model(_name)(partial(build_resnet, _block, _layers))
