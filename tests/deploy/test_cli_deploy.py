"""``meddx export``, ``compress`` and ``bench`` through the command line, on tiny generated data."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deploy_testutils import make_run


def meddx(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "meddx.cli", *map(str, args)], capture_output=True, text=True)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.mark.parametrize("cmd", ["export", "compress", "bench"])
def test_help(cmd):
    r = meddx(cmd, "--help")
    assert "Usage" in r.stdout and len(r.stdout) > 100


@pytest.mark.slow
def test_train_compress_all_three_bench_and_run_without_torch_cli(tiny_folder, tmp_path):
    run = tmp_path / "run"
    meddx("train", tiny_folder, "--out", run, "--epochs", "2", "--no-progress")
    out = tmp_path / "small"
    r = meddx("compress", run, "--out", out, "--prune", "0.5", "--prune-steps", "2", "--distill-from", run, "--int8",
              "--epochs", "2", "--calibration-images", "16", "--no-progress")
    assert "parameters" in r.stdout and "test AUC" in r.stdout
    s = json.loads((out / "compression.json").read_text())
    assert [st["step"] for st in s["steps"]] == ["prune", "int8"]
    assert s["steps"][0]["fine_tune"]["distilled"] is True and s["steps"][0]["steps"] == 2
    assert [t["epochs_planned"] for t in s["steps"][0]["fine_tune"]["steps"]] == [1, 1]  # two cuts, one epoch each
    plan_lr = yaml.safe_load((run / "plan.yaml").read_text())["optim"]["lr"]
    assert [t["lr"] for t in s["steps"][0]["fine_tune"]["steps"]] == [pytest.approx(plan_lr / 4)] * 2  # a 50 % cut
    assert s["steps"][0]["per_step"][0]["flops"] > s["steps"][0]["flops_after"]
    assert s["result"]["params"] < 0.35 * s["source"]["params"] and s["result"]["flops"] < 0.35 * s["source"]["flops"]
    man = json.loads((out / "bundle.json").read_text())
    assert man["model"]["precision"].startswith("int8") and man["compression"]["steps"] == ["prune", "int8"]
    r = meddx("bench", out, "--seconds", "0.2", "--json", tmp_path / "b.json")
    assert "latency" in r.stdout and "GFLOP/s" in r.stdout
    assert json.loads((tmp_path / "b.json").read_text())["kind"].startswith("onnxruntime int8")
    img = next((tiny_folder / "lesion").iterdir())
    r = subprocess.run([sys.executable, "-m", "meddx.runtime", str(out), str(img)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["label"] in ("lesion", "normal")
    meddx("export", run, "--out", tmp_path / "fp32")
    assert (tmp_path / "fp32" / "model.onnx").exists()


def test_user_errors_exit_2_with_one_line(tmp_path):
    run = make_run(tmp_path / "run")
    cases = [
        ("export", tmp_path / "nope", "--out", tmp_path / "b"),
        ("compress", run, "--out", tmp_path / "c"),                       # nothing to do
        ("compress", run, "--out", tmp_path / "c", "--prune", "1.5", "--epochs", "1"),
        ("compress", run, "--out", tmp_path / "c", "--prune", "0.5"),     # no training length
        ("compress", run, "--out", tmp_path / "c", "--prune", "0.5", "--prune-steps", "0", "--epochs", "1"),
        ("bench", tmp_path),
    ]
    for args in cases:
        r = meddx(*args, check=False)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.startswith("error:") and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "c").exists() and not (tmp_path / "b").exists()


def test_a_run_that_did_not_finish_is_not_exported_or_compressed(tmp_path):
    """A killed or failed run (best.pt written, evaluation not) gave a finished-looking bundle with an
    argmax operating point and T = 1; it is refused like `meddx evaluate` refuses it (through the CLI
    for one status, in this process for the others)."""
    from meddx.deploy.compress import CompressOptions, compress_run
    from meddx.deploy.export import export_run
    from meddx.errors import RunError

    run = make_run(tmp_path / "run", threshold=None, temperature=None)
    (run / "run.json").write_text(json.dumps({"status": "failed"}))
    for args in (("export", run, "--out", tmp_path / "b"),
                 ("compress", run, "--out", tmp_path / "b", "--int8", "--no-progress")):
        r = meddx(*args, check=False)
        assert r.returncode == 2 and "did not finish" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "b").exists()
    r = meddx("bench", run, "--seconds", "0.05")  # timed all the same, with a warning
    assert "did not finish" in r.stderr and "latency" in r.stdout
    for status in ("running", "interrupted"):
        (run / "run.json").write_text(json.dumps({"status": status}))
        with pytest.raises(RunError, match="did not finish"):
            export_run(run, tmp_path / "b")
        with pytest.raises(RunError, match="did not finish"):
            compress_run(run, tmp_path / "b", CompressOptions(int8=True), progress=False)
        assert not (tmp_path / "b").exists()


def test_a_run_that_did_not_finish_is_not_served_and_predicting_with_it_warns(tmp_path, capsys):
    """Readers of `meddx serve` would see an unfinished run's answers (no validation threshold, T = 1) as
    a finished model's: refused. `meddx predict` and `explain` may look at its best checkpoint so far,
    with one warning line saying so."""
    from meddx.cli import _warn_if_unfinished
    from meddx.deploy.server import create_app
    from meddx.errors import RunError
    from meddx.training.run import unfinished_note

    run = make_run(tmp_path / "run", threshold=None, temperature=None)
    assert unfinished_note(run) is None
    (run / "run.json").write_text(json.dumps({"status": "interrupted"}))
    with pytest.raises(RunError, match="did not finish .* cannot be served"):
        create_app(run, api_key="k" * 12)
    _warn_if_unfinished(run)
    err = capsys.readouterr().err
    assert err.startswith("warning:") and "'interrupted'" in err and "--resume" in err


def test_predict_refuses_an_out_suffix_it_would_not_write(tmp_path):
    """`--out preds.xlsx` (or .tsv) used to receive CSV text under that name; refused before predicting."""
    run = make_run(tmp_path / "run")
    out = tmp_path / "preds.xlsx"
    r = subprocess.run([sys.executable, "-m", "meddx.cli", "predict", str(run), str(tmp_path), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "preds.csv" in r.stderr and "preds.json" in r.stderr and not out.exists()


@pytest.mark.parametrize("args, option", [(["bench", "RUN", "--threads", "-2"], "--threads"),
                                          (["bench", "RUN", "--seconds", "-1"], "--seconds"),
                                          (["serve", "RUN", "--api-key", "k" * 12, "--port", "99999"], "--port"),
                                          (["serve", "RUN", "--api-key", "k" * 12, "--max-upload-mb", "-1"],
                                           "--max-upload-mb")])
def test_meaningless_bench_and_serve_options_are_usage_errors(tmp_path, args, option):
    """--threads -2 and --port 99999 were tracebacks (torch.set_num_threads, socket.bind); --seconds -1
    and --max-upload-mb -1 were taken (one timing call; every upload refused)."""
    run = make_run(tmp_path / "run")
    r = subprocess.run([sys.executable, "-m", "meddx.cli", *[str(run) if a == "RUN" else a for a in args]],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and option in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_serve_mistakes_are_one_line_before_the_banner(tmp_path):
    """An unknown --explain-method started a server whose every explanation failed; a port in use or an
    unknown host was uvicorn's log and exit 1 or 3; and the 'serving' banner came first, so no error
    was one line."""
    import socket

    run = make_run(tmp_path / "run")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cases = [(["--port", str(port)], f"127.0.0.1:{port}"), (["--host", "256.1.1.1"], "256.1.1.1"),
                 (["--explain-method", "bogus"], "bogus")]
        for args, needle in cases:
            r = subprocess.run([sys.executable, "-m", "meddx.cli", "serve", str(run), "--api-key", "k" * 12, *args],
                               capture_output=True, text=True, timeout=120)
            assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
            assert len(r.stderr.strip().splitlines()) == 1 and "serving" not in r.stderr, r.stderr


def test_meaningless_compress_options_are_refused_before_work(tmp_path):
    """Were tracebacks from quantise/the optimiser/the distillation loss (after loading the data), or
    for --epochs -1 a silent one-epoch fine-tune recorded as -1 (through the CLI once, then in this process)."""
    from meddx.deploy.compress import CompressOptions, compress_run
    from meddx.errors import PlanError

    run = make_run(tmp_path / "run")
    r = meddx("compress", run, "--out", tmp_path / "c", "--no-progress", "--int8", "--calibration-images", "0",
              check=False)
    assert r.returncode == 2 and "--calibration-images" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    for opts, option in ((CompressOptions(prune=0.5, epochs=1, lr=-1), "--lr"),
                         (CompressOptions(prune=0.5, epochs=-1), "--epochs"),
                         (CompressOptions(distill_from=str(run), epochs=1, kd_alpha=5), "--kd-alpha"),
                         (CompressOptions(distill_from=str(run), epochs=1, kd_temperature=0), "--kd-temperature")):
        with pytest.raises(PlanError, match=option):
            compress_run(run, tmp_path / "c", opts, progress=False)
    # an option of a step that does not run would change nothing: refused rather than dropped
    for args, needle in ((["--prune", "0.5", "--epochs", "1", "--kd-alpha", "0.5"],
                          "--kd-alpha is given without --distill-from, so it would change nothing. Fix: add "
                          "--distill-from, or leave --kd-alpha out"),
                         (["--prune", "0.5", "--epochs", "1", "--kd-temperature", "2"],
                          "--kd-temperature is given without --distill-from"),
                         (["--prune", "0.5", "--epochs", "1", "--calibration-images", "64"],
                          "--calibration-images is given without --int8")):
        r = meddx("compress", run, "--out", tmp_path / "c", "--no-progress", *args, check=False)
        assert r.returncode == 2 and needle in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("student, needle", [("nosuchnet", "unknown model 'nosuchnet'"),
                                             ("small_cnn:width=abc", "width must be a number"),
                                             ("small_cnn:width", "cannot read the student option 'width'")])
def test_a_misspelt_student_is_refused_before_the_data_are_read(tmp_path, student, needle):
    """The student's name and options were checked only after all of the run's images had been read and
    preprocessed (minutes on a large dataset); the run here has no dataset at all, so reading it fails."""
    run = make_run(tmp_path / "run")
    r = meddx("compress", run, "--out", tmp_path / "c", "--student", student, "--epochs", "1", "--no-progress",
              check=False)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "preparing the run's data" not in r.stdout and not (tmp_path / "c").exists()


@pytest.mark.parametrize("args", [["--epochs", "3"], ["--time-budget", "1m"], ["--lr", "5"]])
def test_training_options_without_a_training_step_are_refused(tmp_path, args):
    """`compress --int8 --epochs 3 --lr 5` wrote an int8 bundle without a word: nothing was trained, and the
    user could believe it was fine-tuned (segmentation runs, which take --int8 only, alike)."""
    run = make_run(tmp_path / "run")
    r = meddx("compress", run, "--out", tmp_path / "c", "--int8", *args, "--no-progress", check=False)
    assert r.returncode == 2 and args[0] in r.stderr and "--int8 alone trains nothing" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "c").exists()


def test_epochs_and_time_budget_together_are_refused(tmp_path):
    """compress trained --epochs and dropped --time-budget without a word (train lets the budget win and
    ablate refuses the pair)."""
    run = make_run(tmp_path / "run")
    r = meddx("compress", run, "--out", tmp_path / "c", "--prune", "0.5", "--epochs", "2", "--time-budget", "10m",
              "--no-progress", check=False)
    assert r.returncode == 2 and "give --time-budget or --epochs, not both" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "c").exists()


def test_prune_steps_without_prune_is_refused(tmp_path):
    """`compress --student ... --prune-steps 3` trained the student and cut nothing, without a word."""
    run = make_run(tmp_path / "run")
    r = meddx("compress", run, "--out", tmp_path / "c", "--student", "small_cnn", "--epochs", "1", "--prune-steps",
              "3", "--no-progress", check=False)
    assert r.returncode == 2 and "--prune-steps 3 is given without --prune" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "c").exists()


@pytest.mark.parametrize("opset", ["5", "11", "99"])
def test_an_opset_torch_cannot_export_is_one_line(tmp_path, opset):
    """--opset 99 was torch's RuntimeError traceback, --opset 5 an onnx checker traceback; --opset 11 wrote
    a bundle that the edge runtime refuses (it needs opset 13 or newer), telling the user to re-export."""
    run = make_run(tmp_path / "run")
    r = meddx("export", run, "--out", tmp_path / "b", "--opset", opset, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"--opset {opset}" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "b").exists()


def test_a_finished_classifier_that_lost_its_thresholds_is_refused_or_warned_alike(tmp_path, capsys):
    """A finished run whose thresholds.json was deleted used to export and serve at argmax without a word,
    while `meddx evaluate` called it unfinished: now export, compress and serve refuse it, evaluate names
    the lost file, and predict / explain warn in one line that only argmax is used."""
    from meddx.cli import _warn_if_unfinished
    from meddx.deploy.export import export_run
    from meddx.deploy.server import create_app
    from meddx.errors import RunError
    from meddx.training.run import unfinished_note

    run = make_run(tmp_path / "run", threshold=0.4, temperature=1.0)
    (run / "run.json").write_text(json.dumps({"status": "complete"}))
    assert unfinished_note(run) is None
    (run / "thresholds.json").unlink()
    with pytest.raises(RunError, match="lost its thresholds.json .* cannot be exported"):
        export_run(run, tmp_path / "b")
    with pytest.raises(RunError, match="lost its thresholds.json .* cannot be served"):
        create_app(run, api_key="k" * 12)
    r = meddx("evaluate", run, check=False)
    assert r.returncode == 2 and "lost its thresholds.json" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "b").exists()
    _warn_if_unfinished(run)
    err = capsys.readouterr().err
    assert err.startswith("warning:") and "lost its thresholds.json" in err and "argmax" in err


def test_one_unreadable_file_names_how_many_more_there_are(tmp_path):
    """A folder with several damaged files used to name only the first, so each rerun found the next;
    the one error line now says how many more cannot be read and names the first three of them.
    predict (classifier), explain and the segmentation predictor share the reader."""
    import numpy as np
    from meddx_testutils import write_png

    from meddx.errors import CorruptFileError
    from meddx.evaluation.predict import predict_paths, read_each

    run = make_run(tmp_path / "run", size=16)
    folder = tmp_path / "in"
    for i in range(3):
        write_png(folder / f"ok{i}.png", np.full((16, 16), 40 * i + 10, np.uint8))
    for name in ("bad1.png", "bad2.png", "bad3.png", "bad4.png", "bad5.png"):
        (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n damaged")
    with pytest.raises(CorruptFileError) as e:
        predict_paths(run, folder, progress=False)
    msg = str(e.value)
    assert msg.startswith(str(folder / "bad1.png") + ":") and "; 4 more input(s) cannot be read either: " in msg
    assert all(str(folder / f"bad{k}.png") in msg for k in (2, 3, 4)) and "bad5.png" not in msg
    assert "bad4.png and 1 other(s). Fix:" in msg
    assert "\n" not in msg and "Fix:" in msg
    good = [p for p, _ in read_each(sorted(folder.glob("ok*.png")))]
    assert len(good) == 3


def test_compressing_on_part_of_the_runs_cases_says_so(tiny_folder, tmp_path):
    """`compress --data` with only some of the run's cases measured the compressed model on them and set
    its test AUC beside the run's own (all test cases) without a word."""
    import csv
    import shutil

    run = tmp_path / "run"
    meddx("train", tiny_folder, "--out", run, "--epochs", "1", "--no-progress")
    rows = list(csv.DictReader((run / "split.csv").open()))
    test_ids = [r["case_id"] for r in rows if r["split"] == "test"]
    part = tmp_path / "part"
    shutil.copytree(tiny_folder, part)
    gone = 0
    for f in sorted(part.rglob("*.png")):
        if any(str(f.relative_to(part)).startswith(Path(i).with_suffix("").as_posix()) for i in test_ids[:2]):
            f.unlink()
            gone += 1
    assert gone == 2
    r = meddx("compress", run, "--out", tmp_path / "c", "--int8", "--calibration-images", "8", "--data", part,
              "--no-progress")
    n = len(test_ids)
    assert f"test {n - 2} of {n}" in r.stdout and "only part of the run's cases" in r.stdout, r.stdout
    s = json.loads((tmp_path / "c" / "compression.json").read_text())
    assert s["cases"]["test"] == [n - 2, n] and s["cases"]["train"][0] == s["cases"]["train"][1]
    assert "only part of the run's cases" in (tmp_path / "c" / "model_card.md").read_text()
    r = meddx("compress", run, "--out", tmp_path / "d", "--int8", "--calibration-images", "8", "--no-progress")
    assert "only part" not in r.stdout


