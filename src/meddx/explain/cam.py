"""Where the model looked: Grad-CAM, Grad-CAM++ and occlusion sensitivity, 2D and 3D.

The maps come from MONAI's ``monai.visualize`` (``GradCAM``, ``GradCAMpp``,
``OcclusionSensitivity``); this module only picks the layer, the target class and the
post-processing, so every model in the registry works without per-model code:

* classifiers hook the layer the registry names in ``model.cam_layer``;
* segmenters are explained per class *region* (Seg-Grad-CAM, Vinogradova et al. 2020):
  the score of class ``c`` is its mean logit over the pixels predicted as ``c``. A
  segmenter without a ``cam_layer`` (MONAI ``UNet``) gets its bottleneck: the last
  convolution at the coarsest resolution, found by one probing forward pass.

Two deliberate departures from MONAI's defaults: its ``default_normalizer`` maps the
largest value to 0 (it flips the map), and ``OcclusionSensitivity(activate=True)``
chooses sigmoid vs softmax from the *image's* channel count, so a grey image would get
a sigmoid of the logits. Here maps are scaled so the maximum is 1 (an all-zero map stays
zero), and occlusion uses an explicit softmax over the classes.
"""

from __future__ import annotations

import copy
import threading
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from meddx.errors import MeddxError

METHODS = ("gradcam", "gradcampp", "occlusion")
SEG_METHODS = ("gradcam", "gradcampp")


