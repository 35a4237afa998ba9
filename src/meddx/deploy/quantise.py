"""Static int8 quantisation with ONNX Runtime (QDQ format, calibrated on training images).

Never dynamic int8: it quantises activations at run time, which makes CNNs slower on
CPU, not faster. The recipe is ONNX Runtime's own for CNNs on x86: pre-process (shape
inference and graph optimisation, which folds BatchNorm and fuses activations), then
``quantize_static`` with QDQ nodes, uint8 activations, int8 per-channel weights, and
activation ranges calibrated on preprocessed training images.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

CALIBRATION_IMAGES = 256
METHODS = ("minmax", "percentile", "entropy")


class _Reader:
    """``CalibrationDataReader`` over an array of standardised inputs, in small batches."""

    def __init__(self, name: str, x: np.ndarray, batch: int = 16):
        self.name, self.x, self.batch, self.i = name, x.astype(np.float32), batch, 0

    def get_next(self):
        if self.i >= self.x.shape[0]:
            return None
        b = self.x[self.i:self.i + self.batch]
        self.i += self.batch
        return {self.name: b}

    def rewind(self):
        self.i = 0


def quantise_static(fp32_path: str | Path, out_path: str | Path, calibration: np.ndarray, *,
                    method: str = "minmax", per_channel: bool = True, reduce_range: bool = False) -> Path:
    """Write a static int8 (QDQ) copy of an fp32 ONNX model.

    Args:
        fp32_path: the fp32 model (``meddx export`` output).
        out_path: where the int8 model goes.
        calibration: standardised training inputs ``(N, C, *size)`` (a few hundred suffice).
        method: activation-range calibration, ``minmax``, ``percentile`` (99.999 %) or ``entropy``.
        per_channel: one weight scale per output channel (keeps accuracy of narrow layers).
        reduce_range: 7-bit weights, for CPUs whose int8 dot products can saturate (no VNNI).

    Returns:
        ``out_path``.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; use {METHODS}")
    if calibration.ndim < 3 or calibration.shape[0] < 1:
        raise ValueError(f"calibration inputs must be (N, C, *size) with N >= 1, got {calibration.shape}")
    cal = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
           "entropy": CalibrationMethod.Entropy}[method]
    with tempfile.TemporaryDirectory(prefix="meddx-int8-") as td:
        pre = Path(td) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        name = onnx.load(str(pre), load_external_data=False).graph.input[0].name
        tmp = Path(str(out_path) + ".tmp")
        root = logging.getLogger()
        root.addFilter(_rank1_axis_note)
        try:
            quantize_static(str(pre), str(tmp), _Reader(name, calibration), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
                            reduce_range=reduce_range, calibrate_method=cal,
                            extra_options={"CalibPercentile": 99.999} if method == "percentile" else None)
        finally:
            root.removeFilter(_rank1_axis_note)
        tmp.replace(out_path)
    return Path(out_path)


def _rank1_axis_note(record: logging.LogRecord) -> bool:
    """Drop ONNX Runtime's "Axis 1 is out-of-range for weight ... with rank 1" (a norm layer's 1-D scale in a
    segmenter, which it quantises per tensor instead: nothing a user can act on, one line per layer)."""
    return "is out-of-range for weight" not in record.getMessage()


def calibration_sample(x_train: np.ndarray, n: int = CALIBRATION_IMAGES, seed: int = 0) -> np.ndarray:
    """A seeded random subset of the training inputs for calibration."""
    idx = np.random.default_rng(seed).permutation(x_train.shape[0])[:n]
    return np.ascontiguousarray(x_train[np.sort(idx)], dtype=np.float32)