def test_a_segmenter_compresses_to_int8_with_its_dice_beside_fp32(seg_run, tmp_path, caplog):
    """Segmenter int8 had no test in the suite; --seed was ignored there (the run's seed drew the windows).
    ONNX Runtime's quantiser printed a stray 'WARNING:root:Axis 1 is out-of-range ...' line."""
    from meddx.deploy.compress import CompressOptions, compress_run

    msgs = []
    out = compress_run(seg_run, tmp_path / "q", CompressOptions(int8=True, calibration_images=4, seed=3),
                       progress=False, log=msgs.append)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records
    s = json.loads((out / "compression.json").read_text())
    assert s["steps"][0]["calibration_windows"] == 4 and s["steps"][0]["calibration_seed"] == 3
    assert any("seed 3" in m for m in msgs)
    r = s["result"]
    assert r["precision"].startswith("int8")
    for split in ("val", "test"):
        fp32, int8 = r[f"fp32_{split}_dice"]["value"], r[f"int8_{split}_dice"]["value"]
        assert 0 <= int8 <= 1 and abs(int8 - fp32) < 0.1, (split, fp32, int8)
    assert json.loads((out / "bundle.json").read_text())["model"]["precision"].startswith("int8")
    assert s["cases"]["test"][0] == s["cases"]["test"][1]


