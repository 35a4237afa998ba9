"""Load a bundle and predict from image files with ONNX Runtime: no torch anywhere.

``load(bundle_dir)`` verifies the manifest and every file's SHA-256, reads the specs and
opens the ONNX session; ``Bundle.predict(path)`` reads a PNG/JPEG/TIFF, DICOM (file or
series folder) or NIfTI file with ``meddx.io`` (numpy, Pillow, pydicom, nibabel),
preprocesses it with numpy (``meddx.runtime.preprocess``) and returns a ``Prediction``
(classifiers) or a ``SegPrediction`` (segmenters).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meddx.runtime.spec import (CARD, CHECKED_FILES, FORMAT, FORMAT_VERSION, LABELS, MANIFEST, MODEL, PREPROCESS,
                                READ_VERSIONS, THRESHOLDS, BundleError, Labels, Preprocessing, Thresholds, read_json,
                                sha256_file)

MIN_OPSET = 13  # Conv/Gemm/Resize semantics the exporter relies on; older models are not produced by meddx
REEXPORT = "re-export the bundle with `meddx export RUN --out DIR` (or `meddx compress`)"


def softmax(z: np.ndarray, axis: int = 1) -> np.ndarray:
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated probabilities (``meddx.evaluation.calibration.apply_temperature``, torch-free)."""
    from meddx.evaluation.calibration import apply_temperature as _apply

    return _apply(proba, temperature)


@dataclass
class Prediction:
    """A classifier's answer for one image.

    Attributes:
        file: the input.
        label: the most probable class (argmax; a binary tie at 0.5 is the positive class, as evaluated).
        probabilities: model probability per class (after test-time flips, if the run used them).
        confidence: calibrated probability of ``label`` (temperature-scaled).
        calibrated: calibrated probability per class.
        label_at_threshold: binary tasks: the class at the validation-chosen threshold.
        threshold: that threshold, on the uncalibrated probability of ``positive_class``.
    """

    file: str
    label: str
    probabilities: dict[str, float]
    confidence: float
    calibrated: dict[str, float]
    label_at_threshold: str | None = None
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SegPrediction:
    """A segmenter's answer for one image or volume.

    Attributes:
        file: the input.
        mask: mask values (``labels.label_values``) in the input's own geometry.
        counts: pixels/voxels per foreground class.
        volumes_mm: mm^3 (3D) or mm^2 (2D) per foreground class when the spacing is known.
        image: the decoded input (geometry for writing the mask: ``write_mask``).
    """

    file: str
    mask: np.ndarray
    counts: dict[str, int]
    volumes_mm: dict[str, float | None]
    image: Any = field(repr=False, default=None)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "shape": list(self.mask.shape), "counts": self.counts, "volumes_mm": self.volumes_mm}

    def write_mask(self, out_base: str | Path) -> Path:
        """Write the mask beside ``out_base`` in the input's geometry (NIfTI keeps its affine, PNG its size)."""
        from meddx.evaluation.seg_predict import write_mask

        return write_mask(self.mask, self.image, Path(out_base))


