"""Fingerprint -> plan. Every rule lives here, and every decision names its rule.

Rules (kind in brackets, as nnU-Net documents its own):
    R1 dimensionality [rule-based]: the images' spatial dimensionality; mixed 2D/3D is an error.
    R2 channels [rule-based]: 3 when most images are RGB, else 1 (RGB is averaged to grey).
    R3 input size [rule-based]: 2D: the common size when every image shares one <= 64 px,
       else the median short side clamped to [32, 128] and rounded to 8 px (CPU budget);
       3D: the median shape, each axis clamped to [16, 32] on CPU, [16, 64] with CUDA (3D cost
       grows with the cube).
    R4 intensity [rule-based]: 8-bit integer data -> ``scale255``; data reaching below -500
       (CT in HU) -> ``clip_scale`` to the dataset's [p0.5, p99.5]; anything else -> per-image z-score.
    R5 model [fixed]: ``small_cnn`` (a residual CNN with a stride-1 stem sized for CPU).
    R6 batch size [rule-based]: 2D 128 (64 under 2000 training cases), 3D 16 at <= 32^3, else 4
       (on VesselMNIST3D validation AUC, 16 beat 32 at equal time: more steps per second).
    R7 optimiser and schedule [fixed]: AdamW, cosine with 1 warm-up epoch.
    R8 augmentation [rule-based]: 2D: small rotation, zoom, shift and intensity jitter;
       3D: flips on every axis plus the same jitter.
    R9 epochs [rule-based]: with a time budget, sized from a measured epoch time; else 30.
    R10 model selection [fixed]: best validation AUC; threshold chosen on validation (Youden).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from meddx.errors import DatasetError
from meddx.planning.plan import (AugmentConfig, DataConfig, Decision, ModelConfig, OptimConfig, Plan,
                                 ScheduleConfig, TrainConfig)


def _round8(x: float) -> int:
    return int(max(8, round(x / 8) * 8))


def make_plan(fp: dict, *, source: str, seed: int = 0, overrides: dict[str, Any] | None = None,
              cuda: bool | None = None) -> Plan:
    """Build a plan from a fingerprint (see the module docstring for the rules).

    ``cuda`` (default: whether a GPU is visible) only relaxes the 3D size cap.
    """
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    dec: list[Decision] = []

    def note(field, value, rule, kind, **reads):
        dec.append(Decision(field=field, value=value, rule=rule, kind=kind, reads=reads))
        return value

    dims = fp.get("spatial_dims") or []
    if len(dims) != 1:
        ex = fp.get("dims_example", {})
        odd = ", ".join(f"{v} is {k}D" for k, v in sorted(ex.items()))
        raise DatasetError(f"mixed 2D and 3D images ({odd or dims})", path=source,
                           fix="keep 2D and 3D images in separate datasets")
    sd = note("data.spatial_dims", dims[0], "R1 dimensionality", "rule-based", spatial_dims=dims)

    chans = {int(k): v for k, v in fp["channels"].items()}
    n_rgb = sum(v for k, v in chans.items() if k >= 3)
    if n_rgb > sum(chans.values()) / 2:
        ch = 3
    elif len(chans) == 1:
        ch = next(iter(chans))  # e.g. 2-channel NIfTI: keep what every image has
    else:
        ch = 1
    note("data.channels", ch, "R2 channels", "rule-based", channels=fp["channels"])

    med = fp["shape_median"]
    if sd == 2:
        if fp["distinct_shapes"] == 1 and max(fp["shape_max"]) <= 64:
            size = list(fp["shape_max"])
        else:
            side = _round8(float(np.clip(min(med), 32, 128)))
            size = [side, side]
    else:
        cap = 64 if cuda else 32
        size = [int(np.clip(s, 16, cap)) for s in med]
    note("data.input_size", size, "R3 input size", "rule-based", shape_median=med,
         distinct_shapes=fp["distinct_shapes"], cuda=cuda)

    it = fp["intensity"]
    if it["integer_valued"] and it["min"] >= 0 and it["max"] <= 255:
        scheme, clip = "scale255", None
    elif it["min"] < -500:
        scheme, clip = "clip_scale", [it["p00_5"], it["p99_5"]]
    else:
        scheme, clip = "image_zscore", None
    note("data.intensity", scheme, "R4 intensity", "rule-based", min=it["min"], max=it["max"],
         integer_valued=it["integer_valued"])

    model = ModelConfig(name="small_cnn", params={"dropout": 0.1})
    note("model.name", model.name, "R5 model", "fixed")

    n_train = sum(fp["split_counts"].get("train", fp["class_counts"]).values())
    if sd == 2:
        bs = 128 if n_train >= 2000 else 64
    else:
        bs = 16 if max(size) <= 32 else 4
    note("train.batch_size", bs, "R6 batch size", "rule-based", n_train=n_train, input_size=size)

    if sd == 2:
        aug = AugmentConfig(rotate_deg=10, scale=0.1, translate=0.08, brightness=0.1, contrast=0.1)
    else:
        aug = AugmentConfig(flip_axes=[0, 1, 2], rotate_deg=0, scale=0.0, translate=0.05, brightness=0.05,
                            contrast=0.05)
    note("augment", aug.model_dump(), "R8 augmentation", "rule-based", spatial_dims=sd)

    plan = Plan(
        seed=seed,
        data=DataConfig(source=source, kind=fp["kind"], class_names=list(fp["class_names"]), spatial_dims=sd,
                        channels=ch, input_size=size, intensity=scheme, clip=clip,
                        split="official" if fp["official_split"] else "seeded"),
        model=model,
        augment=aug,
        optim=OptimConfig(),
        schedule=ScheduleConfig(),
        train=TrainConfig(batch_size=bs),
        decisions=dec,
    )
    note("optim/schedule", "adamw + cosine", "R7 optimiser and schedule", "fixed")
    note("train.select_metric", "auc", "R10 model selection", "fixed")
    if overrides:
        plan = apply_overrides(plan, overrides)
    return plan


def apply_overrides(plan: Plan, overrides: dict[str, Any]) -> Plan:
    """Apply dotted-key overrides (``{"train.epochs": 5}``) given by the user, and record them."""
    raw = plan.model_dump(mode="json")
    for key, value in overrides.items():
        if value is None:
            continue
        node = raw
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
        raw["decisions"].append({"field": key, "value": value, "rule": "set by the user", "kind": "user",
                                 "reads": {}})
    return Plan.model_validate(raw)
