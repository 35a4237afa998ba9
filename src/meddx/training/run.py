"""A run, end to end: dataset -> fingerprint -> plan -> split -> train -> evaluate -> report.

A run is a directory. ``run.json`` says whether it is ``running``, ``failed`` or
``complete``; ``metrics.json`` and ``report.html`` are written last, so a run that
stopped half-way never looks finished. A run that fails on bad input before training
starts leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import meddx
from meddx.data.case import CaseSet, pseudonym_key_id
from meddx.data.fingerprint import compute_fingerprint
from meddx.data.preprocess import PreprocessSpec, build_tensor, standardise
from meddx.data.sources import open_dataset
from meddx.data.split import apply_split, make_split, patient_groups, read_split, write_split
from meddx.errors import MeddxError, PlanError, RunError
from meddx.planning.plan import DataConfig, Decision, Plan, check_split_override
from meddx.planning.planner import apply_overrides, make_plan, refit_batch
from meddx.training.checkpoint import load_checkpoint
from meddx.training.engine import Trainer, get_device, predict_proba, seed_everything


def versions() -> dict[str, str]:
    import monai
    import sklearn

    return {"meddx": meddx.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "monai": monai.__version__, "numpy": np.__version__, "scikit-learn": sklearn.__version__}


def machine() -> dict[str, Any]:
    """The CPU (model name, plus family / model / clock where /proc/cpuinfo gives them: VMs
    often report one generic name for different processor generations), cores, threads, device."""
    from meddx.deploy.bench import cpuinfo_fields

    cpu = platform.processor() or ""
    parsed = cpuinfo_fields()
    if parsed is not None:
        fields = parsed[0]
        cpu = fields.get("model name", cpu)
        detail = [f"family {fields['cpu family']}, model {fields.get('model', '?')}"] if "cpu family" in fields else []
        try:
            detail += [f"{float(fields['cpu MHz']):.0f} MHz"] if fields.get("cpu MHz") else []
        except ValueError:
            pass
        if detail:
            cpu += f" ({', '.join(detail)})"
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": str(get_device()), "platform": platform.platform()}


def write_json(path: Path, obj: Any) -> None:
    """Atomically, into a folder created if missing; strict JSON (an undefined value, NaN, is null)."""
    from meddx.evaluation._checks import atomic_write_bytes, json_text

    atomic_write_bytes(path, json_text(obj).encode())


def read_run_info(run_dir: Path) -> dict:
    """``run.json`` of a run ({} when it has none); a damaged one is a RunError naming it."""
    p = Path(run_dir) / "run.json"
    if not p.exists():
        return {}
    try:
        info = json.loads(p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        info = None
    if not isinstance(info, dict):
        raise RunError("run.json is damaged (not a JSON object)", path=p,
                       fix="restore it from a copy of the run, or train the run again")
    return info


def _missing_threshold(run_dir: Path) -> bool:
    """A finished classification run (run.json says so) whose thresholds.json, its validation operating
    point, is gone. Every classification run writes one (``argmax`` for several classes)."""
    import yaml

    run_dir = Path(run_dir)
    plan_path = run_dir / "plan.yaml"
    if (run_dir / "thresholds.json").exists() or not plan_path.exists() or not (run_dir / "run.json").exists():
        return False
    try:
        task = (yaml.safe_load(plan_path.read_text()) or {}).get("task", "classify")
    except (yaml.YAMLError, UnicodeDecodeError, AttributeError):
        return False  # loading the plan names the damage
    return task == "classify"


_RESTORE = "restore it from a copy of the run, or train the run again"


def require_finished(run_dir: Path, what: str) -> None:
    """Refuse a run whose run.json says it did not finish (killed, failed, interrupted), or a finished
    classifier that lost its thresholds.json: ``what`` it would make from it (a bundle) would look
    finished. A run without run.json is taken as it is."""
    status = read_run_info(run_dir).get("status", "complete")
    if status != "complete":
        raise RunError(f"the run did not finish (run.json says '{status}'), so it cannot be {what}", path=run_dir,
                       fix="finish it with `meddx train --resume --out RUN` (or train it again)")
    if _missing_threshold(run_dir):
        raise RunError(f"the run has lost its thresholds.json (the validation operating point), so it cannot be "
                       f"{what}", path=run_dir, fix=_RESTORE)


def unfinished_note(run_dir: Path) -> str | None:
    """One line for a user who predicts or explains with a run that did not finish (its best checkpoint so
    far, without a validation threshold or calibration), or that lost its thresholds.json; None otherwise."""
    status = read_run_info(run_dir).get("status", "complete")
    if status == "complete":
        if _missing_threshold(run_dir):
            return (f"warning: {run_dir} has lost its thresholds.json: predicting at argmax only, without the "
                    f"validation threshold; {_RESTORE}")
        return None
    return (f"warning: {run_dir} did not finish (run.json says '{status}'): using its best checkpoint so far, "
            "without the validation threshold and calibration a finished run has; finish it with "
            "`meddx train --resume --out RUN`")


def note_resumed_in_summary(summary: dict, run_dir: Path) -> None:
    """A report's summary line for a resumed run: how often and when (``run.json``), naming versions that
    differ from those that started the run; nothing for a run never resumed."""
    info = read_run_info(run_dir)
    resumed = [r for r in info.get("resumed", []) if isinstance(r, dict)]
    if not resumed:
        return
    text = f"{len(resumed)} time(s), last at {resumed[-1].get('at', '?')}"
    started = info.get("versions") or {}
    changed = sorted({k for r in resumed for k, v in (r.get("versions") or {}).items() if started.get(k) not in (None, v)})
    if changed:
        text += f"; with other versions of {', '.join(changed)} than it started with (run.json)"
    summary["resumed (train --resume)"] = text


def set_status(run_dir: Path, status: str, **extra) -> None:
    p = run_dir / "run.json"
    info = json.loads(p.read_text()) if p.exists() else {}
    info.update(extra)
    info["status"] = status
    info["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    write_json(p, info)


def build_single_model(plan: Plan) -> torch.nn.Module:
    """One network as the plan describes it (with its PCA head when ``train.head`` is pca_linear)."""
    from meddx.models import create_model

    seg = plan.segment if plan.task in ("segment", "detect") else None
    k = len(seg.label_values) if seg else len(plan.data.class_names)
    if seg and plan.task == "detect" and seg.detector == "heatmap":
        k = len(seg.label_values) - 1 + 2  # a heatmap per finding class, box height and width
    size = seg.patch_size if seg and seg.patch_size else plan.data.input_size
    model = create_model(plan.model.name, spatial_dims=plan.data.spatial_dims, in_channels=plan.data.channels,
                         num_classes=k, input_size=tuple(size), **plan.model.params)
    if not seg and plan.train.head == "pca_linear":
        from meddx.models.ensemble import PCALinearHead

        in_features = model.get_submodule(model.classifier_layer).in_features
        model = PCALinearHead(model, in_features, plan.train.pca_components, k)
    return model


def build_model(plan: Plan) -> torch.nn.Module:
    """The run's model: one network, or an ``EnsembleModel`` of ``ensemble.members`` of them."""
    from meddx.training.ensemble import n_members

    if n_members(plan) == 1:
        model = build_single_model(plan)
    else:
        from meddx.models.ensemble import EnsembleModel

        model = EnsembleModel([build_single_model(plan) for _ in range(n_members(plan))])
    if plan.task == "classify" and plan.data.learned_denoise:
        from meddx.models.ensemble import DenoisedInput
        from meddx.transforms.learned_denoise import SelfSupervisedDenoiser

        net = SelfSupervisedDenoiser(spatial_dims=plan.data.spatial_dims, channels=plan.data.channels)._build()
        model = DenoisedInput(net, 0.0, 1.0, model)  # statistics and weights come from the checkpoint
    return model


