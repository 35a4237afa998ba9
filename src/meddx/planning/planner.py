"""Fingerprint -> plan. Every rule lives here, and every decision names its rule.

Rules (kind in brackets, as nnU-Net documents its own):
    R1 dimensionality [rule-based]: the images' spatial dimensionality; mixed 2D/3D is an error.
    R2 channels [rule-based]: 3 when most images are RGB, else the channel count every image has,
       else 1 (RGB is averaged to grey).
    R3 input size [rule-based]: 2D: the common size when every image shares one <= 64 px,
       else the median short side clamped to [32, 128] and rounded to 8 px (CPU budget);
       3D: the median shape, each axis clamped to [16, 32] on CPU, [16, 64] with CUDA (3D cost
       grows with the cube); a volume shrinking to it is low-pass filtered first
       (``data.antialias_3d``, as 2D's resize always is), not sampled by trilinear interpolation.
    R4 intensity [rule-based]: 8-bit integer data -> ``scale255``; data reaching below -500
       (CT in HU) -> ``clip_scale`` to the dataset's [p0.5, p99.5]; anything else -> per-image z-score
       (``channel_zscore``, each channel on its own, for images of several channels).
    R5 model [fixed]: ``small_cnn`` (a residual CNN with a stride-1 stem sized for CPU).
    R6 batch size [rule-based]: 2D 128 (64 under 2000 training cases), 3D 16 at <= 32^3, else 4
       (on VesselMNIST3D validation AUC, 16 beat 32 at equal time: more steps per second); then
       halved until the training-memory estimate (``planning/memory.py``: one forward pass of the
       planned network measures its activations) fits the memory budget (``--memory-budget``;
       default 4 GiB in 2D, 8 GiB in 3D, at most half the free RAM).
    R7 optimiser and schedule [fixed]: AdamW, cosine with 1 warm-up epoch.
    R8 augmentation [rule-based]: 2D: small rotation, zoom, shift and intensity jitter;
       3D: flips on every axis plus the same jitter.
    R9 epochs [rule-based]: with a time budget, sized from a measured epoch time at the start of
       training (ensemble members share the budget); else 30.
    R10 model selection [fixed]: best validation AUC; threshold chosen on validation (Youden).
    R11 denoising [rule-based]: median relative noise of the images (wavelet-MAD sigma / robust
       range, on a 200-case sample) above the measured threshold in ``transforms/noise.py`` (0.041) ->
       non-local means (2D) or a 3x3x3 median (3D) before the intensity scheme; else none.
    R12 class imbalance [rule-based]: majority:minority >= 10 -> class-balanced batches (weighted
       sampler); below, the training mix is kept (see IMBALANCE_SAMPLER_RATIO).
    R14 ensemble [rule-based]: under 2000 training cases and a budget of 10 minutes or more -> 3
       seed members sharing the budget; shorter budgets train one network (validation evidence in
       ENSEMBLE_MIN_BUDGET_S).
    R15 head [rule-based]: under 300 training cases, PCA (16 components) of the trained features +
       logistic regression replaces the deep linear head (the light option for tiny datasets); the
       regression is class-balanced when the plan balances the classes (R12's sampler, class
       weights or logit adjustment), so the refitted head keeps that balance.
    R16 test-time augmentation [empirical]: 3D classification tries averaging its predictions over the
       flips it was trained with (R8: every axis) on the validation split after training, and keeps
       them only when the validation AUC rises (recorded in the plan); 2D none (R8 trains no flips:
       laterality matters on chest X-rays). Why empirical, not fixed: TTA_EVIDENCE.
    R17 empirical choice [empirical]: with a budget of 20 minutes or more, 30 % of it goes to short
       trials of the model structure (plain, SE attention, multi-scale features) scored on the
       validation split, or, when that split has fewer than 100 cases, by 5-fold cross-validation
       over the training split (see CHOICE_FOLDS_MAX_VAL); the winner and every trial score are
       recorded in the plan.
    R18 positive class [rule-based]: binary tasks: the class whose name does not read as the absence
       of disease (a word of NEGATIVE_CLASS_WORDS: normal, benign, healthy, ...) when exactly one of
       the two does, else the second class. Sensitivity, PPV, AUC and the threshold are about it.
    R19 sided names [rule-based]: when a class (or, S7, a label) name names a side (a word of
       SIDE_WORDS: left, right, l, r, lt, rt), no flips are trained or averaged at test time: a
       mirrored left kidney looks like a right one but keeps the label "left". Applies to R8,
       R16 and S7.
    R20 orientation [rule-based]: 3D volumes whose orientation is known (NIfTI, DICOM geometry) are
       reoriented to the training volumes' orientation, the most common one where they differ, before
       anything else (MONAI's ``Orientationd``, with nibabel's axis arithmetic); masks, heatmaps and
       probabilities go back to each input's own grid. None (nothing done) without known orientations.
    Available to a human editing the plan (measured by ``meddx ablate``): focal loss, logit
    adjustment, class-weighted CE, over-/under-sampling, mixup/cutmix, elastic/gamma/blur/noise
    augmentation, SE/spatial/CBAM attention, multi-scale features, k-fold and snapshot ensembles,
    flip test-time augmentation.

Segmentation (``task: segment``) shares R1, R2, R4, R11 and R20, then:
    S1 labels [rule-based]: declared in dataset.json, else a binary mask {0, v} is
       background/foreground, else each mask value is a class.
    S2b target spacing [rule-based]: 3D volumes whose spacings differ are resampled to nnU-Net's
       target spacing (median per axis; the 10th percentile along a >3x coarser axis); the patch
       is then sized on the resampled median shape; predictions go back to each native grid.
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
       known (NIfTI/DICOM geometry: R20's, or the user's data.orientation override, when every
       volume's is known; else the one >= 90 % of the volumes share), also as flip test-time
       augmentation (a mirror along
       another axis would swap anatomy such as anterior/posterior hippocampus); else no flips.
       No flips in 2D or 3D when a label names a side (R19).
       The heatmap detector applies only the flips and the intensity keys (rotation, zoom, shift
       and elastic deformation would move its boxes); its run records the keys it leaves out.
    S8 epochs [rule-based]: as R9.
    S9 model selection [fixed]: best validation mean Dice over the foreground classes.
    S10 post-processing [empirical]: largest component, hole filling and small-component
       removal are each tried on validation cases and kept when they raise mean Dice.
    S11 detection threshold [empirical] (components detector): boxes from the argmax map or from
       each class's probability map at 0.5 / 0.3 / 0.15 / 0.08, whichever gives the best mean FROC
       (then AP) on the validation cases (a rare finding's probability can stay under background's).
"""

