"""Training-memory estimate the planner uses to size batches and patches (nnU-Net sizes its
patches from a GPU-memory model in the same spirit; this one is measured, not tabulated).

One forward pass of the planned network on a single sample records every module's output size
(forward hooks); training keeps those activations for the backward pass and needs about as much
again for their gradients, plus weights, gradients and two Adam moments.
"""

from __future__ import annotations

import torch
from torch import nn

BYTES = 4  # float32


def activation_bytes_per_sample(model: nn.Module, in_channels: int, input_size: list[int] | tuple[int, ...]) -> int:
    """Bytes of module outputs one sample produces in a forward pass (leaf modules only)."""
    total = 0

    def hook(_m, _i, out):
        nonlocal total
        outs = out if isinstance(out, (tuple, list)) else (out,)
        total += sum(o.numel() for o in outs if isinstance(o, torch.Tensor)) * BYTES

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_channels, *input_size))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total


def training_bytes(model: nn.Module, in_channels: int, input_size, batch_size: int) -> int:
    """Estimated peak bytes of one training step at ``batch_size`` (activations x2 for their
    gradients, parameters x4 for weights, gradients and Adam's two moments)."""
    params = sum(p.numel() for p in model.parameters()) * BYTES
    return 2 * batch_size * activation_bytes_per_sample(model, in_channels, input_size) + 4 * params


def fit_batch(model: nn.Module, in_channels: int, input_size, wanted: int, budget_bytes: float,
              minimum: int = 2) -> tuple[int, int]:
    """Largest batch <= ``wanted`` (halving) whose estimate fits ``budget_bytes``; never below ``minimum``.

    Returns:
        ``(batch, estimated bytes at that batch)``.
    """
    per = activation_bytes_per_sample(model, in_channels, input_size)
    params = sum(p.numel() for p in model.parameters()) * BYTES
    bs = max(minimum, int(wanted))
    while bs > minimum and 2 * bs * per + 4 * params > budget_bytes:
        bs = max(minimum, bs // 2)
    return bs, 2 * bs * per + 4 * params