def progress_callback(enabled: bool, total: int, desc: str):
    if not enabled:
        return None, lambda: None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    p = Progress(TextColumn(desc), BarColumn(), MofNCompleteColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                 transient=True)
    p.start()
    t = p.add_task(desc, total=total)
    return (lambda k: p.update(t, advance=k)), p.stop


def fingerprint_dataset(cs: CaseSet, progress: bool, strict: bool = True, split: dict[str, str] | None = None,
                        log=None) -> dict:
    """The fingerprint; with ``split``, its test cases add nothing to the statistics a plan reads.
    With ``log``, each finding (duplicates, imbalance, mixed sizes, ...) is told as ``meddx inspect``
    would tell it, so that a user who trains without inspecting still sees them."""
    cb, stop = progress_callback(progress, len(cs.cases), "reading images")
    try:
        fp = compute_fingerprint(cs, strict=strict, progress=cb, split=split)
    finally:
        stop()
    if log is not None:
        for n in fp.get("notes", []):  # what the reader left out or grouped, as `meddx inspect` prints it
            log(f"note: {n}")
        for f in fp.get("findings", []):
            log(f"finding: {f}")
    return fp


def planned_split(cs: CaseSet, *, plan: Plan | None = None, overrides: dict[str, Any] | None = None) -> dict[str, str]:
    """``case_id -> split`` as the run will make it, known before its plan exists so that the planner
    reads no test case: the plan's seed and fractions, else the user's overrides of them, else the
    defaults (the planner puts the seed it is given and the default fractions into the plan)."""
    if plan is not None:
        seed, split_seed, fractions = plan.seed, plan.data.split_seed, plan.data.split_fractions
    else:
        ov = {k: check_split_override(k, v) for k, v in (overrides or {}).items()
              if k in ("seed", "data.split_seed", "data.split_fractions") and v is not None}
        seed, split_seed = int(ov.get("seed") or 0), ov.get("data.split_seed")
        fractions = ov.get("data.split_fractions") or DataConfig.model_fields["split_fractions"].default
    return make_split(cs, seed=seed if split_seed is None else int(split_seed), fractions=tuple(fractions))


