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

Segmentation (``task: segment``) shares R1, R2 and R4, then:
    S1 labels [rule-based]: declared in dataset.json, else a binary mask {0, v} is
       background/foreground, else each mask value is a class.
    S2 input and patch size [rule-based]: 2D: whole images resized to a square side of the
       median longer side, clamped to [64, 160] on CPU ([64, 256] with CUDA), rounded up to 32;
       3D: native grid, patch = median shape rounded up to the divisor (8), each axis capped at
       64 on CPU (128 with CUDA); sliding-window inference with Gaussian blending.
    S3 model [rule-based]: with CUDA ``dynunet`` (nnU-Net's network, MONAI) with deep supervision;
       on CPU MONAI's residual ``unet`` (base width 16), measured here 3.7x (2D, 128 px) to 6x (3D,
       40x56x40) more samples per second than DynUNet, which buys more epochs in a time budget.
    S4 batch size [rule-based]: 2D 8 (4 above 192 px); 3D 4 at <= 64^3 voxels per patch, else 2.
    S5 loss [fixed]: Dice + cross-entropy (nnU-Net's default); deep supervision weights 1, 1/2, 1/4.
    S6 sampling [fixed]: 3D patches centred on foreground with probability 0.33 (nnU-Net).
    S7 augmentation [rule-based]: rotation, zoom, shift, brightness and contrast; 2D adds
       left-right flips; 3D mirrors only along the left-right axis when the orientation is
       known (NIfTI/DICOM geometry), also as flip test-time augmentation (a mirror along
       another axis would swap anatomy such as anterior/posterior hippocampus); else no flips.
    S8 epochs [rule-based]: as R9.
    S9 model selection [fixed]: best validation mean Dice over the foreground classes.
    S10 post-processing [empirical]: largest component, hole filling and small-component
       removal are each tried on validation cases and kept when they raise mean Dice.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from meddx.errors import DatasetError, PlanError
from meddx.planning.plan import (AugmentConfig, DataConfig, Decision, ModelConfig, OptimConfig, Plan,
                                 ScheduleConfig, SegmentConfig, TrainConfig)


def _round8(x: float) -> int:
    return int(max(8, round(x / 8) * 8))


def _start(cuda: bool | None):
    """``(cuda, decisions, note)``: whether a GPU counts, and a recorder of each decision with its rule."""
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    dec: list[Decision] = []

    def note(field, value, rule, kind, **reads):
        dec.append(Decision(field=field, value=value, rule=rule, kind=kind, reads=reads))
        return value

    return cuda, dec, note


def _rule_dims(fp: dict, source: str, note) -> int:
    dims = fp.get("spatial_dims") or []
    if len(dims) != 1:
        ex = fp.get("dims_example", {})
        odd = ", ".join(f"{v} is {k}D" for k, v in sorted(ex.items()))
        raise DatasetError(f"mixed 2D and 3D images ({odd or dims})", path=source,
                           fix="keep 2D and 3D images in separate datasets")
    return note("data.spatial_dims", dims[0], "R1 dimensionality", "rule-based", spatial_dims=dims)


def _rule_channels(fp: dict, note) -> int:
    chans = {int(k): v for k, v in fp["channels"].items()}
    n_rgb = sum(v for k, v in chans.items() if k >= 3)
    if n_rgb > sum(chans.values()) / 2:
        ch = 3
    elif len(chans) == 1:
        ch = next(iter(chans))  # e.g. 2-channel NIfTI: keep what every image has
    else:
        ch = 1
    return note("data.channels", ch, "R2 channels", "rule-based", channels=fp["channels"])


def _rule_intensity(fp: dict, note) -> tuple[str, list[float] | None]:
    it = fp["intensity"]
    if it["integer_valued"] and it["min"] >= 0 and it["max"] <= 255:
        scheme, clip = "scale255", None
    elif it["min"] < -500:
        scheme, clip = "clip_scale", [it["p00_5"], it["p99_5"]]
    else:
        scheme, clip = "image_zscore", None
    note("data.intensity", scheme, "R4 intensity", "rule-based", min=it["min"], max=it["max"],
         integer_valued=it["integer_valued"])
    return scheme, clip


def make_plan(fp: dict, *, source: str, seed: int = 0, overrides: dict[str, Any] | None = None,
              cuda: bool | None = None) -> Plan:
    """Build a plan from a fingerprint (see the module docstring for the rules).

    ``cuda`` (default: whether a GPU is visible) only relaxes the 3D size cap.
    """
    cuda, dec, note = _start(cuda)

    sd = _rule_dims(fp, source, note)
    ch = _rule_channels(fp, note)

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

    scheme, clip = _rule_intensity(fp, note)

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


def _round_up(x: float, m: int) -> int:
    return int(max(m, int(np.ceil(x / m)) * m))


def make_seg_plan(fp: dict, *, source: str, seed: int = 0, overrides: dict[str, Any] | None = None,
                  cuda: bool | None = None, group_by_folder: bool = False) -> Plan:
    """Build a segmentation plan (rules R1, R2, R4 and S1-S10 in the module docstring)."""
    cuda, dec, note = _start(cuda)

    sg = fp["segmentation"]
    sd = _rule_dims(fp, source, note)
    ch = _rule_channels(fp, note)
    scheme, clip = _rule_intensity(fp, note)
    note("segment.label_values", sg["label_values"], "S1 labels", "rule-based", mask_values=sg["mask_values"],
         labels_from=sg["labels_from"])
    med = fp["shape_median"]
    if sd == 2:
        cap = 256 if cuda else 160
        side = min(_round_up(float(np.clip(max(med), 64, cap)), 32), cap)
        size, patch = [side, side], None
        note("data.input_size", size, "S2 input and patch size", "rule-based", shape_median=med)
    else:
        cap = 128 if cuda else 64
        patch = [min(cap, _round_up(s, 8)) for s in med]
        size = patch
        note("segment.patch_size", patch, "S2 input and patch size", "rule-based", shape_median=med, cuda=cuda)
    model = ModelConfig(name="dynunet", params={"deep_supervision": True}) if cuda else ModelConfig(name="unet")
    note("model.name", model.name, "S3 model", "rule-based", cuda=cuda)
    if sd == 2:
        bs = 8 if size[0] <= 192 else 4  # >= 2 always (batch statistics, throughput)
    else:
        bs = 4 if int(np.prod(patch)) <= 64 ** 3 else 2
    note("train.batch_size", bs, "S4 batch size", "rule-based", input_size=size)
    note("segment.loss", "dice_ce", "S5 loss", "fixed")
    note("segment.fg_oversample", 0.33, "S6 sampling", "fixed")
    codes = fp.get("axcodes")
    lr = [i for i, c in enumerate(codes or []) if c in ("L", "R")] if sd == 3 else []
    if sd == 2:
        aug = AugmentConfig(flip_axes=[1], rotate_deg=15, scale=0.15, translate=0.05, brightness=0.1, contrast=0.15)
    else:
        aug = AugmentConfig(flip_axes=lr[:1], rotate_deg=10, scale=0.1, translate=0.05, brightness=0.1, contrast=0.1)
    note("augment", aug.model_dump(), "S7 augmentation", "rule-based", spatial_dims=sd, axcodes=codes)
    plan = Plan(
        task="detect" if fp.get("task") == "detect" else "segment", seed=seed,
        data=DataConfig(source=source, kind=fp["kind"], class_names=list(fp["class_names"]), spatial_dims=sd,
                        channels=ch, input_size=size, intensity=scheme, clip=clip,
                        split="official" if fp["official_split"] else "seeded"),
        model=model, augment=aug, optim=OptimConfig(lr=3e-3, weight_decay=1e-4), schedule=ScheduleConfig(),
        train=TrainConfig(batch_size=bs, select_metric="dice", eval_batch_size=16),
        segment=SegmentConfig(label_values=sg["label_values"], label_names=sg["label_names"],
                              resample_masks=bool(sg.get("resample_masks")), group_by_folder=group_by_folder,
                              patch_size=patch, tta_flip_axes=lr[:1]),
        decisions=dec,
    )
    note("train.select_metric", "dice", "S9 model selection", "fixed")
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
    from pydantic import ValidationError

    try:
        return Plan.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise PlanError(f"plan field '{loc}': {err['msg']}",
                        fix=f"check the override of '{loc}' (see `meddx plan` for the fields)") from None
