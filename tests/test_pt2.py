"""PyTorch-native files: ``featx export --format pt2`` (a torch.export ExportedProgram) and ``--format aoti`` (an
AOTInductor package), their metadata read without loading them, and ``featx parity`` on them only when trusted."""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from helpers import failures_of_selected, run_cli

from featx.deploy.metadata import graph_precision, read_metadata
from featx.deploy.parity import parity
from featx.deploy.pt2_archive import is_aoti_package, read_pt2_metadata
from featx.deploy.pt2_export import export_pt2
from featx.errors import ExportError, ParityError
from featx.features import as_output_tuple
from featx.models import build_from_config


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pt2") / "r18.pt2"
    export_pt2("ResNet18FPN", path, seed=3, log=lambda m: None)
    return path


def test_the_program_loads_with_torch_alone_and_computes_the_model(program):
    meta = read_pt2_metadata(program)  # from the zip entries, nothing loaded
    assert meta["model_config"]["type"] == "featx.ResNet18FPN" and meta["init_seed"] == 3
    assert [lv["output"] for lv in meta["levels"]] == ["p2", "p3", "p4", "p5", "p6"]
    assert meta["exporter"] == "torch.export (pt2)" and meta["precision"] == "fp32" and meta["device"] == "cpu"
    assert set(meta["input_ranges"]) == {"batch", "height", "width"} and meta["input"]["min_size"] >= 32
    assert not is_aoti_package(program) and graph_precision(program) == "fp32"
    loaded = torch.export.load(str(program)).module()
    model = build_from_config(meta["model_config"], seed=3)
    for shape in ((1, 3, 97, 131), (3, 3, 160, 96)):
        x = torch.randn(*shape)
        with torch.no_grad():
            got, want = loaded(x), as_output_tuple(model(x))
        assert len(got) == 5
        assert max(((g - w).abs().max() / w.abs().max()).item() for g, w in zip(got, want)) < 1e-4


def test_parity_loads_a_pt2_only_when_trusted(program):
    with pytest.raises(ParityError, match="torch.export program.*--trust-code"):
        parity(program, sizes=[(97, 131)], repeats=0, log=lambda m: None)
    report = parity(program, sizes=[(97, 131), (128, 160)], batches=(1, 2), repeats=0, log=lambda m: None,
                    trust_code=True)
    assert report.passed and report.precision == "fp32" and report.runtime.startswith("torch.export")
    assert len(report.results) == 15 and max(r.rel for r in report.results) < 5e-5