def planning_budgets(overrides: dict[str, Any] | None) -> dict[str, float | None]:
    """The budgets the planner's rules read (R6, R9, R14, R17; S4), from the user's overrides
    (``--time-budget`` or ``--set train.time_budget_s=...``), checked before they are planned with."""
    keys = {"time_budget_s": "train.time_budget_s", "memory_budget_gb": "train.memory_budget_gb"}
    return {arg: check_split_override(key, (overrides or {})[key]) if (overrides or {}).get(key) is not None
            else None for arg, key in keys.items()}


def prepare_tensors(cs: CaseSet, parts: dict, plan: Plan, progress: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Preprocess every split; the standardisation statistics come from train only."""
    spec = PreprocessSpec.from_plan(plan.data)
    cb, stop = progress_callback(progress, len(cs.cases), "preprocessing")
    try:
        raw = {s: build_tensor(cs, cases, spec, cb) for s, cases in parts.items()}
    finally:
        stop()
    tr = raw["train"]
    plan.data.norm_mean = float(tr.mean())
    plan.data.norm_std = float(tr.std()) or 1.0
    spec = PreprocessSpec.from_plan(plan.data)
    return {s: (standardise(x, spec), torch.from_numpy(cs.labels(parts[s]))) for s, x in raw.items()}


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RunError("the output folder is a file", path=out, fix="choose a new --out")
    if out.exists() and any(out.iterdir()):
        raise RunError("the output folder already exists and is not empty", path=out,
                       fix="choose a new --out, or add --resume to continue that run")


def resume_state(out: Path, given: dict[str, Any] | None = None) -> tuple[Plan, dict]:
    """Plan and fingerprint of a stopped run in ``out`` (refuses a missing or complete one).

    ``given``: what the user passed besides ``--resume`` that would change the run (plan overrides,
    ``--plan``, ``--image-size``, ...), by name; any of them is refused, since a resumed run continues
    exactly as its ``plan.yaml`` says (taking them silently would look as if they were applied)."""
    if not (out / "plan.yaml").exists():
        raise RunError("nothing to resume: no plan.yaml", path=out, fix="start the run without --resume")
    info = read_run_info(out)
    if info.get("status") == "complete":
        raise RunError("the run is already complete", path=out, fix="start a new run with another --out")
    named = [k for k, v in (given or {}).items() if v is not None and v is not False]
    if named:
        raise RunError(f"--resume continues the run exactly as its plan.yaml says, so it takes no other plan "
                       f"options (given: {', '.join(named)})", path=out,
                       fix="drop them to finish the run as planned, or start a new run with another --out")
    return Plan.load(out / "plan.yaml"), json.loads((out / "fingerprint.json").read_text())


def check_resume_dataset(cs: CaseSet, out: Path) -> None:
    """A resumed run's dataset must be the one it started on: every case of its ``split.csv``, with the
    same label (``apply_split`` refuses cases the split lacks). A subset or a relabelled copy would
    otherwise train on, and report about, other data than the run began with."""
    import csv

    p = out / "split.csv"
    if not p.exists():
        return
    with open(p, newline="") as f:
        stored = {row["case_id"]: row.get("label", "") for row in csv.DictReader(f)}
    here = {c.case_id: cs.class_names[c.label] for c in cs.cases}
    missing = [cid for cid in stored if cid not in here]
    relabelled = [cid for cid, lab in stored.items() if cid in here and lab and here[cid] != lab]
    if missing or relabelled:
        from meddx.errors import DatasetError

        what = (f"lacks {len(missing)} of the run's {len(stored)} cases (e.g. '{missing[0]}')" if missing else
                f"labels {len(relabelled)} case(s) differently from the run's split.csv (e.g. '{relabelled[0]}')")
        raise DatasetError(f"the dataset {what}: this is not the dataset the run was trained on", path=cs.source,
                           fix="resume with the run's own dataset (or leave the dataset out to use the plan's source)")


def note_resumed(out: Path) -> None:
    """Record in ``run.json`` that the run was resumed (when, with which versions, on which machine):
    its ``versions`` and ``machine`` are those of the session that started it."""
    info = read_run_info(out)
    resumed = list(info.get("resumed", [])) + [{"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "versions": versions(),
                                                  "machine": machine()}]
    set_status(out, "running", resumed=resumed)


def split_for_run(cs: CaseSet, plan: Plan, out: Path, resume: bool) -> dict:
    """Check the plan's split fits the dataset; the run's own split when resuming, else a new one."""
    if plan.data.split == "official" and not cs.official_split:
        raise PlanError("the plan asks for the dataset's own split but it has none", path=cs.source,
                        fix="set data.split: seeded")
    if resume and (out / "split.csv").exists():
        split = read_split(out / "split.csv")  # the split the run started with, whatever changed since
    else:
        split = planned_split(cs, plan=plan)
    return apply_split(cs, split)


def start_run_dir(out: Path, plan: Plan, fp: dict, cs: CaseSet) -> None:
    """Create the run directory with run.json (running), fingerprint, split and plan."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "run.json", {"status": "running", "task": plan.task,
                                  "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "seed": plan.seed,
                                  "data_hash": fp.get("data_hash"), "versions": versions(), "machine": machine(),
                                  **({"pseudonym_key_id": pseudonym_key_id()} if any(c.group for c in cs.cases)
                                     else {})})
    write_json(out / "fingerprint.json", fp)
    write_split(out / "split.csv", cs)
    plan.save(out / "plan.yaml")  # so a run killed while preprocessing can be resumed


