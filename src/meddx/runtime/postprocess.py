"""Segmentation post-processing with scipy.ndimage, reproducing ``meddx.transforms.postprocess``.

Written here because the training-side version runs MONAI transforms (torch). Same
semantics as MONAI: ``largest_component`` keeps each foreground class's largest
component (full connectivity), ``fill_holes`` gives each class the regions it encloses
that do not touch the border (full connectivity), ``remove_small`` drops components of a
class under ``min_size`` voxels (face connectivity). Only segmentation bundles whose
validation chose one of these need scipy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

OPTIONS = ("largest_component", "fill_holes", "remove_small")


def postprocess(labels: np.ndarray, ops: Sequence[str], k: int, min_size: int = 0) -> np.ndarray:
    """Apply ``ops`` in order to a class-index map ``(*S)``; returns a new array."""
    if not ops:
        return labels
    from scipy import ndimage

    out = np.array(labels, copy=True)
    full = ndimage.generate_binary_structure(out.ndim, out.ndim)
    faces = ndimage.generate_binary_structure(out.ndim, 1)
    for op in ops:
        for c in range(1, k):
            if op == "largest_component":
                comp, n = ndimage.label(out == c, structure=full)
                if n > 1:
                    counts = np.bincount(comp.ravel())
                    counts[0] = 0
                    keep = int(np.argsort(counts)[::-1][0])  # MONAI's expression, so ties break the same way
                    out[(comp > 0) & (comp != keep)] = 0
            elif op == "fill_holes":
                outside = ndimage.binary_dilation(np.zeros(out.shape, bool), structure=full, iterations=-1,
                                                  mask=out != c, border_value=1)
                out[~outside] = c
            elif op == "remove_small":
                if min_size > 0:
                    comp, n = ndimage.label(out == c, structure=faces)
                    if n:
                        small = np.bincount(comp.ravel()) <= int(min_size)  # skimage 0.26 (MONAI): size <= min_size goes
                        small[0] = False
                        out[small[comp]] = 0
            else:
                raise ValueError(f"unknown post-processing {op!r}; use {OPTIONS}")
    return out
