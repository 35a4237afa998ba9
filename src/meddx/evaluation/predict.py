"""``meddx predict``: probabilities for new, unlabelled images."""

from __future__ import annotations

import csv
import io as _io
import json
import sys
from pathlib import Path

import torch

from meddx.data.preprocess import PreprocessSpec, prepare, standardise
from meddx.errors import MeddxError
from meddx.evaluation.inputs import collect_inputs
from meddx.evaluation.metrics import predict_labels
from meddx.evaluation.thresholds import stored_positive
from meddx.io import read_input
from meddx.training.engine import predict_proba
from meddx.training.run import progress_callback, load_run


def read_each(paths: list[Path], run_dir: Path | None = None, plan=None):
    """``(path, image)`` for each input, read one at a time. When one cannot be read, the rest are read
    too (without predicting) so that its one-line error also names how many more cannot be read, and
    the first of them: a folder with five damaged files needs one run to find them, not five.

    With ``run_dir``, volumes whose axes point another way than the run's training volumes (its
    fingerprint's orientation) are named in one warning line on stderr once all are read, unless
    ``plan`` reorients them (``data.orientation``, R20; runs planned before R20 do not), so the
    network would see them transposed or mirrored."""
    from meddx.io.base import axcodes_of

    trained = None if plan is not None and plan.data.orientation else _trained_axcodes(run_dir)
    files = plan.data.channel_files if plan is not None else 1  # nnU-Net channel files per case
    off = []
    for i, p in enumerate(paths):
        try:
            img = read_input(p, files)
        except MeddxError as e:
            raise _naming_the_others(e, paths[i + 1:], files) from None
        codes = axcodes_of(img) if trained and img.spatial_dims == 3 else None
        if codes and codes != trained:
            off.append(f"{p.name} ({''.join(codes)})")
        yield p, img
    if off:
        shown = ", ".join(off[:3]) + (f" and {len(off) - 3} other(s)" if len(off) > 3 else "")
        print(f"warning: {len(off)} input(s) are not oriented as the training volumes ({''.join(trained)}): {shown}; "
              f"their predictions may be wrong: reorient them to {''.join(trained)} first (e.g. nibabel's "
              "as_reoriented)", file=sys.stderr)


def _trained_axcodes(run_dir: Path | None) -> tuple[str, ...] | None:
    """The orientation of (at least 90 % of) a run's training volumes, from its fingerprint; None when
    unknown or mixed."""
    path = Path(run_dir) / "fingerprint.json" if run_dir is not None else None
    if path is None or not path.is_file():
        return None
    try:
        codes = json.loads(path.read_text()).get("axcodes")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
    return tuple(codes) if codes else None


def _naming_the_others(err: MeddxError, rest: list[Path], channel_files: int = 1) -> MeddxError:
    bad = []
    for q in rest:
        try:
            read_input(q, channel_files)
        except MeddxError:
            bad.append(str(q))
    if not bad:
        return err
    shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} other(s)" if len(bad) > 3 else "")
    return type(err)(f"{err.message}; {len(bad)} more input(s) cannot be read either: {shown}", path=err.path,
                     fix=err.fix)


def predict_paths(run_dir: str | Path, target: str | Path, *, progress: bool = True) -> list[dict]:
    run_dir = Path(run_dir)
    plan, model = load_run(run_dir)
    thr_path = run_dir / "thresholds.json"
    stored = json.loads(thr_path.read_text()) if thr_path.exists() else {}
    threshold = stored.get("threshold")
    spec = PreprocessSpec.from_plan(plan.data)
    names = list(plan.data.class_names)
    pos = stored_positive(names, stored, plan.evaluate.positive_class)
    paths = collect_inputs(Path(target), plan.data.spatial_dims, plan.data.channel_files)
    rows = []
    cb, stop = progress_callback(progress and len(paths) > 20, len(paths), "predicting")
    try:
        for p, img in read_each(paths, run_dir, plan):
            x = torch.from_numpy(prepare(img, spec, str(p)))[None]
            proba = predict_proba(model, standardise(x, spec), 1, torch.device("cpu"), plan.evaluate.tta_flip_axes)[0]
            k = int(predict_labels(proba[None], positive=pos)[0])  # argmax, or 0.5 on p(positive), as evaluated
            row = {"file": str(p), "predicted": names[k]}
            if threshold is not None:
                row["predicted_at_threshold"] = names[int(predict_labels(proba[None], threshold, pos)[0])]
                row["threshold"] = round(float(threshold), 6)
            row.update({f"p_{n}": round(float(v), 6) for n, v in zip(names, proba)})
            rows.append(row)
            if cb:
                cb(1)
    finally:
        stop()
    return rows


def write_predictions_file(rows: list[dict], out: Path | None) -> None:
    """CSV or JSON by the file suffix; CSV to stdout when ``out`` is None."""
    from meddx.evaluation._checks import atomic_write_bytes, json_text

    if out is not None and out.suffix.lower() == ".json":
        atomic_write_bytes(out, json_text(rows).encode())
        return
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()))
    w.writeheader()
    w.writerows(rows)
    if out is None:
        sys.stdout.write(buf.getvalue())
    else:
        atomic_write_bytes(out, buf.getvalue().encode())
