"""Segmentation runs end to end on generated data: training, resume, outputs, predict geometry, CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from meddx_testutils import write_seg_pairs, write_seg_volumes

from meddx.evaluation.seg_predict import predict_seg_paths
from meddx.planning.plan import Plan
from meddx.training.seg_run import train_seg_run


@pytest.fixture(scope="module")
def run2d(tmp_path_factory):
    root = write_seg_pairs(tmp_path_factory.mktemp("d2") / "discs", n=40, size=48)
    out = tmp_path_factory.mktemp("r2") / "run"
    train_seg_run(str(root), out, overrides={"train.epochs": 12, "data.input_size": [48, 48]}, progress=False,
                  log=lambda *a: None)
    return root, out


def test_2d_run_learns_discs_and_writes_every_output(run2d):
    root, out = run2d
    for f in ("plan.yaml", "fingerprint.json", "split.csv", "log.jsonl", "metrics.json", "per_case.csv",
              "report.html", "training_curves.png", "dice_per_case.png", "checkpoints/best.pt"):
        assert (out / f).exists(), f
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    m = json.loads((out / "metrics.json").read_text())
    dice = m["summary"]["mean"]["dice"]
    assert dice["value"] > 0.8, dice  # bright discs on noise are easy
    assert dice["ci_low"] <= dice["value"] <= dice["ci_high"]
    assert "both masks empty" in m["empty_rule"] and len(list((out / "worst_cases").glob("*.png"))) >= 1
    plan = Plan.load(out / "plan.yaml")
    assert plan.task == "segment" and any(d.rule == "S10 post-processing" for d in plan.decisions)
    assert "Worst case 1" in (out / "report.html").read_text()


def test_2d_predict_writes_mask_at_input_size_and_overlay(run2d, tmp_path):
    root, out = run2d
    from PIL import Image

    big = tmp_path / "in" / "big.png"
    big.parent.mkdir()
    Image.open(root / "case000.png").resize((96, 72)).save(big)
    rows = predict_seg_paths(out, big.parent, tmp_path / "pred", progress=False)
    mask = np.array(Image.open(rows[0]["mask"]))
    assert mask.shape == (72, 96) and set(np.unique(mask)) <= {0, 255}
    assert (tmp_path / "pred" / "big_overlay.png").exists() and (tmp_path / "pred" / "predictions.csv").exists()


def test_a_failed_predict_leaves_no_predictions_folder(run2d, tmp_path):
    """The second file is damaged: one-line error, and neither the folder this call would have created
    nor the first file's mask is left; in a folder that existed, only the files this call added go."""
    from meddx.errors import MeddxError

    root, out = run2d
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(root / "case000.png", src / "a.png")
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(MeddxError, match="b.png"):
        predict_seg_paths(out, src, tmp_path / "pred", progress=False)
    assert not (tmp_path / "pred").exists()
    keep = tmp_path / "kept"  # an earlier call's outputs for a.png, and a file of the user's
    predict_seg_paths(out, src / "a.png", keep, progress=False)
    (keep / "mine.txt").write_text("x")
    earlier = sorted(f.name for f in keep.iterdir())
    assert "a_mask.png" in earlier and "predictions.csv" in earlier
    (src / "c.png").write_bytes((src / "a.png").read_bytes())  # c.png is written before b.png fails
    (src / "b.png").rename(src / "d.png")
    with pytest.raises(MeddxError, match="d.png"):
        predict_seg_paths(out, src, keep, progress=False)
    assert sorted(f.name for f in keep.iterdir()) == earlier


def test_3d_patch_run_predicts_nifti_in_input_geometry(tmp_path):
    import nibabel as nib

    root = write_seg_volumes(tmp_path / "vols", n=12)
    out = tmp_path / "run3d"
    train_seg_run(str(root), out, overrides={"train.epochs": 3, "segment.patch_size": [16, 16, 16]},
                  progress=False, log=lambda *a: None)
    m = json.loads((out / "metrics.json").read_text())
    assert m["distance_units"] == "mm" and set(m["summary"]["per_class"]) == {"label_1", "label_2"}
    src = root / "images" / "vol00.nii.gz"
    rows = predict_seg_paths(out, src, tmp_path / "p", progress=False)
    a, b = nib.load(rows[0]["mask"]), nib.load(str(src))
    assert a.shape == b.shape and np.allclose(a.affine, b.affine)
    assert set(np.unique(np.asarray(a.dataobj))) <= {0, 1, 2}
    assert rows[0]["volume_mm3_label_1"] == pytest.approx(rows[0]["n_label_1"] * 1.5)