def test_compress_names_runs_and_data_by_folder_name_not_path(tiny_folder, tmp_path):
    """`meddx export` records its source run by name, but compress wrote the full paths of the run, the
    teacher and --data into compression.json, bundle.json and student.pt: a bundle leaves the site, and a
    path may hold a patient's or a user's name."""
    import torch

    site = tmp_path / "Doe_John_MRN0042"
    run = site / "run"
    meddx("train", tiny_folder, "--out", run, "--epochs", "1", "--no-progress")
    out = tmp_path / "c"
    meddx("compress", run, "--out", out, "--distill-from", run, "--epochs", "1", "--data", tiny_folder,
          "--int8", "--calibration-images", "8", "--no-progress")
    st = torch.load(out / "student.pt", map_location="cpu", weights_only=True)
    texts = {f: (out / f).read_text() for f in ("compression.json", "bundle.json", "model_card.md")}
    texts["student.pt plan"] = json.dumps(st["plan"])
    for name, text in texts.items():
        assert str(tmp_path) not in text and "Doe_John" not in text, name
    s = json.loads(texts["compression.json"])
    assert s["source_run"] == "run" and s["teacher"]["run"] == "run"
    assert s["options"]["distill_from"] == "run" and s["options"]["data"] == "folder"
    assert json.loads(texts["bundle.json"])["compression"]["teacher_run"] == "run"
    assert st["plan"]["data"]["source"] == "folder"