def size_epochs(plan: Plan, out: Path, measure, rule: str, fraction: float) -> None:
    """R9/S8: with a time budget, epochs = fraction x budget / measured epoch seconds (once per run)."""
    started = (out / "checkpoints" / "last.pt").exists()
    # the planner's R9/S8 decision says "sized at the start of training" (or the plain epochs) until this
    # measures; a measured one (resume, or a plan re-run) is kept
    sized = any(d.rule.startswith(("R9", "S8")) and "measured_epoch_s" in d.reads for d in plan.decisions)
    if not plan.train.time_budget_s or started or sized:
        return
    given = plan.train.time_budget_s
    t0 = time.perf_counter()
    per_epoch = measure()
    probe_s = time.perf_counter() - t0
    # the probe ran inside the user's budget: training gets what is left
    plan.train.time_budget_s = round(max(1.0, given - probe_s), 3)
    epochs = int(np.clip(plan.train.time_budget_s * fraction // max(per_epoch, 1e-6), 1,
                         plan.train.max_epochs_with_budget))
    plan.train.epochs = epochs
    sized_now = Decision(field="train.epochs", value=epochs, rule=rule, kind="rule-based",
                         reads={"time_budget_s": round(given, 3), "probe_s": round(probe_s, 3),
                                "training_budget_s": plan.train.time_budget_s,
                                "measured_epoch_s": round(per_epoch, 3)})
    at = next((i for i, d in enumerate(plan.decisions) if d.rule == rule), None)  # the planner's, replaced
    if at is None:
        plan.decisions.append(sized_now)
    else:
        plan.decisions[at] = sized_now


