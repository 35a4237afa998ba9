"""Segmentation and detection on real data (short runs): each format end to end, with a floor on quality."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from meddx.evaluation.seg_predict import predict_seg_paths
from meddx.training.seg_run import train_seg_run


def _quiet(*_a):
    return None


@pytest.mark.slow
def test_hippocampus_3d_nifti_learns_and_keeps_geometry(real_data, tmp_path):
    root = real_data / "seg" / "msd_hippocampus_udacity"
    names = sorted(p.name for p in (root / "images").iterdir())[:48]
    man = tmp_path / "h.csv"
    with open(man, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mask", "split"])
        for i, n in enumerate(names):
            w.writerow([root / "images" / n, root / "labels" / n, "test" if i % 6 == 0 else "train"])
    out = tmp_path / "run"
    train_seg_run(str(man), out, overrides={"train.epochs": 15}, progress=False, log=_quiet)
    m = json.loads((out / "metrics.json").read_text())
    assert m["distance_units"] == "mm" and m["n_test"] == 8
    assert m["summary"]["mean"]["dice"]["value"] > 0.6, m["summary"]["mean"]["dice"]
    src = root / "images" / names[0]
    rows = predict_seg_paths(out, src, tmp_path / "pred", progress=False)
    a, b = nib.load(rows[0]["mask"]), nib.load(str(root / "labels" / names[0]))
    assert a.shape == b.shape and np.allclose(a.affine, b.affine)


@pytest.mark.slow
def test_dicom_series_with_mask_series_trains(real_data, tmp_path):
    """One series pair is too little to learn from; this proves DICOM series + mask series run end to end."""
    root = real_data / "dicom" / "tcia_brain_tumor_progression_PGBM-001"
    man = tmp_path / "d.csv"
    rows = [(root / s, root / "5388-MaskTumor-63335") for s in ("11-T1post-80644", "35623-FLAIRreg-79237",
                                                                "37908-T2reg-21119")]
    man.write_text("image,mask,split\n" + "".join(f"{a},{b},{s}\n" for (a, b), s in zip(rows, ("train", "val",
                                                                                                "test"))))
    out = tmp_path / "run"
    train_seg_run(str(man), out, overrides={"train.epochs": 1, "segment.patch_size": [24, 96, 96],
                                            "train.batch_size": 2, "segment.sw_overlap": 0.0,
                                            "segment.choose_postprocess": False}, progress=False, log=_quiet)
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_test"] == 1 and m["distance_units"] == "mm"
    res = predict_seg_paths(out, root / "35623-FLAIRreg-79237", tmp_path / "p", progress=False)
    img = nib.load(res[0]["mask"])
    assert img.shape == (24, 320, 260)
    from meddx.io.base import LPS_TO_RAS
    from meddx.io import read_image

    lps = np.asarray(read_image(root / "35623-FLAIRreg-79237").meta["affine"])
    assert np.allclose(img.affine, LPS_TO_RAS @ lps, atol=1e-4)  # the oblique geometry survives


@pytest.mark.slow
def test_totalsegmentator_ct_sliding_window_in_its_own_geometry(real_data, tmp_path):
    """Abdominal CT, 41 labelled structures (TotalSegmentator ids up to 117), 3 mm: one volume is too
    little to learn from; this proves the 41-label CT runs through patch training and Gaussian
    sliding-window inference (many windows) and comes back in the input's own grid, affine and label ids."""
    root = real_data / "seg" / "totalsegmentator_example_abdomen_ct"
    ct, seg = root / "example_ct_sm.nii.gz", root / "example_seg.nii.gz"
    ids = sorted(int(v) for v in np.unique(np.asarray(nib.load(str(seg)).dataobj)))
    assert len(ids) == 42 and ids[-1] == 117  # background + 41 structures
    man = tmp_path / "t.csv"
    rows = []
    for split in ("train", "val", "test"):  # the same volume under three names: one case per split
        for src, tag in ((ct, "ct"), (seg, "seg")):
            link = tmp_path / f"{split}_{tag}.nii.gz"
            link.symlink_to(src)
        rows.append(f"{tmp_path / f'{split}_ct.nii.gz'},{tmp_path / f'{split}_seg.nii.gz'},{split}\n")
    man.write_text("image,mask,split\n" + "".join(rows))
    out = tmp_path / "run"
    train_seg_run(str(man), out, overrides={"train.epochs": 1, "segment.patch_size": [48, 48, 16],
                                            "train.batch_size": 2, "segment.sw_overlap": 0.25,
                                            "segment.choose_postprocess": False}, progress=False, log=_quiet)
    from meddx.planning.plan import Plan

    plan = Plan.load(out / "plan.yaml")
    assert plan.segment.label_values == ids and plan.data.intensity == "clip_scale"  # S1 labels, R4 CT window
    assert plan.segment.sw_mode == "gaussian"
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_test"] == 1 and m["distance_units"] == "mm" and len(m["summary"]["per_class"]) == 41
    assert m["inference"]["n_cases"] == 1 and m["inference"]["seconds_per_case_mean"] > 0
    res = predict_seg_paths(out, ct, tmp_path / "p", progress=False)
    a, b = nib.load(res[0]["mask"]), nib.load(str(ct))
    assert a.shape == b.shape == (122, 101, 30)  # larger than the 48 x 48 x 16 window on every axis
    assert np.allclose(a.affine, b.affine)
    assert set(np.unique(np.asarray(a.dataobj)).tolist()) <= set(ids)  # written back as TotalSegmentator ids
