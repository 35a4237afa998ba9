"""``densenet121``: MONAI's ``DenseNet121`` with a size-aware stem."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from monai.networks.nets import DenseNet121
from torch import nn

from meddx.errors import PlanError
from meddx.models._layers import conv_bn_act, scale, small_stem
from meddx.models.attention import make_attention
from meddx.models.registry import register_model

BLOCKS = (6, 12, 24, 16)


def min_input_size(small: bool) -> int:
    """Smallest side that leaves >= 1 px after the last of the three 2x2 transition pools."""
    return 8 if small else 32


@register_model("densenet121")
def densenet121(
    *,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    input_size: Sequence[int],
    attention: str | None = None,
    dropout: float = 0.0,
    width: float = 1.0,
) -> DenseNet121:
    """DenseNet-121 from MONAI (growth 32, blocks 6-12-24-16; both scaled by ``width``).

    Up to 64 px the 7x7/2 conv + max-pool stem is replaced by a 3x3/1 conv, so
    a 28 px image ends at 3 px instead of vanishing (MONAI's stem alone needs
    >= 32 px and leaves 1 px there, useless for Grad-CAM). Attention follows
    each dense block; dropout precedes the classifier.

    Raises:
        PlanError: the input is too small for the three transition pools.
    """
    small = small_stem(input_size)
    need = min_input_size(small)
    if min(input_size) < need:
        raise PlanError(
            f"model 'densenet121' needs input_size >= {need} px, got {tuple(input_size)}",
            fix=f"resize images to at least {max(need, 32)} px or choose another model such as resnet18 or small_cnn",
        )
    init, growth = scale(64, width), scale(32, width)
    model = DenseNet121(
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes,
        init_features=init, growth_rate=growth, pretrained=False,
    )  # fmt: skip
    feats = OrderedDict(model.features.named_children())
    if small:
        stem = conv_bn_act(spatial_dims, in_channels, init, 3, 1)
        nn.init.kaiming_normal_(stem[0].weight)  # same init MONAI gives its own convs
        feats["conv0"], feats["norm0"] = stem[0], stem[1]
        feats["pool0"] = nn.Identity()
    if attention is not None:
        ch = init
        for i, n in enumerate(BLOCKS, start=1):
            ch += n * growth
            name = f"denseblock{i}"
            feats[name] = nn.Sequential(feats[name], make_attention(attention, spatial_dims, ch))
            ch //= 2
    model.features = nn.Sequential(feats)
    head = OrderedDict(model.class_layers.named_children())
    if dropout > 0:
        out = head.pop("out")
        head["dropout"] = nn.Dropout(dropout)
        head["out"] = out
    model.class_layers = nn.Sequential(head)
    model.cam_layer = "class_layers.relu"
    model.classifier_layer = "class_layers.out"
    return model