class RunGuard:
    """On the way out of a failed run: remove it when bad input stopped it before any checkpoint,
    else mark ``run.json`` failed or interrupted (a run never looks finished when it is not)."""

    def __init__(self, out: Path, resume: bool):
        self.out, self.resume, self.created = out, resume, False

    def __enter__(self) -> "RunGuard":
        return self

    def __exit__(self, et, e, tb) -> bool:
        out = self.out
        if et is None:
            return False
        if issubclass(et, MeddxError):
            if self.created and not self.resume and not (out / "checkpoints" / "last.pt").exists():
                shutil.rmtree(out, ignore_errors=True)
            elif out.exists():
                set_status(out, "failed")
        elif (out / "run.json").exists():
            set_status(out, "interrupted" if issubclass(et, KeyboardInterrupt) else "failed")
        return False


def train_run(dataset: str | None, out: str | Path, *, plan_path: str | None = None,
              overrides: dict[str, Any] | None = None, resume: bool = False, image_size: int | None = None,
              progress: bool = True, log=print) -> Path:
    """Train, evaluate and report. Returns the run directory."""
    out = Path(out)
    overrides = dict(overrides or {})
    if resume:
        plan, fp = resume_state(out, {**overrides, "--plan": plan_path, "--image-size": image_size})
        if plan.task != "classify":
            raise RunError(f"the run is a '{plan.task}' run", path=out, fix="resume it without --task")
        cs = open_dataset(dataset or plan.data.source)
        if list(plan.data.class_names) != list(cs.class_names):
            raise PlanError(f"the run's classes {plan.data.class_names} differ from the dataset's {cs.class_names}",
                            path=cs.source, fix="resume with the run's own dataset")
        check_resume_dataset(cs, out)
    else:
        _check_out_dir(out)
        if plan_path:
            plan = Plan.load(plan_path)
            cs = open_dataset(dataset or plan.data.source)
        else:
            if dataset is None:
                raise RunError("no dataset given", fix="pass a dataset path or --plan")
            cs = open_dataset(dataset)
            plan = None
        fp = None
        if plan is None:
            fp = fingerprint_dataset(cs, progress, split=planned_split(cs, overrides=overrides), log=log)
            plan = make_plan(fp, source=str(Path(cs.source).resolve()) if cs.kind != "synthetic" else cs.source,
                             seed=int(overrides.pop("seed", 0) or 0), **planning_budgets(overrides))
        elif "seed" in overrides and overrides["seed"] is not None:
            plan.seed = int(overrides.pop("seed"))
        overrides.pop("seed", None)
        if list(plan.data.class_names) != list(cs.class_names):
            raise PlanError(f"plan classes {plan.data.class_names} differ from the dataset's {cs.class_names}",
                            path=plan_path, fix="re-plan for this dataset (omit --plan)")
        if image_size:
            overrides["data.input_size"] = [int(image_size)] * plan.data.spatial_dims
        plan = refit_batch(apply_overrides(plan, overrides), overrides, cs.source)
        if fp is None:  # a given plan: its fingerprint is recorded, over the split the plan makes
            fp = fingerprint_dataset(cs, progress, split=planned_split(cs, plan=plan), log=log)
    if plan.evaluate.ensemble_runs:  # a missing or mismatched member is refused now, not after training
        from meddx.evaluation.uncertainty import load_ensemble

        # (the normalisation is compared after training: prepare_tensors measures it on the training split)
        load_ensemble(plan, plan.evaluate.ensemble_runs, base=str(out.parent), check_normalisation=False)
    seed_everything(plan.seed)
    parts = split_for_run(cs, plan, out, resume)
    with RunGuard(out, resume) as guard:
        if not resume:
            start_run_dir(out, plan, fp, cs)
            guard.created = True
        else:
            note_resumed(out)
        tensors = prepare_tensors(cs, parts, plan, progress)
        xtr, ytr = tensors["train"]
        xva, yva = tensors["val"]
        result, model = fit_classifier(plan, out, xtr, ytr, xva, yva, resume=resume, progress=progress,
                                       groups=patient_groups(parts["train"]), log=log)
        from meddx.evaluation.run_report import evaluate_run_outputs

        xte, yte = tensors["test"]
        device = next(model.parameters()).device
        if plan.evaluate.choose_tta:
            p_val = choose_tta(plan, model, xva, yva.numpy(), device, log)
            plan.save(out / "plan.yaml")
        else:
            p_val = predict_proba(model, xva, plan.train.eval_batch_size, device, plan.evaluate.tta_flip_axes)
        p_test = predict_proba(model, xte, plan.train.eval_batch_size, device, plan.evaluate.tta_flip_axes)
        from meddx.evaluation.uncertainty import load_ensemble

        members = [model, *load_ensemble(plan, plan.evaluate.ensemble_runs, base=str(out.parent))]
        evaluate_run_outputs(out, plan, cs, parts, p_val, yva.numpy(), p_test, yte.numpy(), fit=result,
                             uncertainty_inputs=(members, xva, xte))
        set_status(out, "complete", finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
                   train_seconds=result.train_seconds, best_epoch=result.best_epoch, stopped_by=result.stopped_by)
        return out


