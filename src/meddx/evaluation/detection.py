"""Lesion detection metrics: boxes from label maps, average precision and FROC.

Boxes are ``(lo..., hi...)`` in pixel/voxel index coordinates, half-open, 2D or 3D. A
detection matches a reference box of the same class when their IoU is at least the
threshold (0.5); detections are taken highest score first, each matching the unmatched
reference box it overlaps most (COCO's greedy rule; PASCAL VOC's devkit instead counts a
detection whose best-overlapping box is already matched as a false positive), so each reference
box is matched once. At most ``MAX_PER_IMAGE`` detections per image are scored (COCO's maxDets).
AP is the area under the all-point interpolated precision-recall curve (VOC 2010+). FROC gives the
sensitivity at 1/8, 1/4, 1/2, 1, 2, 4 and 8 false positives per image and their mean
(the competition performance metric of LUNA16 / CAMELYON). We write these ourselves:
MONAI's detection metrics expect its RetinaNet app's data structures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FROC_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
MAX_PER_IMAGE = 100  # highest-scoring detections kept per image (COCO's maxDets)


@dataclass
class Box:
    lo: tuple[int, ...]
    hi: tuple[int, ...]
    cls: int = 1
    score: float = 1.0

    def as_dict(self) -> dict:
        return {"lo": list(self.lo), "hi": list(self.hi), "class": self.cls, "score": round(float(self.score), 5)}


def iou(a: Box, b: Box) -> float:
    lo = np.maximum(a.lo, b.lo)
    hi = np.minimum(a.hi, b.hi)
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    va = float(np.prod(np.subtract(a.hi, a.lo)))
    vb = float(np.prod(np.subtract(b.hi, b.lo)))
    return inter / (va + vb - inter) if va + vb - inter > 0 else 0.0


def boxes_from_segmentation(labels: np.ndarray, probs: np.ndarray | None, k: int,
                            threshold: float | None = None) -> list[Box]:
    """Detections of a segmenter: components of the argmax map (``threshold`` None), or of each
    class's probability map at ``threshold`` (finds classes the argmax never picks, e.g. a rare
    finding whose probability stays under the background's)."""
    if threshold is None or probs is None:
        return boxes_from_labels(labels, probs, k)
    out = []
    for c in range(1, k):
        hits = boxes_from_labels((probs[c] >= threshold).astype(np.uint8), probs[[0, c]], 2)
        out += [Box(b.lo, b.hi, c, b.score) for b in hits]
    return out


def boxes_from_labels(labels: np.ndarray, probs: np.ndarray | None = None, k: int | None = None,
                      min_size: int = 0) -> list[Box]:
    """One box per connected component of each foreground class.

    Args:
        labels: class-index map ``(*S)``.
        probs: optional ``(K, *S)`` probabilities; a box's score is the mean probability of
            its class inside the component (1.0 without probabilities).
        k: number of classes (default: ``labels.max() + 1``).
        min_size: components under this many pixels/voxels are ignored.
    """
    from scipy import ndimage

    k = int(labels.max()) + 1 if k is None else k
    out = []
    for c in range(1, k):
        comp, n = ndimage.label(labels == c)
        if n == 0:
            continue
        sizes = np.bincount(comp.ravel(), minlength=n + 1)
        means = (ndimage.mean(probs[c].astype(np.float32), comp, index=np.arange(1, n + 1))
                 if probs is not None else np.ones(n))
        for i, sl in enumerate(ndimage.find_objects(comp), start=1):
            if sl is None or sizes[i] < max(1, min_size):
                continue
            out.append(Box(tuple(s.start for s in sl), tuple(s.stop for s in sl), c, float(means[i - 1])))
    return out


