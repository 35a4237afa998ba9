"""``meddx compress RUN``: pruning, distillation and static int8, alone or combined, into a bundle.

The pipeline, each step optional::

    student   RUN's trained model, or a fresh registry model (--student NAME[:k=v,...]) trained
              on RUN's training split (with the teacher's soft labels when --distill-from is given)
    prune     Torch-Pruning removes a fraction of every layer's channels (--prune 0.5),
              then the narrower network is fine-tuned (distilled when there is a teacher);
              with --prune-steps N the fraction is reached in N cuts, each followed by
              fine-tuning for 1/N of the training length
    distill   with --distill-from TEACHER_RUN and neither of the above: RUN's model is
              fine-tuned against the teacher
    int8      ONNX Runtime static quantisation, QDQ, calibrated on training images (--int8)

Training uses RUN's own split, preprocessing, augmentation and optimiser (the learning
rate is a quarter of the plan's when fine-tuning weights that are already trained, the full
rate after a cut of 60 % of the channels or more: ``prune_lr_factor``), with
the checkpoint chosen on validation AUC. The temperature and the binary threshold are
fitted anew on the validation split with the final (possibly int8) model. The test split
is only scored, never used for a choice. The result is a bundle (``meddx.runtime``) with
``compression.json`` (what was done, sizes, FLOPs, validation and test AUC) and
``student.pt`` (the torch weights and layer widths, to rebuild the pruned network).
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from meddx.errors import PlanError, RunError
from meddx.evaluation._checks import json_text
from meddx.losses.distill import DistillationLoss
from meddx.training.engine import Trainer, predict_proba, seed_everything

FINE_TUNE_LR_FACTOR = 0.25  # fine-tuning trained weights: a quarter of the plan's learning rate
HEAVY_PRUNE = 0.6
"""From this ratio on, pruning leaves under a sixth of the FLOPs and the network is retrained at
the plan's full learning rate rather than fine-tuned at a quarter of it. Evidence (validation
AUC only, seed-0 teachers, ``--prune 0.7 --distill-from`` with 120 s of training, 2026-12-02):
PneumoniaMNIST 0.9946 at a quarter, 0.9962 at the full rate; BreastMNIST 0.965 and 0.974
(teachers 0.9968 and 0.977). With 240 s the two rates tie on PneumoniaMNIST (0.9970 / 0.9968).
Cutting in three steps (``--prune-steps 3``; quarter / full rate) gave 0.9910 / 0.9956 and
0.947 / 0.981: mixed, so one cut stays the default."""


def prune_lr_factor(ratio: float) -> float:
    """Share of the plan's learning rate used to train after pruning ``ratio`` of the channels."""
    return 1.0 if ratio >= HEAVY_PRUNE else FINE_TUNE_LR_FACTOR


KD_TEMPERATURE, KD_ALPHA, CALIBRATION_IMAGES = 4.0, 0.9, 256  # the defaults of the options below


@dataclass
class CompressOptions:
    """What ``compress_run`` does (see the module docstring)."""

    prune: float | None = None
    distill_from: str | None = None
    int8: bool = False
    student: str | None = None
    epochs: int | None = None
    time_budget_s: float | None = None
    lr: float | None = None
    kd_temperature: float | None = None  # None: KD_TEMPERATURE (with a teacher; given without one, refused)
    kd_alpha: float | None = None  # None: KD_ALPHA
    calibration_images: int | None = None  # None: CALIBRATION_IMAGES (with --int8; given without it, refused)
    calibration_method: str = "minmax"
    round_to: int | None = None
    prune_steps: int = 1
    seed: int | None = None
    data: str | None = None


def recorded_options(opts: CompressOptions) -> dict[str, Any]:
    """``opts`` as ``compression.json`` records them: the teacher run and ``--data`` by folder name only,
    as ``meddx export`` names the source run (a bundle leaves the site; a full path may hold a patient's
    or a user's name)."""
    d = asdict(opts)
    for key in ("distill_from", "data"):
        if d[key]:
            d[key] = Path(d[key]).name
    return d