def choose_tta(plan: Plan, model: torch.nn.Module, xva: torch.Tensor, yva: np.ndarray, device,
               log=print) -> np.ndarray:
    """R16: keep the candidate flips in ``evaluate.tta_flip_axes`` only if they raise the validation AUC
    (accuracy when the AUC is undefined); record the choice in the plan. Returns the validation
    probabilities of the chosen setting."""
    from meddx.training.engine import val_scores

    ev, flips = plan.evaluate, list(plan.evaluate.tta_flip_axes)
    scores, probs = {}, {}
    for name, axes in (("without", []), ("with", flips)):
        probs[name] = predict_proba(model, xva, plan.train.eval_batch_size, device, axes)
        sc = val_scores(yva, probs[name])
        scores[name] = sc["auc"] if np.isfinite(sc["auc"]) else sc["accuracy"]
    keep = bool(flips) and scores["with"] > scores["without"]
    ev.tta_flip_axes = flips if keep else []
    ev.choose_tta = False  # chosen: a re-run of this plan keeps it
    plan.decisions.append(Decision(field="evaluate.tta_flip_axes", value=ev.tta_flip_axes,
                                   rule="R16 test-time augmentation", kind="empirical",
                                   reads={"candidate_flip_axes": flips,
                                          "validation_score": {k: round(float(v), 4) for k, v in scores.items()}}))
    log(f"test-time flips {flips}: validation {scores['with']:.4f} with, {scores['without']:.4f} without -> "
        f"{'kept' if keep else 'not used'}")
    return probs["with" if keep else "without"]


