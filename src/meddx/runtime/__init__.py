"""The edge runtime: load a bundle and predict from image files without PyTorch.

Needs only numpy, onnxruntime, Pillow, pydicom and nibabel (scipy only for segmentation
bundles with post-processing). Nothing here imports torch or a meddx module that does;
``tests/runtime`` proves it in a process where ``import torch`` fails.

    >>> import meddx.runtime
    >>> b = meddx.runtime.load("bundle/")
    >>> p = b.predict("chest.png")
    >>> p.label, p.probabilities, p.confidence
"""

from meddx.runtime.bundle import Bundle, Prediction, SegPrediction, load, verify, write_bundle
from meddx.runtime.spec import BundleError, Labels, Preprocessing, Thresholds

__all__ = ["Bundle", "BundleError", "Labels", "Prediction", "Preprocessing", "SegPrediction", "Thresholds", "load",
           "verify", "write_bundle"]
