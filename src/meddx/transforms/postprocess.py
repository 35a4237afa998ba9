"""Post-processing of predicted label maps (MONAI transforms), chosen on validation.

Options (``segment.postprocess``): ``largest_component`` keeps each class's largest
connected component, ``fill_holes`` fills enclosed holes, ``remove_small`` drops
components under ``segment.min_size`` pixels/voxels. ``choose_postprocess`` tries each on
validation cases and keeps those that raise the mean Dice (nnU-Net's empirical step).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

OPTIONS = ("largest_component", "fill_holes", "remove_small")


def postprocess(labels: np.ndarray, ops: Sequence[str], k: int, min_size: int = 0) -> np.ndarray:
    """Apply ``ops`` in order to a class-index map ``(*S)``; returns a new array."""
    import warnings

    from monai.transforms import FillHoles, KeepLargestConnectedComponent, RemoveSmallObjects

    if not ops:
        return labels
    fg = list(range(1, k))
    t = torch.from_numpy(np.ascontiguousarray(labels).astype(np.int64))[None]
    for op in ops:
        if op == "largest_component":
            t = KeepLargestConnectedComponent(applied_labels=fg, is_onehot=False, independent=True)(t)
        elif op == "fill_holes":
            t = FillHoles(applied_labels=fg)(t)
        elif op == "remove_small":
            if min_size > 0:
                rso = RemoveSmallObjects(min_size=int(min_size))
                out = t.clone()
                for c in fg:
                    with warnings.catch_warnings():  # MONAI passes skimage's deprecated min_size
                        warnings.simplefilter("ignore", FutureWarning)
                        keep = torch.as_tensor(rso(torch.as_tensor(t == c))).bool()
                    out[(t == c) & ~keep] = 0
                t = out
        else:
            raise ValueError(f"unknown post-processing {op!r}; use {OPTIONS}")
    return np.asarray(t[0]).astype(labels.dtype)


def choose_postprocess(preds: list[np.ndarray], truths: list[np.ndarray], k: int, min_size: int,
                       score: Callable[[np.ndarray, np.ndarray], float], min_gain: float = 1e-3) -> tuple[list[str], dict]:
    """Greedily keep each option that raises the mean validation score by ``min_gain``.

    Returns:
        ``(ops, trace)``: the chosen options and the score of each trial.
    """
    def mean_score(ops):
        return float(np.mean([score(postprocess(p, ops, k, min_size), t) for p, t in zip(preds, truths)]))

    chosen: list[str] = []
    best = mean_score(chosen)
    trace = {"none": round(best, 5)}
    for op in OPTIONS:
        if op == "remove_small" and min_size <= 0:
            continue
        s = mean_score([*chosen, op])
        trace["+".join([*chosen, op])] = round(s, 5)
        if s > best + min_gain:
            chosen.append(op)
            best = s
    return chosen, trace
