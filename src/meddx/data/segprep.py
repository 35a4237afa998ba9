"""Segmentation preprocessing: image and label map of each case, once, in memory.

2D images are resized to the plan's input size (labels by nearest neighbour); 3D
volumes stay on their native grid and are cut into patches during training. The
label map holds class indices ``0..K-1`` (positions in ``segment.label_values``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from meddx.data.case import Case, CaseSet
from meddx.data.preprocess import MEMORY_FRACTION, PreprocessSpec, prepare
from meddx.data.segsources import label_index, load_mask_values
from meddx.errors import ImageContentError
from meddx.io.base import ImageData
from meddx.transforms.orientation import oriented, turned
from meddx.transforms.spatial import resize_labels


@dataclass
class SegData:
    """Preprocessed cases of one split: images ``(C, *S)`` float32 and labels ``(*S)`` uint8."""

    images: list[torch.Tensor]
    labels: list[torch.Tensor]
    case_ids: list[str] = field(default_factory=list)
    boxes: list = field(default_factory=list)  # detection: reference boxes per case, input-size coordinates

    def __len__(self) -> int:
        return len(self.images)

    def head(self, n: int) -> "SegData":
        return SegData(self.images[:n], self.labels[:n], self.case_ids[:n], self.boxes[:n])

    def subset(self, idx) -> "SegData":
        """The cases at the given indices (k-fold ensemble members)."""
        idx = [int(i) for i in idx]
        return SegData([self.images[i] for i in idx], [self.labels[i] for i in idx],
                       [self.case_ids[i] for i in idx] if self.case_ids else [],
                       [self.boxes[i] for i in idx] if self.boxes else [])


def image_spec(plan, img: ImageData) -> PreprocessSpec:
    """The preprocessing for one image: 2D to the plan's size, 3D on its own grid (resampled to
    ``data.target_spacing`` when the plan sets one)."""
    spec = PreprocessSpec.from_plan(plan.data)
    if plan.data.spatial_dims == 3:
        spec.size = tuple(img.spatial_shape[-3:]) if img.spatial_dims >= 3 else spec.size
        ts = plan.data.target_spacing
        if ts and img.spacing is not None and len(img.spacing) >= 3:
            # resampling to the target spacing = resizing by the spacing ratio (predictions go back to the
            # native grid in seg_infer); masks follow with nearest neighbour in prepare_case
            sp = tuple(float(v) for v in img.spacing[-3:])
            spec.size = tuple(max(1, int(round(n * s / t))) for n, s, t in zip(spec.size, sp, ts))
    return spec


def prepare_image(plan, img: ImageData, where: str) -> np.ndarray:
    """Decoded image -> model input ``(C, *S)`` (resized for 2D, standardised; a volume in the plan's
    orientation, R20)."""
    img = oriented(img, plan.data.orientation)
    spec = image_spec(plan, img)
    a = prepare(img, spec, where)
    return ((a - spec.mean) / spec.std).astype(np.float32)


def prepare_case(cs: CaseSet, case: Case, plan) -> tuple[np.ndarray, np.ndarray, ImageData]:
    """One case -> (image ``(C, *S)`` not yet standardised, class-index labels ``(*S)``, decoded image
    (reoriented with its mask when the plan says so))."""
    img, values = load_mask_values(cs, case)
    where = str(case.path)
    lab = label_index(values, plan.segment.label_values, case.masks[0] if case.masks else where)
    img, ro = turned(img, plan.data.orientation)
    if ro is not None:  # the mask follows its volume's axes (R20)
        lab = ro.forward(lab)
    spec = image_spec(plan, img)
    a = prepare(img, spec, where)
    if tuple(lab.shape) != tuple(a.shape[1:]):
        if lab.ndim != len(spec.size):
            lab = np.squeeze(lab)
        lab = resize_labels(lab.astype(np.int64), tuple(a.shape[1:]))
    return a, lab.astype(np.uint8), img


def build_seg_data(cs: CaseSet, parts: dict[str, list[Case]], plan,
                   progress: Callable[[int], None] | None = None) -> dict[str, SegData]:
    """Preprocess every split; standardisation statistics come from the training split only."""
    import psutil

    raw: dict[str, tuple] = {}
    budget = psutil.virtual_memory().available * MEMORY_FRACTION
    used = 0
    for s, cases in parts.items():
        ims, labs, ids, boxes = [], [], [], []
        for c in cases:
            a, lab, img = prepare_case(cs, c, plan)
            if cs.task == "detect":
                boxes.append(scaled_boxes(c, img.spatial_shape, a.shape[1:]))
            used += a.nbytes + lab.nbytes
            if used > budget:
                raise ImageContentError(
                    f"the preprocessed images need more than the {budget / 2**30:.1f} GiB allowed in memory",
                    path=cs.source, fix="lower data.input_size in the plan, or use fewer/smaller images")
            ims.append(a)
            labs.append(lab)
            ids.append(c.case_id)
            if progress:
                progress(1)
        raw[s] = (ims, labs, ids, boxes)
    tr = raw["train"][0]
    total = sum(a.size for a in tr)
    mean = sum(float(a.sum(dtype=np.float64)) for a in tr) / max(1, total)
    var = sum(float(((a - mean) ** 2).sum(dtype=np.float64)) for a in tr) / max(1, total)
    plan.data.norm_mean = float(mean)
    plan.data.norm_std = float(np.sqrt(var)) or 1.0
    out = {}
    for s, (ims, labs, ids, boxes) in raw.items():
        out[s] = SegData(images=[torch.from_numpy((a - mean) / plan.data.norm_std).float() for a in ims],
                         labels=[torch.from_numpy(lab) for lab in labs], case_ids=ids, boxes=boxes)
    return out


def scaled_boxes(case: Case, native: tuple[int, ...], size: tuple[int, ...]):
    """A detection case's reference boxes in the coordinates of the resized model input."""
    from meddx.data.detsources import reference_boxes
    from meddx.evaluation.detection import Box

    f = [s / n for s, n in zip(size, native)]
    return [Box(tuple(int(np.floor(v * k)) for v, k in zip(b.lo, f)),
                tuple(max(int(np.ceil(v * k)), int(np.floor(lo * k)) + 1) for v, lo, k in zip(b.hi, b.lo, f)),
                b.cls) for b in reference_boxes(case, native)]