from __future__ import annotations

import copy
import re
from typing import Any

import numpy as np

from meddx.errors import DatasetError, PlanError
from meddx.planning.plan import (AugmentConfig, Choice, DataConfig, Decision, EnsembleConfig, EvaluateConfig,
                                 ModelConfig, OptimConfig, Plan, PreprocessStep, ScheduleConfig, SegmentConfig,
                                 TrainConfig, validate_plan)


EPOCHS_FROM_BUDGET = "sized from the time budget at the start of training"  # R9/S8 until training measures


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


def _rule_intensity(fp: dict, ch: int, note) -> tuple[str, list[float] | None]:
    it = fp["intensity"]
    if it["integer_valued"] and it["min"] >= 0 and it["max"] <= 255:
        scheme, clip = "scale255", None
    elif it["min"] < -500:
        scheme, clip = "clip_scale", [it["p00_5"], it["p99_5"]]
    else:  # several channels (T1, FLAIR ...): each z-scored on its own, as nnU-Net does per modality
        scheme, clip = ("channel_zscore" if ch > 1 else "image_zscore"), None
    note("data.intensity", scheme, "R4 intensity", "rule-based", min=it["min"], max=it["max"],
         integer_valued=it["integer_valued"], channels=ch)
    if clip is not None:  # the clip window is a decision of its own, from the percentiles it read
        note("data.clip", clip, "R4 intensity", "rule-based", p00_5=it["p00_5"], p99_5=it["p99_5"])
    return scheme, clip


def _rule_denoise(fp: dict, sd: int, note) -> list[PreprocessStep]:
    """R11: denoise when the dataset's median relative noise is above the measured threshold
    (``transforms/noise.py``): non-local means in 2D, a 3x3x3 median in 3D (3D NLM costs minutes
    per volume on CPU)."""
    nz = fp.get("noise")
    steps: list[PreprocessStep] = []
    if nz and nz["denoise_recommended"]:
        steps = [PreprocessStep(name="nlm") if sd == 2 else PreprocessStep(name="median", params={"radius": 1})]
    note("data.preprocess", [st.model_dump() for st in steps], "R11 denoising", "rule-based",
         relative_noise_median=(round(nz["relative_median"], 4) if nz else None),
         threshold=(nz["threshold"] if nz else None))
    return steps


