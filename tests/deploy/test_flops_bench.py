"""FLOPs counted on ONNX graphs equal PyTorch's own counter; ``meddx bench`` reports what it says."""

from __future__ import annotations

import pytest
import torch

from deploy_testutils import make_run
from meddx.deploy.bench import bench_path, cpu_peak
from meddx.deploy.export import export_onnx, export_run
from meddx.deploy.flops import onnx_flops, torch_flops
from meddx.errors import MeddxError
from meddx.models import create_model


@pytest.mark.parametrize("name,dims,size,k", [("small_cnn", 2, 28, 2), ("mobilenet_v2", 2, 28, 2),
                                              ("resnet18", 2, 64, 3), ("small_cnn", 3, 16, 2), ("unet", 3, 32, 3)])
def test_onnx_flops_equal_torch_counter(name, dims, size, k, tmp_path):
    m = create_model(name, spatial_dims=dims, in_channels=1, num_classes=k, input_size=size).eval()
    shape = (1,) + (size,) * dims
    f = export_onnx(m, shape, tmp_path / "m.onnx")
    got = onnx_flops(f)
    assert got["flops"] == torch_flops(m, torch.zeros(1, *shape)) > 0
    # BatchNorm is folded into the convolutions on export: stored weights <= torch parameters
    assert 0.95 * sum(p.numel() for p in m.parameters()) <= got["params"] <= sum(p.numel() for p in m.parameters())


CPUINFO = """processor\t: 0
vendor_id\t: {vendor}
cpu family\t: {family}
model\t\t: {model}
model name\t: test cpu
cpu MHz\t\t: 2000.000
flags\t\t: fpu sse sse2 avx fma avx2 {extra}

processor\t: 1
vendor_id\t: {vendor}
"""


@pytest.mark.parametrize("vendor,family,model,extra,per_cycle", [
    ("AuthenticAMD", 23, 1, "", 16),        # Zen 1: 256-bit ops split over two 128-bit pipes
    ("AuthenticAMD", 23, 49, "", 32),       # Zen 2
    ("GenuineIntel", 6, 85, "avx512f", 64),  # Skylake-SP with AVX-512
])
def test_cpu_peak_formula(tmp_path, monkeypatch, vendor, family, model, extra, per_cycle):
    f = tmp_path / "cpuinfo"
    f.write_text(CPUINFO.format(vendor=vendor, family=family, model=model, extra=extra))
    peak = cpu_peak(f)
    assert peak["flops_per_cycle_per_core"] == per_cycle and peak["cores"] == 2
    assert peak["peak_gflops"] == pytest.approx(2 * 2.0 * per_cycle)


def test_bench_run_and_bundle(tmp_path):
    run = make_run(tmp_path / "run")
    b = export_run(run, tmp_path / "bundle")
    rt = bench_path(run, seconds=0.2, batches=(1, 4))
    ob = bench_path(b, seconds=0.2, batches=(1, 4))
    assert rt["kind"] == "torch fp32 eager" and ob["kind"] == "onnxruntime fp32"
    for r in (rt, ob):
        assert 0 < r["latency_ms_p50"] <= r["latency_ms_p99"]
        assert set(r["throughput_by_batch"]) == {1, 4} and r["throughput"] == max(r["throughput_by_batch"].values())
        assert r["gflops_achieved"] == pytest.approx(r["flops"] * r["throughput"] / 1e9)
    assert rt["flops"] == ob["flops"] == 41884800
    assert ob["file_bytes"] == (b / "model.onnx").stat().st_size


def test_bench_refuses_other_folders(tmp_path):
    with pytest.raises(MeddxError, match="neither a run directory"):
        bench_path(tmp_path)


def test_cpu_peak_counts_only_the_cores_bench_threads_can_use(tmp_path):
    """`meddx bench --threads 1` on a 2-core machine divided the achieved GFLOP/s by both cores' peak,
    halving the reported fraction of peak."""
    f = tmp_path / "cpuinfo"
    f.write_text(CPUINFO.format(vendor="AuthenticAMD", family=23, model=49, extra=""))
    one = cpu_peak(f, threads=1)
    assert one["cores"] == 1 and one["cores_on_machine"] == 2
    assert one["peak_gflops"] == pytest.approx(cpu_peak(f)["peak_gflops"] / 2)
    assert cpu_peak(f, threads=8)["cores"] == 2  # more threads than cores: still the machine's cores
    assert "1 cores x" in one["formula"]
