"""Turn cases into the model's input tensor, once, and cache it in memory.

Small-image classification on CPU is bound by per-sample Python overhead, so every
case is decoded, resized and normalised once (nnU-Net's preprocessing step, kept in
RAM instead of on disk); augmentation then runs on whole batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import psutil
import torch

from meddx.data.case import Case, CaseSet
from meddx.io.base import check_pixels
from meddx.errors import ImageContentError
from meddx.io.base import ImageData
from meddx.transforms.intensity import apply_scheme, channel_mismatch, to_channels
from meddx.transforms.spatial import resize

MEMORY_FRACTION = 0.5  # of available RAM the input cache may take


@dataclass
class PreprocessSpec:
    """Everything needed to go from a decoded image to the model input."""

    spatial_dims: int
    channels: int
    size: tuple[int, ...]
    scheme: str
    clip: tuple[float, float] | None = None
    mean: float = 0.0
    std: float = 1.0
    steps: tuple[tuple[str, dict], ...] = ()  # (name, params) from meddx.transforms.PREPROCESSORS
    orientation: tuple[str, ...] | None = None  # 3D: volumes reoriented to these RAS letters first (R20)
    antialias_3d: bool = False  # 3D: filter before shrinking to ``size`` (R3; plans before it did not)

    @classmethod
    def from_plan(cls, data_cfg) -> "PreprocessSpec":
        return cls(
            spatial_dims=data_cfg.spatial_dims, channels=data_cfg.channels, size=tuple(data_cfg.input_size),
            scheme=data_cfg.intensity, clip=tuple(data_cfg.clip) if data_cfg.clip else None,
            mean=data_cfg.norm_mean, std=data_cfg.norm_std,
            steps=tuple((s.name, dict(s.params)) for s in getattr(data_cfg, "preprocess", [])),
            orientation=tuple(data_cfg.orientation) if getattr(data_cfg, "orientation", None) else None,
            antialias_3d=bool(getattr(data_cfg, "antialias_3d", False)),
        )


def apply_steps(a: np.ndarray, steps, where: str) -> np.ndarray:
    """Run the plan's preprocessing steps on one ``(C, *spatial)`` image."""
    if not steps:
        return a
    from meddx.errors import ParameterError, PlanError
    from meddx.transforms import PREPROCESSORS

    for name, params in steps:
        if name not in PREPROCESSORS:
            raise PlanError(f"unknown preprocessing step '{name}'", fix=f"use one of: {', '.join(PREPROCESSORS)}")
        try:
            a = PREPROCESSORS[name](a.astype(np.float32, copy=False), **params)
        except TypeError as e:
            raise PlanError(f"preprocessing step '{name}': {e}", fix="check its params in data.preprocess") from None
        except ParameterError as e:  # a param's value: named as the plan field it is, with the fix
            raise PlanError(f"data.preprocess step {e.message}",
                            fix=e.fix or f"correct the params of '{name}' in data.preprocess") from None
    return np.asarray(a, dtype=np.float32)


def prepare(img: ImageData, spec: PreprocessSpec, where: str) -> np.ndarray:
    """Decoded image -> ``(C, *size)`` float32 before the dataset-level standardisation (a volume
    reoriented to the plan's orientation first; callers that map outputs back orient it themselves)."""
    if spec.orientation:
        from meddx.transforms.orientation import oriented

        img = oriented(img, spec.orientation)
    a = img.array
    check_pixels(a, where)
    if a.ndim - 1 != spec.spatial_dims:
        squeezed = a
        while squeezed.ndim - 1 > spec.spatial_dims and 1 in squeezed.shape[1:]:
            ax = 1 + list(squeezed.shape[1:]).index(1)
            squeezed = np.squeeze(squeezed, axis=ax)
        if squeezed.ndim - 1 != spec.spatial_dims:
            raise ImageContentError(
                f"has {a.ndim - 1} spatial dimensions (shape {tuple(a.shape[1:])}) but the model expects "
                f"{spec.spatial_dims}D input", path=where,
                fix="keep 2D and 3D images in separate datasets",
            )
        a = squeezed
    conv = to_channels(a, spec.channels)
    if conv is None:
        raise channel_mismatch(a.shape[0], spec.channels, where)
    a = apply_scheme(apply_steps(conv, spec.steps, where), spec.scheme, spec.clip)
    return resize(a, spec.size, antialias_3d=spec.antialias_3d)


def cache_bytes(n: int, spec: PreprocessSpec) -> int:
    return int(n * spec.channels * int(np.prod(spec.size)) * 4)


def check_memory(n: int, spec: PreprocessSpec, source: str) -> None:
    need = cache_bytes(n, spec)
    avail = psutil.virtual_memory().available * MEMORY_FRACTION
    if need > avail:
        raise ImageContentError(
            f"{n} cases at input size {list(spec.size)} need {need / 2**30:.1f} GiB, more than the "
            f"{avail / 2**30:.1f} GiB allowed in memory", path=source,
            fix="lower data.input_size in the plan (or --image-size)",
        )


def build_tensor(cs: CaseSet, cases: list[Case], spec: PreprocessSpec,
                 progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Preprocess ``cases`` into one float32 tensor ``(N, C, *size)`` (not yet standardised)."""
    check_memory(len(cases), spec, cs.source)
    out = torch.empty((len(cases), spec.channels, *spec.size), dtype=torch.float32)
    for i, c in enumerate(cases):
        where = str(c.path) if c.path is not None else f"{cs.source}#{c.case_id}"
        out[i] = torch.from_numpy(prepare(cs.load(c), spec, where))
        if progress:
            progress(1)
    return out


def standardise(x: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    return (x - spec.mean) / spec.std
