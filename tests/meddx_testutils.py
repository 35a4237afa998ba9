"""Helpers shared by test modules (conftest.py files cannot be imported by name reliably)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return Path(os.environ.get("MEDDX_DATA_DIR", REPO.parent / "shared" / "data")).resolve()


def write_png(path: Path, arr: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def lgg_manifest(real_data: Path, tmp_path: Path) -> Path:
    """LGG slices labelled by whether their FLAIR mask has tumour; grouped by patient."""
    from meddx.io import read_image

    root = real_data / "seg" / "lgg_mri_kaggle_3m_subset"
    rows = []
    for patient in sorted(p for p in root.iterdir() if p.is_dir()):
        for img in sorted(patient.glob("*.tif")):
            if img.name.endswith("_mask.tif"):
                continue
            mask = read_image(img.with_name(img.stem + "_mask.tif")).array
            rows.append((img, "tumour" if mask.max() > 0 else "none", patient.name))
    m = tmp_path / "lgg.csv"
    with open(m, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "patient_id"])
        w.writerows(rows)
    return m


def pgbm_manifest(real_data: Path, tmp_path: Path):
    """PGBM-001 DICOM slices labelled by their series (T1 post-contrast or FLAIR)."""
    series = {s.name: s for s in (real_data / "dicom" / "tcia_brain_tumor_progression_PGBM-001").iterdir()}
    rows = [(f, "T1post") for f in sorted(series["11-T1post-80644"].glob("*.dcm"))]
    rows += [(f, "FLAIR") for f in sorted(series["35623-FLAIRreg-79237"].glob("*.dcm"))]
    m = tmp_path / "dicom.csv"
    m.write_text("path,label\n" + "".join(f"{p},{y}\n" for p, y in rows))
    return m, series


def disc_images(n: int, size: int = 48, seed: int = 0, rgb: bool = False):
    """``n`` noisy images with one bright disc each, and their 0/255 masks (a learnable toy task)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        r = rng.uniform(size * 0.12, size * 0.25)
        cy, cx = rng.uniform(r + 2, size - r - 2, 2)
        m = ((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r
        img = rng.normal(60, 15, (size, size)) + 120 * m
        img = np.clip(img, 0, 255).astype(np.uint8)
        if rgb:
            img = np.stack([img] * 3, -1)
        out.append((img, (m * 255).astype(np.uint8)))
    return out


def write_seg_pairs(root: Path, n: int = 24, size: int = 48, seed: int = 0, layout: str = "siblings") -> Path:
    """A segmentation folder: ``NAME.png`` + ``NAME_mask.png`` (siblings) or images/ + masks/."""
    for i, (img, m) in enumerate(disc_images(n, size, seed)):
        if layout == "siblings":
            write_png(root / f"case{i:03d}.png", img)
            write_png(root / f"case{i:03d}_mask.png", m)
        else:
            write_png(root / "images" / f"case{i:03d}.png", img)
            write_png(root / "masks" / f"case{i:03d}.png", m)
    return root


def write_seg_volumes(root: Path, n: int = 10, shape=(20, 24, 20), seed: int = 0) -> Path:
    """NIfTI image/label pairs (images/, labels/) with two labelled blobs (values 1 and 2)."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    zz, yy, xx = np.mgrid[:shape[0], :shape[1], :shape[2]]
    aff = np.diag([1.5, 1.0, 1.0, 1.0])
    for i in range(n):
        lab = np.zeros(shape, np.uint8)
        c = rng.uniform(6, np.array(shape) - 6)
        lab[((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) <= 16] = 1
        lab[((zz - c[0]) ** 2 + (yy - c[1] - 5) ** 2 + (xx - c[2]) ** 2) <= 9] = 2
        img = rng.normal(100, 20, shape) + 150 * (lab == 1) + 300 * (lab == 2)
        nib.save(nib.Nifti1Image(img.astype(np.float32), aff), str(root / "images" / f"vol{i:02d}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, aff), str(root / "labels" / f"vol{i:02d}.nii.gz"))
    return root


def make_plan_for(n_classes: int = 2, spatial_dims: int = 2, size: int = 28):
    """A minimal classification plan for unit tests of engine pieces."""
    from meddx.planning.plan import DataConfig, Plan

    return Plan(data=DataConfig(source="t", kind="synthetic", class_names=[f"c{i}" for i in range(n_classes)],
                                spatial_dims=spatial_dims, channels=1, input_size=[size] * spatial_dims))
