"""``meddx explain RUN FILE``: a heatmap per input, as an overlay PNG (and NIfTI for volumes).

The heatmap is computed at the model's input size and mapped back to the input's own
geometry: 2D maps are resized to the image's size; volumes are resized to their voxel
grid and written as NIfTI with the input's affine (NIfTI) or the series geometry
(DICOM, LPS converted to NIfTI's RAS), so they overlay the original in any viewer.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from meddx.errors import MeddxError, RunError
from meddx.explain.cam import METHODS, SEG_METHODS, Explainer
from meddx.explain.scores import resize_map
from meddx.io.base import ImageData, ras_affine
from meddx.io.formats import output_stems



@dataclass
class Explanation:
    """One heatmap: at the input's geometry (``heatmap``) and at the model's input size (``heatmap_input``)."""

    heatmap: np.ndarray
    heatmap_input: np.ndarray
    method: str
    class_idx: int
    class_name: str
    layer: str | None


def class_names(plan) -> list[str]:
    return list(plan.segment.label_names) if plan.task in ("segment", "detect") else list(plan.data.class_names)


def model_input(plan, img: ImageData, where: str) -> torch.Tensor:
    """The standardised model input ``(1, C, *S)`` for one decoded image (as ``predict`` builds it).

    3D segmenters keep the native grid, zero-padded (= the training mean) up to the network's divisor.
    """
    if plan.task in ("segment", "detect"):
        from meddx.data.segprep import prepare_image

        return torch.from_numpy(prepare_image(plan, img, where))[None]
    from meddx.data.preprocess import PreprocessSpec, prepare, standardise

    spec = PreprocessSpec.from_plan(plan.data)
    return standardise(torch.from_numpy(prepare(img, spec, where))[None], spec)


def native_shape(plan, img: ImageData) -> tuple[int, ...]:
    """The input's spatial shape as the model sees it (singleton axes squeezed as ``prepare`` does)."""
    shape = list(img.spatial_shape)
    while len(shape) > plan.data.spatial_dims and 1 in shape:
        shape.remove(1)
    return tuple(shape[-plan.data.spatial_dims:])


