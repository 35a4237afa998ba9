"""Every user mistake: one line naming the file and the fix, exit code 2, no run left behind."""

import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from meddx_testutils import write_png


def meddx(*args):
    return subprocess.run([sys.executable, "-m", "meddx.cli", *map(str, args)], capture_output=True, text=True)


def assert_user_error(r, *needles):
    assert r.returncode == 2, r.stdout + r.stderr
    err = r.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)


def _train_fails(tmp_path, dataset, *needles):
    out = tmp_path / "run"
    r = meddx("train", dataset, "--out", out, "--epochs", "1", "--no-progress")
    assert_user_error(r, *needles)
    assert not out.exists(), "a failed run must not leave a run directory behind"


def _png_header_only(path, w, h):
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b""))


def test_truncated_png(tiny_folder, tmp_path):
    victim = sorted((tiny_folder / "normal").iterdir())[3]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    _train_fails(tmp_path, tiny_folder, victim.name)


def test_huge_image_header(tiny_folder, tmp_path):
    _png_header_only(tiny_folder / "normal" / "huge.png", 60000, 60000)
    _train_fails(tmp_path, tiny_folder, "huge.png")


def test_constant_image(tiny_folder, tmp_path):
    write_png(tiny_folder / "lesion" / "blank.png", np.zeros((28, 28), np.uint8))
    _train_fails(tmp_path, tiny_folder, "blank.png", "constant")


def test_nan_image(tiny_folder, tmp_path):
    import tifffile

    a = np.random.rand(28, 28).astype(np.float32)
    a[3, 4] = np.nan
    tifffile.imwrite(tiny_folder / "lesion" / "nan.tif", a)
    _train_fails(tmp_path, tiny_folder, "nan.tif", "NaN")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    _train_fails(tmp_path, tmp_path / "empty", "empty")


def test_single_class(tiny_folder, tmp_path):
    import shutil

    shutil.rmtree(tiny_folder / "lesion")
    _train_fails(tmp_path, tiny_folder, "one class")


def test_manifest_missing_file_and_missing_label(tiny_folder, tmp_path):
    imgs = sorted((tiny_folder / "normal").iterdir())
    m = tmp_path / "m.csv"
    m.write_text("path,label\n" + "".join(f"{p},normal\n" for p in imgs) + "nowhere/gone.png,lesion\n")
    _train_fails(tmp_path, m, "gone.png")
    m.write_text("path,label\n" + "".join(f"{p},normal\n" for p in imgs[:-1]) + f"{imgs[-1]},\n")
    _train_fails(tmp_path, m, "m.csv", "line")


def test_wrong_dimensionality_at_predict(tiny_folder, tmp_path, real_data):
    run = tmp_path / "run"
    assert meddx("train", tiny_folder, "--out", run, "--epochs", "1", "--no-progress").returncode == 0
    vol = sorted((real_data / "seg" / "msd_hippocampus_udacity" / "images").iterdir())[0]
    r = meddx("predict", run, vol)
    assert_user_error(r, vol.name, "3 spatial dimensions")


def test_undecodable_dicom_names_the_package(tmp_path, real_data):
    run_dir = tmp_path / "run"
    f = real_data / "dicom" / "pydicom_data_selection" / "JPEG-LL.dcm"
    # predicting needs a run; any 2D run will do for the decode step
    folder = tmp_path / "f"
    from meddx.data.synthetic import make_phantoms

    imgs, labels = make_phantoms(n=40, seed=0)
    for i, (im, y) in enumerate(zip(imgs, labels)):
        write_png(folder / ("b" if y else "a") / f"{i}.png", im)
    assert meddx("train", folder, "--out", run_dir, "--epochs", "1", "--no-progress").returncode == 0
    r = meddx("predict", run_dir, f)
    assert_user_error(r, "JPEG-LL.dcm", "pip install")


