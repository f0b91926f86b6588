"""int8: static QDQ quantization calibrated on real images, and its parity gate."""
from __future__ import annotations

import onnx
import pytest
from helpers import run_cli

from featx.deploy.metadata import read_metadata
from featx.deploy.parity import GATES, parity
from featx.deploy.quantize import quantize_onnx


@pytest.mark.slow
def test_export_int8_calibrated_on_real_images(tmp_path):
    data = tmp_path / "digits"
    assert run_cli("make-digits", str(data)).returncode == 0
    out = tmp_path / "r18.onnx"
    r = run_cli("export", "ResNet18FPN", "-o", str(out), "--exporter", "torchscript", "--winograd", "--int8", "--runtime",
                "onnxruntime", "--calib",
                str(data / "train"), "--calib-count", "16", "--calib-size", "128x128")
    assert r.returncode == 0, r.stderr
    q = tmp_path / "r18_int8.onnx"
    assert out.is_file() and q.is_file() and "calibrated on 16 images" in r.stdout
    proto = onnx.load(str(q))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # the fp32 file runs its wide 3x3 convs as Winograd MatMuls; int8 quantized a direct export
    assert read_metadata(out)["winograd_convs"] == 10 and "MatMul" in {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "MatMul" not in ops and "(direct, for onnxruntime int8)" in r.stderr
    with pytest.raises(ValueError, match="10 Winograd convolutions"):
        quantize_onnx(out, tmp_path / "bad.onnx", data / "train", (64, 64), 2, log=lambda m: None)
    assert not (tmp_path / "bad.onnx").exists()
    # per-channel: the conv weights' scales are vectors, one per output channel
    scales = {i.name: i for i in proto.graph.initializer if i.name.endswith("_scale")}
    assert any(len(t.dims) == 1 and t.dims[0] > 1 for t in scales.values())
    meta = read_metadata(q)
    assert meta["precision"] == "int8" and meta["int8"]["calibration"]["images"] == 16
    assert q.stat().st_size < out.stat().st_size / 3  # int8 weights
    report = parity(q, sizes=[(128, 128), (97, 131)], batches=(1, 2), repeats=0, log=lambda m: None)
    assert report.precision == "int8" and report.gate["min_cos"] == GATES["int8"].min_cos == 0.99
    assert all(x.shape == (x.batch, 256) + x.shape[2:] for x in report.results) and len(report.results) == 15
    # Random-init weights (no download here) quantize worse than trained ones: measured 0.982-0.993
    # per level on the photo; the 0.99 gate is for trained weights. Far from fp32 would be < 0.9.
    assert min(x.cosine for x in report.results) >= 0.97

def test_int8_needs_calibration_images(tmp_path):
    r = run_cli("export", "ResNet18", "-o", str(tmp_path / "a.onnx"), "--int8")
    assert r.returncode == 1 and "--int8 needs --calib FOLDER" in r.stderr
    assert not (tmp_path / "a.onnx").exists()