def _pad_to(x: torch.Tensor, divisor: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    spatial = tuple(x.shape[2:])
    target = [int(np.ceil(s / divisor) * divisor) for s in spatial]
    pad = []
    for s, t in reversed(list(zip(spatial, target))):
        pad += [0, t - s]
    return (torch.nn.functional.pad(x, pad) if any(pad) else x), spatial


def explain_image(plan, explainer: Explainer, img: ImageData, where: str, method: str = "gradcam",
                  class_idx: int | None = None) -> Explanation:
    """Heatmap of one decoded image, mapped back to its geometry (a volume is explained in the plan's
    orientation, R20, and its heatmap turned back to the input's own axes)."""
    from meddx.transforms.orientation import turned

    seen, ro = turned(img, plan.data.orientation)
    x = model_input(plan, seen, where)
    crop = None
    divisor = getattr(explainer.model, "divisor", None)
    if explainer.segmenter and divisor and any(s % divisor for s in x.shape[2:]):
        x, crop = _pad_to(x, int(divisor))
    names = class_names(plan)
    c = explainer.default_class(x) if class_idx is None else int(class_idx)
    h = explainer.explain(x, method, c)
    if crop is not None:
        h = h[tuple(slice(0, s) for s in crop)]
    heat = resize_map(h, native_shape(plan, seen))
    return Explanation(heatmap=ro.back(heat) if ro else heat, heatmap_input=h, method=method,
                       class_idx=c, class_name=names[c], layer=explainer._layer)


def _display(img: ImageData, plan) -> np.ndarray:
    """Grey (H, W) or RGB (H, W, 3) in [0, 1] of a 2D image, 1st-99th percentile window."""
    a = img.array.astype(np.float32)
    a = a.reshape((a.shape[0],) + native_shape(plan, img))
    lo, hi = np.percentile(a, [1, 99])
    a = np.clip((a - lo) / (hi - lo + 1e-8), 0, 1)
    if a.shape[0] == 3 and a.ndim == 3:
        return np.moveaxis(a, 0, -1)
    return a.mean(0)


def overlay_png(img: ImageData, plan, heatmap: np.ndarray, title: str, path: Path) -> Path:
    """Image in grey (or colour) with the heatmap on top (jet, 45 % opacity) and a colour bar.

    Volumes show the slice (first axis) that holds the most heatmap mass.
    """
    from meddx.evaluation.plots import _figure, _finish

    a = _display(img, plan)
    h = heatmap
    if h.ndim == 3:
        z = int(np.argmax(h.reshape(h.shape[0], -1).sum(1)))
        a = a[z] if a.ndim == 3 and a.shape[-1] != 3 else a[z]
        h = h[z]
        title = f"{title} (slice {z})"
    hh, ww = h.shape
    fig = _figure((max(3.0, 4.6 * ww / max(hh, ww)), max(3.0, 4.0 * hh / max(hh, ww))))
    ax = fig.subplots()
    ax.imshow(a, cmap="gray" if a.ndim == 2 else None, interpolation="nearest")
    im = ax.imshow(h, cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    _finish(fig, path)
    return path


def heatmap_rgba_png(heatmap: np.ndarray) -> bytes:
    """The heatmap alone as an RGBA PNG (jet colours, alpha rising with the value): the viewer's overlay layer.

    Volumes give the slice (first axis) with the most heatmap mass.
    """
    import io

    from matplotlib import colormaps
    from PIL import Image

    h = heatmap
    if h.ndim == 3:
        h = h[int(np.argmax(h.reshape(h.shape[0], -1).sum(1)))]
    rgba = colormaps["jet"](np.clip(h, 0, 1))
    rgba[..., 3] = np.clip(0.25 + 0.75 * h, 0, 1)
    buf = io.BytesIO()
    Image.fromarray((rgba * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_heatmap_nifti(heatmap: np.ndarray, img: ImageData, path: Path) -> Path:
    """A 3D heatmap as float32 NIfTI in the input's geometry."""
    import nibabel as nib

    affine = ras_affine(img)
    if affine is None:
        affine = np.diag([*(img.spacing or (1.0, 1.0, 1.0)), 1.0])
    tmp = path.with_name(path.name + ".tmp.nii.gz")
    nib.save(nib.Nifti1Image(heatmap.astype(np.float32), affine), str(tmp))
    os.replace(tmp, path)
    return path



def resolve_methods(method: str, segmenter: bool) -> list[str]:
    allowed = SEG_METHODS if segmenter else METHODS
    methods = list(allowed) if method == "all" else [m.strip() for m in method.split(",") if m.strip()]
    bad = [m for m in methods if m not in allowed]
    if bad or not methods:
        raise MeddxError(f"unknown or unsupported explanation method '{method}'"
                         + (" for a segmentation run" if segmenter else ""),
                         fix=f"use one of: {', '.join(allowed)}, or all")
    return methods


def resolve_class(plan, name: str | None) -> int | None:
    if name is None:
        return None
    names = class_names(plan)
    if name in names:
        return names.index(name)
    # quoted: a name may hold a comma ('normal, benign'), which a bare list would split into two classes
    raise MeddxError(f"unknown class '{name}'", fix=f"use one of: {', '.join(repr(n) for n in names)}")


def explain_paths(run_dir: str | Path, target: str | Path, out_dir: str | Path | None = None, *,
                  method: str = "gradcam", class_name: str | None = None, progress: bool = True) -> list[dict]:
    """Explain every input under ``target``; overlays (and NIfTI heatmaps) go to ``out_dir``.

    Returns:
        One row per input and method: file, method, class, overlay path, NIfTI path (volumes) or None.
    """
    from meddx.evaluation.inputs import inputs_and_out_dir
    from meddx.evaluation.predict import read_each
    from meddx.evaluation.seg_predict import all_or_nothing
    from meddx.training.run import load_run, progress_callback

    run_dir = Path(run_dir)
    plan, model = load_run(run_dir)
    if plan.task == "detect":
        raise RunError("explanations cover classification and segmentation runs", path=run_dir,
                       fix="explain a classifier or a segmenter run")
    explainer = Explainer(model)
    methods = resolve_methods(method, explainer.segmenter)
    c = resolve_class(plan, class_name)
    out_dir, paths, created = inputs_and_out_dir(target, plan.data.spatial_dims, out_dir, run_dir / "explanations",
                                                 plan.data.channel_files)
    rows, empty = [], []
    stems = output_stems(paths, plan.data.channel_files)  # a/x.png and b/x.png must not write one overlay
    cb, stop = progress_callback(progress, len(paths) * len(methods), "explaining")
    # an unreadable third file removes the first two's overlays, as `meddx predict` does with its masks
    with all_or_nothing(out_dir, created, stop):
        for p, img in read_each(paths, run_dir, plan):  # an unreadable file's error names the others too
            for m in methods:
                e = explain_image(plan, explainer, img, str(p), m, c)
                if not np.any(e.heatmap > 0):
                    empty.append(f"{p.name} ({m}, class '{e.class_name}')")
                base = out_dir / f"{stems[p]}_{m}"
                title = f"{p.name}: {m}, class '{e.class_name}'"
                opath = overlay_png(img, plan, e.heatmap, title, base.with_name(base.name + "_overlay.png"))
                npath = None
                if e.heatmap.ndim == 3:
                    npath = write_heatmap_nifti(e.heatmap, img, base.with_name(base.name + "_heatmap.nii.gz"))
                rows.append({"file": str(p), "method": m, "class": e.class_name, "layer": e.layer,
                             "overlay": str(opath), "heatmap_nifti": str(npath) if npath else None})
                if cb:
                    cb(1)
    if empty:  # an overlay without colour reads as "looked nowhere"; it means nothing raised the class score
        shown = ", ".join(empty[:3]) + (f" and {len(empty) - 3} other(s)" if len(empty) > 3 else "")
        print(f"warning: {len(empty)} heatmap(s) are zero everywhere: {shown}: this method found nothing that "
              "raises that class's score (e.g. a class the model never predicts there); try --method occlusion "
              "or another --class", file=sys.stderr)
    return rows
