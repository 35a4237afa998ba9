"""Which files ``meddx predict`` / ``explain`` take from a folder, and the names their outputs get."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from meddx_testutils import disc_images, write_png

from meddx.evaluation.inputs import collect_inputs


def test_output_stems_keep_unique_names_and_separate_clashing_ones(tmp_path):
    from meddx.io.formats import output_stems

    unique = [tmp_path / "a" / "x.png", tmp_path / "b" / "scan.nii.gz"]
    assert output_stems(unique) == {unique[0]: "x", unique[1]: "scan"}  # as before when nothing clashes
    # DICOM slices are named 000000.dcm in every series; one folder may hold x.png beside x.jpg
    paths = [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", tmp_path / "a" / "x.jpg",
             tmp_path / "s1" / "000000.dcm", tmp_path / "s2" / "000000.dcm", tmp_path / "a" / "y.png"]
    stems = output_stems(paths)
    assert len(set(stems.values())) == len(paths)
    assert stems[paths[1]] == "b_x" and stems[paths[3]] == "s1_000000" and stems[paths[5]] == "y"
    # joined folder names that still clash are numbered
    odd = [tmp_path / "a_b" / "x.png", tmp_path / "a" / "b_x.png", tmp_path / "a" / "b" / "x.png"]
    assert len(set(output_stems(odd).values())) == 3


def test_a_folder_of_images_with_masks_beside_them_predicts_the_images_only(tmp_path, capsys):
    img = np.full((16, 16), 90, np.uint8)
    for name in ("x.png", "x_mask.png", "y.jpg", "y_mask.png", "y_mask_1.png", "z_seg.png"):
        write_png(tmp_path / name, img)
    found = collect_inputs(tmp_path, 2)
    # z_seg.png has no image z.* beside it, so it is an input like any other
    assert [p.name for p in found] == ["x.png", "y.jpg", "z_seg.png"]
    assert "skipped 3 mask file(s)" in capsys.readouterr().err
    assert collect_inputs(tmp_path / "x_mask.png", 2) == [tmp_path / "x_mask.png"]  # named on its own: taken


def test_segmenting_a_folder_writes_one_mask_per_input_even_when_names_repeat(seg_run, tmp_path):
    """Before: a/x.png and b/x.png both wrote x_mask.png (the second silently replaced the first, and
    predictions.csv pointed both rows at it), and a blank NAME_mask.png beside its image stopped the
    call as a constant image."""
    from meddx.evaluation.seg_predict import predict_seg_paths

    (im0, _), (im1, m1) = disc_images(2, 48, seed=3)
    write_png(tmp_path / "in" / "a" / "x.png", im0)
    write_png(tmp_path / "in" / "a" / "x_mask.png", np.zeros_like(m1))  # a case without a lesion
    write_png(tmp_path / "in" / "b" / "x.png", im1)
    write_png(tmp_path / "in" / "b" / "x_mask.png", m1)
    rows = predict_seg_paths(seg_run, tmp_path / "in", tmp_path / "out", progress=False)
    assert [Path(r["file"]).relative_to(tmp_path / "in").as_posix() for r in rows] == ["a/x.png", "b/x.png"]
    masks = [Path(r["mask"]) for r in rows]
    assert len(set(masks)) == 2 and all(m.is_file() for m in masks)
    assert len({Path(r["overlay"]) for r in rows}) == 2
    with open(tmp_path / "out" / "predictions.csv", newline="") as f:
        assert [r["mask"] for r in csv.DictReader(f)] == [str(m) for m in masks]


def test_explaining_a_folder_keeps_one_overlay_per_input(seg_run, tmp_path):
    from meddx.explain.run_explain import explain_paths

    (im0, _), (im1, _) = disc_images(2, 48, seed=4)
    write_png(tmp_path / "in" / "p1" / "slice.png", im0)
    write_png(tmp_path / "in" / "p2" / "slice.png", im1)
    rows = explain_paths(seg_run, tmp_path / "in", tmp_path / "out", progress=False)
    assert len({r["overlay"] for r in rows}) == 2 and all(Path(r["overlay"]).is_file() for r in rows)


def test_box_manifest_labels_are_not_said_to_come_from_dataset_json(tmp_path):
    from meddx.data.detsources import open_det_dataset
    from meddx.data.fingerprint import compute_fingerprint

    rng = np.random.default_rng(0)
    for i in range(3):
        write_png(tmp_path / f"im{i}.png", rng.integers(0, 255, (32, 40), dtype=np.uint8))
    (tmp_path / "b.csv").write_text("image,x,y,w,h,label\nim0.png,4,2,10,6,Mass\nim1.png,0,0,4,4,Mass\n"
                                    "im2.png,20,20,8,8,Nodule\n")
    sg = compute_fingerprint(open_det_dataset(tmp_path / "b.csv"))["segmentation"]
    assert "dataset.json" not in sg["labels_from"] and "box manifest" in sg["labels_from"]


@pytest.mark.parametrize("name", ["labels.csv", "cases.TSV", "breastmnist.npz"])
def test_a_dataset_given_to_predict_points_at_evaluate(tmp_path, name):
    """`meddx predict RUN manifest.csv` said "unknown image format"."""
    from meddx.errors import InputError

    (tmp_path / name).write_text("path,label\n")
    with pytest.raises(InputError, match=f"this is a dataset, not an image.*meddx evaluate RUN {name}"):
        collect_inputs(tmp_path / name, 2)


def test_a_volume_of_unknown_spacing_gets_no_mm3(real_data, tmp_path, monkeypatch):
    """A multi-frame DICOM without frame positions or pixel spacing is read with 1.0 in place of each unknown
    spacing (flagged in its metadata): predict reported voxels x 1.0 as mm^3, and evaluation its distances
    as mm."""
    import torch

    from meddx.evaluation import seg_infer
    from meddx.evaluation.seg_predict import predict_seg_paths
    from meddx.io import read_image
    from meddx.io.base import known_spacing
    from meddx.planning.plan import Plan
    from meddx.training import run as run_mod

    src = real_data / "dicom" / "pydicom_data_selection" / "OBXXXX1A_rle_2frame.dcm"
    img = read_image(src)
    assert img.meta["frame_spacing_unknown"] and img.spacing == (1.0, 1.0, 1.0) and known_spacing(img) is None
    plan = Plan.model_validate(dict(
        task="segment", data=dict(source="x", kind="folder", class_names=["all"], spatial_dims=3, channels=3,
                                  input_size=[8, 8, 8]),
        segment=dict(label_values=[0, 1], label_names=["background", "lesion"], choose_postprocess=False)))
    lab = np.zeros(img.spatial_shape, np.uint8)
    lab[:, 10:20, 10:30] = 1
    monkeypatch.setattr(run_mod, "load_run", lambda run_dir: (plan, torch.nn.Identity()))
    monkeypatch.setattr(seg_infer, "predict_case", lambda *a, **k: lab.copy())
    row = predict_seg_paths(tmp_path / "run", src, tmp_path / "p", progress=False)[0]
    assert row["n_lesion"] == 400 and row["volume_mm3_lesion"] is None


def test_a_2d_nifti_gets_a_mask_of_its_own_shape_and_affine(tmp_path, monkeypatch):
    """A 2D NIfTI (X, Y) got an (X, Y, 1) mask; a one-slice volume (X, Y, 1) keeps its third axis. The
    mask's header keeps the input's spatial unit (the affine is in it): it was left unknown, so a mask
    of a volume in microns read back as millimetres."""
    import nibabel as nib
    import torch

    from meddx.evaluation import seg_infer
    from meddx.evaluation.seg_predict import predict_seg_paths
    from meddx.planning.plan import Plan
    from meddx.training import run as run_mod

    plan = Plan.model_validate(dict(
        task="segment", data=dict(source="x", kind="folder", class_names=["all"], spatial_dims=2, channels=1,
                                  input_size=[16, 16]),
        segment=dict(label_values=[0, 255], label_names=["background", "lesion"], choose_postprocess=False)))
    rng = np.random.default_rng(0)
    for name, shape, aff in (("flat", (21, 13), np.diag([0.5, 0.7, 1.0, 1.0])),
                             ("slice", (21, 13, 1), np.diag([-0.5, 0.7, 2.0, 1.0]))):
        im = nib.Nifti1Image(rng.normal(size=shape).astype(np.float32), aff)
        im.header.set_xyzt_units(xyz="micron" if name == "flat" else "mm")
        nib.save(im, str(tmp_path / f"{name}.nii.gz"))
    lab = np.zeros((21, 13), np.uint8)
    lab[3:9, 2:7] = 1
    monkeypatch.setattr(run_mod, "load_run", lambda run_dir: (plan, torch.nn.Identity()))
    monkeypatch.setattr(seg_infer, "predict_case", lambda *a, **k: lab.copy())
    rows = predict_seg_paths(tmp_path / "run", tmp_path, tmp_path / "p", progress=False)
    for r in rows:
        src, m = nib.load(r["file"]), nib.load(r["mask"])
        assert m.shape == src.shape and np.allclose(m.affine, src.affine)
        assert m.header.get_xyzt_units()[0] == src.header.get_xyzt_units()[0]
        assert np.asarray(m.dataobj).reshape(21, 13).tolist() == (lab * 255).tolist()
        if "slice" in r["file"]:
            assert r["area_mm2_lesion"] == pytest.approx(30 * 0.35)


def test_a_volume_not_oriented_as_the_training_volumes_is_named_in_a_warning(tmp_path, monkeypatch, capsys):
    """A run planned before R20 does not reorient its inputs: a volume stored LPS given to a run trained
    on RAS volumes reaches the network mirrored on two axes, so predict says so (once, naming it)
    instead of answering silently. A run whose plan reorients (data.orientation) says nothing."""
    import json

    import nibabel as nib
    import torch

    from meddx.evaluation import seg_infer
    from meddx.evaluation.seg_predict import predict_seg_paths
    from meddx.planning.plan import Plan
    from meddx.training import run as run_mod

    plan = Plan.model_validate(dict(
        task="segment", data=dict(source="x", kind="folder", class_names=["all"], spatial_dims=3, channels=1,
                                  input_size=[8, 8, 8]),
        segment=dict(label_values=[0, 1], label_names=["background", "lesion"], choose_postprocess=False)))
    run = tmp_path / "run"
    run.mkdir()
    (run / "fingerprint.json").write_text(json.dumps({"axcodes": ["R", "A", "S"]}))
    vol = np.random.default_rng(0).normal(size=(9, 10, 11)).astype(np.float32)
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "in" / "ras.nii.gz"))
    nib.save(nib.Nifti1Image(vol, np.diag([-1.0, -1.0, 1.0, 1.0])), str(tmp_path / "in" / "lps.nii.gz"))
    monkeypatch.setattr(run_mod, "load_run", lambda run_dir: (plan, torch.nn.Identity()))
    monkeypatch.setattr(seg_infer, "predict_case", lambda *a, **k: np.zeros((9, 10, 11), np.uint8))
    predict_seg_paths(run, tmp_path / "in", tmp_path / "p", progress=False)
    err = capsys.readouterr().err
    assert "1 input(s) are not oriented as the training volumes (RAS): lps.nii.gz (LPS)" in err
    assert "ras.nii.gz" not in err
    predict_seg_paths(run, tmp_path / "in" / "ras.nii.gz", tmp_path / "p2", progress=False)
    assert "oriented" not in capsys.readouterr().err
    (run / "fingerprint.json").write_text(json.dumps({"axcodes": None}))   # mixed orientations in training
    predict_seg_paths(run, tmp_path / "in", tmp_path / "p3", progress=False)
    assert "oriented" not in capsys.readouterr().err
    (run / "fingerprint.json").write_text(json.dumps({"axcodes": ["R", "A", "S"]}))
    plan.data.orientation = ["R", "A", "S"]  # R20: lps.nii.gz is turned to RAS before the network
    predict_seg_paths(run, tmp_path / "in", tmp_path / "p4", progress=False)
    assert "oriented" not in capsys.readouterr().err


def test_files_numbered_like_channels_are_separate_inputs_unless_the_run_trained_on_channel_files(tmp_path):
    """slice_0000.png, slice_0001.png ... are three images to an RGB classifier (channels 3, one file per
    case): grouping them by their numbers would stack three slices into one fake colour image. Only a
    run trained on nnU-Net channel files (data.channel_files > 1) takes x_0000 with its x_0001."""
    from deploy_testutils import make_run

    from meddx.evaluation.predict import predict_paths
    from meddx.io import read_input
    from meddx.io.formats import output_stems

    for k in range(3):
        img = np.full((20, 20), 40 * (k + 1), np.uint8)
        img[5:9, 5:9] = 250
        write_png(tmp_path / "in" / f"slice_{k:04d}.png", img)
    rows = predict_paths(make_run(tmp_path / "rgb", channels=3), tmp_path / "in", progress=False)
    assert [Path(r["file"]).name for r in rows] == ["slice_0000.png", "slice_0001.png", "slice_0002.png"]
    files = collect_inputs(tmp_path / "in", 2, channel_files=3)
    assert files == [tmp_path / "in" / "slice_0000.png"] and output_stems(files, 3) == {files[0]: "slice"}
    assert read_input(files[0], 3).channels == 3 and read_input(files[0], 1).channels == 1
