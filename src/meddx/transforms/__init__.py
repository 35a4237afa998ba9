"""Preprocessing and augmentation, 2D and 3D.

``PREPROCESSORS`` names every deterministic preprocessing step a plan can select; each is
``fn(a, **params)`` on one channel-first ``(C, *spatial)`` float32 image of raw intensities
(after channel conversion, before the plan's intensity scheme) and returns the same shape.
``list_preprocessors()`` gives each one's parameters and defaults. Components that fit on
data (the learned denoiser ``meddx.transforms.learned_denoise.SelfSupervisedDenoiser`` and
the conditional GAN ``meddx.data.synthesis.ConditionalGAN``) are classes and are not in it.
Resampling needs the image's spacing and lives in ``meddx.transforms.resample``.
"""

from __future__ import annotations

import inspect
from typing import Callable

import numpy as np

from meddx.transforms.denoise import bilateral, gaussian, median, nlm
from meddx.transforms.enhance import CT_WINDOWS, clahe, ct_window, hist_equalise, percentile_clip, zscore

PREPROCESSORS: dict[str, Callable[..., np.ndarray]] = {
    "median": median,
    "gaussian": gaussian,
    "bilateral": bilateral,
    "nlm": nlm,
    "ct_window": ct_window,
    "percentile_clip": percentile_clip,
    "zscore": zscore,
    "clahe": clahe,
    "hist_equalise": hist_equalise,
}


def list_preprocessors() -> list[dict]:
    """Every registered preprocessor: ``name``, ``params`` ({name: default}) and ``doc`` (first line)."""
    out = []
    for name, fn in PREPROCESSORS.items():
        params = {p.name: (None if p.default is inspect.Parameter.empty else p.default)
                  for p in list(inspect.signature(fn).parameters.values())[1:]}
        out.append({"name": name, "params": params, "doc": (fn.__doc__ or "").strip().splitlines()[0]})
    return out


__all__ = ["CT_WINDOWS", "PREPROCESSORS", "list_preprocessors"]