def _rule_orientation(fp: dict, sd: int, note) -> list[str] | None:
    """R20: 3D volumes are reoriented to the training volumes' orientation, the most common one
    where they differ (MONAI's ``Orientationd``); predictions go back to each input's own grid.
    None where no volume's orientation is known (MedMNIST 3D) and for 2D, where nothing is noted."""
    if sd != 3:
        return None
    counts = fp.get("orientations") or {}
    codes = fp.get("axcodes") or (list(max(counts, key=counts.get)) if counts else None)
    note("data.orientation", codes, "R20 orientation", "rule-based", axcodes=fp.get("axcodes"), orientations=counts)
    return codes


def _user_orientation(overrides: dict[str, Any] | None, planned):
    """The orientation training will turn volumes to: the user's ``data.orientation`` override where
    one is given (the flips S7 chooses must follow it), else R20's."""
    ov = overrides or {}
    if "data.orientation" in ov:
        value = ov["data.orientation"]
    elif isinstance(ov.get("data"), dict) and "orientation" in ov["data"]:
        value = ov["data"]["orientation"]
    else:
        return planned
    if value is None:
        return None
    from meddx.transforms.orientation import valid_axcodes

    try:
        return list(valid_axcodes(value))
    except (TypeError, ValueError):  # refused with the field's name when the override is applied
        return planned


# R18: words of a class name that mark it as the absence of disease ("normal, benign", "no_tumor", "non-covid")
NEGATIVE_CLASS_WORDS = frozenset({"normal", "benign", "healthy", "negative", "control", "controls", "no", "non",
                                  "not", "none", "absent", "clear", "nofinding"})
SIDE_WORDS = frozenset({"left", "right", "l", "r", "lt", "rt"})


def sided_names(names) -> list[str]:
    """R19: the names that name a side of the body, a word of ``SIDE_WORDS`` between non-alphanumerics
    (``kidney_left``, ``Lung L``; not ``vertebrae_L1``, whose L is lumbar)."""
    return [str(n) for n in names if set(re.findall(r"[a-z0-9]+", str(n).lower())) & SIDE_WORDS]


def _rule_positive_class(names: list[str], note) -> str | None:
    """R18: the disease class of a binary task (None for more classes)."""
    if len(names) != 2:
        return None
    negative = [bool(NEGATIVE_CLASS_WORDS & set(re.findall(r"[a-z]+", str(n).lower()))) for n in names]
    pos = negative.index(False) if sum(negative) == 1 else 1
    note("evaluate.positive_class", names[pos], "R18 positive class", "rule-based", class_names=list(names),
         reads_as_no_disease=[n for n, neg in zip(names, negative) if neg])
    return names[pos]


