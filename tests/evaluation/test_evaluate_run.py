"""`meddx evaluate`: re-scoring a finished run on its own test split or on another labelled dataset."""

from __future__ import annotations

import json

import pytest

_RUN = {}


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory):
    from meddx.training.run import train_run

    if "run" not in _RUN:
        out = tmp_path_factory.mktemp("eval_run") / "run"
        train_run("synthetic:phantoms:60", out, overrides={"train.epochs": 1, "evaluate.n_boot": 50},
                  progress=False, log=lambda *a, **k: None)
        _RUN["run"] = out
    return _RUN["run"]


def test_re_evaluation_reports_the_runs_training_cases(phantom_run):
    """The report and model card of a re-evaluation describe the same model: trained on the run's train split,
    not on 0 cases."""
    from meddx.evaluation.evaluate_run import evaluate_run

    sub = evaluate_run(phantom_run, progress=False)
    original = (phantom_run / "model_card.md").read_text()
    line = next(ln for ln in original.splitlines() if "cases train / val / test" in ln)
    assert not line.split(": ")[-1].startswith("0 /")
    assert line in (sub / "model_card.md").read_text()
    a = json.loads((phantom_run / "metrics.json").read_text())
    b = json.loads((sub / "metrics.json").read_text())
    assert a["operating_points"] == b["operating_points"] and a["threshold"] == b["threshold"]


def test_other_datasets_never_overwrite_the_runs_own_or_each_others_evaluations(phantom_run, tmp_path):
    """A dataset folder named "test" must not land in the run's own ``evaluations/test``, and two
    datasets of one name (say two sites' ``data`` folders) must not overwrite each other."""
    from meddx_testutils import write_png
    from meddx.data.synthetic import make_phantoms
    from meddx.evaluation.evaluate_run import evaluate_run

    own = evaluate_run(phantom_run, progress=False)
    own_metrics = (own / "metrics.json").read_text()
    imgs, labels = make_phantoms(n=12, size=28, seed=5)
    folders = []
    for site in ("a", "b"):
        for name in ("test", "data"):
            root = tmp_path / site / name
            for i, (im, y) in enumerate(zip(imgs, labels)):
                write_png(root / ("lesion" if y else "normal") / f"{i}.png", im)
            folders.append(root)
    subs = [evaluate_run(phantom_run, str(f), progress=False) for f in folders]
    assert (own / "metrics.json").read_text() == own_metrics
    assert len(set(subs)) == 4 and own not in subs
    assert subs[1].name == "data" and subs[3].name.startswith("data-")
    assert evaluate_run(phantom_run, str(folders[1]), progress=False) == subs[1]  # same data, same folder
    assert "/" not in (subs[3] / ".source").read_text()  # a hash, not the path


def test_a_3d_model_predicts_each_dicom_series_folder_under_a_folder_as_one_volume(tmp_path):
    """One folder per patient, each a DICOM series, plus a NIfTI file: three volumes for a 3D model,
    not one prediction per slice; a 2D model still takes every file."""
    from meddx.evaluation.inputs import collect_inputs

    dicm = b"\0" * 128 + b"DICM" + b"\0" * 64
    for patient in ("p1", "p2"):
        for i in range(4):
            f = tmp_path / "in" / patient / "series" / f"{i}.dcm"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(dicm)
    (tmp_path / "in" / "other.nii.gz").write_bytes(b"x")
    got = collect_inputs(tmp_path / "in", 3)
    assert [p.relative_to(tmp_path / "in").as_posix() for p in got] == ["other.nii.gz", "p1/series", "p2/series"]
    assert len(collect_inputs(tmp_path / "in", 2)) == 9
    assert collect_inputs(tmp_path / "in" / "p1" / "series", 3) == [tmp_path / "in" / "p1" / "series"]


def test_a_disease_class_sorted_first_is_the_positive_class_end_to_end(tmp_path):
    """Folders "cancer" and "normal": R18 makes cancer (index 0) the positive class, and the threshold,
    the thresholded predictions, the binary metrics, the report and `meddx predict` all agree on it."""
    import csv

    import numpy as np

    from meddx_testutils import write_png
    from meddx.data.synthetic import make_phantoms
    from meddx.evaluation.predict import predict_paths
    from meddx.training.run import train_run

    imgs, labels = make_phantoms(n=60, size=28, seed=3)
    for i, (im, y) in enumerate(zip(imgs, labels)):
        write_png(tmp_path / "data" / ("cancer" if y else "normal") / f"{i}.png", im)
    run = train_run(str(tmp_path / "data"), tmp_path / "run", overrides={"train.epochs": 1, "evaluate.n_boot": 20},
                    progress=False, log=lambda *a, **k: None)
    thr = json.loads((run / "thresholds.json").read_text())
    assert thr["positive_class"] == "cancer" and thr["threshold"] is not None
    m = json.loads((run / "metrics.json").read_text())
    at_t = next(v for k, v in m["operating_points"].items() if k.startswith("validation-chosen"))
    assert at_t["operating_point"]["positive_class"] == "cancer"
    with open(run / "predictions.csv", newline="") as f:
        test = [r for r in csv.DictReader(f) if r["split"] == "test"]
    called = np.array([float(r["p_cancer"]) >= thr["threshold"] for r in test])
    assert [r["predicted_at_threshold"] == "cancer" for r in test] == called.tolist()
    truth = np.array([r["label"] == "cancer" for r in test])
    if truth.any():
        assert at_t["overall"]["sensitivity"]["value"] == pytest.approx(called[truth].mean())
    assert "on p(cancer)" in (run / "report.html").read_text(encoding="utf-8")
    rows = predict_paths(run, tmp_path / "data" / "cancer", progress=False)
    # a reader of the file checks each row against the threshold written in it (both rounded to 6 places;
    # a validation image predicted again scores exactly the threshold it chose)
    assert all(r["threshold"] == round(thr["threshold"], 6) for r in rows)
    assert all((r["predicted_at_threshold"] == "cancer") == (r["p_cancer"] >= r["threshold"]) for r in rows)