def _iou_matrix(a: list[Box], b: list[Box]) -> np.ndarray:
    """Pairwise IoU of two box lists, vectorised."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    alo, ahi = np.array([x.lo for x in a], float), np.array([x.hi for x in a], float)
    blo, bhi = np.array([x.lo for x in b], float), np.array([x.hi for x in b], float)
    inter = np.prod(np.clip(np.minimum(ahi[:, None], bhi[None]) - np.maximum(alo[:, None], blo[None]), 0, None), -1)
    va, vb = np.prod(ahi - alo, -1), np.prod(bhi - blo, -1)
    union = va[:, None] + vb[None] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _match(preds: list[list[Box]], refs: list[list[Box]], cls: int | None, thr: float):
    """Scores and TP flags of every detection (sorted by score), and the number of references."""
    dets = []  # (score, image, IoU row against that image's references of the same class)
    for i, bs in enumerate(preds):
        keep = sorted((b for b in bs if cls is None or b.cls == cls), key=lambda b: -b.score)[:MAX_PER_IMAGE]
        m = _iou_matrix(keep, refs[i])
        same = np.array([[p.cls == r.cls for r in refs[i]] for p in keep], bool).reshape(m.shape)
        m = np.where(same, m, 0.0)
        dets += [(b.score, i, m[j]) for j, b in enumerate(keep)]
    dets.sort(key=lambda t: -t[0])
    used = [np.zeros(len(r), bool) for r in refs]
    tp = np.zeros(len(dets), bool)
    for j, (_, i, row) in enumerate(dets):
        if not len(row):
            continue
        cand = np.where(used[i], -1.0, row)
        kk = int(np.argmax(cand))
        if cand[kk] >= thr:
            used[i][kk] = True
            tp[j] = True
    n_ref = sum(1 for r in refs for x in r if cls is None or x.cls == cls)
    return np.array([d[0] for d in dets]), tp, n_ref


def average_precision(preds: list[list[Box]], refs: list[list[Box]], cls: int | None = None,
                      iou_threshold: float = 0.5) -> float:
    """All-point interpolated AP over images (NaN when there is no reference box)."""
    _, tp, n_ref = _match(preds, refs, cls, iou_threshold)
    if n_ref == 0:
        return float("nan")
    if len(tp) == 0:
        return 0.0
    ctp = np.cumsum(tp)
    recall = ctp / n_ref
    precision = ctp / np.arange(1, len(tp) + 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def froc(preds: list[list[Box]], refs: list[list[Box]], cls: int | None = None, iou_threshold: float = 0.5,
         rates: Sequence[float] = FROC_RATES) -> dict:
    """Sensitivity at each false-positive rate per image, and their mean."""
    scores, tp, n_ref = _match(preds, refs, cls, iou_threshold)
    n_img = max(1, len(preds))
    sens = {}
    if n_ref == 0:
        return {"sensitivity": {str(r): float("nan") for r in rates}, "mean": float("nan"), "n_reference": 0,
                "n_images": len(preds)}
    ctp = np.cumsum(tp)
    cfp = np.cumsum(~tp)
    for r in rates:
        ok = np.where(cfp / n_img <= r)[0]
        sens[str(r)] = float(ctp[ok[-1]] / n_ref) if len(ok) else 0.0
    return {"sensitivity": sens, "mean": float(np.mean(list(sens.values()))), "n_reference": int(n_ref),
            "n_images": len(preds), "max_sensitivity": float(ctp[-1] / n_ref) if len(ctp) else 0.0}


def detection_summary(preds: list[list[Box]], refs: list[list[Box]], class_names: Sequence[str],
                      iou_threshold: float = 0.5) -> dict:
    """AP@IoU and FROC per foreground class and pooled over classes."""
    out = {"iou_threshold": iou_threshold, "per_class": {}, "rule": (
        f"a detection is a hit when IoU >= {iou_threshold} with an unmatched reference box of its class; "
        "AP: all-point interpolation; FROC: sensitivity at 1/8..8 false positives per image")}
    for c, name in enumerate(class_names, start=1):
        out["per_class"][name] = {"ap": average_precision(preds, refs, c, iou_threshold),
                                  "froc": froc(preds, refs, c, iou_threshold)}
    aps = [v["ap"] for v in out["per_class"].values() if np.isfinite(v["ap"])]  # AP is n/a for a class not in the set
    out["ap_mean"] = float(np.mean(aps)) if aps else float("nan")  # (np.nanmean of none warns on stderr)
    out["froc_pooled"] = froc(preds, refs, None, iou_threshold)
    return out
