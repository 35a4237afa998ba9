"""Channel and spatial attention blocks (SE and CBAM), 2D and 3D.

``SE`` wraps MONAI's ``ChannelSELayer``. ``CBAM`` is our own: MONAI has no
CBAM block.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import ChannelSELayer
from monai.networks.layers.factories import Conv, Norm
from torch import nn

from meddx.errors import PlanError

ATTENTION_KINDS = (None, "se", "cbam")


def _hidden_ratio(channels: int, reduction: int, min_hidden: int = 8) -> int:
    """Reduction ratio that keeps at least ``min_hidden`` hidden units (narrow nets need it)."""
    return max(1, min(reduction, channels // min_hidden))


class SE(nn.Module):
    """Squeeze-and-excitation (Hu et al., 2018), via MONAI's ``ChannelSELayer``.

    Args:
        spatial_dims: 2 or 3.
        channels: number of input (= output) channels.
        reduction: channel reduction ratio of the bottleneck MLP (capped so it
            keeps at least 8 hidden units).
    """

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 16):
        super().__init__()
        self.se = ChannelSELayer(spatial_dims, channels, r=_hidden_ratio(channels, reduction))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(x)


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al., ECCV 2018). Ours: MONAI lacks it.

    Channel attention (a shared MLP over average- and max-pooled features),
    then spatial attention (a conv over the channel-wise mean and max maps).

    Args:
        spatial_dims: 2 or 3.
        channels: number of input (= output) channels.
        reduction: channel reduction ratio of the MLP (capped so it keeps at
            least 8 hidden units).
        kernel_size: spatial-attention kernel; default 7 in 2D, 5 in 3D.
    """

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 16, kernel_size: int | None = None):
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        hidden = channels // _hidden_ratio(channels, reduction)
        if kernel_size is None:
            kernel_size = 7 if spatial_dims == 2 else 5
        self.spatial_dims = spatial_dims
        self.mlp = nn.Sequential(
            conv(channels, hidden, kernel_size=1, bias=True),
            nn.ReLU(inplace=True),
            conv(hidden, channels, kernel_size=1, bias=True),
        )
        self.spatial = nn.Sequential(
            conv(2, 1, kernel_size=kernel_size, padding=kernel_size // 2, bias=False),
            Norm[Norm.BATCH, spatial_dims](1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, x.ndim))
        avg = x.mean(dim=dims, keepdim=True)
        mx = x.amax(dim=dims, keepdim=True)
        x = x * torch.sigmoid(self.mlp(avg) + self.mlp(mx))
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(maps))


class SpatialAttention(nn.Module):
    """Spatial attention alone (CBAM's second half, Woo et al. 2018): a map from the channel-wise
    mean and max, squashed by a sigmoid, reweights every position. Ours: MONAI lacks it."""

    def __init__(self, spatial_dims: int, channels: int, kernel_size: int | None = None):
        super().__init__()
        if kernel_size is None:
            kernel_size = 7 if spatial_dims == 2 else 5
        conv = Conv[Conv.CONV, spatial_dims]
        self.spatial = nn.Sequential(conv(2, 1, kernel_size=kernel_size, padding=kernel_size // 2, bias=False),
                                     Norm[Norm.BATCH, spatial_dims](1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(maps))


ATTENTION_KINDS = ("se", "spatial", "cbam")


def make_attention(kind: str | None, spatial_dims: int, channels: int) -> nn.Module:
    """Build an attention block.

    Args:
        kind: ``None`` (identity), ``"se"`` (channel), ``"spatial"`` or ``"cbam"`` (both).
        spatial_dims: 2 or 3.
        channels: feature channels the block sees.

    Returns:
        The block; ``nn.Identity`` for ``None``.

    Raises:
        PlanError: for an unknown kind.
    """
    if kind is None or kind == "none":
        return nn.Identity()
    if kind == "se":
        return SE(spatial_dims, channels)
    if kind == "spatial":
        return SpatialAttention(spatial_dims, channels)
    if kind == "cbam":
        return CBAM(spatial_dims, channels)
    raise PlanError(f"unknown attention {kind!r}", fix="use one of: none, se, spatial, cbam")
