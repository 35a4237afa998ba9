"""``meddx evaluate``: score a trained run on its own test split or on another dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from meddx.data.preprocess import PreprocessSpec, build_tensor, standardise
from meddx.data.sources import open_dataset
from meddx.data.split import read_split
from meddx.errors import DatasetError, RunError
from meddx.evaluation.run_report import evaluate_run_outputs
from meddx.evaluation._checks import replaced_on_success
from meddx.training.engine import predict_proba
from meddx.training.run import progress_callback, load_run, require_finished


def _proba(cs, cases, plan, model, progress: bool) -> tuple[np.ndarray, torch.Tensor]:
    spec = PreprocessSpec.from_plan(plan.data)
    cb, stop = progress_callback(progress, len(cases), "preprocessing")
    try:
        x = standardise(build_tensor(cs, cases, spec, cb), spec)
    finally:
        stop()
    with torch.no_grad():
        return predict_proba(model, x, plan.train.eval_batch_size, torch.device("cpu"),
                             plan.evaluate.tta_flip_axes), x


def external_dir(run_dir: Path, cs) -> Path:
    """``RUN/evaluations/<name>/`` for another dataset: its name, unless that is the run's own
    ``test`` or another dataset of the same name was evaluated there before (then the name plus
    a hash of the dataset's path; the folder keeps that hash in ``.source``, not the path)."""
    key = _source_key(cs)
    base = Path(run_dir) / "evaluations"
    sub = base / cs.name
    marker = sub / ".source"
    if cs.name == "test" or (sub.exists() and (not marker.exists() or marker.read_text().strip() != key)):
        sub = base / f"{cs.name}-{key}"
    return sub


def _source_key(cs) -> str:
    import hashlib

    return hashlib.sha256(str(Path(str(cs.source)).resolve()).encode()).hexdigest()[:8]


def _mark_external(sub: Path, cs) -> None:
    (sub / ".source").write_text(_source_key(cs) + "\n")


def evaluate_run(run_dir: str | Path, dataset: str | None = None, *, progress: bool = True) -> Path:
    """Write metrics, plots and a report under ``RUN/evaluations/<name>/``; return that folder.

    Without ``dataset`` the run's own test split (from ``split.csv``) is used. With one,
    its official test split is used when it has one, else every case. The operating
    threshold is always the one chosen on the run's validation split.
    """
    run_dir = Path(run_dir)
    plan, model = load_run(run_dir)
    # a damaged run.json, a run that did not finish (any task: a segmenter's evaluation would look like its
    # final one) or a classifier that lost thresholds.json is refused before any data is read
    require_finished(run_dir, "evaluated")
    if plan.task in ("segment", "detect"):
        return evaluate_seg_run(run_dir, plan, model, dataset, progress=progress)
    if not (run_dir / "thresholds.json").exists():  # a run without run.json
        raise RunError("the run has no thresholds.json (the validation operating point)", path=run_dir,
                       fix="restore it from a copy of the run, or train the run again")
    names = list(plan.data.class_names)
    train: list = []  # only counted, for the report's summary of the run's own split
    if dataset is None:
        cs = open_dataset(plan.data.source)
        split = read_split(run_dir / "split.csv")
        for c in cs.cases:
            c.split = split.get(c.case_id)
        test = [c for c in cs.cases if c.split == "test"]
        val = [c for c in cs.cases if c.split == "val"]
        train = [c for c in cs.cases if c.split == "train"]
        sub = run_dir / "evaluations" / "test"
    else:
        cs = open_dataset(dataset, min_classes=1)  # one class is fine to score (e.g. sensitivity on positives)
        unknown = [n for n in cs.class_names if n not in names]
        if unknown:
            folded = {n.casefold(): n for n in names}
            renames = [f"'{n}' as '{folded[n.casefold()]}'" for n in unknown if n.casefold() in folded]
            raise DatasetError(f"classes {unknown} are not among the model's classes {names}", path=dataset,
                               fix=f"spell {', '.join(renames)}, as the model does" if renames
                               else "evaluate on data labelled with the model's classes")
        remap = {i: names.index(n) for i, n in enumerate(cs.class_names)}
        for c in cs.cases:
            c.label = remap[c.label]
        cs.class_names = names
        test = cs.subset("test") if cs.official_split else list(cs.cases)
        for c in test:
            c.split = "test"
        val = []
        sub = external_dir(run_dir, cs)
    if not test:
        raise RunError("no test cases to evaluate", path=run_dir, fix="give a labelled dataset")
    p_test, x_test = _proba(cs, test, plan, model, progress)
    y_test = cs.labels(test)
    p_val = np.zeros((0, len(names)))
    from meddx.evaluation.uncertainty import load_ensemble

    members = [model, *load_ensemble(plan, plan.evaluate.ensemble_runs, base=str(run_dir.parent))]
    # a failure part-way (Ctrl-C during the uncertainty passes or the bootstrap) leaves no half-written
    # evaluation, no empty folder that would move the next try to NAME-<hash>/, and an earlier evaluation
    # in ``sub`` whole
    with replaced_on_success(sub) as stage:
        evaluate_run_outputs(run_dir, plan, cs, {"train": train, "val": val, "test": test}, p_val,
                             np.zeros(0, dtype=np.int64), p_test, y_test, fit=None, out_dir=stage,
                             title_suffix=" (re-evaluation)", uncertainty_inputs=(members, x_test[:0], x_test))
        if dataset is not None:
            _mark_external(stage, cs)
    return sub


def evaluate_seg_run(run_dir: Path, plan, model, dataset: str | None, *, progress: bool = True) -> Path:
    """Segmentation: Dice, IoU, HD95, ASD (and detection) on the run's test split, or on every case of
    ``dataset``; heatmap detectors: AP and FROC."""
    from meddx.evaluation.seg_report import evaluate_det_outputs, evaluate_seg_outputs
    from meddx.training.seg_run import open_for_plan

    cs = open_for_plan(dataset or plan.data.source, plan)
    if dataset is None:
        split = read_split(run_dir / "split.csv")
        test = [c for c in cs.cases if split.get(c.case_id) == "test"]
        sub = run_dir / "evaluations" / "test"
    else:
        test = [c for c in cs.cases if c.split == "test"] if cs.official_split else list(cs.cases)
        sub = external_dir(run_dir, cs)
    if not test:
        raise RunError("no test cases to evaluate", path=run_dir, fix="give a dataset with masks")
    # a mask refused part-way (values outside the run's labels, another size) leaves no folder that looks
    # like an evaluation, none that would move the next try to NAME-<hash>/, and an earlier one whole
    with replaced_on_success(sub) as stage:
        if plan.task == "detect" and plan.segment.detector == "heatmap":
            evaluate_det_outputs(stage, plan, cs, test, model, fit=None, progress=progress)
        else:
            evaluate_seg_outputs(stage, plan, cs, test, model, fit=None, progress=progress)
        if dataset is not None:
            _mark_external(stage, cs)
    return sub
