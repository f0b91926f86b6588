"""ONNX export and ONNX Runtime parity (CPU here; --device cuda must fail loudly without a GPU)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from helpers import run_cli
from featx.deploy.metadata import read_metadata
from featx.deploy.onnx_export import ExportSettings, export_onnx
from featx.deploy.parity import parity
from featx.errors import ExportError, ParityError

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args):
    return run_cli(*args)


def _tool(script, *args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / script), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def r50fpn_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "r50fpn.onnx"
    r = _tool("export_onnx.py", "ResNet50FPN", "-o", str(path))
    assert r.returncode == 0, r.stderr[-3000:]
    return path, r.stdout


@pytest.mark.slow
def test_export_resnet50fpn_dynamic_and_cpu_parity(r50fpn_onnx, tmp_path):
    path, summary = r50fpn_onnx
    assert "opset 18, dynamo exporter" in summary
    assert "output  p6     float  batch x 256 x (((height - 1)//64)) + 1 x (((width - 1)//64)) + 1" in summary
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["p2", "p3", "p4", "p5", "p6"]
    r = _tool("ort_parity.py", str(path), "--sizes", "512x512", "801x1333", "333x517", "--batch", "1", "2",
             "--repeats", "1", "--threads", "2", "--json", str(tmp_path / "parity.json"))
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "parity.json").read_text())
    assert report["passed"] and report["providers"] == ["CPUExecutionProvider"] and report["device"] == "cpu"
    inputs = {(x["batch"], tuple(x["size"])) for x in report["results"]}
    assert inputs == {(1, (512, 512)), (1, (801, 1333)), (1, (333, 517)), (2, (512, 512))}
    big = [x for x in report["results"] if tuple(x["size"]) == (801, 1333)]
    assert [tuple(x["shape"]) for x in big] == [(1, 256, 201, 334), (1, 256, 101, 167), (1, 256, 51, 84),
                                                (1, 256, 26, 42), (1, 256, 13, 21)]
    assert max(x["rel"] for x in report["results"]) < 5e-4 and min(x["cosine"] for x in report["results"]) > 0.99999
    assert report["latency_ms"]["runtime"] > 0 and "(CPUExecutionProvider)" in r.stdout


def test_metadata_round_trips(r50fpn_onnx):
    meta = read_metadata(r50fpn_onnx[0])
    assert meta["model_config"] == {"type": "featx.ResNet50FPN"}
    assert [(lv["name"], lv["output"], lv["stride"], lv["channels"]) for lv in meta["levels"]] == [
        ("P2", "p2", 4, 256), ("P3", "p3", 8, 256), ("P4", "p4", 16, 256), ("P5", "p5", 32, 256), ("P6", "p6", 64, 256)]
    assert meta["input"]["mean"] == [0.485, 0.456, 0.406] and meta["input"]["std"] == [0.229, 0.224, 0.225]
    assert meta["version"] == "0.1.0" and meta["weights"] == "none (random init, seed 0)"
    assert meta["precision"] == "fp32" and meta["static_shape"] is None and meta["exporter"] == "dynamo"


def test_parity_fails_when_an_initializer_is_perturbed(r50fpn_onnx, tmp_path):
    model = onnx.load(str(r50fpn_onnx[0]))
    target = next(t for t in model.graph.initializer if len(t.dims) == 4 and t.dims[0] == 1024)
    arr = numpy_helper.to_array(target).copy()
    arr *= 1.05
    target.CopyFrom(numpy_helper.from_array(arr, target.name))
    bad = tmp_path / "perturbed.onnx"
    onnx.save(model, str(bad))
    r = _cli("parity", str(bad), "--sizes", "96x128", "--batch", "1", "--repeats", "0")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL" in r.stdout and "p4@1x96x128" in r.stdout


def test_retina_style_export_and_parity(tmp_path):
    path = tmp_path / "retina.onnx"
    export_onnx("ResNet18RetinaFPN", path, log=lambda m: None)
    report = parity(path, sizes=[(64, 64), (67, 93)], batches=(1, 2), repeats=0, log=lambda m: None)
    assert report.passed and [r.output for r in report.results[:5]] == ["p3", "p4", "p5", "p6", "p7"]
    assert [r.shape[-1] for r in report.results[5:10]] == [12, 6, 3, 2, 1]


def test_static_export_rejects_other_sizes(tmp_path):
    path = tmp_path / "static.onnx"
    r = _cli("export", "ResNet18", "--static", "96", "128", "-o", str(path), "--exporter", "torchscript")
    assert r.returncode == 0, r.stderr
    assert "input   input  float  1 x 3 x 96 x 128" in r.stdout
    assert "output  c5     float  1 x 512 x 3 x 4" in r.stdout
    bad = _cli("parity", str(path), "--sizes", "512x512")
    assert bad.returncode == 1
    assert "exported with a static input 1x3x96x128; it cannot run 512x512" in bad.stderr
    ok = parity(path, repeats=0, log=lambda m: None)
    assert ok.passed and {r.size for r in ok.results} == {(96, 128)}


def test_fp16_export_is_valid_and_runs_on_cpu(tmp_path):
    path = tmp_path / "fp16.onnx"
    export_onnx("ResNet18FPN", path, ExportSettings(fp16=True), log=lambda m: None)
    model = onnx.load(str(path))
    conv_weights = [t for t in model.graph.initializer if len(t.dims) == 4]
    assert conv_weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in conv_weights)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # io kept fp32
    report = parity(path, sizes=[(64, 64)], batches=(1,), repeats=0, log=lambda m: None)
    assert report.precision == "fp16" and report.gate["max_rel"] == 5e-2 and report.passed
    assert max(r.rel for r in report.results) > 1e-5  # really computed in fp16, not fp32


def test_onnxruntime_threads_stop_spinning_when_a_run_returns(r50fpn_onnx):
    # ONNX Runtime's threads spin on after Run() by default, taking a core of a 2-CPU machine from whatever runs
    # next (an OpenVINO run right after it was 8-13% slower, which biased the benchmark); featx's sessions stop them
    import statistics
    import time

    import onnxruntime as ort

    from featx.deploy.runtimes import open_session

    path, _ = r50fpn_onnx
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 128)).astype(np.float32)

    def cpu_ms_while_idle(run) -> float:  # CPU this process burns in the 100 ms after a run returns
        run()
        samples = []
        for _ in range(5):
            run()
            start = time.process_time()
            time.sleep(0.1)
            samples.append((time.process_time() - start) * 1000)
        return statistics.median(samples)

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    default = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    featx = open_session(path, "cpu", threads=2)
    assert cpu_ms_while_idle(lambda: default.run(None, {"input": x})) > 10  # the control: spinning is seen
    assert cpu_ms_while_idle(lambda: featx.run(x)) < 3


def test_device_cuda_fails_loudly_without_gpu(r50fpn_onnx):
    r = _cli("parity", str(r50fpn_onnx[0]), "--device", "cuda", "--sizes", "64x64")
    assert r.returncode == 1
    assert "device 'cuda' asked, but CUDA is not usable here" in r.stderr and "PASS" not in r.stdout


def test_export_profiles_and_config_file(tmp_path):
    path = tmp_path / "cfg.onnx"
    r = _cli("export", "configs/models/resnet50_retinafpn.py", "--cfg-options", "model.backbone.depth=18",
             "--profile", "static_fp32", "--static", "64", "96", "-o", str(path), "--exporter", "torchscript")
    assert r.returncode == 0, r.stderr
    meta = read_metadata(path)
    assert meta["model_config"]["backbone"]["depth"] == 18 and meta["static_shape"] == [1, 3, 64, 96]
    assert [lv["name"] for lv in meta["levels"]] == ["P3", "P4", "P5", "P6", "P7"]


@pytest.mark.parametrize("args,words", [
    (["export", "ResNet51FPN"], "did you mean ResNet50FPN"),
    (["export", "ResNet18", "--profile", "nope"], "unknown export profile 'nope'; shipped: cpu_winograd, dynamic_fp16, dynamic_fp32, static_fp32"),
    (["export", "ResNet18", "-o", "/nonexistent/dir/x.onnx"], "folder /nonexistent/dir does not exist"),
    (["export", "ResNet18", "--static", "8", "8", "-o", "{tmp}/x.onnx"], "static shape 8x8 is too small"),
    (["export", "ResNet18", "--opset", "5", "-o", "{tmp}/x.onnx"], "--opset: expected an integer in 7..23, got 5"),
    (["parity", "{tmp}/not_onnx.onnx"], "is not an ONNX model"),
    (["parity", "{tmp}/missing.onnx"], "ONNX file not found"),
])
def test_bad_input_is_one_clear_line_and_leaves_no_file(tmp_path, args, words):
    (tmp_path / "not_onnx.onnx").write_text("hello")
    r = _cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert r.returncode != 0
    assert words in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr.split("featx ")[-1]
    assert not (tmp_path / "x.onnx").exists() and not list(tmp_path.glob(".x.onnx*"))


def test_parity_against_another_model_is_refused(r50fpn_onnx):
    from featx import create_model

    with pytest.raises(ParityError, match=r"outputs \['p2', 'p3', 'p4', 'p5', 'p6'\], but the model gives \['c2'"):
        parity(r50fpn_onnx[0], model=create_model("ResNet18"), repeats=0)


def test_export_error_leaves_no_file(tmp_path, monkeypatch):
    import featx.deploy.onnx_export as fo

    def boom(*a, **k):
        Path(a[2]).write_bytes(b"partial")  # the exporter wrote half a file, then died
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(fo, "_run_exporter", boom)
    with pytest.raises(ExportError, match="simulated crash"):
        export_onnx("ResNet18", tmp_path / "x.onnx", log=lambda m: None)
    assert list(tmp_path.iterdir()) == []


_EXPORT_ON_A_CPU = """
import sys
import featx.cpu
from featx.cpu import CpuInfo
cpus = {"epyc": CpuInfo("AMD EPYC", "x86_64", 2, ("avx2", "fma")),
        "xeon": CpuInfo("Xeon", "x86_64", 2, ("avx2", "avx512f", "avx512_vnni", "amx_int8"))}
