"""The plan: every choice a run obeys, as an editable YAML file.

``meddx train --plan plan.yaml`` re-runs a plan exactly; each field can be edited by
hand. ``decisions`` records which rule chose what (the rules are documented in ``planning/planner.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from meddx.errors import PlanError


MAX_SEED = 2**32 - 1  # what every random generator meddx seeds accepts (numpy's and torch's)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PreprocessStep(_Strict):
    """One deterministic preprocessing step from ``meddx.transforms.PREPROCESSORS`` (denoising,
    CT windowing, CLAHE, ...), applied to every image before the intensity scheme."""

    name: str
    params: dict[str, Any] = {}


class LearnedDenoiseConfig(_Strict):
    """The self-supervised CNN denoiser (``transforms/learned_denoise.py``), fitted on the training
    images at the start of training and kept in front of the network (classifiers)."""

    budget_fraction: float = Field(default=0.15, gt=0, lt=1)  # of train.time_budget_s
    epochs: int = Field(default=40, ge=1)                      # cap (and the amount without a budget)
    mask_fraction: float = Field(default=0.05, gt=0, le=0.5)


class DataConfig(_Strict):
    source: str
    kind: str
    class_names: list[str]
    spatial_dims: Literal[2, 3]
    channels: int = Field(ge=1)
    channel_files: int = Field(default=1, ge=1)  # files per case (nnU-Net's x_0000, x_0001 ...): predict groups them
    input_size: list[int]
    preprocess: list[PreprocessStep] = []  # applied in order, per image, before the intensity scheme
    target_spacing: Optional[list[float]] = None  # 3D segmentation: resample every volume to this spacing (mm)
    orientation: Optional[list[str]] = None  # 3D: reorient every volume to these RAS letters first (R20); None: as stored
    antialias_3d: bool = False  # 3D resize to input_size smooths before shrinking (R3); plans before it: False
    learned_denoise: Optional[LearnedDenoiseConfig] = None
    intensity: Literal["scale255", "clip_scale", "image_zscore", "channel_zscore"] = "scale255"
    clip: Optional[list[float]] = None
    norm_mean: float = 0.0
    norm_std: float = 1.0
    split: Literal["official", "seeded"] = "official"
    split_fractions: list[float] = [0.7, 0.1, 0.2]
    split_seed: Optional[int] = Field(default=None, ge=0, le=MAX_SEED)  # seeded split: None = the plan's seed (fix it to compare seeds on one split)

    @field_validator("orientation")
    @classmethod
    def _orientation(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        from meddx.transforms.orientation import valid_axcodes

        return None if v is None else list(valid_axcodes(v))

    @model_validator(mode="after")
    def _orientation_is_3d(self):
        if self.orientation is not None and self.spatial_dims != 3:
            raise ValueError("data.orientation reorients 3D volumes; set it to null for 2D images")
        if self.antialias_3d and self.spatial_dims != 3:
            raise ValueError("data.antialias_3d is for 3D volumes (2D images are always filtered as they shrink); "
                             "set it to false for 2D images")
        return self

    def input_key(self) -> tuple:
        """How an image becomes the model's input, up to the dataset standardisation: runs that share it
        see the same inputs (a distillation teacher and its student, the members of an ensemble)."""
        return (self.spatial_dims, self.channels, list(self.input_size), self.intensity, self.clip, self.orientation,
                self.antialias_3d, [(st.name, dict(st.params)) for st in self.preprocess])

    @field_validator("split_fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if len(v) != 3 or min(v) <= 0 or abs(sum(v) - 1) > 1e-6:
            raise ValueError(f"must be three positive fractions (train, val, test) that sum to 1, got {v}")
        return v


class ModelConfig(_Strict):
    name: str = "small_cnn"
    params: dict[str, Any] = {}


class AugmentConfig(_Strict):
    """Batch augmentation; parameters are drawn per sample, then applied deterministically."""

    flip_axes: list[int] = []        # spatial axes (0 = first spatial axis) flipped with p = 0.5
    rotate_deg: float = Field(default=0.0, ge=0, le=180)  # uniform in [-r, r] (in-plane for 2D; each axis for 3D)
    scale: float = Field(default=0.0, ge=0, lt=1)         # uniform zoom in [1 - s, 1 + s] (s >= 1: zooms <= 0)
    translate: float = Field(default=0.0, ge=0, le=1)     # fraction of the image size
    brightness: float = Field(default=0.0, ge=0)          # additive, in standardised units
    contrast: float = Field(default=0.0, ge=0, le=1)      # multiplicative, uniform in [1 - c, 1 + c]
    noise_std: float = Field(default=0.0, ge=0)           # Gaussian noise, standardised units
    gamma: float = Field(default=0.0, ge=0.0, lt=1.0)  # gamma in [1/(1+g), 1+g] on the min-max rescaled image
    blur_sigma: float = Field(default=0.0, ge=0.0)     # Gaussian blur, sigma uniform in [0, s] pixels
    elastic: float = Field(default=0.0, ge=0.0)        # smooth random displacement, fraction of the image size
    elastic_grid: int = Field(default=4, ge=2)         # control points per axis of the elastic field
    p: float = Field(default=1.0, ge=0.0, le=1.0)  # chance a sample is augmented at all
    # write every training batch's drawn parameters (and the cases they were drawn for) to
    # augment/epoch_NNNN.pt in the run directory; BatchAugment.apply replays them exactly
    record: bool = False


class OptimConfig(_Strict):
    name: Literal["sgd", "adam", "adamw", "rmsprop"] = "adamw"
    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=5e-4, ge=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)  # sgd (Nesterov when > 0) and rmsprop
    l1: float = Field(default=0.0, ge=0)


class ScheduleConfig(_Strict):
    name: Literal["constant", "step", "cosine", "onecycle"] = "cosine"
    warmup_epochs: float = Field(default=1.0, ge=0)
    milestones: list[float] = [0.5, 0.75]  # fractions of training, for "step"
    gamma: float = Field(default=0.1, gt=0)  # "step": the learning rate is multiplied by it at each milestone

    @field_validator("milestones")
    @classmethod
    def _fractions_of_training(cls, v: list[float]) -> list[float]:
        if any(not 0 < m < 1 for m in v):
            raise ValueError(f"must be fractions of training between 0 and 1 (e.g. [0.5, 0.75]), got {v}")
        return v


class TrainConfig(_Strict):
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=128, ge=1)
    loss: Literal["ce", "focal"] = "ce"
    focal_gamma: float = Field(default=2.0, ge=0)     # loss "focal": (1 - p_t)^gamma down-weights easy cases
    logit_adjust: float = Field(default=0.0, ge=0)    # tau of logit-adjusted CE (Menon et al. 2021); 0 = off
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    sampler: Literal["none", "weighted", "oversample", "undersample"] = "none"  # class balance of the batches
    mixup: float = Field(default=0.0, ge=0)           # Beta(a, a) mixing of image pairs and labels; 0 = off
    cutmix: float = Field(default=0.0, ge=0)          # Beta(a, a) box pasting between image pairs; 0 = off
    mix_prob: float = Field(default=0.5, ge=0, le=1)  # share of batches mixed when mixup/cutmix is on
    head: Literal["deep", "pca_linear"] = "deep"      # pca_linear: PCA of the trained features + logistic regression
    synthetic: Optional[SyntheticConfig] = None       # GAN minority samples (checked before use)
    pca_components: int = Field(default=32, ge=1)
    ema_decay: Optional[float] = Field(default=None, gt=0, lt=1)  # evaluate/keep an EMA of the weights
    class_weights: Optional[Literal["balanced"]] = None  # "balanced": w_c = N / (K * n_c) from train
    early_stopping_patience: Optional[int] = Field(default=None, ge=1)  # epochs without improvement; None = off
    select_metric: Literal["auc", "accuracy", "loss", "dice"] = "auc"
    time_budget_s: Optional[float] = Field(default=None, gt=0)
    max_epochs_with_budget: int = Field(default=200, ge=1)
    memory_budget_gb: Optional[float] = Field(default=None, gt=0)  # caps the batch size (planner rule R6)
    eval_batch_size: int = Field(default=256, ge=1)

    @property
    def epochs_text(self) -> str:
        """``"1 epoch"`` / ``"30 epochs"``, for log lines."""
        return f"{self.epochs} epoch{'' if self.epochs == 1 else 's'}"


class SyntheticConfig(_Strict):
    """Synthetic minority images from a conditional GAN fitted on the training split only
    (``data/synthesis.py``); added to training only if the measured quality check passes."""

    target_ratio: float = Field(default=1.0, gt=0, le=1)  # raise each class towards this share of the largest
    max_per_real: float = Field(default=1.0, gt=0)        # at most this many fakes per real image of a class
    budget_fraction: float = Field(default=0.3, gt=0, lt=1)  # of what R17's trials leave of train.time_budget_s (GAN + check)
    epochs: int = Field(default=300, ge=1)                # GAN epochs cap (and the amount without a budget)


class EnsembleConfig(_Strict):
    """Several members whose softmax outputs are averaged; the time budget is shared between them.

    ``seeds``: independent initialisations and batch orders; ``kfold``: member i leaves out fold i of
    the training split; ``snapshot``: member i continues from member i-1 with a fresh cosine cycle
    (Huang et al. 2017). Seed and k-fold members keep their best-validation epoch; a snapshot member
    is the weights at the end of its cycle (the learning-rate minimum), with no early stopping.
    """

    kind: Literal["none", "seeds", "kfold", "snapshot"] = "none"
    members: int = Field(default=1, ge=1, le=20)

    @model_validator(mode="after")
    def _enough_members(self):
        if self.kind != "none" and self.members < 2:
            raise ValueError(f"ensemble '{self.kind}' needs members >= 2 (got {self.members})")
        return self


class EvaluateConfig(_Strict):
    tta_flip_axes: list[int] = []  # average predictions over these flips (test-time augmentation)
    # choose_tta: the flips above are a candidate: training validates without them, then they are kept
    # only if they raise the validation AUC (rule R16, recorded as a decision), else cleared
    choose_tta: bool = False
    # binary tasks: the class whose sensitivity, specificity, PPV, NPV, F1 and AUC the report gives, and whose
    # probability the threshold cuts (the disease: planner rule R18); None: the second class
    positive_class: Optional[str] = None
    threshold_rule: Literal["youden", "sensitivity"] = "youden"
    target_sensitivity: Optional[float] = None
    n_boot: int = 1000
    ece_bins: int = 15
    # triage (evaluation/uncertainty.py): refer a case to an expert when its uncertainty is above a threshold
    # chosen so that the refer_fraction most uncertain validation cases lie above it
    uncertainty: Literal["tta", "mc_dropout", "ensemble", "confidence"] = "tta"
    uncertainty_samples: int = Field(default=8, ge=2)  # augmented copies (tta) / dropout passes (mc_dropout)
    refer_fraction: float = Field(default=0.1, ge=0, lt=1)
    ensemble_runs: list[str] = []  # other runs of the same plan (other seeds) that join the ensemble

    @model_validator(mode="after")
    def _threshold_rule_and_target(self):
        # choose_threshold would refuse these only after training, failing the finished run
        if self.threshold_rule == "sensitivity" and self.target_sensitivity is None:
            raise ValueError("threshold_rule 'sensitivity' needs evaluate.target_sensitivity (e.g. 0.95)")
        if self.target_sensitivity is not None:
            if self.threshold_rule != "sensitivity":
                raise ValueError("target_sensitivity only applies to threshold_rule 'sensitivity' "
                                 "(add --threshold-rule sensitivity)")
            if not 0.0 < self.target_sensitivity <= 1.0:
                raise ValueError(f"target_sensitivity must lie in (0, 1], got {self.target_sensitivity}")
        return self


class SegmentConfig(_Strict):
    """Segmentation: labels, patching, loss and post-processing (``task: segment``)."""

    label_values: list[int]          # mask values; index in this list = class index
    label_names: list[str]
    resample_masks: bool = False     # resize masks whose size differs from their image (else an error)
    group_by_folder: bool = False    # each image's folder is one patient (split by folder)
    patch_size: Optional[list[int]] = None  # 3D: training patch and sliding window; None: whole image
    fg_oversample: float = Field(default=0.33, ge=0, le=1)  # share of patches centred on foreground
    loss: Literal["dice", "dice_ce", "dice_focal", "tversky"] = "dice_ce"
    class_weights: Optional[list[float]] = None
    sw_overlap: float = Field(default=0.5, ge=0, lt=1)
    sw_mode: Literal["gaussian", "constant"] = "gaussian"
    tta_flip_axes: list[int] = []    # average over flips at inference (spatial axes)
    choose_postprocess: bool = True  # try the options below on validation and keep those that help
    postprocess: list[Literal["largest_component", "fill_holes", "remove_small"]] = []
    min_size: int = Field(default=0, ge=0)  # remove_small: drop components under this many pixels/voxels
    det_threshold: Optional[float] = Field(default=None, gt=0, lt=1)  # components from p_class >= t (None: argmax)
    choose_det_threshold: bool = True  # task detect, components: pick det_threshold on validation (S11)
    detector: Literal["components", "heatmap"] = "components"  # task detect: boxes from segmentation components,
    # or a centre-heatmap head (2D)


class Choice(_Strict):
    """An empirical choice made at the start of training: each option (dotted overrides) is trained
    for a share of the time budget and scored on the validation split, or with ``folds`` >= 2 by
    k-fold cross-validation over the training split (the mean of the held-out folds' scores); the
    best is applied."""

    name: str
    options: list[dict[str, Any]]
    budget_fraction: float = Field(default=0.3, gt=0, lt=1)  # of train.time_budget_s, shared by the options
    folds: int = Field(default=0, ge=0, le=10)  # 0: score on the validation split; k >= 2: k-fold CV
    chosen: Optional[int] = None      # filled in by training
    val_scores: list[float] = []      # selection metric of each option (mean over folds with CV)

    @field_validator("folds")
    @classmethod
    def _folds(cls, v: int) -> int:
        if v == 1:
            raise ValueError("folds must be 0 (the validation split) or at least 2")
        return v


class Decision(_Strict):
    field: str
    value: Any
    rule: str
    kind: Literal["fixed", "rule-based", "empirical", "user"]
    reads: dict[str, Any] = {}


class Plan(_Strict):
    version: int = Field(default=1, ge=1, le=1)  # the plan format; a newer meddx's plan may hold fields this one misreads
    task: Literal["classify", "segment", "detect"] = "classify"
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    data: DataConfig
    model: ModelConfig = ModelConfig()
    augment: AugmentConfig = AugmentConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    ensemble: EnsembleConfig = EnsembleConfig()
    choices: list[Choice] = []
    segment: Optional[SegmentConfig] = None
    decisions: list[Decision] = []

    @model_validator(mode="after")
    def _keys_the_task_reads(self):
        """A key the task's trainer never reads is refused, not silently ignored: segmentation and
        detection have their own loss, class weights, flips and post-processing (``segment``)."""
        if self.task == "classify":
            if self.data.target_spacing is not None:
                raise ValueError("data.target_spacing is read only by segmentation and detection (3D); "
                                 "set it to null for a classifier")
            if self.train.select_metric == "dice":
                raise ValueError("train.select_metric 'dice' is for segmentation; a classifier selects by auc, "
                                 "accuracy or loss")
            return self
        t, defaults = self.train, TrainConfig()
        unread = [k for k in ("loss", "logit_adjust", "label_smoothing", "sampler", "mixup", "cutmix", "head",
                              "synthetic", "class_weights") if getattr(t, k) != getattr(defaults, k)]
        unread = [f"train.{k}" for k in unread]
        if self.data.learned_denoise is not None:
            unread.append("data.learned_denoise")
        if self.evaluate.tta_flip_axes:
            unread.append("evaluate.tta_flip_axes (use segment.tta_flip_axes)")
        if self.choices:
            unread.append("choices")
        if unread:
            raise ValueError(f"{', '.join(unread)} apply only to classification, not to task '{self.task}': "
                             f"remove them from the plan")
        return self

    @model_validator(mode="after")
    def _positive_class_is_one_of_two(self):
        pc = self.evaluate.positive_class
        if pc is not None:
            names = [str(c) for c in self.data.class_names]
            if self.task != "classify" or len(names) != 2:
                raise ValueError("evaluate.positive_class applies only to binary classification "
                                 f"({len(names)} classes here): set it to null")
            if str(pc) not in names:
                raise ValueError(f"evaluate.positive_class {pc!r} is not one of the classes {names}: "
                                 "set it to one of them")
        return self

    @model_validator(mode="after")
    def _sizes_and_axes_fit_the_dimensions(self):
        """Sizes hold one positive entry per spatial axis and flips name axes that exist, so a wrong
        ``--set`` or hand edit is refused here, not deep inside training after the run has started."""
        sd = self.data.spatial_dims
        sizes = {"data.input_size": self.data.input_size}
        if self.segment is not None and self.segment.patch_size is not None:
            sizes["segment.patch_size"] = self.segment.patch_size
        for name, v in sizes.items():
            if len(v) != sd or min(v) < 1:
                raise ValueError(f"{name} {v} must hold {sd} positive sizes, one per spatial axis of the {sd}D data")
        axes = {"augment.flip_axes": self.augment.flip_axes, "evaluate.tta_flip_axes": self.evaluate.tta_flip_axes}
        if self.segment is not None:
            axes["segment.tta_flip_axes"] = self.segment.tta_flip_axes
        for name, v in axes.items():
            bad = [a for a in v if not 0 <= a < sd]
            if bad:
                raise ValueError(f"{name} {v}: axis {bad[0]} does not exist in {sd}D data (spatial axes are "
                                 f"0..{sd - 1})")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, width=100)

    def save(self, path: str | Path) -> None:
        from meddx.evaluation._checks import atomic_write_bytes

        atomic_write_bytes(path, self.to_yaml().encode())

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        p = Path(path)
        try:
            raw = yaml.safe_load(p.read_text())
        except FileNotFoundError:
            raise PlanError("plan file not found", path=p, fix="check the path") from None
        except IsADirectoryError:
            hint = f" ({p / 'plan.yaml'})" if (p / "plan.yaml").is_file() else ""
            raise PlanError("a folder, not a plan file", path=p,
                            fix=f"give the plan.yaml itself{hint}, e.g. RUN/plan.yaml or one `meddx plan` wrote") from None
        except yaml.YAMLError as e:
            raise PlanError(f"not valid YAML ({str(e).splitlines()[0]})", path=p, fix="fix the YAML syntax") from None
        except UnicodeDecodeError:
            raise PlanError("not a text file, so not a plan", path=p,
                            fix="point at a plan.yaml written by `meddx plan` or `meddx train`") from None
        if not isinstance(raw, dict):
            raise PlanError("a plan must be a YAML mapping", path=p, fix="start from a plan written by meddx")
        return validate_plan(raw, path=p)


def check_split_override(key: str, value: Any) -> Any:
    """One override read before the plan exists, checked as ``validate_plan`` checks it: of the split
    (``seed``, ``data.split_seed``, ``data.split_fractions``), made first, or the budgets
    (``train.time_budget_s``, ``train.memory_budget_gb``) the planner sizes the plan by; returns the value."""
    from typing import Annotated

    from pydantic import TypeAdapter

    try:
        if key == "seed":
            return TypeAdapter(Annotated[int, Plan.model_fields["seed"]]).validate_python(value)
        section, name = key.split(".", 1)
        cls = {"data": DataConfig, "train": TrainConfig}[section]
        return getattr(cls.__pydantic_validator__.validate_assignment(cls.model_construct(), name, value), name)
    except ValidationError as e:
        raise PlanError(f"plan field '{key}': {e.errors()[0]['msg']}",
                        fix=f"check the override of '{key}' (see `meddx plan` for the fields)") from None


def validate_plan(raw: dict, *, path: Path | None = None, overrides: bool = False) -> Plan:
    """``Plan.model_validate`` with a one-line ``PlanError`` naming the first bad field: of the plan
    file at ``path``, or of the user's ``overrides`` (``--set``)."""
    try:
        return Plan.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's own message
        if loc == "version":
            raise PlanError(f"plan format version {raw.get('version')!r} is not 1, the version this meddx reads",
                            path=path, fix="re-plan with `meddx plan`, or use the meddx that wrote the plan") from None
        if not loc:  # a check of the whole plan: its message names the fields
            raise PlanError(msg, path=path,
                            fix="change the option or --set value it names" if overrides else "edit the plan as the message says"
                            ) from None
        if overrides:
            raise PlanError(f"plan field '{loc}': {msg}",
                            fix=f"check the override of '{loc}' (see `meddx plan` for the fields)") from None
        raise PlanError(f"field '{loc}': {msg}", path=path,
                        fix=f"correct '{loc}' ({len(e.errors())} problem(s) in all)") from None