def test_bad_plan_file(tiny_folder, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("seed: [\n")
    r = meddx("train", "--plan", plan, "--out", tmp_path / "run", "--no-progress")
    assert_user_error(r, "plan.yaml", "YAML")


def test_not_a_run_dir(tmp_path):
    r = meddx("evaluate", tmp_path)
    assert_user_error(r, "plan.yaml")


def test_mixed_dimensionality_names_a_file(tiny_folder, tmp_path, real_data):
    import shutil

    vol = sorted((real_data / "seg" / "msd_hippocampus_udacity" / "images").iterdir())[0]
    shutil.copy(vol, tiny_folder / "lesion" / vol.name)
    _train_fails(tmp_path, tiny_folder, vol.name, "mixed 2D and 3D")


def test_segmentation_mask_off_its_image_grid(tmp_path):
    """`meddx train --task segment` with a mask whose affine differs from its image: one line, exit 2."""
    import nibabel as nib

    for d in ("images", "masks"):
        (tmp_path / "d" / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        m = np.zeros((16, 16, 8), np.uint8)
        m[4:10, 4:10, 2:6] = 1
        aff = np.diag([1.0, 1.0, 2.0, 1.0])
        nib.save(nib.Nifti1Image(rng.normal(0, 1, (16, 16, 8)).astype(np.float32), aff),
                 str(tmp_path / "d" / "images" / f"v{i}.nii.gz"))
        if i == 3:
            aff = aff.copy()
            aff[1, 3] = -4.0
        nib.save(nib.Nifti1Image(m, aff), str(tmp_path / "d" / "masks" / f"v{i}.nii.gz"))
    out = tmp_path / "run"
    r = meddx("train", tmp_path / "d", "--task", "segment", "--out", out, "--epochs", "1", "--no-progress")
    assert_user_error(r, "v3.nii.gz", "affine", "--resample-masks")
    assert not out.exists(), "a failed run must not leave a run directory behind"


def test_a_line_of_pixels_is_not_an_image(tiny_folder, tmp_path):
    write_png(tiny_folder / "lesion" / "line.png", (np.arange(28, dtype=np.uint8) * 9)[None, :])
    _train_fails(tmp_path, tiny_folder, "line.png", "a line or a point")


def test_dicom_compressed_as_video_says_convert_not_damaged(tmp_path, real_data):
    """An intact file whose transfer syntax (MPEG-2 video) no installed decoder reads: the fix is to
    convert it, not to re-export a "damaged" file."""
    import pydicom

    ds = pydicom.dcmread(real_data / "dicom" / "pydicom_data_selection" / "emri_small.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 Main Profile / Main Level
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
    f = tmp_path / "video.dcm"
    ds.save_as(f, enforce_file_format=True)
    from meddx.errors import MissingCodecError
    from meddx.io import read_image

    with pytest.raises(MissingCodecError) as ei:
        read_image(f)
    msg = str(ei.value)
    assert "video.dcm" in msg and "MPEG2" in msg and "gdcmconv" in msg and "damaged" not in msg


@pytest.mark.parametrize("args, needle", [
    (["--time-budget", "0s"], "not positive"),
    (["--image-size", "0"], "--image-size"),
])
def test_meaningless_option_values_are_refused(tiny_folder, tmp_path, args, needle):
    out = tmp_path / "run"
    r = meddx("train", tiny_folder, "--out", out, "--epochs", "1", "--no-progress", *args)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr and not out.exists()
    r = meddx("plan", tiny_folder, "-o", tmp_path / "p.yaml", "--memory-budget", "-1", "--no-progress")
    assert r.returncode == 2 and "--memory-budget" in r.stderr and not (tmp_path / "p.yaml").exists()


def test_output_paths(tiny_folder, tmp_path):
    """Outputs go into folders that do not exist yet (created); a run --out that is a file, or an
    output that cannot be written, is a one-line error."""
    r = meddx("plan", tiny_folder, "-o", tmp_path / "new" / "sub" / "p.yaml", "--no-progress")
    assert r.returncode == 0 and (tmp_path / "new" / "sub" / "p.yaml").exists()
    r = meddx("inspect", tiny_folder, "--json", tmp_path / "new2" / "fp.json", "--no-progress")
    assert r.returncode == 0 and (tmp_path / "new2" / "fp.json").exists()
    (tmp_path / "afile").write_text("x")
    assert_user_error(meddx("train", tiny_folder, "--out", tmp_path / "afile", "--epochs", "1", "--no-progress"),
                      "afile", "is a file")
    assert_user_error(meddx("plan", tiny_folder, "-o", tmp_path / "afile" / "p.yaml", "--no-progress"), "afile")


def test_inspect_lists_unreadable_files_and_exits_2(tiny_folder):
    victim = sorted((tiny_folder / "normal").iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:40])
    r = meddx("inspect", tiny_folder, "--no-progress")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"unreadable: {victim}" in r.stdout
    assert "1 of 48 cases cannot be used" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_test_split_of_one_class_is_said_in_the_report(tiny_folder, tmp_path):
    """Allowed (a user may test on positives only) but never silent: AUC reads n/a and the report
    and metrics.json say why."""
    import csv
    import json

    from meddx.training.run import train_run

    rows = []
    for cls in ("lesion", "normal"):
        for i, p in enumerate(sorted((tiny_folder / cls).iterdir())):
            rows.append((p, cls, "test" if cls == "lesion" and i < 6 else "val" if i % 4 == 0 else "train"))
    man = tmp_path / "m.csv"
    with open(man, "w", newline="") as f:
        csv.writer(f).writerows([("path", "label", "split"), *rows])
    run = train_run(str(man), tmp_path / "r", overrides={"train.epochs": 1}, progress=False, log=lambda *_: None)
    m = json.loads((run / "metrics.json").read_text())
    assert m["classes_absent_from_test"] == ["normal"]
    assert "The test cases hold no &#x27;normal&#x27;: AUC" in (run / "report.html").read_text()  # HTML-escaped


def test_a_plan_that_is_not_text(tmp_path):
    """`--plan` at an image, or a run whose plan.yaml was overwritten with binary: one line, no traceback."""
    from deploy_testutils import make_run

    png = tmp_path / "scan.png"
    write_png(png, np.zeros((8, 8), np.uint8))
    r = meddx("train", "--plan", png, "--out", tmp_path / "run", "--no-progress")
    assert_user_error(r, "scan.png", "not a text file")
    assert not (tmp_path / "run").exists()
    run = make_run(tmp_path / "damaged")
    (run / "plan.yaml").write_bytes(png.read_bytes())
    assert_user_error(meddx("predict", run, png), "plan.yaml", "not a text file")


def _refused_in_process(dataset, tmp_path, sets: list[str]) -> str:
    """The error ``meddx train DATASET --set ...`` gives, raised in this process (no CLI start-up per
    case: the CLI's one-line, exit-2 path is checked once per test below); no run folder is left."""
    from meddx.cli import parse_sets
    from meddx.errors import MeddxError
    from meddx.training.run import train_run

    out = tmp_path / "inproc"
    with pytest.raises(MeddxError) as e:
        train_run(str(dataset), out, overrides={"train.epochs": 1, **parse_sets(sets)}, progress=False,
                  log=lambda *a, **k: None)
    assert not out.exists()
    return str(e.value)


def test_set_below_a_field_that_is_not_a_section(tiny_folder, tmp_path):
    r = meddx("plan", tiny_folder, "-o", tmp_path / "p.yaml", "--no-progress", "--set", "seed.x=1")
    assert_user_error(r, "cannot set", "not a section")
    assert not (tmp_path / "p.yaml").exists()
    for sets in (["data.learned_denoise.epochs=5"], ["train=3", "train.epochs=2"]):
        msg = _refused_in_process(tiny_folder, tmp_path, sets)
        assert "cannot set" in msg and "not a section" in msg, (sets, msg)


def test_sizes_and_flips_that_do_not_fit_the_dimensions_are_refused_before_training(tiny_folder, tmp_path):
    """Refused when the plan is made, not by a traceback from inside training with a run directory left."""
    out = tmp_path / "run"
    r = meddx("train", tiny_folder, "--out", out, "--epochs", "1", "--no-progress", "--set", "data.input_size=[5]")
    assert_user_error(r, "data.input_size", "2D")
    assert not out.exists()
    for value, needle in (("data.input_size=[0, 28]", "data.input_size"), ("augment.flip_axes=[7]", "augment.flip_axes"),
                          ("evaluate.tta_flip_axes=[-1]", "evaluate.tta_flip_axes")):
        msg = _refused_in_process(tiny_folder, tmp_path, [value])
        assert needle in msg and "2D" in msg, (value, msg)


def test_a_time_budget_that_is_not_positive_is_refused_before_planning(tiny_folder, tmp_path):
    """--set train.time_budget_s=-5 reaches the planner before the plan is validated: it was a pydantic
    traceback from inside make_plan (exit 1), and before the field was bounded it trained as if 1 s."""
    for value in ("-5", "0"):
        msg = _refused_in_process(tiny_folder, tmp_path, [f"train.time_budget_s={value}"])
        assert "train.time_budget_s" in msg and "greater than 0" in msg, msg


def test_a_bad_synthetic_dataset_spec(tmp_path):
    """Was a traceback (0 or 1 cases) or, for a misspelt spec, a silent run on 600 phantoms."""
    from meddx.data.sources import open_dataset
    from meddx.errors import MeddxError

    _train_fails(tmp_path, "synthetic:phantoms:0", "synthetic:phantoms:0", "no cases")
    for spec, needle in (("synthetic:phantoms:1", "one class"), ("synthetic:bogus", "unknown synthetic dataset"),
                         ("synthetic:phantoms:ten", "unknown synthetic dataset")):
        with pytest.raises(MeddxError, match=needle):
            open_dataset(spec)


def test_a_damaged_run_json(tmp_path):
    """evaluate and --resume on a run whose run.json is not JSON: one line naming it, nothing written
    (evaluate was a JSONDecodeError traceback after writing half of evaluations/test)."""
    from deploy_testutils import make_run

    run = make_run(tmp_path / "run")
    (run / "run.json").write_text('{"status": "runn')
    assert_user_error(meddx("evaluate", run, "--no-progress"), "run.json", "damaged")
    assert not (run / "evaluations").exists()
    assert_user_error(meddx("train", "--out", run, "--resume", "--no-progress"), "run.json", "damaged")


@pytest.mark.parametrize("args, needle", [(["--seeds", ","], "--seeds"), (["--epochs", "0"], "--epochs"),
                                          (["--components", "magic"], "magic"), (["--seeds", "0,-1"], "--seeds")])
def test_ablate_mistakes_leave_no_output_folder(tiny_folder, tmp_path, args, needle):
    """--seeds ',' was a traceback after training the baseline, --epochs 0 silently meant 20, and every
    refused ablation left its (empty) --out folder behind."""
    out = tmp_path / "abl"
    base = {"--seeds": "0", "--epochs": "1", "--components": "magic"}
    base.update(dict(zip(args[::2], args[1::2])))
    r = meddx("ablate", tiny_folder, "-o", out, "--no-progress", *[x for kv in base.items() for x in kv])
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()


def test_an_output_file_that_is_a_folder_is_named(tiny_folder, tmp_path):
    """plan -o DIR, inspect --json DIR: the error named a temp file that does not exist (DIR/../.DIR.xyz.tmp)."""
    (tmp_path / "outdir").mkdir()
    for args in (("plan", tiny_folder, "-o", tmp_path / "outdir", "--no-progress"),
                 ("inspect", tiny_folder, "--json", tmp_path / "outdir", "--no-progress")):
        r = meddx(*args)
        assert_user_error(r, f"{tmp_path / 'outdir'}: is a folder")
        assert ".tmp" not in r.stderr
    assert not list(tmp_path.glob(".outdir*"))


def test_split_fractions_that_are_not_three_positive_shares_of_one(tiny_folder, tmp_path):
    """[0.5, 0.5, 0.5] silently split 35/35/30 %; [1, 0, 0] and [0.7, 0.3] said 'add cases'."""
    out = tmp_path / "run"
    r = meddx("train", tiny_folder, "--out", out, "--epochs", "1", "--no-progress",
              "--set", "data.split_fractions=[0.5, 0.5, 0.5]")
    assert_user_error(r, "data.split_fractions", "sum to 1")
    assert not out.exists()
    for fractions in ("[1, 0, 0]", "[0.7, 0.3]", "[-0.2, 0.6, 0.6]"):
        msg = _refused_in_process(tiny_folder, tmp_path, [f"data.split_fractions={fractions}"])
        assert "data.split_fractions" in msg and "sum to 1" in msg, (fractions, msg)


def test_seeds_and_split_overrides_numpy_cannot_take(tiny_folder, tmp_path):
    """A negative or over-64-bit seed, or a split seed / fractions of the wrong type, were tracebacks
    (ValueError, TypeError from numpy's generator) from the split made before the plan exists."""
    out = tmp_path / "run"
    for seed in ("-1", "99999999999999999999"):
        r = meddx("train", tiny_folder, "--out", out, "--epochs", "1", "--no-progress", "--seed", seed)
        assert_user_error(r, "--seed")
        assert not out.exists()
    r = meddx("plan", tiny_folder, "-o", tmp_path / "p.yaml", "--no-progress", "--set", "data.split_seed=-3")
    assert_user_error(r, "data.split_seed")
    assert not (tmp_path / "p.yaml").exists()
    for sets, needle in ((["seed=-1"], "'seed'"), (["data.split_seed=foo"], "data.split_seed"),
                         (["data.split_fractions=5"], "data.split_fractions"),
                         (["data.split_fractions=abc"], "data.split_fractions")):
        msg = _refused_in_process(tiny_folder, tmp_path, sets)
        assert needle in msg, (sets, msg)


def test_an_image_and_mask_folder_pair_without_task_segment_says_add_it(tmp_path):
    """imagesTr/ + labelsTr/ read as a class folder was "2 classes": a classifier telling images from masks."""
    from meddx_testutils import write_seg_volumes

    root = write_seg_volumes(tmp_path / "Dataset005_X", n=3, shape=(14, 16, 14))
    (root / "images").rename(root / "imagesTr")
    (root / "labels").rename(root / "labelsTr")
    (root / "imagesTs").mkdir()  # MSD / nnU-Net raw folders hold the unlabelled test images too
    (root / "imagesTs" / "vol09.nii.gz").write_bytes((root / "imagesTr" / "vol00.nii.gz").read_bytes())
    _train_fails(tmp_path, root, str(root), "class folders imagesTr, imagesTs, labelsTr are images and their masks",
                 "Fix: add --task segment")
    assert_user_error(meddx("inspect", root), "add --task segment")
