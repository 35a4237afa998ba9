"""The bundle format: one definition, written by ``meddx.deploy.export`` and read by the runtime.

A bundle is a folder::

    bundle.json       manifest: format, task, model facts, SHA-256 of every other file
    model.onnx        the network (logits out; softmax, calibration and thresholds are applied here)
    preprocess.json   everything from a decoded image to the model input (``Preprocessing``)
    labels.json       class names (classifiers) or mask values and names (segmenters)
    thresholds.json   temperature for calibrated confidences and the validation-chosen threshold
    model_card.md     what the model is, how it was measured, its limits

The checksums catch a file changed or swapped after export (a damaged copy, an edited
weight file); they are not a signature against a deliberate attacker, who could
rewrite the manifest too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from meddx.errors import MeddxError

FORMAT = "meddx-bundle"
FORMAT_VERSION = 3  # the newest bundle format this runtime reads and writes
# 1: every bundle before R20. 2: preprocess.json names an orientation volumes are turned to first, which a
# version-1 runtime would skip without a word; only bundles that name one are written as 2, so the
# others still run on an older runtime. 3: preprocess.json asks for antialiasing when a volume shrinks to
# its size (antialias_3d), which an older runtime would skip as well
READ_VERSIONS = (1, 2, 3)
MANIFEST = "bundle.json"
MODEL = "model.onnx"
PREPROCESS = "preprocess.json"
LABELS = "labels.json"
THRESHOLDS = "thresholds.json"
CARD = "model_card.md"
CHECKED_FILES = (MODEL, PREPROCESS, LABELS, THRESHOLDS, CARD)
INTENSITY_SCHEMES = ("scale255", "clip_scale", "image_zscore", "channel_zscore")
SEG_POSTPROCESS = ("largest_component", "fill_holes", "remove_small")


class BundleError(MeddxError):
    """A deployment bundle is missing a file, damaged, tampered with or incompatible."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _need(d: dict, key: str, types, where: Path, what: str):
    if key not in d:
        raise BundleError(f"{what} lacks the field '{key}'", path=where, fix="re-export the bundle with `meddx export`")
    v = d[key]
    if types is not None and not isinstance(v, types):
        raise BundleError(f"{what} field '{key}' has the wrong type ({type(v).__name__})", path=where,
                          fix="re-export the bundle with `meddx export`")
    return v