class Bundle:
    """An opened bundle. Use ``meddx.runtime.load``.

    Attributes:
        path, manifest, preprocessing, labels, thresholds, session (onnxruntime).
    """

    def __init__(self, path: Path, manifest: dict, preprocessing: Preprocessing, labels: Labels,
                 thresholds: Thresholds, session):
        self.path, self.manifest = path, manifest
        self.preprocessing, self.labels, self.thresholds = preprocessing, labels, thresholds
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name

    @property
    def task(self) -> str:
        return self.preprocessing.task

    # -- the network ------------------------------------------------------------------------
    def logits(self, x: np.ndarray) -> np.ndarray:
        """Raw model output for a standardised batch ``(N, C, *size)``."""
        return self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(x, np.float32)})[0]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, K)`` for a standardised batch, averaged over the spec's flips
        (as ``meddx.training.engine.predict_proba``)."""
        flips = self.preprocessing.tta_flip_axes
        p = softmax(self.logits(x))
        for ax in flips:
            p = p + softmax(self.logits(np.flip(x, axis=2 + ax)))
        return p / (1 + len(flips))

    def segment_proba(self, x: np.ndarray) -> np.ndarray:
        """Softmax probabilities ``(K, *S)`` for one standardised image ``(C, *S)`` (sliding window
        in 3D; flips averaged), as ``meddx.training.seg_engine.segment_probs``."""
        from meddx.runtime.sliding import sliding_window

        sp = self.preprocessing

        def run(inp: np.ndarray) -> np.ndarray:
            if sp.roi_size:
                return sliding_window(inp, sp.roi_size, self.logits, overlap=sp.overlap, mode=sp.blend,
                                      batch_size=sp.window_batch)
            return self.logits(inp[None])[0]

        acc = None
        for ax in [None, *sp.tta_flip_axes]:
            inp = x if ax is None else np.ascontiguousarray(np.flip(x, axis=1 + ax))
            p = softmax(run(inp)[None])[0]
            p = p if ax is None else np.flip(p, axis=1 + ax)
            acc = p if acc is None else acc + p
        return acc / (1 + len(sp.tta_flip_axes))

    # -- files ------------------------------------------------------------------------------
    def prepare(self, path: str | Path):
        """Read and preprocess one file: ``(decoded image, standardised input (C, *size))``."""
        from meddx.io import read_input
        from meddx.runtime.preprocess import prepare

        img = read_input(path, self.preprocessing.channel_files)  # nnU-Net channel files: the case's others too
        return img, prepare(img, self.preprocessing, str(path))

    def predict(self, path: str | Path) -> Prediction | SegPrediction:
        """Predict one image file (or DICOM series folder)."""
        img, x = self.prepare(path)
        if self.task == "segment":
            return self._segment(str(path), img, x)
        return self._classify(str(path), self.predict_proba(x[None])[0])

    def _classify(self, file: str, p: np.ndarray) -> Prediction:
        names = self.labels.class_names
        if p.shape[0] != len(names):
            raise BundleError(f"the model gives {p.shape[0]} outputs but labels.json names {len(names)} classes",
                              path=self.path, fix=REEXPORT)
        t = self.thresholds
        cal = apply_temperature(p[None], t.temperature)[0]
        from meddx.evaluation.metrics import predict_labels  # torch-free
        from meddx.evaluation.thresholds import stored_positive  # torch-free

        pos = stored_positive(names, {"positive_class": t.positive_class})  # bundles before it was named: class 1
        k = int(predict_labels(p[None], positive=pos)[0])  # argmax, or 0.5 on p(positive), as evaluated
        at_thr = None
        if t.threshold is not None and len(names) == 2:
            at_thr = names[int(predict_labels(p[None], t.threshold, pos)[0])]
        return Prediction(file=file, label=names[k], probabilities={n: float(v) for n, v in zip(names, p)},
                          confidence=float(cal[k]), calibrated={n: float(v) for n, v in zip(names, cal)},
                          label_at_threshold=at_thr, threshold=t.threshold)

    def _segment(self, file: str, img, x: np.ndarray) -> SegPrediction:
        from meddx.runtime.postprocess import postprocess
        from meddx.runtime.resize import resize
        from meddx.transforms.orientation import reorientation

        sp, lab = self.preprocessing, self.labels
        p = self.segment_proba(x)
        ro = reorientation(img, sp.orientation)  # x was made in the spec's orientation (prepare)
        native = tuple(img.spatial_shape[-sp.spatial_dims:])
        native = ro.shape(native) if ro else native
        if tuple(p.shape[1:]) != native:  # as seg_infer.predict_case: plain (bi/tri)linear back to the image
            p = resize(p, native, antialias_when_shrinking=False)
        if ro is not None:  # back to the input's own axes
            p = ro.back(p)
        idx = postprocess(p.argmax(0).astype(np.uint8), sp.postprocess, len(lab.label_values), sp.min_size)
        mask = np.asarray(lab.label_values)[idx]
        vox = float(np.prod(img.spacing)) if img.spacing is not None and len(img.spacing) == idx.ndim else None
        counts = {n: int((idx == c).sum()) for c, n in enumerate(lab.label_names) if c > 0}
        return SegPrediction(file=file, mask=mask, counts=counts,
                             volumes_mm={n: (round(v * vox, 3) if vox is not None else None) for n, v in counts.items()},
                             image=img)


def verify(bundle_dir: str | Path) -> dict:
    """Check the manifest and the SHA-256 of every file; return the manifest."""
    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError("no such bundle folder", path=root, fix="pass the folder written by `meddx export`")
    man = read_json(root / MANIFEST, "the bundle manifest")
    if man.get("format") != FORMAT:
        raise BundleError(f"not a meddx bundle manifest (format {man.get('format')!r})", path=root / MANIFEST,
                          fix=REEXPORT)
    version = man.get("version")
    if type(version) is not int or version not in READ_VERSIONS:  # a damaged manifest's "2a" or null: one line
        newer = type(version) is int and version > FORMAT_VERSION
        readable = ", ".join(map(str, READ_VERSIONS[:-1])) + f" or {READ_VERSIONS[-1]}"
        raise BundleError(f"bundle format version {version!r} is not {readable}, the versions this runtime reads",
                          path=root / MANIFEST, fix="install the newer meddx that wrote it on this machine, or "
                          "re-export with this meddx version" if newer else "re-export with this meddx version")
    sums = man.get("files")
    if not isinstance(sums, dict):
        raise BundleError("the manifest lists no file checksums", path=root / MANIFEST, fix=REEXPORT)
    for name in CHECKED_FILES:
        f = root / name
        if name not in sums:
            raise BundleError(f"the manifest has no checksum for {name}", path=root / MANIFEST, fix=REEXPORT)
        if not f.is_file():
            raise BundleError(f"the bundle is missing {name}", path=f,
                              fix="copy the whole bundle folder, or " + REEXPORT)
        if sha256_file(f) != sums[name]:
            raise BundleError(f"{name} does not match its SHA-256 in {MANIFEST} (changed or damaged since export)",
                              path=f, fix="restore the file from the original bundle, or " + REEXPORT)
    return man


def _check_opset(man: dict, root: Path) -> None:
    model = man.get("model")
    opset = model.get("opset") if isinstance(model, dict) else None
    if not isinstance(opset, int):
        raise BundleError("the manifest does not state the model's ONNX opset", path=root / MANIFEST, fix=REEXPORT)
    if opset < MIN_OPSET:
        raise BundleError(f"the model uses ONNX opset {opset}; this runtime needs {MIN_OPSET} or newer",
                          path=root / MODEL, fix=REEXPORT)


def _session(root: Path, threads: int | None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(root / MODEL), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        import re

        text = str(e)
        m = re.search(r"[Oo]pset (\d+)", text)
        if m or "opset" in text.lower():
            which = f"ONNX opset {m.group(1)}" if m else "this model's ONNX opset"
            raise BundleError(f"onnxruntime {ort.__version__} does not support {which}", path=root / MODEL,
                              fix="upgrade onnxruntime, or re-export with `meddx export --opset 17`") from None
        msg = text.splitlines()[0].split(" failed:")[-1][:200] if text else type(e).__name__
        raise BundleError(f"onnxruntime cannot load the model ({msg})", path=root / MODEL, fix=REEXPORT) from None


def load(bundle_dir: str | Path, *, threads: int | None = None) -> Bundle:
    """Open a bundle written by ``meddx export`` or ``meddx compress``.

    Args:
        bundle_dir: the bundle folder.
        threads: ONNX Runtime intra-op threads (default: its own choice, the physical cores).

    Raises:
        BundleError: missing or damaged files, a checksum mismatch, an unsupported format
            version or opset, or specs that contradict the model.
    """
    root = Path(bundle_dir)
    man = verify(root)
    _check_opset(man, root)
    pre = Preprocessing.from_dict(read_json(root / PREPROCESS, "preprocessing spec"), root / PREPROCESS)
    labels = Labels.from_dict(read_json(root / LABELS, "labels"), root / LABELS)
    thr = Thresholds.from_dict(read_json(root / THRESHOLDS, "thresholds"), root / THRESHOLDS)
    if labels.task != pre.task or man.get("task") != pre.task:
        raise BundleError(f"task differs between {MANIFEST}, {PREPROCESS} and {LABELS}", path=root, fix=REEXPORT)
    sess = _session(root, threads)
    shape = sess.get_inputs()[0].shape
    if len(shape) != pre.spatial_dims + 2 or (isinstance(shape[1], int) and shape[1] != pre.channels):
        raise BundleError(f"the model's input {shape} does not fit {pre.channels}-channel {pre.spatial_dims}D images",
                          path=root / MODEL, fix=REEXPORT)
    return Bundle(root, man, pre, labels, thr, sess)


def write_bundle(out_dir: str | Path, model_path: str | Path, *, preprocessing: Preprocessing, labels: Labels,
                 thresholds: Thresholds, card: str, manifest: dict, overwrite: bool = False,
                 extra_files: dict[str, str | Path] | None = None) -> Path:
    """Write a complete bundle atomically: a temporary folder beside ``out_dir``, renamed when whole.

    ``manifest`` holds the facts to record (task, model: opset, input, precision, ...); the
    format, version and checksums are added here. ``extra_files`` (name -> path) are copied
    in too (``meddx compress`` adds ``student.pt`` and ``compression.json``); the runtime
    does not need them and they are not checksummed.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise BundleError("the output folder exists and is not empty", path=out,
                              fix="choose a new --out, or add --overwrite")
    preprocessing.validate()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shutil.copyfile(model_path, tmp / MODEL)
        (tmp / PREPROCESS).write_text(json.dumps(preprocessing.to_dict(), indent=2))
        (tmp / LABELS).write_text(json.dumps(labels.to_dict(), indent=2))
        (tmp / THRESHOLDS).write_text(json.dumps(thresholds.to_dict(), indent=2))
        (tmp / CARD).write_text(card)
        for name, src in (extra_files or {}).items():
            shutil.copyfile(src, tmp / name)
        man = {"format": FORMAT, "version": preprocessing.format_version, **manifest,
               "files": {n: sha256_file(tmp / n) for n in CHECKED_FILES}}
        man.setdefault("model", {})["file_bytes"] = (tmp / MODEL).stat().st_size
        (tmp / MANIFEST).write_text(json.dumps(man, indent=2, default=str))
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