def fit_classifier(plan: Plan, out: Path, xtr: torch.Tensor, ytr: torch.Tensor, xva: torch.Tensor,
                   yva: torch.Tensor, *, resume: bool, progress: bool, groups: list[str] | None = None, log=print):
    """Size the schedule to the budget, train one network or an ensemble, fit the PCA head if the plan
    asks for it; the run's final weights go to ``checkpoints/best.pt``. Returns ``(FitResult, model)``.
    ``groups``: the training cases' patient keys (cross-validation folds keep a patient together)."""
    from meddx.training.checkpoint import save_checkpoint
    from meddx.training.ensemble import fit_members, member_cases, n_members

    def make_trainer(p, model, d):
        return Trainer(p, model, d, progress=progress)

    den = None
    if plan.data.learned_denoise:
        from meddx.training.fitted_inputs import denoise_inputs

        den, xtr, xva, spent = denoise_inputs(plan, out, xtr, xva, log=log, progress=progress)
        if spent:  # fitting and the denoising pass come out of the budget
            if plan.train.time_budget_s:
                plan.train.time_budget_s = max(1.0, plan.train.time_budget_s - spent)
            charge_fit(plan, out, "learned_denoise")
    if any(c.chosen is None for c in plan.choices):
        from meddx.training.empirical import run_choices

        # before the GAN: R17 scores its options (and folds the training split) on real cases only
        run_choices(plan, out, xtr, ytr, xva, yva, make_model=build_single_model, make_trainer=make_trainer,
                    groups=groups, log=log)
        plan.save(out / "plan.yaml")
    if plan.train.synthetic:
        from meddx.training.fitted_inputs import add_synthetic

        n_real = xtr.shape[0]
        xtr, ytr, spent = add_synthetic(plan, out, xtr, ytr, log=log)
        if groups is not None:  # each generated image is its own group
            groups = list(groups) + [f"synthetic-{i}" for i in range(xtr.shape[0] - n_real)]
        if spent:
            if plan.train.time_budget_s:
                plan.train.time_budget_s = max(1.0, plan.train.time_budget_s - spent)
            charge_fit(plan, out, "synthetic")
    k = n_members(plan)
    head = plan.train.head
    if head == "pca_linear":
        plan.train.pca_components = int(min(plan.train.pca_components, max(1, xtr.shape[0] - 1)))
    deep = plan.model_copy(deep=True)
    deep.train.head = "deep"  # members train with their own linear layer; the PCA head comes after
    probe = make_trainer(deep, build_single_model(deep), out)
    m = member_cases(plan, xtr.shape[0])  # kfold members train on (k-1)/k of the cases; the probe only draws batches
    size_epochs(plan, out, lambda: probe.measure_epoch_seconds(xtr[:m], ytr[:m], xva.shape[0]) * k, "R9 epochs", 0.97)
    plan.save(out / "plan.yaml")  # resolved: normalisation statistics and epochs
    deep.train.epochs, deep.train.time_budget_s = plan.train.epochs, plan.train.time_budget_s
    head_fits = []

    def post(model, p, idx=None):
        if head != "pca_linear":
            return model
        from meddx.training.heads import fit_pca_head, head_class_weight

        x, y = (xtr, ytr) if idx is None else (xtr[idx], ytr[idx])  # a kfold member: its own training folds
        new, rec = fit_pca_head(model, x, y, xva, yva, plan.train.pca_components, len(plan.data.class_names),
                                seed=p.seed, class_weight=head_class_weight(plan.train))
        log(f"PCA head: {rec['components']} components ({rec['explained_variance']:.0%} of the feature variance), "
            f"C={rec['C']}, class weights {rec['class_weight'] or 'none'}")
        head_fits.append(rec)
        return new

    if k == 1:
        seed_everything(plan.seed)
        # a fresh model, so the weights do not depend on whether the budget probe ran
        trainer = make_trainer(deep, build_single_model(deep), out)
        log(f"training {plan.model.name} on {xtr.shape[0]} cases ({plan.data.spatial_dims}D, input "
            f"{plan.data.input_size}, {plan.train.epochs_text}) -> {out}")
        result = trainer.fit(xtr, ytr, xva, yva, resume=resume)
        model = post(trainer.model, deep)
    else:
        log(f"training an ensemble of {k} {plan.model.name} ({plan.ensemble.kind}) on {xtr.shape[0]} cases, "
            f"{plan.train.epochs_text} each -> {out}")
        def fit_member(trainer, idx, res):
            x, y = (xtr, ytr) if idx is None else (xtr[idx], ytr[idx])
            return trainer.fit(x, y, xva, yva, resume=res)

        model, result = fit_members(deep, out, build_single_model, make_trainer, fit_member, ytr.numpy(),
                                    resume=resume, post=post, fold_groups=groups, log=log)
    if head_fits:
        from meddx.training.fitted_inputs import record_fit

        record_fit(out, "pca_head", head_fits)  # one record per member
    if den is not None:
        from meddx.models.ensemble import DenoisedInput

        model = DenoisedInput(den.net_, den.mean_, den.std_, model, stride=den._grid_stride())  # raw images in
    save_checkpoint(out / "checkpoints" / "best.pt", {"model": model.state_dict(), "epoch": result.best_epoch})
    return result, model


def charge_fit(plan: Plan, out: Path, key: str) -> None:
    """Save the plan whose time budget a fitted input's seconds just came out of, then mark that fit
    charged, so that ``--resume`` after a kill charges it exactly once."""
    from meddx.training.fitted_inputs import mark_charged

    plan.save(out / "plan.yaml")
    mark_charged(out, key)


def load_run(run_dir: str | Path) -> tuple[Plan, torch.nn.Module]:
    """Plan and best model of a finished (or at least checkpointed) run."""
    run_dir = Path(run_dir)
    if not (run_dir / "plan.yaml").exists():
        raise RunError("not a meddx run directory (no plan.yaml)", path=run_dir,
                       fix="point at a folder written by `meddx train`")
    plan = Plan.load(run_dir / "plan.yaml")
    model = build_model(plan)
    st = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    model.load_state_dict(st["model"])
    model.eval()
    return plan, model