def make_plan(fp: dict, *, source: str, seed: int = 0, overrides: dict[str, Any] | None = None,
              cuda: bool | None = None, time_budget_s: float | None = None,
              memory_budget_gb: float | None = None) -> Plan:
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
            side = _round8(float(np.clip(fp.get("short_side_median", min(med)), 32, 128)))
            size = [side, side]
    else:
        cap = 64 if cuda else 32
        size = [int(np.clip(s, 16, cap)) for s in med]
    note("data.input_size", size, "R3 input size", "rule-based", shape_median=med,
         **({"short_side_median": fp["short_side_median"]} if sd == 2 and "short_side_median" in fp else {}),
         distinct_shapes=fp["distinct_shapes"], cuda=cuda)
    antialias = sd == 3  # shrinking a volume to `size`: filtered, not sampled (see transforms/spatial.py)
    if antialias:
        note("data.antialias_3d", True, "R3 input size", "rule-based", shape_max=fp["shape_max"], input_size=size)

    scheme, clip = _rule_intensity(fp, ch, note)
    steps = _rule_denoise(fp, sd, note)
    orientation = _rule_orientation(fp, sd, note)

    model = ModelConfig(name="small_cnn", params={"dropout": 0.1})
    note("model.name", model.name, "R5 model", "fixed")

    n_train = sum(_train_class_counts(fp))
    bs, est = _fit_memory(model, sd, ch, len(fp["class_names"]), size, _wanted_batch(sd, n_train, size),
                          memory_budget_gb, cuda, source)
    note("train.batch_size", bs, "R6 batch size", "rule-based", n_train=n_train, input_size=size,
         memory_budget_gb=round(est["budget_gb"], 2), estimated_gb=round(est["estimated_gb"], 3))

    sided = sided_names(fp["class_names"])
    if sd == 2:
        aug = AugmentConfig(rotate_deg=10, scale=0.1, translate=0.08, brightness=0.1, contrast=0.1)
    else:
        aug = AugmentConfig(flip_axes=[] if sided else [0, 1, 2], rotate_deg=0, scale=0.0, translate=0.05,
                            brightness=0.05, contrast=0.05)
    note("augment", aug.model_dump(), "R8 augmentation" + (" + R19 sided names" if sided and sd == 3 else ""),
         "rule-based", spatial_dims=sd, **({"sided_names": sided} if sided else {}))
    tta = list(aug.flip_axes) if sd == 3 else []
    note("evaluate.tta_flip_axes", tta, "R16 test-time augmentation", "empirical" if tta else "rule-based",
         spatial_dims=sd, trained_flip_axes=list(aug.flip_axes),
         **({"kept_if": "validation AUC rises with them, measured after training"} if tta else {}))

    train = TrainConfig(batch_size=bs, time_budget_s=time_budget_s)
    _rule_imbalance(fp, train, note)
    _rule_head(n_train, train, note)
    ensemble = _rule_ensemble(n_train, time_budget_s, note)
    choices = _rule_choices(fp, time_budget_s, note)
    positive = _rule_positive_class(list(fp["class_names"]), note)

    # recorded before the Plan is built: it keeps a copy of the decisions list, not the list
    note("optim/schedule", "adamw + cosine", "R7 optimiser and schedule", "fixed")
    note("train.epochs", EPOCHS_FROM_BUDGET if time_budget_s else train.epochs, "R9 epochs", "rule-based",
         time_budget_s=time_budget_s)
    note("train.select_metric", "auc", "R10 model selection", "fixed")
    plan = Plan(
        seed=seed,
        data=DataConfig(source=source, kind=fp["kind"], class_names=list(fp["class_names"]), spatial_dims=sd,
                        channels=ch, input_size=size, intensity=scheme, clip=clip, preprocess=steps,
                        orientation=orientation, antialias_3d=antialias,
                        split="official" if fp["official_split"] else "seeded"),
        model=model,
        augment=aug,
        optim=OptimConfig(),
        schedule=ScheduleConfig(),
        train=train,
        evaluate=EvaluateConfig(tta_flip_axes=tta, choose_tta=bool(tta), positive_class=positive),
        ensemble=ensemble,
        choices=choices,
        decisions=dec,
    )
    if overrides:
        plan = refit_batch(apply_overrides(plan, overrides), overrides, source)
    return plan


def _wanted_batch(sd: int, n_train: int, size: list[int]) -> int:
    """R6 before the memory fit: 2D 128 (64 under 2000 training cases); 3D 16 at <= 32^3, else 4."""
    if sd == 2:
        return 128 if n_train >= 2000 else 64
    return 16 if max(size) <= 32 else 4


def _fit_memory(model_cfg: ModelConfig, sd: int, ch: int, k: int, size: list[int], wanted: int,
                memory_budget_gb: float | None, cuda: bool, source: str | None = None) -> tuple[int, dict]:
    """R6: halve the batch until the measured training-memory estimate fits the budget
    (default: 4 GiB for 2D, 8 GiB for 3D, and at most half the free RAM); a network that does not
    fit even at batch 2 is refused, as it would exhaust memory part-way through training."""
    import psutil

    from meddx.models import create_model
    from meddx.planning.memory import fit_batch

    if memory_budget_gb is None:
        memory_budget_gb = min(4.0 if sd == 2 else 8.0, psutil.virtual_memory().available / 2**30 / 2)
    net = create_model(model_cfg.name, spatial_dims=sd, in_channels=ch, num_classes=k, input_size=tuple(size),
                       **model_cfg.params)
    bs, est = fit_batch(net, ch, size, wanted, memory_budget_gb * 2**30)
    if est > memory_budget_gb * 2**30:
        raise PlanError(f"{model_cfg.name} at input size {list(size)} needs about {est / 2**30:.2f} GiB per training "
                        f"step even at batch {bs}, more than the memory budget of {memory_budget_gb:.2f} GiB",
                        path=source, fix="lower the input size (--image-size, data.input_size), choose a lighter "
                                         "--model, or raise --memory-budget (train: --set train.memory_budget_gb=G)")
    return bs, {"budget_gb": memory_budget_gb, "estimated_gb": est / 2**30}