def test_a_teacher_that_turns_volumes_another_way_is_refused(tmp_path):
    """R20: distillation feeds the teacher the student's inputs; a teacher planned with another
    orientation (or before R20) was trained on volumes turned another way."""
    from meddx.deploy.compress import _check_teacher
    from meddx.errors import RunError
    from meddx.planning.plan import Plan

    kw = dict(dims=3, size=16, intensity="image_zscore", mean=0.0, std=1.0, temperature=None, threshold=None)
    student, teacher = make_run(tmp_path / "s", **kw), make_run(tmp_path / "t", seed=1, **kw)
    sp, tp = Plan.load(student / "plan.yaml"), Plan.load(teacher / "plan.yaml")
    sp.data.orientation = ["R", "A", "S"]
    with pytest.raises(RunError, match="orientation"):
        _check_teacher(student, sp, teacher, tp)
    # nor may it have resized volumes or denoised images another way than the student's inputs are
    from meddx.planning.plan import PreprocessStep

    sp.data.orientation = None
    for change in (lambda d: setattr(d, "antialias_3d", True),
                   lambda d: d.preprocess.append(PreprocessStep(name="median", params={"size": 3}))):
        sp = Plan.load(student / "plan.yaml")
        change(sp.data)
        with pytest.raises(RunError, match="how volumes are resized, or preprocessing steps"):
            _check_teacher(student, sp, teacher, tp)
