"""``meddx bench RUN_OR_BUNDLE``: speed and size of a model on this machine.

A run directory is measured as torch fp32 eager (``torch.inference_mode``); a bundle
through ONNX Runtime (its model may be fp32 or int8). Latency is batch 1 (p50 / p99 of
single calls after a warm-up); throughput is images (or windows) per second at the
best of a few batch sizes. Inputs are standard-normal tensors of the model's input
shape: a network's speed does not depend on the pixel values. Speeds are noisy when
other processes share the cores: compare variants measured in one process, as ratios
(``benchmarks/compression.py`` does).
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path
from typing import Callable

import numpy as np

BATCHES_2D = (1, 8, 32, 64, 128, 256)
BATCHES_3D = (1, 2, 4, 8)


# -- the CPU's peak ---------------------------------------------------------------------------
def cpuinfo_fields(cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[dict[str, str], int] | None:
    """The first processor's ``name: value`` fields of ``/proc/cpuinfo`` and the number of
    processors listed; None where the file cannot be read."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    first = text.split("\n\n")[0]
    fields = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in first.splitlines() if ":" in ln)}
    return fields, len(re.findall(r"^processor\s*:", text, re.M))


def cpu_peak(cpuinfo: str | Path = "/proc/cpuinfo", threads: int | None = None) -> dict:
    """Theoretical fp32 peak of this machine's CPU, from ``/proc/cpuinfo``.

    peak = cores x clock x FLOPs per cycle per core, where FLOPs per cycle = fp32 lanes of
    the widest vector unit (AVX-512: 16, AVX/AVX2: 8, SSE: 4) x 2 (fused multiply-add,
    when the ``fma`` flag is there) x FMA pipes (2; but AMD family 17h models before
    0x30, Zen/Zen+, split 256-bit operations over two 128-bit pipes: effectively 1). The
    clock is the reported ``cpu MHz`` (a VM usually reports the base clock; turbo would
    raise the true peak, so the achieved fraction is an upper estimate). ``threads`` (bench
    ``--threads``) caps the cores counted: one thread can use one core's peak only.
    """
    info: dict = {"source": str(cpuinfo)}
    parsed = cpuinfo_fields(cpuinfo)
    if parsed is None:
        return {"peak_gflops": None, "note": f"no {cpuinfo}: peak unknown"}
    fields, cores = parsed
    if threads:
        info["cores_on_machine"] = cores
        cores = max(1, min(cores, int(threads)))

    def field(name):
        return fields.get(name, "")

    flags = set(field("flags").split())
    mhz = float(field("cpu MHz") or 0) or None
    vendor, family = field("vendor_id"), int(field("cpu family") or 0)
    model = int(field("model") or 0)
    lanes = 16 if "avx512f" in flags else 8 if ("avx2" in flags or "avx" in flags) else 4
    fma = 2 if "fma" in flags else 1
    pipes = 2
    why = "2 FMA pipes"
    if vendor == "AuthenticAMD" and family == 0x17 and model < 0x30 and lanes == 8:
        pipes, why = 1, "AMD Zen/Zen+ (family 17h, model < 30h): 256-bit ops on two 128-bit pipes"
    per_cycle = lanes * fma * pipes
    info.update({"model_name": field("model name"), "cores": cores, "mhz": mhz,
                 "vector": "avx512" if lanes == 16 else "avx2" if lanes == 8 else "sse", "fma": fma == 2,
                 "flops_per_cycle_per_core": per_cycle, "why": why,
                 "vnni": bool({"avx512_vnni", "avx_vnni"} & flags)})
    info["peak_gflops"] = round(cores * (mhz or 0) / 1e3 * per_cycle, 1) if mhz else None
    info["formula"] = (f"{cores} cores x {mhz / 1e3 if mhz else '?'} GHz x {per_cycle} FLOP/cycle "
                       f"({lanes} fp32 lanes x {fma} (FMA) x {pipes} pipe(s))")
    return info