def refit_batch(plan: Plan, overrides: dict[str, Any], source: str | None = None) -> Plan:
    """R6 again when the user changed the network or its input size (``--model``, ``--image-size``,
    ``--set model.*`` / ``data.input_size`` / ``data.channels``) but not the batch: the planned batch
    was fitted to the planned network, and a deeper 3D network at that batch can need many times the
    memory budget. Also when ``--set train.memory_budget_gb`` gives a plan a budget other than the one
    its batch was fitted to."""
    keys = set(overrides)
    r6 = next((d for d in reversed(plan.decisions) if d.rule.startswith("R6")), None)
    reads = r6.reads if r6 is not None else {}
    new_budget = ("train.memory_budget_gb" in keys and plan.train.memory_budget_gb is not None
                  and round(plan.train.memory_budget_gb, 2) != reads.get("memory_budget_gb"))
    if plan.task != "classify" or "train.batch_size" in keys or not (new_budget or any(
            k.startswith("model.") or k in ("data.input_size", "data.channels") for k in keys)):
        return plan
    budget = plan.train.memory_budget_gb or reads.get("memory_budget_gb")
    sd, size = plan.data.spatial_dims, list(plan.data.input_size)
    by_user = any(d.field == "train.batch_size" and d.kind == "user" for d in plan.decisions)
    wanted = (plan.train.batch_size if r6 is None or by_user  # a batch edited into the plan is kept if it fits
              else _wanted_batch(sd, int(reads.get("n_train") or 0), size))
    bs, est = _fit_memory(plan.model, sd, plan.data.channels, len(plan.data.class_names), size, wanted, budget,
                          False, source)
    plan.train.batch_size = bs
    plan.decisions.append(Decision(field="train.batch_size", value=bs, rule="R6 batch size", kind="rule-based",
                                   reads={"model": plan.model.name, "input_size": size,
                                          "memory_budget_gb": round(est["budget_gb"], 2),
                                          "estimated_gb": round(est["estimated_gb"], 3),
                                          "refitted_after": sorted(keys)}))
    return plan


IMBALANCE_SAMPLER_RATIO = 10.0
"""R12: at or above this majority:minority ratio, batches are drawn class-balanced. Below it the
training distribution is kept, because accuracy at argmax (what MedMNIST reports) is measured on
test splits with the training split's class mix."""


def _rule_imbalance(fp: dict, train: TrainConfig, note) -> None:
    r = fp.get("imbalance_ratio") or 1.0
    if r >= IMBALANCE_SAMPLER_RATIO:
        train.sampler = "weighted"
    note("train.sampler", train.sampler, "R12 class imbalance", "rule-based", imbalance_ratio=r,
         threshold=IMBALANCE_SAMPLER_RATIO)


PCA_HEAD_MAX_TRAIN = 300
"""R15: under this many training cases, the deep head is replaced by PCA + logistic regression."""


def _rule_head(n_train: int, train: TrainConfig, note) -> None:
    if n_train < PCA_HEAD_MAX_TRAIN:
        train.head = "pca_linear"
        train.pca_components = 16
    note("train.head", train.head, "R15 head", "rule-based", n_train=n_train, threshold=PCA_HEAD_MAX_TRAIN)


ENSEMBLE_MAX_TRAIN = 2000
ENSEMBLE_MIN_BUDGET_S = 600.0
"""R14 evidence (validation only, benchmarks/results/choices/): on BreastMNIST, 5 seed members of
30 s each (a 150 s budget) reached mean validation ACC 0.816 / AUC 0.874 against 0.872 / 0.946 for
one network with the whole budget (snapshot members no better, measured when each was its cycle's
best-validation epoch rather than its end): members need time. With about 100 epochs each, 3
members (ACC 0.919 / AUC 0.981) beat one network trained for the same total time
(200 epochs, the cap: 0.906 / 0.977) and one of 100 epochs (0.910 / 0.974). At 2 s per BreastMNIST
epoch here, 3 x 100 epochs is a 10-minute budget: ensembles are planned from 600 s."""


