"""A dedicated 2D lesion detector: a centre heatmap head on a U-Net (CenterNet-style).

The network (any registered segmenter) outputs, per pixel, one heatmap channel per
finding class and two size channels (box height and width as a fraction of the image).
Targets are Gaussians at box centres (sigma from the box size) and the box size at the
centre pixel; the loss is CenterNet's penalty-reduced focal loss on the heatmaps plus an
L1 size loss at the centres (Zhou et al., "Objects as Points", 2019). Decoding keeps
3x3 local maxima above a score floor, highest first. Written here because MONAI's
detection app (RetinaNet) needs torchvision, which meddx cannot depend on.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from meddx.data.segprep import SegData
from meddx.evaluation.detection import Box
from meddx.training.loop import TaskTrainer
from meddx.transforms.augment import BatchAugment

MAX_DETECTIONS = 20
SCORE_FLOOR = 0.02
HEAT_PRIOR = -2.19  # logit offset so an untrained head predicts ~0.1 everywhere (CenterNet's bias init)


def heatmap_targets(shape: tuple[int, int], boxes: list[Box], n_cls: int) -> torch.Tensor:
    """``(n_cls + 3, H, W)``: heatmaps, then height and width fractions, then the centre mask."""
    h, w = shape
    out = torch.zeros(n_cls + 3, h, w)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    for b in boxes:
        (y0, x0), (y1, x1) = b.lo, b.hi
        cy, cx = (y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2
        bh, bw = max(1.0, y1 - y0), max(1.0, x1 - x0)
        sy, sx = max(0.8, bh / 6), max(0.8, bw / 6)
        g = torch.exp(-((yy - cy) ** 2 / (2 * sy * sy) + (xx - cx) ** 2 / (2 * sx * sx)))
        c = b.cls - 1
        out[c] = torch.maximum(out[c], g)
        iy, ix = int(round(min(max(cy, 0), h - 1))), int(round(min(max(cx, 0), w - 1)))
        out[c, iy, ix] = 1.0
        out[n_cls, iy, ix] = bh / h
        out[n_cls + 1, iy, ix] = bw / w
        out[n_cls + 2, iy, ix] = 1.0
    return out


def centernet_loss(pred: torch.Tensor, target: torch.Tensor, n_cls: int, size_weight: float = 1.0) -> torch.Tensor:
    """Penalty-reduced focal loss (alpha 2, beta 4) on heatmaps + L1 on sizes at centres."""
    if pred.ndim == target.ndim + 1:  # deep supervision heads: use the full-resolution one
        pred = pred[:, 0]
    heat = torch.sigmoid(pred[:, :n_cls].float() + HEAT_PRIOR).clamp(1e-4, 1 - 1e-4)
    gt = target[:, :n_cls]
    pos = gt.eq(1).float()
    neg = 1 - pos
    pos_loss = torch.log(heat) * (1 - heat) ** 2 * pos
    neg_loss = torch.log(1 - heat) * heat ** 2 * (1 - gt) ** 4 * neg
    n_pos = pos.sum().clamp(min=1)
    focal = -(pos_loss.sum() + neg_loss.sum()) / n_pos
    centre = target[:, n_cls + 2:n_cls + 3]
    size = (torch.abs(torch.sigmoid(pred[:, n_cls:n_cls + 2].float()) - target[:, n_cls:n_cls + 2]) * centre).sum()
    return focal + size_weight * size / centre.sum().clamp(min=1)


@torch.no_grad()
def decode(out: torch.Tensor, n_cls: int, max_det: int = MAX_DETECTIONS, floor: float = SCORE_FLOOR) -> list[Box]:
    """Boxes from one image's raw output ``(n_cls + 2, H, W)`` (input-size coordinates)."""
    heat = torch.sigmoid(out[:n_cls].float() + HEAT_PRIOR)
    peaks = heat * (F.max_pool2d(heat[None], 3, stride=1, padding=1)[0] == heat)
    scores, idx = peaks.flatten().topk(min(max_det, peaks.numel()))
    h, w = heat.shape[1:]
    sizes = torch.sigmoid(out[n_cls:n_cls + 2].float())
    boxes = []
    for s, i in zip(scores.tolist(), idx.tolist()):
        if s < floor:
            break
        c, rem = divmod(i, h * w)
        y, x = divmod(rem, w)
        bh, bw = float(sizes[0, y, x]) * h, float(sizes[1, y, x]) * w
        lo = (max(0, int(round(y - bh / 2 + 0.5))), max(0, int(round(x - bw / 2 + 0.5))))
        hi = (min(h, max(lo[0] + 1, int(round(y + bh / 2 + 0.5)))), min(w, max(lo[1] + 1, int(round(x + bw / 2 + 0.5)))))
        boxes.append(Box(lo, hi, c + 1, s))
    return boxes


