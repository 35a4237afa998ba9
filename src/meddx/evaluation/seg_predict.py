"""``meddx predict`` for segmentation runs: a mask in the input's own geometry and an overlay.

* NIfTI input -> ``NAME_mask.nii.gz`` with the input's affine (values = the dataset's
  mask values, e.g. 0/1/2 or 0/255);
* DICOM series or 3D DICOM -> ``NAME_mask.nii.gz`` whose affine is the series' geometry
  (LPS converted to NIfTI's RAS), axes in (slice, row, column) order;
* 2D images (PNG, JPEG, TIFF, 2D DICOM) -> ``NAME_mask.png`` at the input's size;
* always ``NAME_overlay.png`` (the slice with most foreground for volumes), and one CSV
  row per input: mask and overlay paths, pixels/voxels per class, volume in mm^3 when the
  spacing is known.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import numpy as np

from meddx.errors import RunError
from meddx.io.base import ImageData, known_spacing, ras_affine
from meddx.io.formats import output_stems




def write_mask(mask: np.ndarray, img: ImageData, out_base: Path) -> Path:
    """Write ``mask`` (values, spatial shape of ``img``) in the input's geometry."""
    import nibabel as nib

    fmt = img.meta.get("format", "")
    if mask.ndim == 3 or fmt == "nifti":
        if fmt == "nifti":
            affine = np.asarray(img.meta["affine"], float)
            # the input's own spatial shape: a 2D NIfTI (X, Y) stays 2D, a one-slice volume keeps its Z = 1
            data = mask.reshape(tuple(img.meta.get("shape", (*mask.shape, 1))[:3]))
        else:
            affine = ras_affine(img)
            if affine is None:
                affine = np.diag([*(img.spacing or (1.0, 1.0, 1.0)), 1.0])
            data = mask
        path = out_base.with_name(out_base.name + "_mask.nii.gz")
        dtype = np.uint8 if mask.max(initial=0) <= 255 else np.uint16
        tmp = path.with_name(path.name + ".tmp.nii.gz")
        out = nib.Nifti1Image(data.astype(dtype), affine)
        unit = img.meta.get("spatial_unit") if fmt == "nifti" else "mm"  # the unit the affine is in
        if unit in ("meter", "mm", "micron"):
            out.header.set_xyzt_units(xyz=unit)
        nib.save(out, str(tmp))
        tmp.replace(path)
        return path
    from PIL import Image

    path = out_base.with_name(out_base.name + "_mask.png")
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(mask.astype(np.uint8 if mask.max(initial=0) <= 255 else np.uint16)).save(tmp, format="PNG")
    tmp.replace(path)
    return path


@contextlib.contextmanager
def all_or_nothing(out_dir: Path, created: bool, stop_progress):
    """On a failure part-way (an unreadable third file, Ctrl-C), remove what this call added: the
    folder if this call made it, else the files that were not there before (an earlier call's
    outputs stay): no predictions folder that looks finished but is not. The progress bar is
    stopped either way."""
    before = set() if created else set(out_dir.iterdir())
    try:
        yield
    except BaseException:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        else:
            for f in set(out_dir.iterdir()) - before:
                if f.is_file():
                    f.unlink(missing_ok=True)
        raise
    finally:
        stop_progress()