def _rule_ensemble(n_train: int, time_budget_s: float | None, note) -> EnsembleConfig:
    """R14: small training sets (high variance between runs) with a generous time budget get an
    ensemble of 3 seeds sharing that budget."""
    ens = EnsembleConfig()
    if time_budget_s and time_budget_s >= ENSEMBLE_MIN_BUDGET_S and n_train < ENSEMBLE_MAX_TRAIN:
        ens = EnsembleConfig(kind="seeds", members=3)
    note("ensemble", ens.model_dump(), "R14 ensemble", "rule-based", n_train=n_train, time_budget_s=time_budget_s,
         max_train=ENSEMBLE_MAX_TRAIN, min_budget_s=ENSEMBLE_MIN_BUDGET_S)
    return ens


TTA_EVIDENCE = """R16 evidence (seeds 0-2, default plans, flips on every axis averaged with the image; the
checkpoint picked on un-augmented validation AUC): VesselMNIST3D (480 s) validation AUC +0.4, +0.7,
+0.6 points with the flips; AdrenalMNIST3D (150 s) -1.5, -1.0, +0.2. Neither always on nor always off
is right on validation, so each run measures it on its own validation split."""

CHOICE_MIN_BUDGET_S = 1200.0
CHOICE_FOLDS = 5
CHOICE_FOLDS_MAX_VAL = 100
"""R17 folds: one accuracy near 0.85 measured on n cases has a standard error of about
sqrt(0.85 * 0.15 / n): 3.6 points at n = 100, 4 points on BreastMNIST's 78 validation images, more
than the differences between model structures the ablation measured (SE attention alone: -1.0 to
+2.1 points on the 2D sets). Scoring on 5 held-out folds of the training split uses every training
case once (546 on BreastMNIST: 1.5 points), at the price of 5 shorter trials per option."""


def _train_class_counts(fp: dict) -> list[int]:
    """Training cases per class: the official training split's, else the seeded split's share of
    each class (the split is made after planning, with ``DataConfig``'s default fractions)."""
    if "train" in fp["split_counts"]:
        return list(fp["split_counts"]["train"].values())
    f_train = DataConfig.model_fields["split_fractions"].default[0]
    return [int(c * f_train) for c in fp["class_counts"].values()]


def _rule_choices(fp: dict, time_budget_s: float | None, note) -> list[Choice]:
    """R17: with at least 20 minutes, the model structure is chosen among the plain network,
    channel attention (SE) and multi-scale features; 30 % of the budget goes to the trials, scored
    on the validation split, or by 5-fold cross-validation of the training split when the
    validation split is small and every class has at least 10 training cases (2 per fold)."""
    if not time_budget_s or time_budget_s < CHOICE_MIN_BUDGET_S:  # recorded too, so the plan says why not
        note("choices", [], "R17 empirical choice", "rule-based", time_budget_s=time_budget_s,
             min_budget_s=CHOICE_MIN_BUDGET_S)
        return []
    counts = fp["split_counts"]
    if "val" in counts:
        n_val = sum(counts["val"].values())
    else:  # no official split: estimated from the seeded split's fractions
        n_val = int(round(sum(fp["class_counts"].values()) * DataConfig.model_fields["split_fractions"].default[1]))
    train_counts = _train_class_counts(fp)
    folds = CHOICE_FOLDS if n_val < CHOICE_FOLDS_MAX_VAL and min(train_counts) >= 2 * CHOICE_FOLDS else 0
    ch = Choice(name="model_structure", options=[{"model.params.attention": None},
                                                 {"model.params.attention": "se"},
                                                 {"model.params.multiscale": True}], budget_fraction=0.3, folds=folds)
    note("choices", [ch.name], "R17 empirical choice", "empirical", time_budget_s=time_budget_s,
         min_budget_s=CHOICE_MIN_BUDGET_S, options=ch.options, n_val=n_val, folds=folds,
         folds_below_n_val=CHOICE_FOLDS_MAX_VAL)
    return [ch]