def parse_student(text: str) -> tuple[str, dict[str, Any]]:
    """``small_cnn`` or ``small_cnn:width=0.5,first_stride=2`` -> (name, params)."""
    import yaml

    name, _, rest = text.partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise PlanError(f"cannot read the student option '{item}'", fix="write --student NAME:key=value,key=value")
        params[k.strip()] = yaml.safe_load(v.strip())
    return name.strip(), params


class DistillTrainer(Trainer):
    """``Trainer`` whose loss is Hinton's distillation against a frozen teacher.

    The teacher sees the same augmented batch as the student; ``teacher_affine`` maps the
    student's standardised input to the teacher's standardisation (``a * x + b``).
    """

    def __init__(self, plan, model, run_dir, teacher: torch.nn.Module, kd: DistillationLoss,
                 teacher_affine: tuple[float, float] = (1.0, 0.0), **kw):
        super().__init__(plan, model, run_dir, **kw)
        self.teacher = teacher.eval().to(self.device)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.kd, self.affine = kd, teacher_affine

    def _loss(self, model, xb, yb, gen, idx=None) -> torch.Tensor:
        params = None
        if self.augment.active:
            xb, params = self.augment(xb, gen)
        self._record(idx, params)
        xb, yb = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
        a, b = self.affine
        with torch.no_grad():
            t = self.teacher(xb * a + b if (a, b) != (1.0, 0.0) else xb)
        return self.kd(model(xb), t, yb, hard_loss=self.loss_fn)  # the plan's label loss (weights, smoothing)


# -- data -----------------------------------------------------------------------------------------
def split_coverage(run_dir: Path, parts) -> dict[str, list[int]]:
    """Per split, ``[cases here, cases in the run's split.csv]``: ``--data`` may hold only part of the
    run's cases (they are checked to be the run's own), and then the compressed model is measured on
    fewer cases than the run's own metrics were."""
    from meddx.data.split import read_split

    stored = list(read_split(run_dir / "split.csv").values())
    return {s: [len(cases), stored.count(s)] for s, cases in parts.items()}


def coverage_note(run_dir: Path, parts, log) -> tuple[dict[str, list[int]], str | None]:
    """:func:`split_coverage`, and when some split has fewer cases than the run's a sentence saying so
    (logged as a note; the model card repeats it); None when all are there."""
    coverage = split_coverage(run_dir, parts)
    short = [f"{s} {n} of {m}" for s, (n, m) in coverage.items() if n < m]
    if not short:
        return coverage, None
    text = (f"The data holds only part of the run's cases ({', '.join(short)}); the compressed model is measured "
            "on these, the run's own metrics on all of them")
    log(f"note: {text}")
    return coverage, text


def load_split_tensors(run_dir: Path, plan, data: str | None = None, progress: bool = False):
    """RUN's train/val/test tensors, standardised with the run's own statistics."""
    from meddx.data.preprocess import PreprocessSpec, build_tensor, standardise
    from meddx.data.sources import open_dataset
    from meddx.data.split import apply_split, read_split
    from meddx.training.run import progress_callback

    if not (run_dir / "split.csv").exists():
        raise RunError("the run has no split.csv", path=run_dir, fix="compress a run written by `meddx train`")
    cs = open_dataset(data or plan.data.source)
    parts = apply_split(cs, read_split(run_dir / "split.csv"))
    spec = PreprocessSpec.from_plan(plan.data)
    cb, stop = progress_callback(progress, len(cs.cases), "preprocessing")
    try:
        out = {s: (standardise(build_tensor(cs, cases, spec, cb), spec), torch.from_numpy(cs.labels(cases)))
               for s, cases in parts.items()}
    finally:
        stop()
    return cs, parts, out