featx.cpu.cpu_info = lambda: cpus[sys.argv[2]]
from featx.cli import main
sys.exit(main(["export", "ResNet18FPN", "-o", sys.argv[1], "--exporter", "torchscript"]))
"""


def test_a_default_export_is_the_same_graph_on_every_cpu_and_times_nothing(tmp_path):
    """The core's export is plain: BN folded, direct convolutions, nothing timed or cached, so two machines (here two
    CPUs the process is told it runs on, with oneDNN dispatching to different ISAs) write the same graph."""
    import os

    graphs = {}
    for cpu, isa in (("epyc", "AVX2"), ("xeon", "")):
        cache = tmp_path / f"cache_{cpu}"
        env = dict(os.environ, FEATX_CACHE_DIR=str(cache), ONEDNN_MAX_CPU_ISA=isa or "ALL")
        out = tmp_path / f"{cpu}.onnx"
        r = subprocess.run([sys.executable, "-c", _EXPORT_ON_A_CPU, str(out), cpu], env=env, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        assert not cache.exists() and "Winograd" not in r.stderr  # no measurement, no cache written
        proto = onnx.load(str(out))
        graphs[cpu] = proto.graph.SerializeToString()
        meta = read_metadata(out)
        assert meta["target"] == "any" and "winograd_convs" not in meta and "winograd_decision" not in meta
        assert "MatMul" not in {n.op_type for n in proto.graph.node}
    assert graphs["epyc"] == graphs["xeon"]


def test_the_core_export_refuses_a_rewrite_it_was_not_given(tmp_path):
    with pytest.raises(ExportError, match="featx.accel.export_onnx_tuned"):
        export_onnx("ResNet18", tmp_path / "x.onnx", ExportSettings(winograd="auto"), log=lambda m: None)
    assert not list(tmp_path.iterdir())
    for bad, words in (({"target": "gpu"}, "target must be one of any, cpu, cuda, tensorrt"),
                       ({"winograd": "on"}, "winograd must be one of off, auto, all")):
        with pytest.raises(ExportError, match=words):
            export_onnx("ResNet18", tmp_path / "x.onnx", ExportSettings(**bad), log=lambda m: None)


def test_a_gpu_target_never_takes_the_cpu_rewrite(tmp_path):
    r = run_cli("export", "ResNet18", "-o", str(tmp_path / "g.onnx"), "--target", "cuda", "--winograd", "auto")
    assert r.returncode == 1 and "a cuda target keeps direct convolutions" in r.stderr
    assert not list(tmp_path.iterdir())
    r = run_cli("export", "ResNet18", "-o", str(tmp_path / "t.onnx"), "--target", "tensorrt", "--exporter", "torchscript")
    assert r.returncode == 0, r.stderr[-2000:]
    assert read_metadata(tmp_path / "t.onnx")["target"] == "tensorrt" and "target: tensorrt" in r.stdout