# -- timing -------------------------------------------------------------------------------------
def time_calls(fn: Callable[[], object], *, seconds: float = 2.0, min_calls: int = 5, max_calls: int = 2000,
               warmup: int = 3) -> np.ndarray:
    """Seconds of each call of ``fn`` after ``warmup`` calls, for about ``seconds``."""
    for _ in range(warmup):
        fn()
    times = []
    t_end = time.perf_counter() + seconds
    while len(times) < min_calls or (time.perf_counter() < t_end and len(times) < max_calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return np.asarray(times)


def measure(run_batch: Callable[[np.ndarray], object], input_shape: tuple[int, ...], *, batches=None,
            seconds: float = 2.0, seed: int = 0, on_step: Callable[[int], None] | None = None) -> dict:
    """Latency at batch 1 and throughput at each batch size for ``run_batch(x)``
    (``on_step(1)`` after each of the ``1 + len(batches)`` measurements)."""
    rng = np.random.default_rng(seed)
    batches = batches or (BATCHES_3D if len(input_shape) == 4 else BATCHES_2D)
    x1 = rng.standard_normal((1, *input_shape)).astype(np.float32)
    lat = time_calls(lambda: run_batch(x1), seconds=seconds)
    if on_step:
        on_step(1)
    per_batch = {}
    for b in batches:
        xb = rng.standard_normal((b, *input_shape)).astype(np.float32)
        t = time_calls(lambda: run_batch(xb), seconds=seconds / 2, min_calls=3, warmup=1)
        per_batch[int(b)] = float(b / np.median(t))
        if on_step:
            on_step(1)
    best = max(per_batch, key=per_batch.get)
    return {"latency_ms_p50": float(np.percentile(lat, 50) * 1e3), "latency_ms_p99": float(np.percentile(lat, 99) * 1e3),
            "latency_calls": int(lat.size), "throughput": per_batch[best], "best_batch": best,
            "throughput_by_batch": per_batch}


# -- targets ------------------------------------------------------------------------------------
def torch_runner(model, threads: int | None = None) -> Callable[[np.ndarray], object]:
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    model = model.eval().cpu()

    def run(x: np.ndarray):
        with torch.inference_mode():
            return model(torch.from_numpy(x))

    return run


def ort_runner(onnx_path: str | Path, threads: int | None = None) -> Callable[[np.ndarray], object]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})


def torch_size_bytes(model) -> int:
    """Bytes of the serialised state dict (what a checkpoint of the weights takes)."""
    import torch

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def bench_path(target: str | Path, *, threads: int | None = None, seconds: float = 2.0, batches=None,
               progress: bool = False) -> dict:
    """Benchmark a run directory (torch fp32 eager) or a bundle (ONNX Runtime); ``progress`` shows a bar."""
    from meddx.errors import RunError

    target = Path(target)
    if (target / "bundle.json").exists():
        from meddx.runtime import load

        b = load(target)  # verifies checksums before timing anything
        m = b.manifest["model"]
        shape = tuple(int(s) for s in m["input_shape"][1:])
        res = _measure_with_bar(ort_runner(target / "model.onnx", threads), shape, batches, seconds, progress)
        res.update({"target": str(target), "kind": f"onnxruntime {m.get('precision', 'fp32')}",
                    "params": int(m["params"]), "flops": int(m["flops"]), "file_bytes": (target / "model.onnx").stat().st_size,
                    "input_shape": list(shape)})
    elif (target / "plan.yaml").exists():
        import torch

        from meddx.deploy.export import model_input_shape
        from meddx.deploy.flops import torch_flops
        from meddx.models.registry import count_parameters
        from meddx.training.run import load_run

        plan, model = load_run(target)
        shape = model_input_shape(plan)
        res = _measure_with_bar(torch_runner(model, threads), shape, batches, seconds, progress)
        res.update({"target": str(target), "kind": "torch fp32 eager", "params": int(count_parameters(model)),
                    "flops": torch_flops(model, torch.zeros(1, *shape)), "file_bytes": torch_size_bytes(model),
                    "input_shape": list(shape)})
    else:
        raise RunError("neither a run directory (plan.yaml) nor a bundle (bundle.json)", path=target,
                       fix="pass a folder written by `meddx train`, `meddx export` or `meddx compress`")
    add_efficiency(res, cpu_peak(threads=threads))
    return res


def _measure_with_bar(run, shape, batches, seconds, progress) -> dict:
    from meddx.training.run import progress_callback

    batches = batches or (BATCHES_3D if len(shape) == 4 else BATCHES_2D)
    cb, stop = progress_callback(progress, 1 + len(batches), "timing")
    try:
        return measure(run, shape, batches=batches, seconds=seconds, on_step=cb)
    finally:
        stop()


def add_efficiency(res: dict, peak: dict | None = None) -> dict:
    peak = peak or cpu_peak()
    res["gflops_achieved"] = res["flops"] * res["throughput"] / 1e9
    res["cpu_peak"] = peak
    res["fraction_of_peak"] = (res["gflops_achieved"] / peak["peak_gflops"]) if peak.get("peak_gflops") else None
    return res