def test_a_volume_stored_another_way_gets_the_same_mask_heatmap_and_bundle_answer(tmp_path):
    """R20: the run trains in its volumes' orientation (RAS) and reorients every input to it, then
    writes the mask (and explain's heatmap) back on the input's own axes. vol00 stored PIL-transposed
    must get exactly vol00's answers, turned the same way; without R20 it reached the network
    mirrored and transposed. The exported bundle's runtime does the same."""
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, ornt_transform

    from meddx.deploy.export import export_run
    from meddx.explain.run_explain import explain_paths
    from meddx.runtime import load

    root = write_seg_volumes(tmp_path / "vols", n=10)
    out = tmp_path / "run3d"
    train_seg_run(str(root), out, overrides={"train.epochs": 2, "segment.patch_size": [16, 16, 16]},
                  progress=False, log=lambda *a: None)
    plan = Plan.load(out / "plan.yaml")
    assert plan.data.orientation == ["R", "A", "S"]
    assert any(d.rule == "R20 orientation" and d.value == ["R", "A", "S"] for d in plan.decisions)
    to_pil = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt("PIL"))
    inp = tmp_path / "in"
    inp.mkdir()
    src = nib.load(str(root / "images" / "vol00.nii.gz"))
    nib.save(src, str(inp / "ras.nii.gz"))
    nib.save(src.as_reoriented(to_pil), str(inp / "pil.nii.gz"))

    def pil_of(path):  # a RAS output turned as pil.nii.gz was
        return np.asarray(nib.load(str(path)).as_reoriented(to_pil).dataobj)

    rows = {r["file"].split("/")[-1]: r for r in predict_seg_paths(out, inp, tmp_path / "p", progress=False)}
    ras_mask, pil_mask = nib.load(rows["ras.nii.gz"]["mask"]), nib.load(rows["pil.nii.gz"]["mask"])
    assert pil_mask.shape == nib.load(str(inp / "pil.nii.gz")).shape != ras_mask.shape
    np.testing.assert_allclose(pil_mask.affine, nib.load(str(inp / "pil.nii.gz")).affine)
    assert (pil_mask.get_fdata() > 0).any() and np.array_equal(np.asarray(pil_mask.dataobj),
                                                              pil_of(rows["ras.nii.gz"]["mask"]))
    heat = {r["file"].split("/")[-1]: r["heatmap_nifti"]
            for r in explain_paths(out, inp, tmp_path / "e", method="gradcam", progress=False)}
    np.testing.assert_allclose(np.asarray(nib.load(heat["pil.nii.gz"]).dataobj), pil_of(heat["ras.nii.gz"]),
                               atol=1e-5)
    bundle = load(export_run(out, tmp_path / "bundle"))
    rt = {name: bundle.predict(inp / name).write_mask(tmp_path / f"rt_{name[:3]}") for name in rows}
    assert np.array_equal(np.asarray(nib.load(str(rt["pil.nii.gz"])).dataobj), pil_of(rt["ras.nii.gz"]))
    assert np.mean(np.asarray(nib.load(str(rt["ras.nii.gz"])).dataobj) == np.asarray(ras_mask.dataobj)) > 0.999


def test_ema_segmenter_runs_the_batchnorm_refresh_every_epoch(tmp_path, monkeypatch):
    """EMA in a segmentation run: before each validation the averaged weights go through the BatchNorm
    re-estimation with the segmentation batches and step (3D patches). The CPU plan's MONAI U-Net
    normalises per instance, so there is nothing to re-estimate and the run must still finish."""
    import meddx.training.loop as loop

    calls = []
    real = loop.refresh_batchnorm

    def spy(model, batches, step, **kw):
        calls.append(sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()))
        return real(model, batches, step, **kw)

    monkeypatch.setattr(loop, "refresh_batchnorm", spy)
    root = write_seg_volumes(tmp_path / "vols", n=8)
    out = tmp_path / "run"
    train_seg_run(str(root), out, overrides={"train.epochs": 2, "segment.patch_size": [16, 16, 16],
                                             "train.ema_decay": 0.9}, progress=False, log=lambda *a: None)
    assert calls == [0, 0]  # once per epoch; instance norm keeps no running statistics
    assert json.loads((out / "metrics.json").read_text())["summary"]["per_class"]