def _fit_seg_memory(model_cfg: ModelConfig, sd: int, ch: int, k: int, size: list[int], wanted: int,
                    memory_budget_gb: float | None) -> tuple[int, list[int], dict]:
    """S4: halve the batch (not below 2), then shrink the largest axis of the patch/image by the
    network's divisor, until the measured training-memory estimate fits the budget."""
    import psutil

    from meddx.models import create_model
    from meddx.planning.memory import fit_batch

    if memory_budget_gb is None:
        memory_budget_gb = min(4.0 if sd == 2 else 8.0, psutil.virtual_memory().available / 2**30 / 2)
    size = list(size)
    while True:
        net = create_model(model_cfg.name, spatial_dims=sd, in_channels=ch, num_classes=k, input_size=tuple(size),
                           **model_cfg.params)
        bs, est = fit_batch(net, ch, size, wanted, memory_budget_gb * 2**30)
        div = int(getattr(net, "divisor", 8))
        if est <= memory_budget_gb * 2**30 or max(size) <= 2 * div:
            return bs, size, {"budget_gb": memory_budget_gb, "estimated_gb": est / 2**30}
        i = int(np.argmax(size))
        size[i] -= div


def _round_up(x: float, m: int) -> int:
    return int(max(m, int(np.ceil(x / m)) * m))


def make_seg_plan(fp: dict, *, source: str, seed: int = 0, overrides: dict[str, Any] | None = None,
                  cuda: bool | None = None, group_by_folder: bool = False, time_budget_s: float | None = None,
                  memory_budget_gb: float | None = None) -> Plan:
    """Build a segmentation plan (rules R1, R2, R4 and S1-S10 in the module docstring)."""
    cuda, dec, note = _start(cuda)

    sg = fp["segmentation"]
    sd = _rule_dims(fp, source, note)
    ch = _rule_channels(fp, note)
    files = max((int(k) for k in fp.get("channel_files") or {}), default=1)  # one per case by construction
    if files > 1:  # nnU-Net's x_0000, x_0001 ...: a new case is given the same way, and predict groups them
        note("data.channel_files", files, "R2 channels", "rule-based", channel_files=fp["channel_files"])
    scheme, clip = _rule_intensity(fp, ch, note)
    steps = _rule_denoise(fp, sd, note)
    orientation = _rule_orientation(fp, sd, note)
    note("segment.label_values", sg["label_values"], "S1 labels", "rule-based", mask_values=sg["mask_values"],
         labels_from=sg["labels_from"])
    med = fp["shape_median"]
    target = None
    if sd == 2:
        cap = 256 if cuda else 160
        side = min(_round_up(float(np.clip(fp.get("long_side_median", max(med)), 64, cap)), 32), cap)
        size, patch = [side, side], None
        note("data.input_size", size, "S2 input and patch size", "rule-based", shape_median=med,
             **({"long_side_median": fp["long_side_median"]} if "long_side_median" in fp else {}))
    else:
        cap = 128 if cuda else 64
        tsd = fp.get("target_spacing")
        if tsd and (fp.get("distinct_spacings") or 1) > 1 and fp.get("spacing_median"):
            # S2b: volumes with different spacings are resampled to nnU-Net's target spacing
            target = [round(float(v), 4) for v in tsd["spacing"]]
            med = [float(m) * float(sp) / t for m, sp, t in zip(med, fp["spacing_median"], target)]
            note("data.target_spacing", target, "S2b target spacing", "rule-based",
                 distinct_spacings=fp["distinct_spacings"], median_spacing=tsd["median_spacing"],
                 anisotropic=tsd["anisotropic"], nnunet_rule=tsd["rule"])
        else:
            target = None
            note("data.target_spacing", None, "S2b target spacing", "rule-based",
                 distinct_spacings=fp.get("distinct_spacings"))
        patch = [min(cap, _round_up(s, 8)) for s in med]
        size = patch
        note("segment.patch_size", patch, "S2 input and patch size", "rule-based", shape_median=med, cuda=cuda)
    model = ModelConfig(name="dynunet", params={"deep_supervision": True}) if cuda else ModelConfig(name="unet")
    note("model.name", model.name, "S3 model", "rule-based", cuda=cuda)
    if sd == 2:
        bs = 8 if size[0] <= 192 else 4  # >= 2 always (batch statistics, throughput)
    else:
        bs = 4 if int(np.prod(patch)) <= 64 ** 3 else 2
    bs, size, est = _fit_seg_memory(model, sd, ch, len(sg["label_values"]), size, bs, memory_budget_gb)
    if sd == 3:
        patch = size
    note("train.batch_size", bs, "S4 batch size", "rule-based", input_size=size,
         memory_budget_gb=round(est["budget_gb"], 2), estimated_gb=round(est["estimated_gb"], 3))
    note("segment.loss", "dice_ce", "S5 loss", "fixed")
    note("segment.fg_oversample", 0.33, "S6 sampling", "fixed")
    # the left-right axis: of the orientation volumes are turned to (R20's, or the user's --set
    # data.orientation: null trains them as stored), when every volume's is known
    turned = _user_orientation(overrides, orientation)
    everyone = turned and sum((fp.get("orientations") or {}).values()) == fp.get("n_readable")
    codes = turned if everyone else fp.get("axcodes")
    sided = sided_names(sg["label_names"] or [])
    lr = [i for i, c in enumerate(codes or []) if c in ("L", "R")] if sd == 3 and not sided else []
    if sd == 2:
        aug = AugmentConfig(flip_axes=[] if sided else [1], rotate_deg=15, scale=0.15, translate=0.05,
                            brightness=0.1, contrast=0.15)
    else:
        aug = AugmentConfig(flip_axes=lr[:1], rotate_deg=10, scale=0.1, translate=0.05, brightness=0.1, contrast=0.1)
    note("augment", aug.model_dump(), "S7 augmentation" + (" + R19 sided names" if sided else ""), "rule-based",
         spatial_dims=sd, axcodes=codes, **({"sided_names": sided} if sided else {}))
    note("train.epochs", EPOCHS_FROM_BUDGET if time_budget_s else TrainConfig().epochs, "S8 epochs", "rule-based",
         time_budget_s=time_budget_s)
    note("train.select_metric", "dice", "S9 model selection", "fixed")
    plan = Plan(
        task="detect" if fp.get("task") == "detect" else "segment", seed=seed,
        data=DataConfig(source=source, kind=fp["kind"], class_names=list(fp["class_names"]), spatial_dims=sd,
                        channels=ch, channel_files=files, input_size=size, intensity=scheme, clip=clip,
                        preprocess=steps, target_spacing=target, orientation=orientation,
                        split="official" if fp["official_split"] else "seeded"),
        model=model, augment=aug, optim=OptimConfig(lr=3e-3, weight_decay=1e-4), schedule=ScheduleConfig(),
        train=TrainConfig(batch_size=bs, select_metric="dice", eval_batch_size=16, time_budget_s=time_budget_s),
        segment=SegmentConfig(label_values=sg["label_values"], label_names=sg["label_names"],
                              resample_masks=bool(sg.get("resample_masks")), group_by_folder=group_by_folder,
                              patch_size=patch, tta_flip_axes=lr[:1]),
        decisions=dec,
    )
    if overrides:
        plan = apply_overrides(plan, overrides)
    return plan


