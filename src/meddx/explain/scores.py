"""How good is a heatmap: faithfulness (deletion / insertion) and localisation against lesion masks.

Written here: MONAI has no such metrics, and Quantus/Captum would add a dependency for
four short functions.

* Deletion and insertion (Petsiuk et al., RISE, BMVC 2018): pixels are removed from the
  image (deletion: replaced by the baseline) or revealed on a baseline (insertion) in
  order of decreasing heatmap value, ``steps`` equal fractions at a time; the curve is
  the probability of the explained class at each fraction, and its AUC (trapezoid over
  the fraction 0..1) summarises it. A faithful map gives a low deletion AUC and a high
  insertion AUC. Deletion uses the standardised value 0 (the training mean intensity)
  as the baseline; insertion starts from a blurred copy of the image, as in RISE, so
  the first point is not an out-of-distribution blank image.
* Pointing game (Zhang et al., ECCV 2016): a hit when the heatmap's maximum lies in the
  lesion.
* Energy inside the lesion (Wang et al., Score-CAM, 2020): the share of the heatmap's
  sum that falls inside the lesion mask.

Ties in a heatmap (flat zero regions of Grad-CAM) are broken at random with a fixed
seed, so a map that says nothing is scored like a random map.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from meddx.errors import MeddxError


def _order(heatmap: np.ndarray, seed: int) -> np.ndarray:
    """Flat pixel indices by decreasing heatmap value, ties broken at random (seeded)."""
    h = np.asarray(heatmap, dtype=np.float64).ravel()
    tiebreak = np.random.default_rng(seed).random(h.shape[0])
    return np.lexsort((tiebreak, -h))


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    from monai.networks.layers import GaussianFilter

    return GaussianFilter(spatial_dims=x.ndim - 2, sigma=sigma)(x)


def auc(fractions: np.ndarray, curve: np.ndarray) -> float:
    """Trapezoid area under a curve sampled at ``fractions`` (0..1)."""
    f, c = np.asarray(fractions, float), np.asarray(curve, float)
    return float(np.sum((c[1:] + c[:-1]) * np.diff(f)) / 2.0)


@torch.no_grad()
def deletion_insertion(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, heatmap: np.ndarray,
                       class_idx: int, *, steps: int = 20, blur_sigma: float | None = None,
                       seed: int = 0) -> dict:
    """Deletion and insertion curves of one heatmap.

    Args:
        predict: ``(N, C, *S) -> (N, K)`` class probabilities.
        x: the model input ``(1, C, *S)`` (standardised).
        heatmap: ``(*S)`` map at the input's size; larger = more important.
        class_idx: the class whose probability is tracked.
        steps: number of equal pixel fractions (curves have ``steps + 1`` points).
        blur_sigma: Gaussian sigma of the insertion baseline in pixels (default 1/10 of the smallest side).
        seed: tie-break seed.

    Returns:
        ``{"fractions", "deletion", "insertion", "deletion_auc", "insertion_auc"}``.
    """
    spatial = tuple(x.shape[2:])
    if tuple(np.shape(heatmap)) != spatial:
        raise MeddxError(f"heatmap shape {np.shape(heatmap)} differs from the input's {spatial}")
    n = int(np.prod(spatial))
    order = torch.from_numpy(_order(heatmap, seed))
    counts = np.round(np.linspace(0, n, steps + 1)).astype(int)
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)
    # keep[k] is True for the pixels among the first counts[k] of the order
    keep = (rank[None, :] < torch.from_numpy(counts)[:, None]).reshape(steps + 1, 1, *spatial)
    keep = keep.to(x.dtype)
    sigma = blur_sigma if blur_sigma is not None else max(1.0, min(spatial) / 10.0)
    blurred = _blur(x, sigma)
    deleted = x * (1 - keep)                   # baseline 0 where deleted
    inserted = blurred * (1 - keep) + x * keep
    p = predict(torch.cat([deleted, inserted])).float()[:, class_idx].cpu().numpy()
    fr = counts / n
    d, i = p[: steps + 1], p[steps + 1:]
    return {"fractions": fr.tolist(), "deletion": d.tolist(), "insertion": i.tolist(),
            "deletion_auc": auc(fr, d), "insertion_auc": auc(fr, i)}


def pointing_game(heatmap: np.ndarray, mask: np.ndarray) -> bool:
    """True when the heatmap's (first) maximum lies inside the mask."""
    h, m = np.asarray(heatmap), np.asarray(mask) > 0
    if h.shape != m.shape:
        raise MeddxError(f"heatmap shape {h.shape} differs from the mask's {m.shape}")
    return bool(m.ravel()[int(np.argmax(h))])


def energy_inside(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the heatmap's total (non-negative) mass inside the mask; NaN for an all-zero map."""
    h, m = np.clip(np.asarray(heatmap, float), 0, None), np.asarray(mask) > 0
    if h.shape != m.shape:
        raise MeddxError(f"heatmap shape {h.shape} differs from the mask's {m.shape}")
    total = h.sum()
    return float(h[m].sum() / total) if total > 0 else float("nan")


def resize_map(heatmap: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Resize a heatmap to ``shape`` (bilinear / trilinear), keeping values in [0, 1]."""
    h = np.asarray(heatmap, dtype=np.float32)
    if tuple(h.shape) == tuple(shape):
        return h
    t = torch.from_numpy(np.ascontiguousarray(h))[None, None]
    mode = "bilinear" if h.ndim == 2 else "trilinear"
    out = F.interpolate(t, size=tuple(int(s) for s in shape), mode=mode, align_corners=False)[0, 0]
    return np.clip(out.numpy(), 0.0, 1.0)