def test_a_run_scores_a_dataset_of_one_class(phantom_run, tmp_path):
    """A set of confirmed positives is no training set but is a fair test of sensitivity: `meddx evaluate`
    scores it (AUC and specificity n/a), while training on it stays refused."""
    from meddx_testutils import write_png
    from meddx.data.sources import open_dataset
    from meddx.data.synthetic import make_phantoms
    from meddx.errors import DatasetError
    from meddx.evaluation.evaluate_run import evaluate_run

    imgs, labels = make_phantoms(n=30, size=28, seed=7)
    for i, im in enumerate(imgs[labels == 1]):
        write_png(tmp_path / "positives" / "lesion" / f"{i}.png", im)
    sub = evaluate_run(phantom_run, str(tmp_path / "positives"), progress=False)
    m = json.loads((sub / "metrics.json").read_text())
    o = next(iter(m["operating_points"].values()))["overall"]
    assert m["n_test"] == int((labels == 1).sum())
    assert o["sensitivity"]["value"] is not None and o["sensitivity"]["value"] == o["accuracy"]["value"]
    assert o["auc"]["value"] is None and o["specificity"]["value"] is None
    with pytest.raises(DatasetError, match="only one class"):
        open_dataset(tmp_path / "positives")


def test_an_evaluation_stopped_part_way_leaves_nothing_behind(phantom_run, tmp_path, monkeypatch):
    """Ctrl-C during the bootstrap left an empty ``evaluations/<name>/``, and the next evaluation of the same
    data went to ``<name>-<hash>/`` beside it; now the failing call removes the folder it made."""
    import meddx.evaluation.run_report as run_report
    from meddx_testutils import write_png
    from meddx.data.synthetic import make_phantoms
    from meddx.evaluation.evaluate_run import evaluate_run

    imgs, labels = make_phantoms(n=12, size=28, seed=3)
    for i, (im, y) in enumerate(zip(imgs, labels)):
        write_png(tmp_path / "site" / ("lesion" if y else "normal") / f"{i}.png", im)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(run_report, "metric_sets", interrupted)
        with pytest.raises(KeyboardInterrupt):
            evaluate_run(phantom_run, str(tmp_path / "site"), progress=False)
    assert not (phantom_run / "evaluations" / "site").exists()
    sub = evaluate_run(phantom_run, str(tmp_path / "site"), progress=False)
    assert sub.name == "site" and (sub / "metrics.json").exists()

    # stopped again after metrics.json and the plots were written, over that finished evaluation (of the folder
    # with fewer images since): it stays whole, not its report.html beside the new metrics.json
    before = {f.name: f.read_bytes() for f in sub.iterdir()}
    for f in sorted((tmp_path / "site" / "normal").iterdir())[:2]:
        f.unlink()
    with monkeypatch.context() as m:
        m.setattr(run_report, "write_report", interrupted)
        with pytest.raises(KeyboardInterrupt):
            evaluate_run(phantom_run, str(tmp_path / "site"), progress=False)
    assert {f.name: f.read_bytes() for f in sub.iterdir()} == before
    assert not [p.name for p in sub.parent.iterdir() if "site" in p.name and p != sub]   # nothing left beside it
    assert evaluate_run(phantom_run, str(tmp_path / "site"), progress=False) == sub


def test_a_segmentation_run_that_did_not_finish_is_refused_as_a_classifier_is(seg_run, tmp_path):
    """A segmenter stopped mid-training (run.json 'interrupted') was evaluated without a word, into an
    evaluations/test/ report that read like the finished model's; a classifier was refused. Both are now."""
    import shutil

    from meddx.errors import RunError
    from meddx.evaluation.evaluate_run import evaluate_run

    run = tmp_path / "run"
    shutil.copytree(seg_run, run, ignore=shutil.ignore_patterns("evaluations"))
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    with pytest.raises(RunError, match="did not finish"):
        evaluate_run(run, progress=False)
    assert not (run / "evaluations").exists()


def test_classes_spelled_in_other_capitals_are_refused_with_the_models_spelling(phantom_run, tmp_path):
    from meddx_testutils import write_png
    from meddx.data.synthetic import make_phantoms
    from meddx.errors import DatasetError
    from meddx.evaluation.evaluate_run import evaluate_run

    imgs, labels = make_phantoms(n=8, size=28, seed=5)
    for i, (im, y) in enumerate(zip(imgs, labels)):
        write_png(tmp_path / "capitals" / ("Lesion" if y else "normal") / f"{i}.png", im)
    with pytest.raises(DatasetError) as e:
        evaluate_run(phantom_run, str(tmp_path / "capitals"), progress=False)
    assert "['Lesion'] are not among" in e.value.message and e.value.fix == "spell 'Lesion' as 'lesion', as the model does"
    assert not (phantom_run / "evaluations" / "capitals").exists()
