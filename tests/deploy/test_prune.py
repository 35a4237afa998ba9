"""Structured pruning removes channels for real: narrower layers, fewer parameters and FLOPs,
a smaller ONNX graph, and a pruned model rebuilt from its record equals the original."""

from __future__ import annotations

import io

import pytest
import torch

from meddx.deploy.export import export_onnx
from meddx.deploy.flops import onnx_flops
from meddx.deploy.prune import layer_shapes, prune, rebuild
from meddx.models import create_model

MODELS = [("small_cnn", 2, 28), ("mobilenet_v2", 2, 28), ("resnet18", 2, 28), ("small_cnn", 3, 16)]


@pytest.mark.parametrize("name,dims,size", MODELS)
def test_pruning_removes_channels_and_rebuilds(name, dims, size, tmp_path):
    kw = dict(spatial_dims=dims, in_channels=1, num_classes=2, input_size=size)
    torch.manual_seed(0)
    m = create_model(name, **kw).eval()
    shape = (1,) + (size,) * dims
    widths = {k: v["out_channels"] for k, v in layer_shapes(m).items() if "out_channels" in v}
    info = prune(m, shape, 0.5, num_classes=2)
    after = {k: v["out_channels"] for k, v in layer_shapes(m).items() if "out_channels" in v}
    narrowed = [k for k in widths if after[k] < widths[k]]
    assert len(narrowed) >= 0.8 * len(widths)  # nearly every convolution lost channels
    assert all(after[k] <= (widths[k] + 1) // 2 + 1 for k in narrowed)
    assert info["params_after"] < 0.35 * info["params_before"]
    assert info["flops_after"] < 0.35 * info["flops_before"]
    assert m(torch.randn(2, *shape)).shape == (2, 2)  # the classifier keeps its outputs

    f = export_onnx(m, shape, tmp_path / "p.onnx")
    assert onnx_flops(f)["flops"] == info["flops_after"]

    buf = io.BytesIO()
    torch.save({"shapes": layer_shapes(m), "model": m.state_dict()}, buf)
    buf.seek(0)
    st = torch.load(buf, weights_only=True)
    m2 = rebuild(create_model(name, **kw), st["shapes"], st["model"])
    x = torch.randn(3, *shape)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))


def test_pruning_keeps_the_strongest_channels():
    """L1 importance: the channels whose filters were zeroed are the ones removed."""
    torch.manual_seed(0)
    m = create_model("small_cnn", spatial_dims=2, in_channels=1, num_classes=2, input_size=28, depth=1).eval()
    conv, bn = m.stages[0][0].conv1[:2]  # conv-BN(-ReLU): the block's internal channels, a group of their own
    dead = torch.arange(0, 24, 2)
    with torch.no_grad():
        bn.weight.copy_(1 + torch.arange(24) / 100)  # distinct, to recognise the survivors
        conv.weight[dead] = 0
        bn.weight[dead] = 0
        m.stages[0][0].conv2[0].weight[:, dead] *= 1e-3
    gamma = bn.weight.detach().clone()
    prune(m, (1, 28, 28), 0.5, num_classes=2)
    kept = m.stages[0][0].conv1[1].weight.detach()
    assert kept.shape == (12,) and torch.equal(kept, gamma[1::2])


def test_bad_ratio():
    m = create_model("small_cnn", spatial_dims=2, in_channels=1, num_classes=2, input_size=28)
    with pytest.raises(ValueError):
        prune(m, (1, 28, 28), 1.0, num_classes=2)


def test_iterative_pruning_cuts_gradually_and_calls_back():
    """``steps=3`` reaches about the one-shot width in three cuts, with the callback after each."""
    kw = dict(spatial_dims=2, in_channels=1, num_classes=2, input_size=28)
    torch.manual_seed(0)
    one = create_model("small_cnn", **kw).eval()
    torch.manual_seed(0)
    it = create_model("small_cnn", **kw).eval()
    single = prune(one, (1, 28, 28), 0.6, num_classes=2)
    seen = []

    def after(k):
        seen.append((k, sum(p.numel() for p in it.parameters())))
        with torch.no_grad():  # stand-in for fine-tuning: the next cut must see changed weights
            for p in it.parameters():
                p.add_(0.01 * torch.randn_like(p))

    info = prune(it, (1, 28, 28), 0.6, num_classes=2, steps=3, after_step=after)
    assert [k for k, _ in seen] == [1, 2, 3]
    sizes = [n for _, n in seen]
    assert sizes[0] > sizes[1] > sizes[2] == info["params_after"]
    assert [s["params"] for s in info["per_step"]] == sizes
    assert info["steps"] == 3 and info["flops_after"] < 0.3 * info["flops_before"]
    assert abs(info["params_after"] - single["params_after"]) <= 0.1 * single["params_after"]
    assert it(torch.randn(2, 1, 28, 28)).shape == (2, 2)
    with pytest.raises(ValueError):
        prune(create_model("small_cnn", **kw), (1, 28, 28), 0.5, num_classes=2, steps=0)


def test_learning_rate_after_a_cut():
    """A light cut is fine-tuned at a quarter of the plan's rate; from 60 % on it is retrained at the full rate."""
    from meddx.deploy.compress import prune_lr_factor

    assert prune_lr_factor(0.3) == prune_lr_factor(0.5) == 0.25
    assert prune_lr_factor(0.6) == prune_lr_factor(0.7) == 1.0
