"""Segmentation and detection inference in each image's own geometry.

2D predictions are made at the plan's input size and their probabilities resized back
to the image (bilinear) before the argmax; 3D volumes are predicted on their native
grid with a sliding window. Heatmap-detector boxes are scaled back the same way.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from meddx.data.case import Case, CaseSet
from meddx.data.segprep import prepare_image
from meddx.data.segsources import label_index, load_mask_values
from meddx.evaluation.detection import Box
from meddx.io.base import ImageData, known_spacing
from meddx.transforms.orientation import turned


def native_shape(plan, img: ImageData) -> tuple[int, ...]:
    return tuple(img.spatial_shape[-plan.data.spatial_dims:])


def predict_case(model: torch.nn.Module, plan, img: ImageData, where: str, device: torch.device | None = None,
                 with_probs: bool = False):
    """Class-index map ``(*S)`` in the image's geometry (and the ``(K, *S)`` probabilities). A volume
    is predicted in the plan's orientation (R20) and its probabilities turned back to its own axes."""
    from meddx.training.seg_engine import segment_probs

    seen, ro = turned(img, plan.data.orientation)
    x = torch.from_numpy(prepare_image(plan, seen, where))
    p = segment_probs(model, x, plan, device=device)
    native = native_shape(plan, seen)
    if tuple(p.shape[1:]) != native:
        p = F.interpolate(p[None], size=native, mode="bilinear" if len(native) == 2 else "trilinear",
                          align_corners=False)[0]
    if ro is not None:
        p = torch.from_numpy(ro.back(p.numpy()))
    labels = p.argmax(0).numpy().astype(np.uint8)
    return (labels, p.numpy().astype(np.float16)) if with_probs else labels


def predict_boxes(model: torch.nn.Module, plan, img: ImageData, where: str) -> list[Box]:
    """Heatmap-detector boxes in the image's pixel coordinates."""
    from meddx.training.det_engine import decode

    x = torch.from_numpy(prepare_image(plan, img, where))
    model.eval()
    with torch.no_grad():
        out = model(x[None].to(next(model.parameters()).device))[0].cpu()
    boxes = decode(out, len(plan.segment.label_values) - 1)
    native = native_shape(plan, img)
    f = [n / s for n, s in zip(native, x.shape[1:])]
    return [Box(tuple(int(np.floor(v * k)) for v, k in zip(b.lo, f)),
                tuple(int(np.ceil(v * k)) for v, k in zip(b.hi, f)), b.cls, b.score) for b in boxes]


def predict_cases(cs: CaseSet, cases: list[Case], plan, model, progress: bool, desc: str,
                  with_probs: bool = False, timings: list[float] | None = None):
    """Native-resolution predictions, references and spacings for ``cases`` (and probabilities).
    ``timings`` receives each case's inference seconds (preprocessing, network, back to native
    geometry; file reading excluded)."""
    from meddx.training.run import progress_callback

    preds, truths, spacings, probs = [], [], [], []
    cb, stop = progress_callback(progress, len(cases), desc)
    try:
        for c in cases:
            img, values = load_mask_values(cs, c)
            truths.append(label_index(values, plan.segment.label_values,
                                      c.masks[0] if c.masks else c.path).astype(np.uint8))
            t0 = time.perf_counter()
            out = predict_case(model, plan, img, str(c.path), with_probs=with_probs)
            if timings is not None:
                timings.append(time.perf_counter() - t0)
            if with_probs:
                preds.append(out[0])
                probs.append(out[1])
            else:
                preds.append(out)
            spacings.append(known_spacing(img))  # distances in pixels where the spacing is unknown
            if cb:
                cb(1)
    finally:
        stop()
    return (preds, truths, spacings, probs) if with_probs else (preds, truths, spacings)