class SegRegionScore(nn.Module):
    """A segmenter seen as a classifier: score of class ``c`` = mean logit of ``c`` over its predicted region.

    The region is the argmax of the same forward pass, detached, so the gradient asks "what raised the
    evidence for this class where the model says it is". A class with an empty predicted region is
    scored over the whole image, weighted by its (detached) probability.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        if logits.ndim == x.ndim + 1:  # deep supervision heads (train mode): the full-resolution head
            logits = logits[:, 0]
        k = logits.shape[1]
        dims = tuple(range(2, logits.ndim))
        with torch.no_grad():
            region = F.one_hot(logits.argmax(1), k).movedim(-1, 1).to(logits.dtype)
            area = region.sum(dims, keepdim=True)
            region = torch.where(area > 0, region, logits.softmax(1))
            weight = region / region.sum(dims, keepdim=True).clamp(min=1e-6)
        return (logits * weight).sum(dims)


def _is_segmenter(model: nn.Module) -> bool:
    cfg = getattr(model, "model_config", None) or {}
    if cfg.get("name"):
        from meddx.models import model_task

        return model_task(cfg["name"]) == "segment"
    return getattr(model, "divisor", None) is not None


def _module_name(root: nn.Module, target: nn.Module) -> str:
    for name, mod in root.named_modules():
        if mod is target and name:
            return name
    raise MeddxError("the model's cam_layer is not one of its modules",
                     fix="set model.cam_layer to a layer name (see the model registry)")


def bottleneck_layer(model: nn.Module, x: torch.Tensor) -> str:
    """Name of the last convolution (in execution order) at the coarsest spatial resolution."""
    seen: list[tuple[int, str]] = []
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Conv3d)):
            hooks.append(mod.register_forward_hook(
                lambda m, i, o, n=name: seen.append((int(np.prod(o.shape[2:])), n))))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    if not seen:
        raise MeddxError("the model has no convolution to explain with Grad-CAM",
                         fix="set model.cam_layer in the model registry")
    smallest = min(s for s, _ in seen)
    return [n for s, n in seen if s == smallest][-1]


def _normalise(m: torch.Tensor) -> np.ndarray:
    """(*S) map -> float32 in [0, 1] with max 1 (all-zero and non-finite maps become zero)."""
    a = m.detach().float().cpu().numpy()
    a = np.where(np.isfinite(a), a, 0.0)
    a = np.clip(a, 0.0, None)
    top = float(a.max(initial=0.0))
    return (a / top).astype(np.float32) if top > 0 else np.zeros_like(a, dtype=np.float32)


def _identity(x):
    return x


class Explainer:
    """Heatmaps for one model.

    The explainer works on its own copy of the model: MONAI's hooks stay registered on the
    module they were put on, and Grad-CAM writes gradients, so predictions made with the
    original model (e.g. by the server, concurrently) are never affected. Calls are
    serialised with a lock.

    Args:
        model: a registry model (classifier or segmenter), weights loaded.
        occlusion_mask: occlusion patch size per axis as a fraction of the input size (default 1/8 in 2D,
            1/4 in 3D: about 200 occluded copies either way).
        occlusion_overlap: overlap of neighbouring occlusion patches, in [0, 1) (default 0.5 in 2D, 0.25 in 3D).
        occlusion_batch: occluded copies per forward pass.
    """

    def __init__(self, model: nn.Module, *, occlusion_mask: float | None = None,
                 occlusion_overlap: float | None = None, occlusion_batch: int = 32):
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(True)
        self.segmenter = _is_segmenter(model)
        self.scorer = SegRegionScore(self.model).eval() if self.segmenter else self.model
        self.occlusion_mask = occlusion_mask
        self.occlusion_overlap = occlusion_overlap
        self.occlusion_batch = int(occlusion_batch)
        self._cams: dict[str, object] = {}
        self._layer: str | None = None
        self._lock = threading.Lock()

    # -- layer ----------------------------------------------------------------------------
    def layer_name(self, x: torch.Tensor) -> str:
        """The hooked layer, as a name inside the scored module (``net.`` prefix for segmenters)."""
        if self._layer is None:
            layer = getattr(self.model, "cam_layer", None)
            if isinstance(layer, str) and layer:
                name = layer
            elif isinstance(layer, nn.Module):
                name = _module_name(self.model, layer)
            else:
                name = bottleneck_layer(self.model, x)
            self._layer = ("net." + name) if self.segmenter else name
        return self._layer

    def _cam(self, method: str, x: torch.Tensor):
        if method not in self._cams:
            from monai.visualize import GradCAM, GradCAMpp

            cls = GradCAM if method == "gradcam" else GradCAMpp
            self._cams[method] = cls(nn_module=self.scorer, target_layers=self.layer_name(x),
                                     postprocessing=_identity)
        return self._cams[method]

    # -- scores ---------------------------------------------------------------------------
    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(N, K)`` (segmenters: softmax of the class-region scores)."""
        return F.softmax(self.scorer(x).float(), dim=1)

    def default_class(self, x: torch.Tensor) -> int:
        """Classifier: the predicted class. Segmenter: the foreground class with the largest predicted region."""
        with torch.no_grad():
            if not self.segmenter:
                return int(self.scorer(x).argmax(1)[0])
            out = self.model(x)
            out = out[:, 0] if out.ndim == x.ndim + 1 else out
            counts = torch.bincount(out.argmax(1).flatten(), minlength=out.shape[1])
            fg = counts[1:]
            return int(fg.argmax()) + 1 if fg.numel() and int(fg.max()) > 0 else min(1, out.shape[1] - 1)

    def explain(self, x: torch.Tensor, method: str = "gradcam", class_idx: int | None = None) -> np.ndarray:
        """Heatmap ``(*S)`` in [0, 1] at the input's size, for one preprocessed image ``x`` of shape (1, C, *S).

        Args:
            x: the model input (standardised), batch of one.
            method: ``gradcam``, ``gradcampp`` or ``occlusion``.
            class_idx: class to explain (default: see ``default_class``).
        """
        if method not in METHODS:
            raise MeddxError(f"unknown explanation method '{method}'", fix=f"use one of: {', '.join(METHODS)}")
        if self.segmenter and method not in SEG_METHODS:
            raise MeddxError(f"'{method}' explains classifiers only",
                             fix=f"use {' or '.join(SEG_METHODS)} for a segmentation run")
        if x.ndim < 4 or x.shape[0] != 1:
            raise MeddxError(f"explain takes one image of shape (1, C, *S), got {tuple(x.shape)}")
        x = x.float()
        with self._lock:
            c = self.default_class(x) if class_idx is None else int(class_idx)
            if method == "occlusion":
                return self._occlusion(x, c)
            cam = self._cam(method, x)
            with torch.enable_grad():
                m = cam(x=x, class_idx=c)
            self.model.zero_grad(set_to_none=True)
            return _normalise(m[0, 0])

    def _occlusion(self, x: torch.Tensor, c: int) -> np.ndarray:
        """Drop in the class probability when a Gaussian patch around each pixel is occluded."""
        from monai.visualize import OcclusionSensitivity

        size = x.shape[2:]
        three_d = len(size) == 3
        frac = self.occlusion_mask or (0.25 if three_d else 0.125)
        overlap = self.occlusion_overlap if self.occlusion_overlap is not None else (0.25 if three_d else 0.5)
        mask = [max(3, int(round(s * frac))) | 1 for s in size]  # odd: centred on a pixel
        mask = [min(m, s) for m, s in zip(mask, size)]
        occ = OcclusionSensitivity(self.model, mask_size=mask, n_batch=self.occlusion_batch, verbose=False,
                                   mode="gaussian", overlap=overlap,
                                   activate=lambda o: F.softmax(o.float(), dim=1))
        with torch.no_grad(), warnings.catch_warnings():
            # MONAI's occlusion indexes tensors with lists, which torch warns about on every call; the
            # warning is about MONAI's code, not the user's input, and would be printed by every explain
            warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing",
                                    category=UserWarning)
            p0 = self.scores(x)[0, c]
            omap, _ = occ(x)
        return _normalise(p0 - omap[0, c].as_tensor() if hasattr(omap, "as_tensor") else p0 - omap[0, c])
