"""Structured channel pruning that removes channels (Torch-Pruning), and rebuilding a pruned model.

Torch-Pruning (Fang et al., CVPR 2023, "DepGraph") traces the network, groups every
layer whose channels must go together (a convolution's filters, the BatchNorm after it,
the next layer's input channels, both sides of a residual addition or concatenation)
and removes whole groups, so the layers really get narrower: fewer parameters and fewer
FLOPs, not zeroed weights. Importance is the L1 norm of each group's weights (Li et al.,
ICLR 2017), one ratio for every layer. The classifier (or the segmenter's output
convolutions) keep their outputs.

A pruned network no longer matches its registry definition, so ``layer_shapes`` records
the width of every convolution, normalisation and linear layer, and ``rebuild`` narrows
a freshly built registry model to those widths before loading the weights (with
``weights_only=True`` checkpoints, no pickled modules).
"""

from __future__ import annotations

import torch
from torch import nn

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
         nn.GroupNorm)


def output_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """Layers whose outputs are the model's outputs and must keep their width."""
    name = getattr(model, "classifier_layer", None)
    if name:
        return [model.get_submodule(name)]
    # segmenters: the convolutions that produce the class maps (MONAI UNet's top up-path and head)
    return [m for m in model.modules() if isinstance(m, _CONV) and m.out_channels == num_classes]


def prune(model: nn.Module, input_shape: tuple[int, ...], ratio: float, *, num_classes: int,
          round_to: int | None = None, steps: int = 1, after_step=None) -> dict:
    """Remove ``ratio`` of the channels of every prunable layer group, in place.

    With ``steps > 1`` the ratio is reached gradually (Torch-Pruning's ``iterative_steps``:
    step k removes up to ``ratio * k / steps`` of the original channels) and
    ``after_step(k)`` runs after each step, which is where the caller fine-tunes, so the
    network recovers from a small cut before the next one (Molchanov et al., ICLR 2017;
    Fang et al., CVPR 2023 use the same prune-train loop). L1 importance is re-measured on
    the fine-tuned weights at every step.

    Args:
        model: a registry model (eval or train mode; returned in eval mode).
        input_shape: ``(C, *spatial)`` of one input, for tracing.
        ratio: fraction of channels removed per group, in (0, 1).
        num_classes: the output width to keep.
        round_to: keep channel counts multiples of this (SIMD-friendly), or None.
        steps: number of prune steps (>= 1).
        after_step: ``callable(step_index)`` called after each step (1-based), or None.

    Returns:
        ``{"ratio", "steps", "params_before", "params_after", "flops_before", "flops_after",
        "per_step": [{"step", "params", "flops"}, ...]}`` (FLOPs from ``torch.utils.flop_counter``,
        per input).
    """
    import torch_pruning as tp

    from meddx.deploy.flops import torch_flops

    if not 0 < ratio < 1:
        raise ValueError(f"prune ratio must be in (0, 1), got {ratio}")
    if int(steps) < 1:
        raise ValueError(f"prune steps must be >= 1, got {steps}")
    model.eval()
    x = torch.randn(1, *input_shape)
    before = (sum(p.numel() for p in model.parameters()), torch_flops(model, x))
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=float(ratio), ignored_layers=output_layers(model, num_classes),
                                  round_to=round_to, iterative_steps=int(steps))
    per_step = []
    for k in range(1, int(steps) + 1):
        model.eval()
        pruner.step()
        model.eval()
        per_step.append({"step": k, "params": int(sum(p.numel() for p in model.parameters())),
                         "flops": int(torch_flops(model, x))})
        if after_step is not None:
            after_step(k)
    model.eval()  # fine-tuning keeps the widths: the last step's counts are the result
    return {"ratio": float(ratio), "steps": int(steps), "params_before": int(before[0]),
            "params_after": per_step[-1]["params"], "flops_before": int(before[1]),
            "flops_after": per_step[-1]["flops"], "per_step": per_step}


def layer_shapes(model: nn.Module) -> dict[str, dict[str, int]]:
    """Width of every convolution, normalisation and linear layer (enough to rebuild a pruned model)."""
    out: dict[str, dict[str, int]] = {}
    for name, m in model.named_modules():
        if isinstance(m, _CONV):
            out[name] = {"in_channels": m.in_channels, "out_channels": m.out_channels, "groups": m.groups}
        elif isinstance(m, nn.GroupNorm):
            out[name] = {"num_channels": m.num_channels}
        elif isinstance(m, _NORM):
            out[name] = {"num_features": m.num_features}
        elif isinstance(m, nn.Linear):
            out[name] = {"in_features": m.in_features, "out_features": m.out_features}
        elif isinstance(m, nn.PReLU):
            out[name] = {"num_parameters": m.num_parameters}
    return out


def _resize_param(m: nn.Module, attr: str, shape: tuple[int, ...]) -> None:
    p = getattr(m, attr, None)
    if isinstance(p, nn.Parameter):
        setattr(m, attr, nn.Parameter(torch.empty(shape, dtype=p.dtype), requires_grad=p.requires_grad))
    elif isinstance(p, torch.Tensor):
        m.register_buffer(attr, torch.empty(shape, dtype=p.dtype))


def rebuild(model: nn.Module, shapes: dict[str, dict[str, int]], state_dict: dict) -> nn.Module:
    """Narrow a freshly built ``model`` to the recorded ``shapes`` and load ``state_dict`` (strict)."""
    for name, s in shapes.items():
        m = model.get_submodule(name)
        if isinstance(m, _CONV):
            m.in_channels, m.out_channels, m.groups = s["in_channels"], s["out_channels"], s["groups"]
            k = tuple(m.kernel_size)
            w = (m.in_channels, m.out_channels // m.groups, *k) if m.transposed else \
                (m.out_channels, m.in_channels // m.groups, *k)
            _resize_param(m, "weight", w)
            _resize_param(m, "bias", (m.out_channels,))
        elif isinstance(m, nn.GroupNorm):
            m.num_channels = s["num_channels"]
            _resize_param(m, "weight", (m.num_channels,))
            _resize_param(m, "bias", (m.num_channels,))
        elif isinstance(m, _NORM):
            m.num_features = s["num_features"]
            for attr in ("weight", "bias", "running_mean", "running_var"):
                _resize_param(m, attr, (m.num_features,))
        elif isinstance(m, nn.Linear):
            m.in_features, m.out_features = s["in_features"], s["out_features"]
            _resize_param(m, "weight", (m.out_features, m.in_features))
            _resize_param(m, "bias", (m.out_features,))
        elif isinstance(m, nn.PReLU):
            m.num_parameters = s["num_parameters"]
            _resize_param(m, "weight", (m.num_parameters,))
    model.load_state_dict(state_dict, strict=True)
    return model.eval()
