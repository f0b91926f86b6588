"""The rules that tie `featx export`'s options together, as library functions (featx.deploy.request)."""
from __future__ import annotations

from pathlib import Path

import pytest

from featx.deploy.onnx_export import ExportSettings
from featx.deploy.parity import GATES, gate_with_overrides
from featx.deploy.request import Int8Plan, default_export_path, export_settings, int8_plan
from featx.errors import ExportError


def test_a_profile_with_its_overrides():
    s = export_settings("static_fp32", batch=4, opset=None, exporter="torchscript", target="cpu")
    assert (s.static_shape, s.batch, s.opset, s.exporter, s.target, s.winograd) == ((800, 1216), 4, 18, "torchscript",
                                                                                      "cpu", "off")
    assert export_settings("cpu_winograd").winograd == "auto" and export_settings("cpu_winograd").target == "cpu"
    assert export_settings(static_shape=[96, 128]).static_shape == (96, 128)
    with pytest.raises(ExportError, match="--fp16-io needs --fp16"):
        export_settings(fp16_io=True)
    with pytest.raises(ExportError, match="target must be one of"):
        export_settings(target="gpu")
    with pytest.raises(TypeError, match="unknown export settings"):
        export_settings(precision="fp16")


def test_the_int8_runtime_is_the_files_own_unless_asked(tmp_path):
    fp32, fp16 = ExportSettings(), ExportSettings(fp16=True)
    calib = str(tmp_path)
    assert int8_plan(fp32, "onnx", False) is None
    assert int8_plan(fp32, "onnx", True, calib) == Int8Plan("onnxruntime", measured=False)
    assert int8_plan(fp32, "openvino", True, calib) == Int8Plan("openvino", measured=False)
    assert int8_plan(fp32, "onnx", True, calib, runtime="auto") == Int8Plan("auto", measured=True)
    # NNCF-only options make it OpenVINO without measuring (the reason goes into the file)
    assert int8_plan(fp32, "onnx", True, calib, max_drop=0.01) == Int8Plan("auto", measured=False)
    assert int8_plan(fp32, "onnx", True, calib, overflow_fix="first_layer_only") == Int8Plan("auto", measured=False)
    refusals = [
        (dict(settings=fp32, fmt="onnx", int8=False, runtime="openvino"), "add --int8"),
        (dict(settings=fp32, fmt="onnx", int8=False, overflow_fix="enable"), "add --int8"),
        (dict(settings=fp32, fmt="onnx", int8=True), "--int8 needs --calib"),
        (dict(settings=fp32, fmt="onnx", int8=True, calib=str(tmp_path / "none")), "calibration folder not found"),
        (dict(settings=fp16, fmt="onnx", int8=True, calib=calib), "quantizes an fp32 export"),
        (dict(settings=fp32, fmt="openvino", int8=True, calib=calib, runtime="onnxruntime"), "mixes runtimes"),
        (dict(settings=fp32, fmt="onnx", int8=True, calib=calib, runtime="onnxruntime", max_drop=0.1), "NNCF's"),
    ]
    for kwargs, words in refusals:
        with pytest.raises((ValueError, FileNotFoundError), match=words):
            int8_plan(**kwargs)


def test_where_an_export_goes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg, s = {"type": "featx.ResNet50FPN"}, ExportSettings()
    assert default_export_path("ResNet50FPN", cfg, s, "onnx") == Path("ResNet50FPN_dynamic_fp32.onnx")
    (tmp_path / "export").mkdir()
    assert default_export_path("resnet50fpn", cfg, s, "openvino") == Path("export/ResNet50FPN_dynamic_fp32.xml")
    assert default_export_path("runs/best_epoch_3.pth", cfg, ExportSettings(static_shape=(64, 96)), "onnx") == Path(
        "export/best_epoch_3_static64x96_fp32.onnx")
    assert default_export_path("ResNet50FPN", cfg, s, "onnx", "my.onnx") == Path("my.onnx")
    with pytest.raises(ValueError, match="a openvino export must end in .xml"):
        default_export_path("ResNet50FPN", cfg, s, "openvino", "x.onnx")


def test_gate_overrides():
    assert gate_with_overrides("fp32") is None
    g = gate_with_overrides("fp16", max_rel=0.1)
    assert (g.max_rel, g.min_cos, g.why) == (0.1, GATES["fp16"].min_cos, "set on the command line")
    assert gate_with_overrides("fp32", tf32=True, min_cos=0.5).max_rel == GATES["tf32"].max_rel
    with pytest.raises(ValueError, match="--min-cos must be in -1..1"):
        gate_with_overrides("fp32", min_cos=2)
