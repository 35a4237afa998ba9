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