def _check_teacher(run_dir: Path, plan, teacher_dir: Path, tplan) -> tuple[float, float]:
    """Teacher and student must see the same images the same way; the teacher must not have
    trained on the student's validation or test cases. Returns the input affine map."""
    from meddx.data.split import read_split

    if tplan.task != "classify":
        raise RunError("the teacher is not a classification run", path=teacher_dir, fix="distil from a classifier")
    if list(tplan.data.class_names) != list(plan.data.class_names):
        raise RunError(f"teacher classes {tplan.data.class_names} differ from {plan.data.class_names}",
                       path=teacher_dir, fix="distil from a run trained on the same dataset")
    a, b = tplan.data, plan.data
    if a.input_key() != b.input_key():
        raise RunError("the teacher preprocesses images differently (dimensions, channels, size, intensity, "
                       "orientation, how volumes are resized, or preprocessing steps)",
                       path=teacher_dir, fix="distil from a run with the same data plan (same --image-size)")
    ts, ss = read_split(teacher_dir / "split.csv"), read_split(run_dir / "split.csv")
    leak = [c for c, s in ss.items() if s in ("val", "test") and ts.get(c) == "train"]
    if leak:
        raise RunError(f"the teacher trained on {len(leak)} of the student's validation/test cases "
                       f"(e.g. {leak[0]})", path=teacher_dir,
                       fix="use a teacher trained with the same split (same seed and dataset)")
    return float(b.norm_std / a.norm_std), float((b.norm_mean - a.norm_mean) / a.norm_std)


# -- training ------------------------------------------------------------------------------------
def train_phase(plan, model, tensors, work: Path, *, teacher=None, affine=(1.0, 0.0), opts: CompressOptions,
                lr: float, progress: bool, log) -> dict:
    """Train ``model`` in place (best validation checkpoint kept); returns a summary."""
    from meddx.training.run import size_epochs

    p = copy.deepcopy(plan)
    p.optim.lr = float(lr)
    p.train.time_budget_s = opts.time_budget_s
    p.decisions = [d for d in p.decisions if not d.rule.startswith("R9")]
    if opts.epochs:
        p.train.epochs = int(opts.epochs)
    work.mkdir(parents=True, exist_ok=True)
    seed_everything(p.seed)
    if teacher is not None:
        kd = DistillationLoss(opts.kd_temperature, opts.kd_alpha)
        trainer = DistillTrainer(p, model, work, teacher, kd, affine, progress=progress)
    else:
        trainer = Trainer(p, model, work, progress=progress)
    xtr, ytr = tensors["train"]
    xva, yva = tensors["val"]
    if opts.time_budget_s and not opts.epochs:
        size_epochs(p, work, lambda: trainer.measure_epoch_seconds(xtr, ytr, xva.shape[0]), "R9 epochs", 0.97)
    log(f"  training {'with distillation ' if teacher is not None else ''}for {p.train.epochs_text}, lr {lr:g}")
    t0 = time.perf_counter()
    res = trainer.fit(xtr, ytr, xva, yva)
    return {"epochs_run": res.epochs_run, "epochs_planned": res.epochs_planned, "best_epoch": res.best_epoch,
            "best_val_auc": float(res.best_metric), "seconds": round(time.perf_counter() - t0, 1), "lr": float(lr),
            "distilled": teacher is not None, "stopped_by": res.stopped_by}


def fmt_metric(m: dict | None) -> str:
    """``0.9512 [0.9301, 0.9688]``, or ``n/a`` when undefined (e.g. one class in a tiny split)."""
    if not m or m.get("value") is None or m["value"] != m["value"]:
        return "n/a"
    if m.get("ci_low") is None:
        return f"{m['value']:.4f}"
    return f"{m['value']:.4f} [{m['ci_low']:.4f}, {m['ci_high']:.4f}]"


def _auc(y: np.ndarray, p: np.ndarray, names) -> dict:
    from meddx.evaluation.metrics import classification_metrics

    m = classification_metrics(y, p, class_names=names, n_boot=1000, seed=0)["overall"]
    return m.get("auc") or m.get("auc_macro")


