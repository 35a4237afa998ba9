"""``meddx explain`` on real runs (BUSI classifier, disc segmenter) and heatmaps in the input's geometry."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from trained_runs import busi_image


def meddx(*args):
    return subprocess.run([sys.executable, "-m", "meddx.cli", *map(str, args)], capture_output=True, text=True)


@pytest.mark.slow
def test_explain_cli_writes_an_overlay_per_method(busi, tmp_path):
    from PIL import Image

    img = busi_image("malignant", 3)
    r = meddx("explain", busi, img, "--method", "all", "--out", tmp_path / "x", "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    for m in ("gradcam", "gradcampp", "occlusion"):
        p = tmp_path / "x" / f"malignant (3)_{m}_overlay.png"
        assert p.exists() and f"{m} for" in r.stdout
        a = np.asarray(Image.open(p).convert("RGB")).astype(int)
        # the jet overlay puts saturated colours on a grey ultrasound image
        assert (np.abs(a[..., 0] - a[..., 2]) > 60).mean() > 0.05


@pytest.mark.slow
def test_explain_cli_errors_are_one_line(busi, tmp_path):
    r = meddx("explain", busi, busi_image(), "--method", "lime")
    assert r.returncode == 2 and "unknown or unsupported explanation method 'lime'" in r.stderr
    assert "Traceback" not in r.stderr
    r = meddx("explain", busi, busi_image(), "--class", "cyst")
    assert r.returncode == 2 and "unknown class 'cyst'" in r.stderr and "benign" in r.stderr
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    r = meddx("explain", busi, bad)
    assert r.returncode == 2 and "bad.png" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_explain_segmenter_region(seg_run, tmp_path):
    from meddx.explain.run_explain import explain_paths

    img = next((seg_run.parent / "discs").glob("case000.png"))
    rows = explain_paths(seg_run, img, tmp_path, method="all", progress=False)
    assert [r["method"] for r in rows] == ["gradcam", "gradcampp"]
    assert all((tmp_path / f"case000_{m}_overlay.png").exists() for m in ("gradcam", "gradcampp"))
    r = meddx("explain", seg_run, img, "--method", "occlusion")
    assert r.returncode == 2 and "segmentation run" in r.stderr


def test_volume_heatmap_is_written_in_the_input_geometry(tmp_path):
    """A 3D classifier on a NIfTI with an oblique affine: the NIfTI heatmap has the input's grid and affine."""
    import nibabel as nib

    from meddx.explain.cam import Explainer
    from meddx.explain.run_explain import explain_image, write_heatmap_nifti
    from meddx.io import read_image
    from meddx.models import create_model
    from meddx.planning.plan import DataConfig, Plan

    vol = np.zeros((20, 24, 18), np.float32)
    vol[4:9, 5:10, 6:11] = 100.0
    vol += np.random.default_rng(0).normal(0, 1, vol.shape).astype(np.float32)
    affine = np.array([[0.0, -1.2, 0.1, 30], [1.1, 0.0, 0.0, -20], [0.0, 0.05, 2.0, 5], [0, 0, 0, 1]])
    src = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, affine), str(src))
    plan = Plan(data=DataConfig(source="x", kind="folder", class_names=["a", "b"], spatial_dims=3, channels=1,
                                input_size=[16, 16, 16], intensity="image_zscore"))
    torch.manual_seed(0)
    model = create_model("small_cnn", spatial_dims=3, in_channels=1, num_classes=2, input_size=(16, 16, 16)).eval()
    img = read_image(src)
    e = explain_image(plan, Explainer(model), img, str(src), "gradcam", class_idx=1)
    assert e.heatmap.shape == (20, 24, 18) and e.heatmap_input.shape == (16, 16, 16)
    out = write_heatmap_nifti(e.heatmap, img, tmp_path / "h.nii.gz")
    back = nib.load(str(out))
    assert back.shape == (20, 24, 18) and np.allclose(back.affine, affine, atol=1e-5)
    assert np.allclose(np.asarray(back.dataobj), e.heatmap, atol=1e-6)


def test_an_unreadable_file_in_a_folder_leaves_no_overlays_behind(tiny_folder, tmp_path):
    """explain wrote the overlays of the good files before the damaged one and exited 2, leaving a folder
    that looked finished; now it removes what it added, as `meddx predict` does (an earlier call's stay)."""
    from meddx.errors import CorruptFileError
    from meddx.explain.run_explain import explain_paths
    from meddx.training.run import train_run

    run = train_run(str(tiny_folder), tmp_path / "run", overrides={"train.epochs": 1, "evaluate.n_boot": 20},
                    progress=False, log=lambda *_: None)
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = sorted((tiny_folder / "lesion").iterdir())[:2]
    for p in good:
        (inputs / p.name).write_bytes(p.read_bytes())
    (inputs / "zz_damaged.png").write_bytes(good[0].read_bytes()[:60])
    out = tmp_path / "x"
    with pytest.raises(CorruptFileError, match="zz_damaged.png"):
        explain_paths(run, inputs, out, progress=False)
    assert not out.exists()
    explain_paths(run, good[0], out, progress=False)
    before = sorted(out.iterdir())
    with pytest.raises(CorruptFileError, match="zz_damaged.png"):
        explain_paths(run, inputs, out, progress=False)
    assert sorted(out.iterdir()) == before


@pytest.mark.parametrize("cmd", ["explain", "serve"])
def test_help(cmd):
    r = meddx(cmd, "--help")
    assert r.returncode == 0 and "Usage" in r.stdout and ("--method" in r.stdout or "--api-key" in r.stdout)


def test_an_unknown_class_lists_the_classes_quoted():
    """BreastMNIST's classes are 'malignant' and 'normal, benign': the fix read "use one of: malignant, normal,
    benign", three names, and `--class normal` as it suggests is refused again."""
    from types import SimpleNamespace

    from meddx.errors import MeddxError
    from meddx.explain.run_explain import resolve_class

    plan = SimpleNamespace(task="classify", data=SimpleNamespace(class_names=["malignant", "normal, benign"]))
    assert resolve_class(plan, "normal, benign") == 1
    with pytest.raises(MeddxError) as e:
        resolve_class(plan, "Malignant")
    assert "use one of: 'malignant', 'normal, benign'" in str(e.value)


def test_a_heatmap_that_is_zero_everywhere_is_named_in_a_warning(tiny_folder, tmp_path, monkeypatch, capsys):
    """A class with no positive evidence (a PCA head's other class, in the audit) gave an overlay without colour
    and no word; the overlay is still written, and a warning says what an empty map means."""
    from pathlib import Path

    import meddx.explain.run_explain as rx
    from meddx.training.run import train_run

    run = train_run(str(tiny_folder), tmp_path / "run", overrides={"train.epochs": 1, "evaluate.n_boot": 20},
                    progress=False, log=lambda *_: None)
    image = sorted((tiny_folder / "lesion").iterdir())[0]
    rx.explain_paths(run, image, tmp_path / "a", progress=False)
    assert "zero everywhere" not in capsys.readouterr().err
    real = rx.explain_image

    def blank(*a, **k):
        e = real(*a, **k)
        e.heatmap = np.zeros_like(e.heatmap)
        return e

    monkeypatch.setattr(rx, "explain_image", blank)
    rows = rx.explain_paths(run, image, tmp_path / "b", progress=False)
    err = capsys.readouterr().err
    assert f"1 heatmap(s) are zero everywhere: {image.name} (gradcam, class '" in err and "occlusion" in err
    assert Path(rows[0]["overlay"]).exists()
