"""The GPU inference path: ONNX Runtime on device-resident tensors (IO binding), which provider ran each node,
parity's like-with-like latency, and ``featx bench --device cuda``. Everything that can run on the CPU runs
here (IO binding on the CPU provider, the benchmark's logic with injected timings); the CUDA tests are skipped
without CUDA."""
from __future__ import annotations

import argparse
import collections
import io
import json
import subprocess
import sys
import contextlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from featx.deploy.onnx_export import ExportSettings, export_onnx
from featx.deploy.placement import off_device_nodes, provider_placement
from featx.deploy.runtimes import open_session
from featx.bench.gpu import _best, _rows, run_gpu_benchmark

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


@pytest.fixture(scope="module")
def r18(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gpu") / "r18.onnx"
    export_onnx("ResNet18", path, ExportSettings(exporter="torchscript"), log=lambda m: None)
    return path


# -- IO binding --------------------------------------------------------------------------------------------
def test_bound_runs_equal_host_runs_and_return_fresh_tensors(r18):
    session = open_session(r18, "cpu")
    for shape in [(2, 3, 64, 96), (1, 3, 80, 80), (2, 3, 64, 96)]:
        x = torch.randn(*shape)
        host = session.run(x.numpy())
        bound = session.run_on_device(x)
        assert [tuple(b.shape) for b in bound] == [o.shape for o in host]
        for b, h in zip(bound, host):
            assert b.dtype == torch.float32 and np.array_equal(b.numpy(), h)
    first, second = session.run_on_device(torch.randn(1, 3, 64, 64)), session.run_on_device(torch.randn(1, 3, 64, 64))
    assert first[0].data_ptr() != second[0].data_ptr() and not torch.equal(first[0], second[0])
    with pytest.raises(TypeError, match="takes torch.float32 input, got torch.float16"):
        session.run_tensor(torch.randn(1, 3, 64, 64).half())


def test_placement_names_the_provider_of_every_node(r18):
    placed = provider_placement(r18, "cpu", np.random.randn(1, 3, 64, 64).astype(np.float32))
    assert list(placed) == ["CPUExecutionProvider"]
    convs = collections.Counter(n.op_type for n in onnx.load(str(r18)).graph.node)["Conv"]
    assert placed["CPUExecutionProvider"]["Conv"] == convs == 20  # fused with their ReLU/Add, still one per conv
    assert off_device_nodes(placed, "CPUExecutionProvider") == {}
    assert off_device_nodes(placed, "CUDAExecutionProvider") == placed


def test_parity_latency_is_device_resident_and_interleaved(r18):
    from featx.deploy.parity import parity

    report = parity(r18, sizes=[(64, 64)], batches=[1], repeats=3, log=lambda m: None)
    lat = report.latency_ms
    assert report.passed and lat["io"] == "IO binding" and lat["torch_precision"] == "fp32"
    assert lat["runtime"] > 0 and lat["torch_eager"] > 0
    assert lat["runtime_over_torch"] == pytest.approx(lat["runtime"] / lat["torch_eager"])
    assert report.off_device == {}  # placement is reported on CUDA only


# -- featx bench --device cuda: the logic, on injected timings ---------------------------------------------------
def test_rows_compute_ratios_rates_and_peak_shares_from_timings():
    timings = {"torchvision": [10.0, 12.0, 10.0], "featx_optimized": [5.0, 4.0, 6.0], "featx_ort": "ValueError: no"}
    rows = _rows(timings, "fp16", [8, 3, 800, 1216], gflops=2000.0, peak=800.0)
    by = {r["entry"]: r for r in rows}
    assert by["featx_ort"] == {"entry": "featx_ort", "precision": "fp16", "input": [8, 3, 800, 1216], "error": "ValueError: no"}
    opt = by["featx_optimized"]
    assert opt["median_ms"] == 5.0 and opt["images_per_s"] == 1600.0
    assert opt["tflops_s"] == 400.0 and opt["of_peak"] == 0.5  # 2000 GFLOP in 5 ms; half of 800 TFLOP/s
    assert opt["vs_torchvision"] == 0.5  # median of the per-round ratios 0.5, 0.333, 0.6
    assert by["torchvision"]["vs_torchvision"] == 1.0
    best = _best(rows, "fp16", [8, 3, 800, 1216])
    assert best == {"precision": "fp16", "input": [8, 3, 800, 1216], "entry": "featx_optimized", "median_ms": 5.0,
                    "vs_torchvision": 0.5, "of_peak": 0.5}


def test_the_gpu_benchmark_runs_its_entries_and_says_what_cannot_run_here():
    r = run_gpu_benchmark("ResNet18FPN", sizes=[(64, 64)], batches=[1], entries=["torchvision", "featx",
                          "featx_optimized", "featx_cuda_graph", "featx_ort"], precisions=["fp32", "bf16"],
                          warmup=1, repeats=2, device="cpu", log=lambda m: None, peaks={"fp32": 1.0, "bf16": 2.0})
    got = {(row["entry"], row["precision"]): row for row in r["rows"]}
    assert got[("featx_cuda_graph", "fp32")]["error"] == "ValueError: CUDA graphs need a CUDA device"
    assert "no bf16 export" in got[("featx_ort", "bf16")]["error"]
    for key in [("torchvision", "fp32"), ("featx", "fp32"), ("featx_optimized", "fp32"), ("featx_ort", "fp32"),
                ("torchvision", "bf16"), ("featx", "bf16"), ("featx_optimized", "bf16")]:
        assert got[key]["median_ms"] > 0 and got[key]["input"] == [1, 3, 64, 64] and len(got[key]["times_ms"]) == 2
    assert {b["precision"] for b in r["best"]} == {"fp32", "bf16"}
    assert r["matmul_peak_tflops"] == {"fp32": 1.0, "bf16": 2.0} and "torch" in r["versions"]


def test_bench_gpu_table_names_the_device_and_every_row(monkeypatch):
    from featx.cli import bench as bench_cli

    args = argparse.Namespace(model="ResNet18FPN", sizes=[(64, 64)], batch=[1], entries=["torchvision", "featx"],
                              precision=["fp32"], warmup=1, repeats=2, device="cpu", markdown=False, json=None,
                              winograd="off", memory=False, results=None, png=None)
    import featx.bench.gpu as gpu_bench

    real = gpu_bench.run_gpu_benchmark
    monkeypatch.setattr(gpu_bench, "run_gpu_benchmark", lambda *a, **k: real(*a, **{**k, "peaks": {"fp32": 1.0}}))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert bench_cli._bench_gpu(args) == 0
    text = out.getvalue()
    assert "matmul peak: fp32 1 TFLOP/s" in text and "torchvision" in text and "featx's fastest at fp32 1x3x64x64: featx" in text
    args.winograd = "auto"
    with pytest.raises(ValueError, match="--winograd is for the CPU benchmark"):
        bench_cli._bench_gpu(args)


# -- on a GPU ---------------------------------------------------------------------------------------------------
@needs_cuda
def test_cuda_bound_runs_equal_host_runs(r18):
    session = open_session(r18, "cuda")
    x = torch.randn(2, 3, 64, 96, device="cuda")
    bound = session.run_on_device(x)
    host = session.run(x.cpu().numpy())
    assert all(b.device.type == "cuda" for b in bound)
    for b, h in zip(bound, host):
        np.testing.assert_allclose(b.cpu().numpy(), h, rtol=1e-5, atol=1e-5)


@needs_cuda
def test_cuda_parity_reports_placement_and_device_resident_latency(r18):
    from featx.deploy.parity import parity

    report = parity(r18, device="cuda", sizes=[(64, 64)], batches=[1], repeats=5, log=lambda m: None)
    assert report.passed and report.latency_ms["io"] == "IO binding" and isinstance(report.off_device, dict)


@needs_cuda
def test_cuda_graph_entry_equals_eager():
    from featx.bench.gpu import build_gpu_entry

    x = torch.randn(2, 3, 64, 64, device="cuda")
    graph = build_gpu_entry("featx_cuda_graph", "ResNet18FPN", "fp32", torch.device("cuda"), Path("."))
    plain = build_gpu_entry("featx_optimized", "ResNet18FPN", "fp32", torch.device("cuda"), Path("."))
    for a, b in zip(graph(x), plain(x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_gpu_check_writes_where_the_caller_is(tmp_path):
    """tools/gpu_check.py --out results/ from any folder: the logs land in that folder's results/, not the
    repository's (its steps run in the repository). On a machine without a GPU the steps fail and say so."""
    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(repo / "tools" / "gpu_check.py"), "--out", "results", "--stage", "torch",
                        "--quick"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    summary = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert [s["step"] for s in summary["steps"]][:1] == ["nvidia-smi"]
    assert all((tmp_path / "results" / f"{s['step']}.log").is_file() for s in summary["steps"])
    if not torch.cuda.is_available():
        assert r.returncode != 0