def test_a_pt2_whose_metadata_lies_about_its_precision_is_refused(program, tmp_path):
    forged = tmp_path / "forged.pt2"
    with zipfile.ZipFile(program) as src, zipfile.ZipFile(forged, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("/extra/featx.json"):
                values = json.loads(data)
                values["featx.precision"] = "int8"
                data = json.dumps(values).encode()
            dst.writestr(item, data)
    with pytest.raises(ParityError, match="says int8, but its graph computes in fp32"):
        parity(forged, sizes=[(97, 131)], repeats=0, log=lambda m: None, trust_code=True)


def test_what_is_not_a_featx_pt2(tmp_path):
    (tmp_path / "a.pt2").write_bytes(b"not a zip")
    with pytest.raises(ParityError, match="not a .pt2 archive"):
        read_metadata(tmp_path / "a.pt2")
    with pytest.raises(ParityError, match="pt2 file not found"):
        read_metadata(tmp_path / "missing.pt2")
    with pytest.raises(ExportError, match="fp32 without featx.accel's rewrites"):
        from featx.deploy.onnx_export import ExportSettings

        export_pt2("ResNet18", tmp_path / "h.pt2", ExportSettings(fp16=True), log=lambda m: None)


def test_cli_export_and_parity_of_a_pt2(program, tmp_path):
    r = run_cli("export", "ResNet18", "--format", "pt2", "-o", str(tmp_path / "r18.pt2"))
    assert r.returncode == 0, r.stderr
    assert "torch.export (pt2)" in r.stdout and (tmp_path / "r18.pt2").is_file()
    refused = run_cli("parity", str(tmp_path / "r18.pt2"), "--sizes", "97x131", "--repeats", "0")
    assert refused.returncode == 1 and "--trust-code" in refused.stderr
    ok = run_cli("parity", str(tmp_path / "r18.pt2"), "--sizes", "97x131", "--repeats", "0", "--trust-code")
    assert ok.returncode == 0 and "PASS: 8 of 8" in ok.stdout, ok.stdout + ok.stderr
    for args, words in ((["--format", "pt2", "--int8", "--calib", str(tmp_path)], "use --format onnx or openvino"),
                        (["--device", "cuda"], "add --format aoti"),
                        (["--format", "pt2", "-o", str(tmp_path / "x.onnx")], "must end in .pt2")):
        r = run_cli("export", "ResNet18", *args)
        assert r.returncode == 1 and words in r.stderr, r.stderr


@pytest.mark.slow
def test_an_aoti_package_runs_with_torchs_loader_and_passes_parity(tmp_path):
    """Compiled by AOTInductor for this CPU (C++ compile: a few minutes on 2 cores)."""
    path = tmp_path / "r18_aoti.pt2"
    export_pt2("ResNet18FPN", path, aoti=True, log=lambda m: None)
    assert is_aoti_package(path) and read_pt2_metadata(path)["exporter"] == "torch.export (aoti)"
    from torch._inductor import aoti_load_package

    runner = aoti_load_package(str(path))  # torch's own loader, nothing of featx
    model = build_from_config({"type": "featx.ResNet18FPN"}, seed=0)
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        got, want = runner(x), as_output_tuple(model(x))
    assert max(((g - w).abs().max() / w.abs().max()).item() for g, w in zip(got, want)) < 1e-4
    with pytest.raises(ParityError, match="AOTInductor package: a compiled library"):
        parity(path, repeats=0, log=lambda m: None)
    report = parity(path, sizes=[(97, 131)], repeats=0, log=lambda m: None, trust_code=True)
    assert report.passed and report.runtime.startswith("AOTInductor")
    copy = tmp_path / "copy.pt2"
    shutil.copy(path, copy)
    assert read_metadata(copy)["model_config"]["type"] == "featx.ResNet18FPN"


@pytest.mark.slow
def test_compile_for_inference_is_the_model_within_fp32_rounding_at_any_size():
    """Inductor with frozen weights, dynamic shapes: the first call compiles (timed); every size gives the model's
    maps."""
    from featx.inference import compile_for_inference

    torch.manual_seed(0)
    model = build_from_config({"type": "featx.ResNet18FPN"}, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = compile_for_inference(model)
    assert fast.compile_seconds is None
    for shape in ((2, 3, 96, 128), (2, 3, 160, 112), (3, 3, 128, 128)):
        x = torch.randn(*shape)
        with torch.no_grad():
            got, want = fast(x), as_output_tuple(model(x))
        assert len(got) == 5
        assert max(((g - w).abs().max() / w.abs().max()).item() for g, w in zip(got, want)) < 1e-4
    assert fast.compile_seconds > 0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the original is untouched


# one backbone of each family: featx's families as torch.export programs with dynamic batch, height and width
FAMILY_MODELS = ["ResNet18", "VGG11BN", "AlexNet", "GoogLeNet", "InceptionV3", "DenseNet121", "MobileNetV2",
                 "MobileNetV3Small", "SEResNet50", "SKResNet18", "ResNeSt50d", "LeNet5"]


def check_exports_with_dynamic_shapes(name: str) -> None:
    """``name`` as a .pt2 with dynamic batch/H/W, loaded back: equal to the model at two other input sizes."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.pt2"
        export_pt2(name, path, log=lambda m: None)
        meta = read_pt2_metadata(path)
        loaded = torch.export.load(str(path)).module()
    model = build_from_config(meta["model_config"], seed=0)
    side = meta["input"]["min_size"] + 13
    channels = meta["input"]["channels"]
    for b, h, w in ((2, side, side + 24), (3, side + 40, side)):
        x = torch.randn(b, channels, h, w)
        with torch.no_grad():
            got, want = loaded(x), as_output_tuple(model(x))
        assert [g.shape for g in got] == [w_.shape for w_ in want]
        assert max(((g - r).abs().max() / r.abs().max()).item() for g, r in zip(got, want)) < 1e-4


@pytest.fixture(scope="module")
def export_failures(request) -> dict:
    """The exports run two at a time in worker processes (torch.export's tracing is Python, one core each)."""
    return failures_of_selected(request, check_exports_with_dynamic_shapes, "test_every_family_exports_with_dynamic_shapes")


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_every_family_exports_with_dynamic_shapes(name, export_failures):
    assert export_failures[name] is None, export_failures[name]
