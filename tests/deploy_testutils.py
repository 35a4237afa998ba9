"""Helpers for the deploy and runtime tests: run directories with random (untrained) weights.

A real ``meddx train`` run costs minutes; export, bundles and the runtime only need a
run's files (plan, best checkpoint, calibration, thresholds), so these are written
directly, with BatchNorm statistics and weights drawn at random so that outputs are far
from uniform and differences would show.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from meddx.planning.plan import DataConfig, ModelConfig, Plan, SegmentConfig
from meddx.training.checkpoint import save_checkpoint
from meddx.training.run import build_model


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            elif isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.3)
    return model.eval()


def make_run(root: Path, *, model: str = "small_cnn", dims: int = 2, channels: int = 1, size: int = 28,
             classes=("normal", "pneumonia"), intensity: str = "scale255", clip=None, mean: float = 0.45,
             std: float = 0.24, tta=(), temperature: float | None = 1.7, threshold: float | None = 0.42,
             params: dict | None = None, seed: int = 0) -> Path:
    """A classification run directory with random weights."""
    plan = Plan(task="classify", seed=seed,
                data=DataConfig(source="none", kind="folder", class_names=list(classes), spatial_dims=dims,
                                channels=channels, input_size=[size] * dims, intensity=intensity, clip=clip,
                                norm_mean=mean, norm_std=std),
                model=ModelConfig(name=model, params=params or {}))
    plan.evaluate.tta_flip_axes = list(tta)
    return _write(root, plan, seed, temperature, threshold)


def make_seg_run(root: Path, *, dims: int = 3, patch=(24, 32, 24), size: int = 64, labels=(0, 1, 2),
                 names=("background", "anterior", "posterior"), intensity: str = "image_zscore",
                 mean: float = 0.0, std: float = 1.0, tta=(0,), postprocess=("largest_component",),
                 seed: int = 0) -> Path:
    """A segmentation run directory (MONAI UNet, random weights); 3D runs use a sliding window."""
    plan = Plan(task="segment", seed=seed,
                data=DataConfig(source="none", kind="seg", class_names=list(names), spatial_dims=dims, channels=1,
                                input_size=[size] * dims if dims == 2 else list(patch), intensity=intensity,
                                norm_mean=mean, norm_std=std),
                model=ModelConfig(name="unet", params={}),
                segment=SegmentConfig(label_values=list(labels), label_names=list(names),
                                      patch_size=list(patch) if dims == 3 else None, tta_flip_axes=list(tta),
                                      postprocess=list(postprocess), sw_overlap=0.5))
    plan.train.batch_size = 2
    return _write(root, plan, seed, None, None)


def _write(root: Path, plan: Plan, seed: int, temperature, threshold) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = randomise(build_model(plan), seed)
    save_checkpoint(root / "checkpoints" / "best.pt", {"model": model.state_dict(), "epoch": 1})
    plan.save(root / "plan.yaml")
    if temperature is not None:
        (root / "calibration.json").write_text(json.dumps({"temperature": temperature}))
    if threshold is not None:
        (root / "thresholds.json").write_text(json.dumps({"rule": "youden", "threshold": threshold}))
    (root / "model_card.md").write_text("# Model card: test run\n\nRandom weights, for tests only.\n")
    return root