def apply_overrides(plan: Plan, overrides: dict[str, Any]) -> Plan:
    """Apply dotted-key overrides (``{"train.epochs": 5}``) given by the user, and record them.

    A key inside another one's value wins, whatever the order given: ``model.params`` is applied
    before ``model.params.attention`` (keys with fewer dots first, otherwise in the given order).
    ``None`` takes a setting away (``--set train.synthetic=null`` removes the GAN, an empirical
    choice's ``{"model.params.attention": None}`` removes attention): a field becomes None, a key of
    ``model.params`` (free-form network options) is deleted. Callers drop options the user did not
    give before calling."""
    raw = plan.model_dump(mode="json")
    for key, value in sorted(overrides.items(), key=lambda kv: kv[0].count(".")):
        node = raw
        parts = key.split(".")
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):  # e.g. --set seed.x=1, or a null section such as data.learned_denoise
                parent = ".".join(parts[:i + 1])
                shown = "null" if node is None else repr(node)
                raise PlanError(f"cannot set '{key}': '{parent}' is {shown} in the plan, not a section of fields",
                                fix=f"set '{parent}' itself (null sections: first --set {parent}={{}}), or check the "
                                    "key (see `meddx plan` for the fields)")
        if value is None and parts[:-1] == ["model", "params"]:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = copy.deepcopy(value)  # a later nested key must not write into the caller's dict
        raw["decisions"].append({"field": key, "value": value, "rule": "set by the user", "kind": "user",
                                 "reads": {}})
    return validate_plan(raw, overrides=True)