def predict_seg_paths(run_dir: str | Path, target: str | Path, out_dir: str | Path | None = None, *,
                      progress: bool = True) -> list[dict]:
    """Segment every input under ``target``; masks and overlays go to ``out_dir``."""
    from meddx.evaluation.inputs import inputs_and_out_dir
    from meddx.evaluation.predict import read_each, write_predictions_file
    from meddx.evaluation.seg_report import _display_plane, overlay_png
    from meddx.training.run import load_run, progress_callback
    from meddx.evaluation.seg_infer import predict_case
    from meddx.transforms.postprocess import postprocess

    run_dir = Path(run_dir)
    plan, model = load_run(run_dir)
    if plan.task == "detect":
        return predict_det_paths(run_dir, plan, model, target, out_dir, progress=progress)
    if plan.task != "segment":
        raise RunError("not a segmentation run", path=run_dir, fix="use a run trained with --task segment")
    sg = plan.segment
    values = np.asarray(sg.label_values)
    out_dir, paths, created = inputs_and_out_dir(target, plan.data.spatial_dims, out_dir, run_dir / "predictions",
                                                 plan.data.channel_files)
    rows = []
    stems = output_stems(paths, plan.data.channel_files)  # a/x.png and b/x.png must not write one x_mask.png
    cb, stop = progress_callback(progress and len(paths) > 5, len(paths), "segmenting")
    with all_or_nothing(out_dir, created, stop):
        for p, img in read_each(paths, run_dir, plan):  # an unreadable file's error names the others too
            idx = postprocess(predict_case(model, plan, img, str(p)), sg.postprocess, len(values), sg.min_size)
            mask = values[idx]
            base = out_dir / stems[p]
            mpath = write_mask(mask, img, base)
            a, _, pl = _display_plane(img.array, idx, idx)
            opath = base.with_name(base.name + "_overlay.png")
            overlay_png(a, None, pl, title=f"{p.name}: predicted mask (red)", path=opath)
            row = {"file": str(p), "mask": str(mpath), "overlay": str(opath)}
            sp = known_spacing(img)
            vox = float(np.prod(sp)) if sp is not None and len(sp) == idx.ndim else None
            for c, name in enumerate(sg.label_names[1:], start=1):
                n = int((idx == c).sum())
                row[f"n_{name}"] = n
                row[f"volume_mm3_{name}" if idx.ndim == 3 else f"area_mm2_{name}"] = (
                    round(n * vox, 3) if vox is not None else None)
            rows.append(row)
            if cb:
                cb(1)
        write_predictions_file(rows, out_dir / "predictions.csv")
    return rows


def predict_det_paths(run_dir: Path, plan, model, target, out_dir, *, progress: bool = True) -> list[dict]:
    """Detection runs: one CSV row per box (pixel coordinates of the input) and an overlay per image."""
    from meddx.evaluation.detection import boxes_from_segmentation
    from meddx.evaluation.inputs import inputs_and_out_dir
    from meddx.evaluation.predict import read_each, write_predictions_file
    from meddx.evaluation.seg_infer import predict_boxes, predict_case
    from meddx.evaluation.seg_report import boxes_png
    from meddx.training.run import progress_callback
    from meddx.transforms.postprocess import postprocess

    sg = plan.segment
    names = sg.label_names
    out_dir, paths, created = inputs_and_out_dir(target, plan.data.spatial_dims, out_dir, run_dir / "predictions",
                                                 plan.data.channel_files)
    rows = []
    stems = output_stems(paths, plan.data.channel_files)
    cb, stop = progress_callback(progress and len(paths) > 5, len(paths), "detecting")
    with all_or_nothing(out_dir, created, stop):
        for p, img in read_each(paths, run_dir, plan):  # an unreadable file's error names the others too
            if sg.detector == "heatmap":
                boxes = predict_boxes(model, plan, img, str(p))
            else:
                lab, probs = predict_case(model, plan, img, str(p), with_probs=True)
                # post-processed as in evaluation (seg_report), so the boxes are the ones that were scored
                lab = postprocess(lab, sg.postprocess, len(sg.label_values), sg.min_size)
                boxes = boxes_from_segmentation(lab, probs.astype(np.float32), len(sg.label_values), sg.det_threshold)
            opath = out_dir / f"{stems[p]}_overlay.png"
            boxes_png(img.array, [], boxes, title=f"{p.name}: detections", path=opath)
            for b in sorted(boxes, key=lambda b: -b.score):
                rows.append({"file": str(p), "finding": names[b.cls], "score": round(float(b.score), 4),
                             "x1": b.lo[1], "y1": b.lo[0], "x2": b.hi[1], "y2": b.hi[0], "overlay": str(opath)})
            if not boxes:
                rows.append({"file": str(p), "finding": "", "score": None, "x1": None, "y1": None, "x2": None,
                             "y2": None, "overlay": str(opath)})
            if cb:
                cb(1)
        write_predictions_file(rows, out_dir / "predictions.csv")
    return rows