def _ort_proba(onnx_path: Path, x: np.ndarray, flips, batch: int = 256) -> np.ndarray:
    import onnxruntime as ort

    from meddx.runtime.bundle import softmax

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = []
    for i in range(0, x.shape[0], batch):
        xb = np.ascontiguousarray(x[i:i + batch], np.float32)
        p = softmax(sess.run(None, {name: xb})[0])
        for ax in flips:
            p = p + softmax(sess.run(None, {name: np.ascontiguousarray(np.flip(xb, axis=2 + ax))})[0])
        out.append(p / (1 + len(flips)))
    return np.concatenate(out)


# -- the pipeline --------------------------------------------------------------------------------
def compress_run(run_dir: str | Path, out: str | Path, opts: CompressOptions, *, overwrite: bool = False,
                 progress: bool = True, log=print) -> Path:
    """Compress a classification run into a bundle in ``out`` (see the module docstring)."""
    from meddx.deploy.export import export_onnx, refuse_out_over_inputs, thresholds_from_run, write_model_bundle
    from meddx.deploy.flops import torch_flops
    from meddx.deploy.prune import layer_shapes, prune
    from meddx.deploy.quantise import calibration_sample, quantise_static
    from meddx.evaluation.calibration import fit_temperature
    from meddx.evaluation.run_report import operating_points
    from meddx.models.registry import count_parameters
    from meddx.runtime.spec import BundleError
    from meddx.training.run import build_model, load_run, require_finished

    run_dir = Path(run_dir)
    out = Path(out)
    refuse_out_over_inputs(out, run_dir, opts.distill_from, opts.data)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise BundleError("the output folder exists and is not empty", path=out, fix="choose a new --out, or add --overwrite")
    if not (opts.prune or opts.distill_from or opts.int8 or opts.student):
        raise PlanError("nothing to do", fix="give --prune, --distill-from, --student and/or --int8")
    if not (opts.prune or opts.distill_from or opts.student) and \
            (opts.epochs is not None or opts.time_budget_s or opts.lr is not None):
        raise PlanError("--epochs, --time-budget and --lr set the training phases, and --int8 alone trains nothing",
                        fix="leave them out, or add --prune, --distill-from or --student")
    if int(opts.prune_steps) < 1:
        raise PlanError(f"--prune-steps must be at least 1, got {opts.prune_steps}", fix="e.g. --prune-steps 3")
    if int(opts.prune_steps) > 1 and not opts.prune:
        raise PlanError(f"--prune-steps {opts.prune_steps} is given without --prune, so nothing would be cut",
                        fix="add --prune R (e.g. --prune 0.5), or leave --prune-steps out")
    if opts.epochs is not None and opts.time_budget_s:  # train lets the budget win; here epochs won, silently
        raise PlanError("give --time-budget or --epochs, not both", fix="drop one of them")
    if opts.epochs is not None and int(opts.epochs) < 1:
        raise PlanError(f"--epochs must be at least 1, got {opts.epochs}", fix="e.g. --epochs 5")
    if opts.lr is not None and not opts.lr > 0:
        raise PlanError(f"--lr must be positive, got {opts.lr}", fix="e.g. --lr 0.001, or leave it out")
    unused = [flag for flag, value, used in (("--kd-temperature", opts.kd_temperature, opts.distill_from),
                                             ("--kd-alpha", opts.kd_alpha, opts.distill_from),
                                             ("--calibration-images", opts.calibration_images, opts.int8))
              if value is not None and not used]
    if unused:
        needs = "--distill-from" if unused[0].startswith("--kd") else "--int8"
        raise PlanError(f"{unused[0]} is given without {needs}, so it would change nothing",
                        fix=f"add {needs}, or leave {unused[0]} out")
    opts = replace(opts, kd_temperature=KD_TEMPERATURE if opts.kd_temperature is None else opts.kd_temperature,
                   kd_alpha=KD_ALPHA if opts.kd_alpha is None else opts.kd_alpha,
                   calibration_images=CALIBRATION_IMAGES if opts.calibration_images is None
                   else opts.calibration_images)
    if int(opts.calibration_images) < 1:
        raise PlanError(f"--calibration-images must be at least 1, got {opts.calibration_images}",
                        fix="e.g. --calibration-images 256")
    if not 0 <= opts.kd_alpha <= 1:
        raise PlanError(f"--kd-alpha must be between 0 and 1, got {opts.kd_alpha}", fix="e.g. --kd-alpha 0.9")
    if not opts.kd_temperature > 0:
        raise PlanError(f"--kd-temperature must be positive, got {opts.kd_temperature}", fix="e.g. --kd-temperature 4")
    plan, model = load_run(run_dir)
    require_finished(run_dir, "compressed")
    if plan.task == "segment":
        if opts.prune or opts.distill_from or opts.student:
            raise RunError("segmentation runs can only be int8-quantised here (Torch-Pruning cannot trace MONAI "
                           "UNet's concatenations, and distillation is implemented for classifiers)", path=run_dir,
                           fix="use --int8 alone, or export the run as it is with `meddx export`")
        return _compress_seg_int8(run_dir, plan, model, out, opts, overwrite=overwrite, progress=progress, log=log)
    if plan.task != "classify":
        raise RunError(f"compress handles classification and segmentation runs; this is a {plan.task} run",
                       path=run_dir, fix="compress a classification or segmentation run")
    if opts.seed is not None:
        plan.seed = int(opts.seed)
    source_params = int(count_parameters(model))
    shape = (int(plan.data.channels), *(int(s) for s in plan.data.input_size))
    source_flops = torch_flops(model, torch.zeros(1, *shape))
    summary: dict[str, Any] = {"source_run": run_dir.name, "options": recorded_options(opts), "steps": [],
                               "source": {"model": plan.model.name, "params": source_params, "flops": source_flops}}
    teacher, affine = None, (1.0, 0.0)
    if opts.distill_from:
        tdir = Path(opts.distill_from)
        tplan, teacher = load_run(tdir)
        affine = _check_teacher(run_dir, plan, tdir, tplan)
        summary["teacher"] = {"run": tdir.name, "model": tplan.model.name, "params": int(count_parameters(teacher)),
                              "flops": torch_flops(teacher, torch.zeros(1, *shape))}
    if getattr(model, "classifier_layer", None) is None and (opts.prune or (teacher is not None and not opts.student)):
        raise RunError(f"this run's model is a {type(model).__name__} (ensemble, learned denoiser or PCA head); "
                       "pruning and fine-tuning need a single registry network", path=run_dir,
                       fix="distil it into a fresh network with --student NAME --distill-from RUN, or use --int8 alone")
    if opts.student:  # built before the data are read: a misspelt name or option is refused at once
        name, params = parse_student(opts.student)
        plan.model.name, plan.model.params = name, params
        # the student is one plain network on the standardised images (no ensemble, denoiser or PCA head)
        if getattr(plan, "ensemble", None) is not None:
            plan.ensemble.kind, plan.ensemble.members = "none", 1
        if getattr(plan.data, "learned_denoise", None) is not None:
            plan.data.learned_denoise = None
        if getattr(plan.train, "head", "deep") != "deep":
            plan.train.head = "deep"
        seed_everything(plan.seed)
        model = build_model(plan)
    log("preparing the run's data")
    cs, parts, tensors = load_split_tensors(run_dir, plan, opts.data, progress)
    summary["cases"], fewer = coverage_note(run_dir, parts, log)
    names = list(plan.data.class_names)
    base_lr = plan.optim.lr
    with tempfile.TemporaryDirectory(prefix="meddx-compress-") as td:
        work = Path(td)
        if opts.student:
            log(f"student {name} {params or ''}: {count_parameters(model):,} parameters")
            info = train_phase(plan, model, tensors, work / "student", teacher=teacher, affine=affine, opts=opts,
                               lr=opts.lr or base_lr, progress=progress, log=log)
            summary["steps"].append({"step": "student", "model": name, "params": params, **info})
        if opts.prune:
            steps = int(opts.prune_steps)
            per = replace(opts, time_budget_s=opts.time_budget_s / steps if opts.time_budget_s else None,
                          epochs=max(1, opts.epochs // steps) if opts.epochs else None)
            tuned: list[dict] = []

            def fine_tune(k: int) -> None:
                log(f"prune step {k}/{steps}: {sum(p.numel() for p in model.parameters()):,} parameters")
                tuned.append(train_phase(plan, model, tensors, work / f"prune{k}", teacher=teacher, affine=affine,
                                         opts=per, lr=opts.lr or base_lr * prune_lr_factor(opts.prune),
                                         progress=progress, log=log))

            info = prune(model, shape, float(opts.prune), num_classes=len(names), round_to=opts.round_to,
                         steps=steps, after_step=fine_tune)
            log(f"pruned {opts.prune:.0%} of the channels: {info['params_before']:,} -> {info['params_after']:,} "
                f"parameters, {info['flops_before'] / 1e6:.1f} -> {info['flops_after'] / 1e6:.1f} MFLOPs")
            ft = tuned[-1] if steps == 1 else {"steps": tuned, "seconds": round(sum(t["seconds"] for t in tuned), 1),
                                               "best_val_auc": tuned[-1]["best_val_auc"],
                                               "distilled": teacher is not None}
            summary["steps"].append({"step": "prune", **info, "fine_tune": ft})
        elif teacher is not None and not opts.student:
            ft = train_phase(plan, model, tensors, work / "distill", teacher=teacher, affine=affine, opts=opts,
                             lr=opts.lr or base_lr * FINE_TUNE_LR_FACTOR, progress=progress, log=log)
            summary["steps"].append({"step": "distill", **ft})
        model.eval()
        xva, yva = tensors["val"]
        xte, yte = tensors["test"]
        flips = list(plan.evaluate.tta_flip_axes)
        onnx_path, precision = None, "fp32"
        if opts.int8:
            fp32 = export_onnx(model, shape, work / "fp32.onnx")
            cal = calibration_sample(tensors["train"][0].numpy(), opts.calibration_images, seed=plan.seed)
            onnx_path = quantise_static(fp32, work / "int8.onnx", cal, method=opts.calibration_method)
            precision = "int8 (static, QDQ: uint8 activations, int8 per-channel weights)"
            summary["steps"].append({"step": "int8", "calibration_images": int(cal.shape[0]),
                                     "calibration_method": opts.calibration_method})
            p_val = _ort_proba(onnx_path, xva.numpy(), flips)
            p_test = _ort_proba(onnx_path, xte.numpy(), flips)
        else:
            p_val = predict_proba(model, xva, plan.train.eval_batch_size, torch.device("cpu"), flips)
            p_test = predict_proba(model, xte, plan.train.eval_batch_size, torch.device("cpu"), flips)
        y_val, y_test = yva.numpy(), yte.numpy()
        t = fit_temperature(y_val, p_val)
        thr = thresholds_from_run(run_dir, plan, temperature=t, threshold=operating_points(plan, y_val, p_val),
                                  temperature_source="fitted on validation with the compressed model "
                                                     "(temperature scaling)")
        summary["result"] = {"params": int(count_parameters(model)), "flops": torch_flops(model, torch.zeros(1, *shape)),
                             "precision": precision, "val_auc": _auc(y_val, p_val, names),
                             "test_auc": _auc(y_test, p_test, names), "temperature": t}
        src_metrics = run_dir / "metrics.json"
        if src_metrics.exists():
            m = json.loads(src_metrics.read_text())
            first = next(iter(m.get("operating_points", {}).values()), {}).get("overall", {})
            summary["source"]["test_auc"] = first.get("auc") or first.get("auc_macro")
        st = work / "student.pt"
        saved_plan = plan.model_dump(mode="json")
        saved_plan["data"]["source"] = Path(str(plan.data.source)).name  # the dataset's path stays on this machine
        torch.save({"plan": saved_plan, "layer_shapes": layer_shapes(model),
                    "model": model.state_dict()}, st)
        (work / "compression.json").write_text(json_text(summary))
        r = summary["result"]
        card = ("## Compression\n"
                f"Steps: {', '.join(s['step'] for s in summary['steps'])}. Parameters {source_params:,} -> "
                f"{r['params']:,}; FLOPs {source_flops / 1e6:.2f} M -> {r['flops'] / 1e6:.2f} M per image. "
                f"Validation AUC {fmt_metric(r['val_auc'])}; test AUC {fmt_metric(r['test_auc'])}"
                + (f" (source run: {fmt_metric(summary['source']['test_auc'])})" if summary["source"].get("test_auc")
                   else "") + ". " + (f"{fewer}. " if fewer else "")
                + "Details: `compression.json`.")
        bundle = write_model_bundle(out, model, plan, run_dir=run_dir, onnx_path=onnx_path, precision=precision,
                                    thresholds=thr, extra_manifest={"compression": {
                                        "steps": [s["step"] for s in summary["steps"]],
                                        "teacher_run": summary.get("teacher", {}).get("run")}},
                                    card_extra=card, overwrite=overwrite,
                                    extra_files={"student.pt": st, "compression.json": work / "compression.json"})
    log(f"bundle written to {bundle}")
    return bundle


def mean_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean over cases with a percentile-bootstrap 95 % CI."""
    v = np.asarray(values, np.float64)
    rng = np.random.default_rng(seed)
    boots = v[rng.integers(0, v.size, (n_boot, v.size))].mean(1)
    return {"value": float(v.mean()), "ci_low": float(np.percentile(boots, 2.5)),
            "ci_high": float(np.percentile(boots, 97.5)), "n": int(v.size)}


def seg_windows(images: list, roi, n: int, seed: int = 0, labels: list | None = None) -> np.ndarray:
    """``n`` training windows of size ``roi`` (half centred on foreground when labels are given),
    zero-padded where a volume is smaller: int8 calibration inputs for a sliding-window model."""
    rng = np.random.default_rng(seed)
    roi = np.asarray(roi)
    out = []
    for k in range(n):
        i = int(rng.integers(len(images)))
        x = np.asarray(images[i], np.float32)
        pad = np.maximum(roi - np.array(x.shape[1:]), 0)
        if pad.any():
            x = np.pad(x, [(0, 0)] + [(int(p) // 2, int(p) - int(p) // 2) for p in pad])
        hi = np.array(x.shape[1:]) - roi
        start = np.array([rng.integers(h + 1) for h in hi])
        if labels is not None and k % 2 == 0:
            fg = np.argwhere(np.asarray(labels[i]) > 0)
            if len(fg):
                start = np.clip(fg[rng.integers(len(fg))] + pad // 2 - roi // 2, 0, hi)
        out.append(x[(slice(None), *(slice(int(s), int(s) + int(r)) for s, r in zip(start, roi)))])
    return np.stack(out)


def _compress_seg_int8(run_dir: Path, plan, model, out: Path, opts: CompressOptions, *, overwrite: bool,
                       progress: bool, log) -> Path:
    """Static int8 of a segmentation run, calibrated on training windows; Dice of fp32 and int8 on
    the validation and test cases through the runtime's sliding window."""
    from meddx.data.segprep import build_seg_data
    from meddx.data.split import apply_split, read_split
    from meddx.deploy.export import export_onnx, model_input_shape, write_model_bundle
    from meddx.deploy.quantise import quantise_static
    from meddx.runtime import load
    from meddx.runtime.postprocess import postprocess
    from meddx.training.seg_engine import dice_per_class
    from meddx.training.seg_run import open_for_plan

    if not opts.int8:
        raise PlanError("nothing to do for a segmentation run", fix="give --int8")
    cs = open_for_plan(opts.data or plan.data.source, plan)
    parts = apply_split(cs, read_split(run_dir / "split.csv"))
    coverage, _ = coverage_note(run_dir, parts, log)
    log("preparing the run's data")
    data = build_seg_data(cs, parts, copy.deepcopy(plan))
    shape = model_input_shape(plan)
    k = len(plan.segment.label_values)
    with tempfile.TemporaryDirectory(prefix="meddx-compress-") as td:
        work = Path(td)
        fp32 = export_onnx(model, shape, work / "fp32.onnx")
        tr = data["train"]
        n_cal = min(opts.calibration_images, 64)
        seed = plan.seed if opts.seed is None else int(opts.seed)
        cal = seg_windows([x.numpy() for x in tr.images], shape[1:], n_cal, seed=seed,
                          labels=[y.numpy() for y in tr.labels])
        log(f"calibrating int8 on {n_cal} training windows (seed {seed})")
        q = quantise_static(fp32, work / "int8.onnx", cal, method=opts.calibration_method)
        precision = "int8 (static, QDQ: uint8 activations, int8 per-channel weights)"
        b32 = write_model_bundle(work / "b32", model, plan, run_dir=run_dir)
        b8 = write_model_bundle(work / "b8", model, plan, run_dir=run_dir, onnx_path=q, precision=precision)
        result: dict[str, Any] = {}
        sg = plan.segment
        for name, b in (("fp32", load(b32)), ("int8", load(b8))):
            for split in ("val", "test"):
                d = data[split]
                scores = []
                for x, y in zip(d.images, d.labels):
                    idx = postprocess(b.segment_proba(x.numpy()).argmax(0).astype(np.uint8), sg.postprocess, k,
                                      sg.min_size)
                    scores.append(dice_per_class(idx, y.numpy(), k).mean())
                result[f"{name}_{split}_dice"] = mean_ci(np.array(scores))
        summary = {"source_run": run_dir.name, "options": recorded_options(opts), "cases": coverage,
                   "steps": [{"step": "int8", "calibration_windows": int(n_cal), "calibration_seed": seed,
                              "calibration_method": opts.calibration_method}],
                   "result": {**result, "precision": precision},
                   "note": "Dice per case (mean over foreground classes) on the preprocessed grid, "
                           "post-processing as in the plan; bootstrap 95 % CI over cases"}
        (work / "compression.json").write_text(json_text(summary))
        r = result
        card = (f"## Compression\nStatic int8 calibrated on {n_cal} training windows. Test Dice fp32 "
                f"{r['fp32_test_dice']['value']:.4f}, int8 {r['int8_test_dice']['value']:.4f}. Details: "
                "`compression.json`.")
        bundle = write_model_bundle(out, model, plan, run_dir=run_dir, onnx_path=q, precision=precision,
                                    extra_manifest={"compression": {"steps": ["int8"], "teacher_run": None}},
                                    card_extra=card, overwrite=overwrite,
                                    extra_files={"compression.json": work / "compression.json"})
    log(f"bundle written to {bundle}")
    return bundle


def load_student(bundle_dir: str | Path) -> tuple[Any, torch.nn.Module]:
    """The torch model a ``meddx compress`` bundle was made from (pruned widths restored)."""
    from meddx.deploy.prune import rebuild
    from meddx.planning.plan import Plan
    from meddx.training.run import build_model

    path = Path(bundle_dir) / "student.pt"
    if not path.exists():
        raise RunError("no student.pt: not a bundle written by `meddx compress`", path=bundle_dir,
                       fix="pass a compressed bundle")
    st = torch.load(path, map_location="cpu", weights_only=True)
    plan = Plan.model_validate(st["plan"])
    return plan, rebuild(build_model(plan), st["layer_shapes"], st["model"])
