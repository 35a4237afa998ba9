"""Segmentation training and inference.

2D: whole (resized) images in batches. 3D: random patches, a share of them centred on
a foreground voxel (nnU-Net's oversampling), and MONAI's sliding-window inference with
Gaussian blending. Batches are cut and augmented as whole tensors from a generator
seeded by ``(seed, epoch)``, so a resumed run repeats exactly; the epoch loop itself
(checkpoints, resume, time budget, progress) is ``training.loop.run_epochs``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from meddx.data.segprep import SegData
from meddx.losses.segmentation import SegLoss
from meddx.training.loop import TaskTrainer
from meddx.transforms.augment import BatchAugment


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out[:, 0] if out.ndim == x.ndim + 1 else out  # deep supervision in train mode: full-res head


@torch.no_grad()
def segment_probs(model: nn.Module, image: torch.Tensor, plan, *, overlap: float | None = None,
                  device: torch.device | None = None) -> torch.Tensor:
    """Softmax probabilities ``(K, *S)`` for one preprocessed image ``(C, *S)``.

    3D with a patch size: sliding window (MONAI) with the plan's overlap and blending;
    2D: the whole image. ``segment.tta_flip_axes`` averages over flips.
    """
    from monai.inferers import sliding_window_inference

    device = device or next(model.parameters()).device
    model.eval()
    sg = plan.segment
    x = image.unsqueeze(0).to(device)
    flips = [None, *sg.tta_flip_axes]

    def run(inp):
        if sg.patch_size:
            return sliding_window_inference(inp, roi_size=tuple(sg.patch_size), sw_batch_size=plan.train.batch_size,
                                            predictor=lambda t: _logits(model, t), mode=sg.sw_mode,
                                            overlap=sg.sw_overlap if overlap is None else overlap, padding_mode="constant")
        return _logits(model, inp)

    # the flipped copies go through the network as one batch (one sliding-window pass)
    inp = torch.cat([x if ax is None else x.flip(2 + ax) for ax in flips])
    p = F.softmax(run(inp).float(), dim=1)
    acc = sum(p[i:i + 1] if ax is None else p[i:i + 1].flip(2 + ax) for i, ax in enumerate(flips))
    return (acc / len(flips))[0].cpu()


def dice_per_class(pred: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    """Dice of each foreground class 1..k-1; 1.0 when both are empty."""
    out = np.empty(k - 1)
    for c in range(1, k):
        p, t = pred == c, truth == c
        den = p.sum() + t.sum()
        out[c - 1] = 1.0 if den == 0 else 2.0 * np.logical_and(p, t).sum() / den
    return out


class SegTrainer(TaskTrainer):
    """Trains a segmentation network on ``SegData`` according to ``plan``."""

    select_name = "dice"

    def __init__(self, plan, model: nn.Module, run_dir: Path, *, device: torch.device | None = None,
                 progress: bool = True):
        super().__init__(plan, model, run_dir, device=device, progress=progress)
        self.augment = BatchAugment.from_config(plan.augment, plan.data.spatial_dims)
        self.loss_fn = SegLoss(plan.segment.loss, plan.segment.class_weights).to(self.device)
        self.k = len(plan.segment.label_values)

    # -- batches --------------------------------------------------------------------------
    def _crop(self, img: torch.Tensor, lab: torch.Tensor,
              rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """A training patch (zero-padded up to the patch size first) and its corner in the padded image."""
        patch = self.plan.segment.patch_size
        shape = np.array(lab.shape)
        pad = np.maximum(np.array(patch) - shape, 0)
        if pad.any():
            spec = [int(v) for p_ in pad[::-1] for v in (p_ // 2, p_ - p_ // 2)]
            img = F.pad(img, spec)
            lab = F.pad(lab, spec)
            shape = np.array(lab.shape)
        hi = shape - np.array(patch)
        if rng.random() < self.plan.segment.fg_oversample:
            fg = torch.nonzero(lab > 0)
            if len(fg):
                centre = fg[rng.integers(len(fg))].numpy()
                start = np.clip(centre - np.array(patch) // 2, 0, hi)
            else:
                start = np.array([rng.integers(h + 1) for h in hi])
        else:
            start = np.array([rng.integers(h + 1) for h in hi])
        sl = tuple(slice(int(s), int(s) + p) for s, p in zip(start, patch))
        return img[(slice(None), *sl)], lab[sl], start

    def batches(self, data: SegData, epoch: int):
        self.recorder.discard()  # what an epoch cut short drew is not part of this one
        seed = self.plan.seed * 1_000_003 + epoch
        g = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        n = len(data)
        bs = min(self.plan.train.batch_size, n) if not self.plan.segment.patch_size else self.plan.train.batch_size
        for idx in self.epoch_indices(n, bs, g):
            crops = {}
            if self.plan.segment.patch_size:
                pairs = [self._crop(data.images[i], data.labels[i], rng) for i in idx]
                xb = torch.stack([p[0] for p in pairs])
                yb = torch.stack([p[1] for p in pairs])
                crops = {"crop_start": torch.as_tensor(np.stack([p[2] for p in pairs]))}
            else:
                xb = torch.stack([data.images[i] for i in idx])
                yb = torch.stack([data.labels[i] for i in idx])
            params = {}
            if self.augment.active:
                params = self.augment.sample(xb.shape[0], g)
                xb = self.augment.apply(xb, params)
                yb = self.augment.apply_labels(yb, params)
            self.recorder.add(self.augment, idx, params, **crops)
            yield xb, yb
        self.recorder.write(epoch)

    def step(self, model: nn.Module, batch) -> torch.Tensor:
        xb, yb = batch
        xb, yb = xb.to(self.device), yb.to(self.device).long()
        return self.loss_fn(model(xb), yb)

    # -- validation -----------------------------------------------------------------------
    def validate(self, model: nn.Module, data: SegData) -> tuple[float, dict[str, float]]:
        """Mean foreground Dice over validation cases (at the training resolution)."""
        scores = []
        for img, lab in zip(data.images, data.labels):
            p = segment_probs(model, img, self.plan, overlap=min(self.plan.segment.sw_overlap, 0.25),
                              device=self.device)
            scores.append(dice_per_class(p.argmax(0).numpy(), lab.numpy(), self.k))
        s = np.array(scores)
        fields = {"val_dice": float(s.mean())}
        for c, name in enumerate(self.plan.segment.label_names[1:]):
            fields[f"val_dice_{name}"] = float(s[:, c].mean())
        return float(s.mean()), fields