BOX_MOVING_AUGMENT = ("rotate_deg", "scale", "translate", "elastic")
"""Plan ``augment`` keys the heatmap detector leaves out: they move the image, so its boxes (centre
heatmaps and sizes) would have to move with it."""


def heatmap_augment(cfg) -> tuple[BatchAugment, list[str]]:
    """The heatmap detector's augmentation from a plan's ``augment``: the flips (the targets flip
    with the image) and every intensity-only key (brightness, contrast, noise, gamma, blur), which
    leave the boxes where they are. Returns it and the geometric keys the plan sets that it drops."""
    aug = BatchAugment(spatial_dims=2, flip_axes=tuple(cfg.flip_axes), brightness=cfg.brightness,
                       contrast=cfg.contrast, noise_std=cfg.noise_std, gamma=cfg.gamma, blur_sigma=cfg.blur_sigma,
                       p=cfg.p)
    return aug, [k for k in BOX_MOVING_AUGMENT if getattr(cfg, k)]


class HeatmapTrainer(TaskTrainer):
    """Trains the heatmap detector on ``SegData`` whose ``boxes`` are in input-size coordinates."""

    select_name = "froc"

    def __init__(self, plan, model: nn.Module, run_dir: Path, *, device: torch.device | None = None,
                 progress: bool = True):
        super().__init__(plan, model, run_dir, device=device, progress=progress)
        self.n_cls = len(plan.segment.label_values) - 1
        self.augment, self.augment_dropped = heatmap_augment(plan.augment)

    def _targets(self, data: SegData) -> list[torch.Tensor]:
        if getattr(data, "_targets", None) is None:
            data._targets = [heatmap_targets(tuple(im.shape[1:]), bs, self.n_cls)
                             for im, bs in zip(data.images, data.boxes)]
        return data._targets

    def batches(self, data: SegData, epoch: int):
        self.recorder.discard()  # what an epoch cut short drew is not part of this one
        g = torch.Generator().manual_seed(self.plan.seed * 1_000_003 + epoch)
        n = len(data)
        bs = min(self.plan.train.batch_size, n)
        tg = self._targets(data)
        for idx in self.epoch_indices(n, bs, g):
            xb = torch.stack([data.images[i] for i in idx])
            tb = torch.stack([tg[i] for i in idx])
            params = {}
            if self.augment.active:
                params = self.augment.sample(xb.shape[0], g)
                xb = self.augment.apply(xb, params)
                keep = params["apply"]
                for j, ax in enumerate(self.augment.flip_axes):  # targets flip with the image
                    m = (params["flip"][:, j] & keep).view(-1, 1, 1, 1)
                    tb = torch.where(m, tb.flip(2 + ax), tb)
            self.recorder.add(self.augment, idx, params)
            yield xb, tb
        self.recorder.write(epoch)

    def step(self, model: nn.Module, batch) -> torch.Tensor:
        xb, tb = batch
        return centernet_loss(model(xb.to(self.device)), tb.to(self.device), self.n_cls)

    @torch.no_grad()
    def predict_boxes(self, model: nn.Module, image: torch.Tensor) -> list[Box]:
        model.eval()
        out = model(image[None].to(self.device))
        return decode(out[0].cpu(), self.n_cls)

    def validate(self, model: nn.Module, data: SegData) -> tuple[float, dict[str, float]]:
        """Mean FROC sensitivity (1/8..8 FP per image) on validation images."""
        from meddx.evaluation.detection import average_precision, froc

        preds = [self.predict_boxes(model, im) for im in data.images]
        f = froc(preds, data.boxes)
        score = f["mean"] if f["mean"] == f["mean"] else 0.0
        return score, {"val_froc": score, "val_ap": average_precision(preds, data.boxes)}