@dataclass
class Preprocessing:
    """From a decoded image ``(C, *spatial)`` to the model input, as training did it.

    Attributes:
        task: ``classify`` or ``segment``.
        spatial_dims: 2 or 3; extra singleton axes are squeezed, other mismatches refused.
        channels: model input channels (RGB -> grey by luma weights, grey -> RGB by repetition).
        size: resize target per spatial axis (2D bilinear, antialiased when shrinking; 3D
            trilinear); None for 3D segmentation, which runs on each volume's own grid.
        intensity: ``scale255`` | ``clip_scale`` | ``image_zscore`` | ``channel_zscore`` (see
            ``meddx.transforms.intensity``).
        clip: ``[lo, hi]`` for ``clip_scale``.
        mean, std: dataset standardisation from the training split, applied last.
        tta_flip_axes: spatial axes whose flips are averaged with the image (softmax space).
        roi_size, overlap, blend: 3D segmentation sliding window (MONAI's rules).
        window_batch: windows per model call.
        postprocess, min_size: segmentation post-processing chosen on validation.
        steps: the plan's preprocessing steps ``[name, params]`` (``meddx.transforms.PREPROCESSORS``),
            applied after the channel conversion, before the intensity scheme.
        target_spacing: 3D segmentation: volumes are resized by spacing / target before the network
            and the probabilities brought back to the native grid.
        orientation: 3D: RAS letters (e.g. ``["R", "A", "S"]``) every volume of known orientation is
            reoriented to first, as training did (plan rule R20); masks go back to the input's axes.
        antialias_3d: 3D: a volume shrinking to ``size`` is filtered (triangle filter widened by the
            scale), as training did (plan rule R3); otherwise trilinear.
        channel_files: files per case the model was trained on (nnU-Net's ``x_0000``, ``x_0001`` ...):
            when above 1, an input named ``x_0000`` brings the case's other files with it.
    """

    task: str
    spatial_dims: int
    channels: int
    size: list[int] | None
    intensity: str
    clip: list[float] | None = None
    mean: float = 0.0
    std: float = 1.0
    tta_flip_axes: list[int] = field(default_factory=list)
    roi_size: list[int] | None = None
    overlap: float = 0.5
    blend: str = "gaussian"
    window_batch: int = 4
    postprocess: list[str] = field(default_factory=list)
    min_size: int = 0
    steps: list = field(default_factory=list)
    target_spacing: list[float] | None = None
    orientation: list[str] | None = None
    antialias_3d: bool = False
    channel_files: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"format": f"{FORMAT}/preprocess/{self.format_version}", **asdict(self)}

    @property
    def format_version(self) -> int:
        """The oldest bundle format that holds everything this spec needs (see ``READ_VERSIONS``)."""
        return 3 if self.antialias_3d and self.spatial_dims == 3 else 2 if self.orientation else 1

    @classmethod
    def from_dict(cls, d: dict, where: Path) -> "Preprocessing":
        what = "preprocessing spec"
        p = cls(task=_need(d, "task", str, where, what), spatial_dims=_need(d, "spatial_dims", int, where, what),
                channels=_need(d, "channels", int, where, what), size=_need(d, "size", (list, type(None)), where, what),
                intensity=_need(d, "intensity", str, where, what),
                clip=_need(d, "clip", (list, type(None)), where, what),
                mean=float(_need(d, "mean", (int, float), where, what)),
                std=float(_need(d, "std", (int, float), where, what)),
                tta_flip_axes=list(d.get("tta_flip_axes", [])), roi_size=d.get("roi_size"),
                overlap=float(d.get("overlap", 0.5)), blend=str(d.get("blend", "gaussian")),
                window_batch=int(d.get("window_batch", 4)), postprocess=list(d.get("postprocess", [])),
                min_size=int(d.get("min_size", 0)), steps=[list(x) for x in d.get("steps", [])],
                target_spacing=d.get("target_spacing"), orientation=d.get("orientation"),
                antialias_3d=d.get("antialias_3d", False), channel_files=d.get("channel_files", 1))
        p.validate(where)
        return p

    def validate(self, where: Path | None = None) -> None:
        def bad(msg: str):
            raise BundleError(f"preprocessing spec: {msg}", path=where, fix="re-export the bundle with `meddx export`")

        if self.task not in ("classify", "segment"):
            bad(f"unknown task {self.task!r}")
        if self.spatial_dims not in (2, 3):
            bad(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if self.channels < 1:
            bad(f"channels must be >= 1, got {self.channels}")
        if self.size is None and not (self.task == "segment" and self.spatial_dims == 3):
            bad("size is missing (only 3D segmentation runs on the native grid)")
        if self.size is not None and (len(self.size) != self.spatial_dims or min(self.size) < 1):
            bad(f"size {self.size} does not fit {self.spatial_dims}D")
        if self.intensity not in INTENSITY_SCHEMES:
            bad(f"unknown intensity scheme {self.intensity!r}")
        if not self.std > 0:
            bad(f"std must be > 0, got {self.std}")
        if any(a not in range(self.spatial_dims) for a in self.tta_flip_axes):
            bad(f"tta_flip_axes {self.tta_flip_axes} outside 0..{self.spatial_dims - 1}")
        if self.roi_size is not None and len(self.roi_size) != self.spatial_dims:
            bad(f"roi_size {self.roi_size} does not fit {self.spatial_dims}D")
        if not 0 <= self.overlap < 1 or self.blend not in ("gaussian", "constant"):
            bad(f"sliding window overlap {self.overlap} / blend {self.blend!r} invalid")
        if any(op not in SEG_POSTPROCESS for op in self.postprocess):
            bad(f"unknown post-processing in {self.postprocess}")
        if any(not (isinstance(st, (list, tuple)) and len(st) == 2 and isinstance(st[1], dict)) for st in self.steps):
            bad("steps must be [name, params] pairs")
        if self.target_spacing is not None and (len(self.target_spacing) != 3 or min(self.target_spacing) <= 0):
            bad(f"target_spacing {self.target_spacing} must be 3 positive numbers")
        if self.orientation is not None:
            from meddx.transforms.orientation import valid_axcodes

            try:
                if self.spatial_dims != 3 or not isinstance(self.orientation, list):
                    raise ValueError(f"is for 3D volumes, a list of three letters, got {self.orientation!r}")
                self.orientation = list(valid_axcodes(self.orientation))  # "ras" reads as RAS
            except ValueError as e:
                bad(f"orientation {e}")
        if not isinstance(self.antialias_3d, bool):
            bad(f"antialias_3d must be true or false, got {self.antialias_3d!r}")
        if type(self.channel_files) is not int or self.channel_files < 1:
            bad(f"channel_files must be a whole number >= 1, got {self.channel_files!r}")


@dataclass
class Labels:
    """Output names: ``class_names`` for classifiers; ``label_values`` (the mask values
    written) and ``label_names`` (background first) for segmenters."""

    task: str
    class_names: list[str] = field(default_factory=list)
    label_values: list[int] = field(default_factory=list)
    label_names: list[str] = field(default_factory=list)

    @property
    def n_outputs(self) -> int:
        return len(self.class_names) if self.task == "classify" else len(self.label_values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: Path) -> "Labels":
        task = _need(d, "task", str, where, "labels")
        lab = cls(task=task, class_names=list(d.get("class_names", [])), label_values=list(d.get("label_values", [])),
                  label_names=list(d.get("label_names", [])))
        if lab.n_outputs < 2 or (task == "segment" and len(lab.label_names) != len(lab.label_values)):
            raise BundleError("labels.json names fewer than two outputs, or values and names differ in number",
                              path=where, fix="re-export the bundle with `meddx export`")
        return lab


@dataclass
class Thresholds:
    """Calibration and operating point.

    Attributes:
        temperature: ``T`` of temperature scaling, calibrated p = softmax(log p / T).
        temperature_source: where ``T`` came from (``calibration.json`` of the run, or why it is 1).
        threshold: validation-chosen threshold on the (uncalibrated) probability of
            ``positive_class``; None for multi-class and segmentation.
        threshold_rule: how it was chosen (``youden``, ``sensitivity``, ``argmax``).
        positive_class: binary: the positive class; the threshold, and the 0.5 cut of the plain
            prediction, apply to its probability. None for multi-class and segmentation.
        calibrated_threshold: the same operating point on the calibrated probability.
    """

    temperature: float = 1.0
    temperature_source: str = ""
    threshold: float | None = None
    threshold_rule: str = "argmax"
    positive_class: str | None = None
    calibrated_threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: Path) -> "Thresholds":
        t = float(_need(d, "temperature", (int, float), where, "thresholds"))
        if not t > 0:
            raise BundleError(f"temperature must be > 0, got {t}", path=where, fix="re-export the bundle")
        thr = d.get("threshold")
        return cls(temperature=t, temperature_source=str(d.get("temperature_source", "")),
                   threshold=None if thr is None else float(thr), threshold_rule=str(d.get("threshold_rule", "argmax")),
                   positive_class=d.get("positive_class"), calibrated_threshold=d.get("calibrated_threshold"))


def read_json(path: Path, what: str) -> dict:
    if not path.exists():
        raise BundleError(f"the bundle has no {path.name} ({what})", path=path.parent,
                          fix="copy the whole bundle folder, or re-export it with `meddx export`")
    try:
        d = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{what} is not valid JSON ({e.__class__.__name__})", path=path,
                          fix="re-export the bundle with `meddx export`") from None
    if not isinstance(d, dict):
        raise BundleError(f"{what} must be a JSON object", path=path, fix="re-export the bundle with `meddx export`")
    return d
