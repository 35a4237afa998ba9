"""A small built-in phantom dataset, so the pipeline runs end to end with no data at all.

Two classes of 28 x 28 "chest" phantoms: two dark lung fields in a brighter body with
noise and smooth texture; the ``lesion`` class adds one bright round opacity of random
size and place inside a lung. Deterministic for a seed.
"""

from __future__ import annotations

import numpy as np

from meddx.data.case import Case, CaseSet
from meddx.io.base import ImageData


def make_phantoms(n: int = 600, size: int = 28, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
    images = np.empty((n, size, size), dtype=np.uint8)
    labels = (np.arange(n) % 2).astype(np.int64)
    rng.shuffle(labels)
    for i in range(n):
        body = 0.65 + 0.05 * rng.standard_normal()
        img = np.full((size, size), body)
        img[(xx / 0.95) ** 2 + (yy / 1.0) ** 2 > 1] = 0.05
        cx = 0.42 + 0.04 * rng.standard_normal()
        for side in (-1, 1):
            lung = ((xx - side * cx) / 0.3) ** 2 + ((yy + 0.05) / 0.62) ** 2 < 1
            img[lung] = 0.25 + 0.03 * rng.standard_normal()
        if labels[i] == 1:
            side = rng.choice([-1, 1])
            lx, ly = side * cx + 0.12 * rng.standard_normal(), 0.35 * rng.standard_normal()
            r = rng.uniform(0.10, 0.22)
            img += 0.30 * np.exp(-(((xx - lx) ** 2 + (yy - ly) ** 2) / (2 * r**2)))
        img += 0.06 * rng.standard_normal((size, size))
        images[i] = np.clip(img * 255, 0, 255).astype(np.uint8)
    return images, labels


def synthetic_caseset(n: int = 600, seed: int = 0) -> CaseSet:
    images, labels = make_phantoms(n=n, seed=seed)
    n_tr, n_va = int(0.7 * n), int(0.1 * n)
    splits = ["train"] * n_tr + ["val"] * n_va + ["test"] * (n - n_tr - n_va)
    cases = [Case(case_id=f"phantom/{i}", label=int(labels[i]), split=splits[i], index=i) for i in range(n)]

    def load(c: Case) -> ImageData:
        return ImageData(images[c.index][None].astype(np.float32), meta={"format": "synthetic"})

    return CaseSet(name="phantoms", source=f"synthetic:phantoms:{n}", kind="synthetic", class_names=["normal", "lesion"],
                   cases=cases, official_split=True, loader=load)
