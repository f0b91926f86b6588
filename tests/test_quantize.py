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
    r = run_cli("export", "ResNet18FPN", "-o", str(out), "--exporter", "torchscript", "--winograd", "all", "--int8", "--runtime",
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


def _qdq_weight_peaks(path) -> list[int]:
    """max |int8 weight| of every conv weight initializer of a QDQ file."""
    import numpy as np
    from onnx import numpy_helper

    return [int(np.abs(numpy_helper.to_array(t).astype(np.int32)).max()) for t in onnx.load(str(path)).graph.initializer
            if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]


@pytest.fixture(scope="module")
def r18_direct_onnx(tmp_path_factory):
    from featx.deploy.onnx_export import ExportSettings, export_onnx

    path = tmp_path_factory.mktemp("r18") / "r18.onnx"
    export_onnx("ResNet18", path, ExportSettings(exporter="torchscript"), log=lambda m: None)
    return path


def test_onnxruntime_int8_takes_7_bit_weights_for_a_cpu_without_vnni(r18_direct_onnx, tmp_path, monkeypatch):
    """Without VNNI, u8 x s8 pair sums saturate at 16 bits: ONNX Runtime's documentation says reduce_range=True
    there. featx chooses it from the CPU that quantizes, as NNCF's overflow fix is chosen."""
    import warnings

    import numpy as np

    import featx.deploy.quantize as quantize
    from featx.cpu import CpuInfo
    from featx.deploy.runtimes import open_session
    from featx.errors import Int8SaturationWarning
    from featx.images import sample_image_path

    calib = sample_image_path().parent
    avx2 = CpuInfo("AMD EPYC", "x86_64", 2, ("avx2", "fma"))
    vnni = CpuInfo("Xeon", "x86_64", 2, ("avx2", "avx512f", "avx512_vnni"))
    files, logged = {}, []
    for name, fix, cpu in (("auto_avx2", "auto", avx2), ("auto_vnni", "auto", vnni), ("enable", "enable", vnni),
                           ("disable", "disable", avx2)):
        monkeypatch.setattr(quantize, "cpu_info", lambda cpu=cpu: cpu)
        files[name] = tmp_path / f"{name}.onnx"
        q = quantize_onnx(r18_direct_onnx, files[name], calib, (64, 64), 2, overflow_fix=fix, log=logged.append)
        meta = read_metadata(files[name])["int8"]
        expected = {"auto_avx2": "enable", "auto_vnni": "disable"}.get(name, fix)
        assert q.overflow_fix == meta["overflow_fix"] == expected and meta["cpu"] == cpu.describe()
        # 7-bit weights: |w| <= 64, so 255 x 64 x 2 < 32767; 8-bit ones reach 127 in every conv (per channel)
        peaks = _qdq_weight_peaks(files[name])
        assert len(peaks) == 20 and (max(peaks) <= 64 if expected == "enable" else min(peaks) == 127), (name, peaks)
    assert "7-bit weights, overflow fix enable: no VNNI on AMD EPYC" in logged[0]
    assert "8-bit weights, overflow fix disable: VNNI on Xeon" in logged[1] and "enable: as asked" in logged[2]
    with pytest.raises(ValueError, match="first_layer_only is NNCF's"):
        quantize_onnx(r18_direct_onnx, tmp_path / "x.onnx", calib, (64, 64), 2, overflow_fix="first_layer_only")
    with pytest.raises(ValueError, match="overflow_fix must be one of"):
        quantize_onnx(r18_direct_onnx, tmp_path / "x.onnx", calib, (64, 64), 2, overflow_fix="on")
    assert not (tmp_path / "x.onnx").exists()

    # a file with 8-bit weights warns when opened on a CPU without VNNI, and only there; so does one written before
    # featx chose reduce_range (no overflow_fix in its metadata)
    old = tmp_path / "old.onnx"
    proto = onnx.load(str(files["disable"]))
    for prop in proto.metadata_props:
        if prop.key == "featx.int8":
            prop.value = '{"format": "QDQ", "weights": "int8 per-channel", "activations": "uint8"}'
    onnx.save(proto, str(old))
    files["old"] = old
    x = np.zeros((1, 3, 64, 64), np.float32)
    for cpu, name, warns in ((avx2, "disable", True), (avx2, "old", True), (avx2, "enable", False),
                             (avx2, "auto_avx2", False), (vnni, "disable", False), (vnni, "old", False)):
        monkeypatch.setattr("featx.deploy.runtimes.cpu_info", lambda cpu=cpu: cpu)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            session = open_session(files[name], "cpu")
        found = [str(w.message) for w in caught if issubclass(w.category, Int8SaturationWarning)]
        assert len(found) == int(warns), (cpu.model, name, found)
        if warns:
            assert "without ONNX Runtime's reduce_range (7-bit weights)" in found[0] and "AMD EPYC" in found[0]
            assert "--overflow-fix enable" in found[0]
            # the CPU it was quantized on, from its metadata ("disable" was asked for on the EPYC)
            assert f"(on {avx2.describe() if name == 'disable' else 'a CPU with VNNI'})" in found[0]
        assert session.run(x)[-1].shape == (1, 512, 2, 2)