def test_resume_continues_a_killed_segmentation_run(tmp_path):
    root = write_seg_pairs(tmp_path / "d", n=16, size=32)
    full = tmp_path / "full"
    train_seg_run(str(root), full, overrides={"train.epochs": 4, "data.input_size": [32, 32]}, progress=False,
                  log=lambda *a: None)
    part = tmp_path / "part"
    calls = {"n": 0}

    def stop_after_two(rec):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    import meddx.training.loop as se

    orig = se.run_epochs

    def patched(*a, **kw):
        kw["on_epoch"] = stop_after_two
        return orig(*a, **kw)

    se.run_epochs = patched
    try:
        with pytest.raises(KeyboardInterrupt):
            train_seg_run(str(root), part, overrides={"train.epochs": 4, "data.input_size": [32, 32]},
                          progress=False, log=lambda *a: None)
    finally:
        se.run_epochs = orig
    assert json.loads((part / "run.json").read_text())["status"] == "interrupted"
    train_seg_run(None, part, resume=True, progress=False, log=lambda *a: None)
    a = torch.load(full / "checkpoints" / "best.pt", weights_only=True)["model"]
    b = torch.load(part / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "meddx.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_evaluating_masks_outside_the_runs_labels_leaves_no_evaluation_folder(run2d, tmp_path):
    """A dataset whose masks hold 1 and 2 (the run's are 0/255) was refused after evaluations/NAME/ was made:
    an empty folder was left, and the next evaluation of a fixed copy moved to NAME-<hash>/."""
    from meddx.errors import MeddxError
    from meddx.evaluation.evaluate_run import evaluate_run
    from PIL import Image

    root, out = run2d
    other = tmp_path / "other"
    shutil.copytree(root, other)
    m = other / "case003_mask.png"
    Image.fromarray((np.asarray(Image.open(m)) > 0).astype(np.uint8) * 2).save(m)
    with pytest.raises(MeddxError, match="case003_mask.png.*outside the label set"):
        evaluate_run(out, str(other), progress=False)
    assert not (out / "evaluations" / "other").exists()
    Image.fromarray((np.asarray(Image.open(m)) > 0).astype(np.uint8) * 255).save(m)
    assert evaluate_run(out, str(other), progress=False) == out / "evaluations" / "other"


def test_cli_segment_train_evaluate_and_bad_input(tmp_path, run2d):
    root, out = run2d
    r = _cli("evaluate", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "Dice" in r.stdout and (out / "evaluations" / "test" / "metrics.json").exists()
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    (bad / "case000_mask.png").unlink()
    r = _cli("train", str(bad), "--task", "segment", "--out", str(tmp_path / "x"), "--epochs", "1")
    assert r.returncode == 2 and "case000.png" in r.stderr and "no mask" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "x").exists()
    r = _cli("inspect", str(root), "--task", "segment", "--no-progress")
    assert r.returncode == 0 and "mask labels" in r.stdout and "255=foreground" in r.stdout


def test_inspect_counts_volumes_per_orientation_and_names_the_one_training_uses(tmp_path):
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, ornt_transform

    root = write_seg_volumes(tmp_path / "vols", n=4)
    for sub in ("images", "labels"):
        f = root / sub / "vol03.nii.gz"
        nib.save(nib.load(str(f)).as_reoriented(ornt_transform(axcodes2ornt("RAS"), axcodes2ornt("LPI"))), str(f))
    r = _cli("inspect", str(root), "--task", "segment", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "RAS: 3, LPI: 1" in r.stdout and "reorient every volume to the most common, RAS" in " ".join(r.stdout.split())
    from meddx.data.fingerprint import compute_fingerprint
    from meddx.data.segsources import open_seg_dataset
    from meddx.planning.planner import make_seg_plan

    fp = compute_fingerprint(open_seg_dataset(str(root)))
    p = make_seg_plan(fp, source="x", cuda=False)
    assert fp["axcodes"] is None and p.data.orientation == ["R", "A", "S"]  # 3 of 4 agree: under 90 %
    assert p.augment.flip_axes == [0] == p.segment.tta_flip_axes  # S7: R20's left-right axis, every volume known
    # the user's orientation decides the flips too: stored as they are (null), under 90 % share one
    # orientation, so S7 trains no flips (as before R20); turned to PIL, the third axis is left-right
    off = make_seg_plan(fp, source="x", cuda=False, overrides={"data.orientation": None})
    assert off.data.orientation is None and off.augment.flip_axes == [] == off.segment.tta_flip_axes
    pil = make_seg_plan(fp, source="x", cuda=False, overrides={"data.orientation": ["P", "I", "L"]})
    assert pil.augment.flip_axes == [2] == pil.segment.tta_flip_axes
    # `meddx train --set data.orientation=null` plans with it too (it was set after S7 had chosen)
    train_seg_run(str(root), tmp_path / "run", overrides={"data.orientation": None, "train.epochs": 1,
                                                           "segment.patch_size": [16, 16, 16]},
                  progress=False, log=lambda *a: None)
    ran = Plan.load(tmp_path / "run" / "plan.yaml")
    assert ran.data.orientation is None and ran.augment.flip_axes == [] == ran.segment.tta_flip_axes
    assert sum(d.field == "data.orientation" and d.rule == "set by the user" for d in ran.decisions) == 1


def test_cli_image_size_on_3d_segmentation_sets_every_axis_and_the_patch(tmp_path):
    """--image-size N on volumes: N on all three axes, and the training patch / sliding window N^3
    (it used to write a 2-axis size into a 3D plan and stop with an error)."""
    root = write_seg_volumes(tmp_path / "vols", n=8)
    out = tmp_path / "run"
    r = _cli("train", str(root), "--task", "segment", "--out", str(out), "--epochs", "1", "--image-size", "16",
             "--no-progress")
    assert r.returncode == 0, r.stderr
    plan = Plan.load(out / "plan.yaml")
    assert plan.data.input_size == [16, 16, 16] and plan.segment.patch_size == [16, 16, 16]


def test_segmentation_kfold_ensemble_trains_members_and_predicts(tmp_path):
    from meddx.training.run import load_run
    from meddx.training.seg_run import train_seg_run
    from meddx_testutils import write_seg_pairs

    root = write_seg_pairs(tmp_path / "d", n=18, size=32)
    run = train_seg_run(str(root), tmp_path / "r", overrides={"train.epochs": 2, "ensemble.kind": "kfold",
                                                             "ensemble.members": 2}, progress=False,
                        log=lambda *a: None)
    assert (run / "members" / "1" / "checkpoints" / "best.pt").exists()
    plan, model = load_run(run)
    assert type(model).__name__ == "EnsembleModel" and len(model.members) == 2
    import json

    m = json.loads((run / "metrics.json").read_text())
    assert m["training"]["epochs_run"] == 4 and 0 <= m["summary"]["mean"]["dice"]["value"] <= 1


def test_volumes_with_different_spacings_are_resampled_and_predicted_back_on_their_own_grid(tmp_path):
    import json

    import nibabel as nib

    from meddx.data.fingerprint import compute_fingerprint
    from meddx.data.segsources import open_seg_dataset
    from meddx.planning.planner import make_seg_plan
    from meddx.training.seg_run import train_seg_run
    from meddx_testutils import write_seg_volumes

    root = write_seg_volumes(tmp_path / "v", n=10, spacings=[(1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (1.0, 1.0, 2.0)])
    fp = compute_fingerprint(open_seg_dataset(str(root)))
    assert fp["distinct_spacings"] == 2
    plan = make_seg_plan(fp, source=str(root), cuda=False)
    assert plan.data.target_spacing == [1.0, 1.0, 1.0]  # S2b: median spacing per axis
    from meddx.data.segprep import image_spec
    from meddx.io import read_image

    coarse = read_image(root / "images" / "vol02.nii.gz")
    assert image_spec(plan, coarse).size == (20, 24, 40)  # 2 mm axis resampled to 1 mm
    run = train_seg_run(str(root), tmp_path / "r", overrides={"train.epochs": 1}, progress=False,
                        log=lambda *a: None)
    out = tmp_path / "pred"
    from meddx.evaluation.seg_predict import predict_seg_paths

    predict_seg_paths(run, root / "images" / "vol02.nii.gz", out, progress=False)
    mask = nib.load(str(next(out.glob("*_mask.nii.gz"))))
    src = nib.load(str(root / "images" / "vol02.nii.gz"))
    assert mask.shape == src.shape and np.allclose(mask.affine, src.affine)  # back on the native grid
    assert json.loads((run / "metrics.json").read_text())["n_test"] >= 1


@pytest.mark.parametrize("patch", [None, [16, 16, 16]])
def test_flip_tta_in_one_batch_equals_the_mean_of_separate_passes(patch):
    from types import SimpleNamespace as NS

    from monai.inferers import sliding_window_inference

    from meddx.models import create_model
    from meddx.training.seg_engine import segment_probs

    torch.manual_seed(0)
    dims = 3 if patch else 2
    model = create_model("unet", spatial_dims=dims, in_channels=1, num_classes=3, input_size=(16,) * dims).eval()
    plan = NS(segment=NS(tta_flip_axes=[0, 1], patch_size=patch, sw_mode="gaussian", sw_overlap=0.5),
              train=NS(batch_size=2))
    img = torch.randn(1, *((20, 18, 16) if patch else (16, 16)))

    def one(x):
        with torch.no_grad():
            if patch:
                return sliding_window_inference(x, tuple(patch), 2, model, overlap=0.5, mode="gaussian",
                                                padding_mode="constant").softmax(1)
            return model(x).softmax(1)

    x = img.unsqueeze(0)
    ref = (one(x) + one(x.flip(2)).flip(2) + one(x.flip(3)).flip(3))[0] / 3
    got = segment_probs(model, img, plan)
    assert got.shape == (3, *img.shape[1:]) and torch.allclose(got, ref, atol=1e-5)
    plan.segment.tta_flip_axes = []
    assert torch.allclose(segment_probs(model, img, plan), one(x)[0], atol=1e-6)


def test_recorded_segmentation_patches_replay(tmp_path):
    """augment.record in a 3D patch run: each batch keeps its cases, each patch's corner and the
    drawn parameters; padding + crop + BatchAugment.apply rebuild the batch exactly. The timing
    probe records nothing (no stray epoch file)."""
    import torch.nn.functional as F

    from meddx.data.segprep import SegData
    from meddx.planning.plan import AugmentConfig
    from meddx.training.seg_engine import SegTrainer
    from meddx.transforms.augment import BatchAugment, load_augment_record

    root = write_seg_volumes(tmp_path / "vols", n=6)
    out = tmp_path / "run"
    train_seg_run(str(root), out, overrides={"train.epochs": 2, "segment.patch_size": [16, 16, 16],
                                             "augment.record": True}, progress=False, log=lambda *a: None)
    assert sorted(p.name for p in (out / "augment").iterdir()) == ["epoch_0001.pt", "epoch_0002.pt"]
    from meddx.planning.plan import Plan

    plan = Plan.load(out / "plan.yaml")
    plan.augment = AugmentConfig(flip_axes=[0, 1, 2], rotate_deg=10, scale=0.1, gamma=0.3, record=True)
    g = torch.Generator().manual_seed(0)
    data = SegData([torch.randn(1, 14, 20, 18, generator=g) for _ in range(5)],
                   [(torch.rand(14, 20, 18, generator=g) > 0.7).to(torch.uint8) for _ in range(5)])
    t = SegTrainer(plan, torch.nn.Conv3d(1, 3, 1), tmp_path / "t", progress=False)
    seen = list(t.batches(data, 1))
    rec = load_augment_record(tmp_path / "t" / "augment" / "epoch_0001.pt")
    aug = BatchAugment.from_config(plan.augment, 3)
    patch = plan.segment.patch_size
    for (xb, yb), b in zip(seen, rec["batches"], strict=True):
        xs, ys = [], []
        for i, start in zip(b["case_index"].tolist(), b["crop_start"].tolist()):
            pad = [max(0, p - s) for p, s in zip(patch, data.labels[i].shape)]
            spec = [v for p_ in pad[::-1] for v in (p_ // 2, p_ - p_ // 2)]
            img, lab = F.pad(data.images[i], spec), F.pad(data.labels[i], spec)
            sl = tuple(slice(s, s + p) for s, p in zip(start, patch))
            xs.append(img[(slice(None), *sl)])
            ys.append(lab[sl])
        assert torch.equal(aug.apply(torch.stack(xs), b["params"]), xb)
        assert torch.equal(aug.apply_labels(torch.stack(ys), b["params"]), yb)


def test_a_two_channel_nnunet_dataset_trains_and_predicts_cases_of_channel_files(tmp_path):
    """nnU-Net v2's multi-modal layout (imagesTr/x_0000 + x_0001, labelsTr/x): the run takes two
    channels, and predict, the exported runtime and a 4D NIfTI of the same channels agree; a case
    short of a channel file is named."""
    import nibabel as nib

    from meddx.deploy.export import export_run
    from meddx.errors import InputError
    from meddx.runtime import load

    root = write_seg_volumes(tmp_path / "Dataset003_Two", n=10, shape=(16, 20, 16))
    (root / "images").rename(root / "imagesTr")
    (root / "labels").rename(root / "labelsTr")
    for p in sorted((root / "imagesTr").iterdir()):
        img = nib.load(str(p))
        nib.save(img, str(p.with_name(p.name.replace(".nii.gz", "_0000.nii.gz"))))
        flair = 5000 - 8 * np.asarray(img.dataobj)  # another modality: other units, inverted contrast
        nib.save(nib.Nifti1Image(flair.astype(np.float32), img.affine),
                 str(p.with_name(p.name.replace(".nii.gz", "_0001.nii.gz"))))
        p.unlink()
    out = tmp_path / "run"
    train_seg_run(str(root), out, overrides={"train.epochs": 2, "segment.patch_size": [16, 16, 16]},
                  progress=False, log=lambda *a: None)
    plan = Plan.load(out / "plan.yaml")
    assert plan.data.channels == plan.data.channel_files == 2 and plan.data.intensity == "channel_zscore"
    shown = _cli("inspect", str(root), "--task", "segment", "--no-progress").stdout
    assert "2 ch: 10" in shown and "files per case" in shown
    ts = tmp_path / "imagesTs"
    ts.mkdir()
    for name in ("vol00_0000.nii.gz", "vol00_0001.nii.gz", "vol01_0000.nii.gz", "vol01_0001.nii.gz"):
        shutil.copy(root / "imagesTr" / name, ts / name)
    a, b = (nib.load(str(ts / f"vol00_000{k}.nii.gz")) for k in (0, 1))
    stacked = tmp_path / "one" / "vol00_4d.nii.gz"
    stacked.parent.mkdir()
    nib.save(nib.Nifti1Image(np.stack([a.get_fdata(), b.get_fdata()], -1).astype(np.float32), a.affine), str(stacked))

    rows = predict_seg_paths(out, ts, tmp_path / "p", progress=False)
    assert [r["file"].split("/")[-1] for r in rows] == ["vol00_0000.nii.gz", "vol01_0000.nii.gz"]
    assert sorted(p.name for p in (tmp_path / "p").glob("*_mask.nii.gz")) == ["vol00_mask.nii.gz", "vol01_mask.nii.gz"]
    four_d = predict_seg_paths(out, stacked, tmp_path / "p4", progress=False)[0]
    mask = np.asarray(nib.load(rows[0]["mask"]).dataobj)
    assert (mask > 0).any() and np.array_equal(mask, np.asarray(nib.load(four_d["mask"]).dataobj))
    from meddx.explain.run_explain import explain_paths

    heat = explain_paths(out, ts, tmp_path / "e", method="gradcam", progress=False)
    assert [r["file"].split("/")[-1] for r in heat] == ["vol00_0000.nii.gz", "vol01_0000.nii.gz"]
    assert nib.load(heat[0]["heatmap_nifti"]).shape == a.shape
    bundle = load(export_run(out, tmp_path / "bundle"))
    rt = bundle.predict(ts / "vol00_0000.nii.gz").write_mask(tmp_path / "rt")
    assert np.mean(np.asarray(nib.load(str(rt)).dataobj) == mask) > 0.999
    (ts / "vol01_0001.nii.gz").unlink()
    with pytest.raises(InputError, match=r"vol01_0000.nii.gz: the model takes 2 channel files per case.*vol01_0001.nii.gz is "
                                         r"missing.*put vol01_0001.nii.gz beside vol01_0000.nii.gz"):
        predict_seg_paths(out, ts, tmp_path / "p5", progress=False)
    assert not (tmp_path / "p5").exists()
