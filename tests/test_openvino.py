"""CPU deployment with OpenVINO: IR export with featx's metadata, parity on IRs, NNCF int8 (overflow fix
for the CPU at hand, accuracy-aware), the int8 runtime and Winograd chosen by measuring, CPU in reports."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
import torch

from featx import accel
from featx.cpu import CpuInfo, cpu_info
from featx.deploy.metadata import read_metadata
from featx.deploy.onnx_export import ExportSettings
from featx.deploy.openvino_export import export_openvino
from featx.deploy.parity import parity
from featx.deploy.runtimes import open_session
from featx.errors import ExportError, ParityError
from featx.images import sample_image_path
from helpers import run_cli


@pytest.fixture(scope="module")
def r18_ir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ir") / "r18fpn.xml"
    export_openvino("ResNet18FPN", path, ExportSettings(exporter="torchscript"), log=lambda m: None)
    return path


def test_ir_export_carries_featx_metadata_and_dynamic_shapes(r18_ir):
    assert r18_ir.is_file() and r18_ir.with_suffix(".bin").is_file()
    assert not list(r18_ir.parent.glob(".*"))  # no temporary left
    meta = read_metadata(r18_ir)
    assert meta["format"] == "openvino" and meta["model_config"] == {"type": "featx.ResNet18FPN"}
    assert [lv["name"] for lv in meta["levels"]] == ["P2", "P3", "P4", "P5", "P6"] and meta["precision"] == "fp32"
    model = ov.Core().read_model(str(r18_ir))
    assert str(model.inputs[0].get_partial_shape()) == "[?,3,?,?]"  # batch, height, width dynamic
    assert [o.get_any_name() for o in model.outputs] == ["p2", "p3", "p4", "p5", "p6"]


def test_parity_on_the_ir_names_the_runtime(r18_ir):
    report = parity(r18_ir, sizes=[(64, 64), (97, 131)], batches=(1, 2), repeats=2, log=lambda m: None)
    assert report.passed and len(report.results) == 15 and max(x.rel for x in report.results) < 5e-5
    assert report.runtime.startswith("openvino 2026") and report.providers[0].startswith("CPU: ")
    assert report.latency_ms["runtime"] > 0
    r = run_cli("parity", str(r18_ir), "--sizes", "64x64", "--batch", "1", "--repeats", "0")
    assert r.returncode == 0 and "runtime openvino" in r.stdout and "PASS: 5 of 5" in r.stdout


def test_a_static_winograd_ir_keeps_its_output_names_and_passes_parity(tmp_path):
    # at 64x96 the P2 and P3 maps are whole 4x4 tiles, so OpenVINO drops the no-op crop and the compiled outputs
    # get a second name ('/neck/fpn_convs.0/conv/Reshape_6_output_0') that get_any_name() returned before the p2
    path = tmp_path / "r18_static.xml"
    accel.export_openvino_tuned("ResNet18FPN", path, ExportSettings(winograd="all", static_shape=(64, 96)), log=lambda m: None)
    compiled = ov.Core().compile_model(str(path), "CPU")
    assert any(len(o.get_names()) > 1 for o in compiled.outputs)  # the situation this guards against
    assert open_session(path, "cpu", 2).outputs == ["p2", "p3", "p4", "p5", "p6"]
    report = parity(path, batches=(1,), repeats=0, log=lambda m: None)
    assert report.passed and len(report.results) == 5


def test_ir_errors(tmp_path, r18_ir):
    with pytest.raises(ExportError, match=r"an OpenVINO IR is an \.xml file"):
        export_openvino("ResNet18", tmp_path / "x.onnx", log=lambda m: None)
    lonely = tmp_path / "lonely.xml"
    lonely.write_bytes(r18_ir.read_bytes())  # no .bin beside it
    with pytest.raises(ParityError, match="lonely.bin are both needed"):
        open_session(lonely)
    with pytest.raises(ParityError, match="OpenVINO runs featx's IRs on the CPU"):
        open_session(r18_ir, device="cuda")


@pytest.mark.parametrize("cpu,fix,peak", [
    (CpuInfo("AMD EPYC", "x86_64", 2, ("avx2", "fma")), "enable", 64),                   # no VNNI: 7-bit weights
    (CpuInfo("Xeon", "x86_64", 2, ("avx2", "avx512f", "avx512_vnni")), "disable", 127),  # VNNI: 8-bit weights
])
def test_nncf_int8_takes_the_overflow_fix_of_the_cpu_that_quantizes(r18_ir, tmp_path, monkeypatch, cpu, fix, peak):
    from featx.deploy.openvino_int8 import quantize_openvino

    monkeypatch.setattr("featx.deploy.quantize.cpu_info", lambda: cpu)
    out = tmp_path / "int8.xml"
    q = quantize_openvino(r18_ir, out, sample_image_path().parent, (128, 128), 8, log=lambda m: None)
    peaks = _int8_weight_peaks(out)
    assert q.overflow_fix == fix and max(peaks) <= peak and (fix == "enable" or min(peaks) == 127)
    model = ov.Core().read_model(str(out))
    assert sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops()) > 20
    meta = read_metadata(out)
    assert meta["precision"] == "int8" and meta["int8"]["overflow_fix"] == q.overflow_fix
    from featx.cpu import cpu_info
    from featx.deploy.runtimes import int8_saturation_risk
    from featx.errors import Int8SaturationWarning

    if int8_saturation_risk(meta["int8"], cpu_info()):
        # 8-bit weights, made for a VNNI CPU, run here on one without: u8 x s8 products can saturate, so the file is
        # not judged by the int8 gate on this CPU; featx says so as it loads the file
        with pytest.warns(Int8SaturationWarning, match="VNNI"):
            parity(out, sizes=[(128, 128)], batches=(1,), repeats=0, log=lambda m: None)
        pytest.skip(f"an IR quantized for a VNNI CPU cannot meet the int8 gate on this one ({cpu_info().isa})")
    report = parity(out, sizes=[(128, 128), (96, 160)], batches=(1,), repeats=0, log=lambda m: None)
    assert report.passed and min(x.cosine for x in report.results) >= 0.99  # the int8 gate, on the photo
    assert report.gate["min_cos"] == 0.99


def _int8_weight_peaks(ir: Path) -> list[int]:
    """max |int8 weight| of every convolution of an NNCF IR, in graph order (Constant -> Convert -> Multiply)."""
    peaks = []
    for op in ov.Core().read_model(str(ir)).get_ordered_ops():
        if op.get_type_name() == "Convolution":
            node = op.input_value(1).get_node()
            while node.get_type_name() != "Constant":
                node = node.input_value(0).get_node()
            data = node.get_data()
            assert data.dtype == np.int8
            peaks.append(int(np.abs(data.astype(np.int16)).max()))
    return peaks


def test_overflow_fix_as_asked_and_the_warning_on_a_cpu_without_vnni(r18_ir, tmp_path, monkeypatch):
    import warnings

    from featx.deploy.openvino_int8 import quantize_openvino
    from featx.errors import Int8SaturationWarning

    irs = {}
    for fix in ("enable", "disable", "first_layer_only"):
        irs[fix] = tmp_path / f"{fix}.xml"
        q = quantize_openvino(r18_ir, irs[fix], sample_image_path().parent, (96, 96), 4, overflow_fix=fix,
                              log=lambda m: None)
        assert q.overflow_fix == fix == read_metadata(irs[fix])["int8"]["overflow_fix"]
    # NNCF's fix is 7-bit weights: in every conv (enable), the first only, or none (8 bits, +-127)
    enable, disable, first = (_int8_weight_peaks(irs[f]) for f in ("enable", "disable", "first_layer_only"))
    assert len(enable) == len(disable) == len(first) == 28
    assert max(enable) <= 64 and min(disable) == 127 and first[0] <= 64 and min(first[1:]) == 127
    with pytest.raises(ValueError, match="overflow_fix must be one of"):
        quantize_openvino(r18_ir, tmp_path / "x.xml", sample_image_path().parent, overflow_fix="on")

    # an IR made without the fix warns when opened on a CPU without VNNI, and only there
    avx2 = CpuInfo("AMD EPYC", "x86_64", 2, ("avx2", "fma"))
    vnni = CpuInfo("Xeon", "x86_64", 2, ("avx2", "avx512f", "avx512_vnni"))
    for cpu, fix, warns in ((avx2, "disable", True), (avx2, "enable", False), (avx2, "first_layer_only", False),
                            (vnni, "disable", False)):
        monkeypatch.setattr("featx.deploy.runtimes.cpu_info", lambda cpu=cpu: cpu)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            session = open_session(irs[fix], "cpu")
        found = [w for w in caught if issubclass(w.category, Int8SaturationWarning)]
        assert len(found) == int(warns), (cpu.model, fix)
        if warns:
            text = str(found[0].message)
            assert "without NNCF's overflow fix" in text and "AMD EPYC" in text and "--overflow-fix enable" in text
            assert cpu_info().model in text  # the CPU it was quantized on, from the IR's metadata
        assert session.run(np.zeros((1, 3, 64, 64), np.float32))[0].shape == (1, 256, 16, 16)


def test_nncf_options_resolve_the_int8_runtime_before_anything_is_exported():
    from featx.deploy.int8 import resolve_int8_runtime

    assert resolve_int8_runtime("auto") == ("auto", None)  # measured later
    assert resolve_int8_runtime("auto", max_drop=0.01) == ("openvino", "--max-drop needs NNCF")
    assert resolve_int8_runtime("auto", overflow_fix="first_layer_only") == (
        "openvino", "--overflow-fix first_layer_only is NNCF's")
    # 7-bit weights in every layer or none: both runtimes have them (NNCF's fix, ONNX Runtime's reduce_range)
    for fix in ("enable", "disable"):
        for runtime in ("auto", "onnxruntime", "openvino"):
            assert resolve_int8_runtime(runtime, overflow_fix=fix) == (runtime, None)
    for bad in ({"max_drop": 0.01}, {"overflow_fix": "first_layer_only"}):
        with pytest.raises(ValueError, match="are NNCF's: use --runtime openvino"):
            resolve_int8_runtime("onnxruntime", **bad)
    with pytest.raises(ValueError, match="overflow_fix must be one of"):
        resolve_int8_runtime("auto", overflow_fix="on")


def test_cli_overflow_fix_in_each_runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATX_CACHE_DIR", str(tmp_path / "cache"))
    r = run_cli("export", "ResNet18", "--overflow-fix", "enable")
    assert r.returncode == 1 and "--overflow-fix choose how --int8 quantizes; add --int8" in r.stderr
    calib = str(sample_image_path().parent)
    small = ("--calib", calib, "--calib-count", "3", "--calib-size", "96x96")
    r = run_cli("export", "ResNet18", "-o", str(tmp_path / "a.onnx"), "--exporter", "torchscript", "--no-winograd",
                "--int8", "--runtime", "onnxruntime", "--overflow-fix", "first_layer_only", *small)
    assert r.returncode == 1 and "first_layer_only are NNCF's: use --runtime openvino" in r.stderr
    assert not list(tmp_path.glob("a*"))  # refused before exporting anything
    # ONNX Runtime takes "enable" as reduce_range: 7-bit weights
    r = run_cli("export", "ResNet18", "-o", str(tmp_path / "a.onnx"), "--exporter", "torchscript", "--no-winograd",
                "--int8", "--runtime", "onnxruntime", "--overflow-fix", "enable", *small)
    assert r.returncode == 0, r.stderr[-2000:]
    assert read_metadata(tmp_path / "a_int8.onnx")["int8"]["overflow_fix"] == "enable"
    assert "7-bit weights, overflow fix enable: as asked" in r.stderr
    # --runtime auto with NNCF's first-layer fix: OpenVINO, without timing both (nothing measured or cached)
    r = run_cli("export", "ResNet18", "-o", str(tmp_path / "r18.onnx"), "--exporter", "torchscript", "--no-winograd",
                "--int8", "--overflow-fix", "first_layer_only", *small)
    assert r.returncode == 0, r.stderr[-2000:]
    meta = read_metadata(tmp_path / "r18_int8.xml")
    assert meta["int8"]["overflow_fix"] == "first_layer_only"
    assert meta["int8_choice"]["why"] == "--overflow-fix first_layer_only is NNCF's"
    peaks = _int8_weight_peaks(tmp_path / "r18_int8.xml")
    assert peaks[0] <= 64 and min(peaks[1:]) == 127
    assert "overflow fix first_layer_only: as asked" in r.stderr and not (tmp_path / "r18_int8.onnx").exists()
    assert not (tmp_path / "cache" / "choices.json").exists() or "int8-runtime" not in (
        tmp_path / "cache" / "choices.json").read_text()


def test_accuracy_aware_quantization_keeps_its_promise(r18_ir, tmp_path):
    import random

    from featx.deploy.openvino_int8 import quantize_openvino
    from featx.detection.shapes import render_image

    rng = random.Random(0)
    for i in range(6):  # textured scenes with objects: half calibrate, half validate
        render_image(rng, 128)[0].save(tmp_path / f"{i}.png")
    q = quantize_openvino(r18_ir, tmp_path / "aa.xml", tmp_path, (96, 96), 6, max_drop=0.0005, log=lambda m: None)
    assert q.accuracy_control["max_drop"] == 0.0005 and q.accuracy_control["int8"] >= 1 - 0.0005 - 1e-6


def test_int8_runtime_is_the_files_own_by_default_and_measured_once_with_auto(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATX_CACHE_DIR", str(tmp_path / "cache"))
    fp32 = tmp_path / "r18.onnx"
    calib = ("--calib", str(sample_image_path().parent), "--calib-count", "3", "--calib-size", "96x96")
    # the plain default: an .onnx export quantizes for ONNX Runtime, nothing timed, nothing cached
    r = run_cli("export", "ResNet18", "-o", str(fp32), "--exporter", "torchscript", "--int8", *calib)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "int8 for onnxruntime" in r.stdout and (tmp_path / "r18_int8.onnx").is_file()
    assert not (tmp_path / "cache").exists() and "int8 runtime:" not in r.stderr
    (tmp_path / "r18_int8.onnx").unlink()
    r = run_cli("export", "ResNet18", "-o", str(fp32), "--exporter", "torchscript", "--no-winograd", "--int8",
                "--runtime", "auto", *calib)
    assert r.returncode == 0, r.stderr[-2000:]
    choice = json.loads((tmp_path / "cache" / "choices.json").read_text())
    (key, value), = [(k, v) for k, v in choice.items() if k.startswith("int8-runtime|")]
    assert cpu_info().key in key and set(value["timings_ms"]) == {"onnxruntime", "openvino"}
    assert value["runtime"] == min(value["timings_ms"], key=value["timings_ms"].get)
    out = tmp_path / ("r18_int8.xml" if value["runtime"] == "openvino" else "r18_int8.onnx")
    assert out.is_file() and read_metadata(out)["int8_choice"]["runtime"] == value["runtime"]
    assert f"int8 runtime: {value['runtime']} (measured now" in r.stderr
    # the second time the cache decides, without building the other runtime's file
    r = run_cli("export", "ResNet18", "-o", str(fp32), "--exporter", "torchscript", "--no-winograd", "--int8",
                "--runtime", "auto", *calib)
    assert r.returncode == 0 and "(measured before on" in r.stderr and "measured now" not in r.stderr


def test_cli_openvino_flags_are_checked():
    r = run_cli("export", "ResNet18", "--max-drop", "0.01")
    assert r.returncode == 1 and "add --int8" in r.stderr
    r = run_cli("export", "ResNet18", "--format", "openvino", "-o", "x.onnx")
    assert r.returncode == 1 and "a openvino export must end in .xml" in r.stderr


def test_cpu_description_and_reports():
    info = cpu_info()
    assert info.model and info.cores >= 1 and set(info.flags) <= {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni",
                                                                   "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
                                                                   "amx_bf16"}
    vnni = CpuInfo("Xeon", "x86_64", 2, ("avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_int8"))
    assert vnni.vnni and vnni.amx and vnni.isa == "AVX2 AVX512F AVX512-VNNI AMX-TILE AMX-INT8"
    avx2 = CpuInfo("EPYC", "x86_64", 2, ("avx2", "fma"))
    assert not avx2.vnni and avx2.isa == "AVX2 FMA (no AVX-512, no VNNI, no AMX)" and avx2.key != vnni.key


@pytest.mark.slow
def test_bench_reports_the_cpu_and_runs_the_openvino_entries(tmp_path):
    r = run_cli("bench", "--model", "ResNet18FPN", "--sizes", "64x64", "--batch", "1", "--repeats", "3",
                "--entries", "featx", "featx_openvino", "featx_openvino_direct", "featx_openvino_int8",
                "--json", str(tmp_path / "b.json"))
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["cpu"]["model"] == cpu_info().model and "openvino" in data["versions"]
    rows = {row["entry"]: row for row in data["rows"]}
    assert list(rows) == ["featx", "featx_openvino", "featx_openvino_direct", "featx_openvino_int8"]
    assert all(row["median_ms"] > 0 for row in data["rows"])
    assert f"CPU: {cpu_info().model}" in r.stdout
    # the deployment target's yardstick: each row's per-round ratio to OpenVINO on the direct export, and
    # featx's fastest fp32 entry by it (int8 and the yardstick itself do not compete)
    ov = rows["featx_openvino_direct"]["times_ms"]
    for row in rows.values():  # times_ms are rounded to 0.1 ms: the median ratio lies within their bounds
        low = sorted((t - 0.05) / (b + 0.05) for t, b in zip(row["times_ms"], ov))[1]
        high = sorted((t + 0.05) / (b - 0.05) for t, b in zip(row["times_ms"], ov))[1]
        assert low - 1e-3 <= row["vs_openvino_direct"] <= high + 1e-3
    best = min(("featx", "featx_openvino"), key=lambda e: rows[e]["vs_openvino_direct"])
    assert data["fastest_fp32_vs_openvino_direct"] == [
        {"input": [1, 3, 64, 64], "entry": best, "ratio": rows[best]["vs_openvino_direct"]}]
    assert (f"featx's fastest fp32 path at 1x3x64x64: {best}, {rows[best]['vs_openvino_direct']:.2f}x of OpenVINO "
            "on the direct export") in r.stdout and "vs OV direct" in r.stdout
