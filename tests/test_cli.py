"""End-to-end through the command line, on tiny generated data."""

import json
import subprocess
import sys

import pytest


def meddx(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "meddx.cli", *map(str, args)], capture_output=True, text=True)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.mark.parametrize("cmd", ["inspect", "plan", "train", "evaluate", "predict", "models", "demo"])
def test_help_on_every_command(cmd):
    r = meddx(cmd, "--help")
    assert "Usage" in r.stdout and len(r.stdout) > 100


def test_every_command_summary_is_one_line_in_meddx_help():
    """`meddx --help` lists each command by its docstring's first paragraph: one short line each (a summary
    wrapped in the source showed as a ragged break, e.g. "checkpoints,\\n report)."); details go below it."""
    import inspect
    import os

    import typer

    from meddx.cli import app

    commands = typer.main.get_command(app).commands
    for name, cmd in commands.items():
        first = inspect.cleandoc(cmd.help or "").split("\n\n")[0]
        assert first and "\n" not in first and len(first) <= 66, (name, first)
    r = subprocess.run([sys.executable, "-m", "meddx", "--help"], capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": "80"})
    panel = r.stdout.split("Commands")[1].split("╰")[0].splitlines()[1:]
    listed = [line.strip("│ ").split(" ")[0] for line in panel]
    assert listed == list(commands), listed  # one row per command, no continuation lines


def test_ablate_help_names_every_component():
    """`meddx ablate --components` takes names; its help lists them all (kept in step with the code)."""
    from meddx.evaluation.ablation import COMPONENTS, SEG_COMPONENTS

    text = " ".join(meddx("ablate", "--help").stdout.replace("│", " ").split())
    missing = [c for c in [*COMPONENTS, *SEG_COMPONENTS] if c not in text]
    assert not missing, missing


def test_folder_train_evaluate_predict(tiny_folder, tmp_path):
    r = meddx("inspect", tiny_folder, "--no-progress")
    assert "48" in r.stdout and "lesion" in r.stdout and "mixed image sizes" in r.stdout
    run = tmp_path / "run"
    # --target-sensitivity alone implies --threshold-rule sensitivity
    r = meddx("train", tiny_folder, "--out", run, "--epochs", "2", "--no-progress", "--target-sensitivity", "0.9")
    assert "finding: mixed image sizes" in r.stdout  # told without `meddx inspect`
    for f in ("plan.yaml", "fingerprint.json", "split.csv", "log.jsonl", "metrics.json", "predictions.csv",
              "report.html", "model_card.md", "roc.png", "confusion.png", "reliability.png", "training_curves.png",
              "checkpoints/last.pt", "checkpoints/best.pt", "thresholds.json"):
        assert (run / f).exists(), f
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    assert "positive class: lesion" in " ".join(r.stdout.split())  # R18: the disease, here class 0
    import yaml

    ev = yaml.safe_load((run / "plan.yaml").read_text())["evaluate"]
    assert ev["threshold_rule"] == "sensitivity" and ev["target_sensitivity"] == 0.9
    html = (run / "report.html").read_text()
    assert "data:image/png;base64" in html and "http://" not in html
    r = meddx("evaluate", run, "--no-progress")
    assert "AUC" in r.stdout and (run / "evaluations" / "test" / "metrics.json").exists()
    out = tmp_path / "pred.csv"
    meddx("predict", run, tiny_folder / "lesion", "--out", out)
    lines = out.read_text().splitlines()
    assert lines[0].startswith("file,predicted") and len(lines) == 1 + 24
    r = meddx("predict", run, next((tiny_folder / "normal").iterdir()))
    assert "p_lesion" in r.stdout
    js = tmp_path / "p.json"
    meddx("predict", run, tiny_folder / "normal", "--out", js)
    rows = json.loads(js.read_text())
    assert abs(rows[0]["p_lesion"] + rows[0]["p_normal"] - 1) < 1e-4


def test_plan_then_train_with_edited_plan(tiny_folder, tmp_path):
    plan = tmp_path / "plan.yaml"
    r = meddx("plan", tiny_folder, "--out", plan, "--no-progress")
    assert "finding: mixed image sizes" in r.stdout
    text = plan.read_text().replace("epochs: 30", "epochs: 1")
    plan.write_text(text)
    run = tmp_path / "run"
    r = meddx("train", "--plan", plan, "--out", run, "--no-progress")
    assert "finding: mixed image sizes" in r.stdout
    assert len((run / "log.jsonl").read_text().splitlines()) == 1


def test_existing_out_dir_is_refused(tiny_folder, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "something").write_text("x")
    r = meddx("train", tiny_folder, "--out", run, "--epochs", "1", "--no-progress", check=False)
    assert r.returncode == 2 and "--resume" in r.stderr


def test_square_brackets_in_names_are_printed_not_read_as_markup(tiny_folder, tmp_path):
    """Rich markup would swallow "[bold]" in a class folder's name or a file path (and crash on a label
    name holding "[/]", which dataset.json can declare)."""
    import shutil

    root = tmp_path / "br"
    shutil.copytree(tiny_folder / "lesion", root / "lesion [bold]")
    shutil.copytree(tiny_folder / "normal", root / "normal [b]")
    (root / "normal [b]" / "bad [x].png").write_bytes(b"not a png")
    r = meddx("inspect", root, "--no-progress", check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "lesion [bold]" in r.stdout and "normal [b]" in r.stdout and "bad [x].png" in r.stdout


def test_progress_messages_are_plain_text(capsys):
    from meddx.cli import say

    say("finding: label(s) tumour [/] (0.0010 % of mask voxels)")  # markup would raise MarkupError
    assert "tumour [/] (0.0010 %" in capsys.readouterr().out


def test_inspect_does_not_write_a_patient_id_held_in_an_unreadable_files_path(tmp_path):
    """With a patient column, an unreadable file's path (here PGBM-001/...) gives way to its case id
    in inspect's output and in the fingerprint JSON: the patient part of a case id is pseudonymised."""
    from PIL import Image
    import numpy as np

    rng = np.random.default_rng(0)
    rows = ["path,label,patient_id"]
    for k in range(12):
        pid = f"PGBM-{k:03d}"
        (tmp_path / pid).mkdir()
        f = tmp_path / pid / "img0.png"
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(f)
        rows.append(f"{pid}/img0.png,{'ab'[k % 2]},{pid}")
    (tmp_path / "PGBM-003" / "img0.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    r = meddx("inspect", tmp_path / "m.csv", "--json", tmp_path / "fp.json", "--no-progress", check=False)
    assert r.returncode == 2 and "unreadable" in r.stdout
    fp = (tmp_path / "fp.json").read_text()
    assert "PGBM-003" not in r.stdout + fp
    assert len(json.loads(fp)["problems"]) == 1


def test_python_dash_m_meddx_is_the_cli():
    r = subprocess.run([sys.executable, "-m", "meddx", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "Usage" in r.stdout and "train" in r.stdout


def test_command_line_mistakes_are_one_line_naming_the_help_to_read():
    """An unknown option, a missing --out or an out-of-range value was click's three-line usage block;
    it is one `error: ... Fix: ...` line with exit code 2, like every other mistake."""
    from meddx.cli import app, usage_error_line

    r = subprocess.run([sys.executable, "-m", "meddx", "train", "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: No such option: --bogus (Possible options: --loss, --out). Fix: see `python -m meddx train --help`."]
    typer_main = __import__("typer").main.get_command(app)
    for args, text in ((["train", "x"], "out"), (["nosuch"], "No such command"),
                       (["bench", "r", "--threads", "-2"], "'--threads'")):
        with pytest.raises(Exception) as e:  # typer may bring its own copy of click's exceptions
            typer_main.main(args, standalone_mode=False, prog_name="meddx")
        line = usage_error_line(e.value)
        assert line.startswith("error: ") and text in line and "--help`." in line and "\n" not in line


def test_the_cli_seed_bound_is_the_plans():
    """cli keeps its own copy of MAX_SEED (importing the plan would load pydantic at every start)."""
    from meddx.cli import MAX_SEED
    from meddx.planning.plan import MAX_SEED as PLAN_MAX_SEED

    assert MAX_SEED == PLAN_MAX_SEED


def test_ctrl_c_exits_130_and_says_interrupted(tmp_path, monkeypatch, capsys):
    """typer turns a KeyboardInterrupt into Exit(130), which outside standalone mode it returns instead of
    raising: Ctrl-C during `meddx ablate` (or train) ended the process with code 0 and no message."""
    import sys

    import meddx.evaluation.ablation as ab
    from meddx.cli import main

    def stopped(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ab, "run_ablation", stopped)
    monkeypatch.setattr(sys, "argv", ["meddx", "ablate", str(tmp_path), "--out", str(tmp_path / "abl"),
                                      "--epochs", "1", "--no-progress"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 130
    assert "interrupted" in capsys.readouterr().err
