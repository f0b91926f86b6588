"""The inference path (BN folded, channels_last) and the benchmark tool's report."""
from __future__ import annotations

import json
import statistics

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.ops import FrozenBatchNorm2d

import featx
from featx import accel
from featx.inference import optimize_for_inference
from helpers import randomize_norm_stats, rel_err, run_cli


@pytest.mark.parametrize("winograd", ["plain", "all"])  # the core, and featx.accel's F(4x4) on every eligible conv
@pytest.mark.parametrize("name,kwargs", [
    ("ResNet50FPN", {}),
    ("ResNet18RetinaFPN", {"norm_cfg": "FrozenBN"}),
    ("ResNet50", {"deep_stem": True, "avg_down": True}),
    ("ResNet18FPN", {"neck": {"norm_cfg": "BN"}}),
])
def test_optimized_model_matches_within_1e5(name, kwargs, winograd):
    model = randomize_norm_stats(featx.create_model(name, **kwargs), seed=7).eval()
    bns = sum(isinstance(m, (_BatchNorm, FrozenBatchNorm2d)) for m in model.modules())
    fast = optimize_for_inference(model) if winograd == "plain" else accel.optimize_for_cpu(model, winograd)
    assert (winograd == "plain") == (getattr(fast, "winograd_convs", 0) == 0)
    assert fast.folded_batchnorms == bns  # every norm folded
    assert not any(isinstance(m, (_BatchNorm, FrozenBatchNorm2d)) for m in fast.modules())
    assert not any(p.requires_grad for p in fast.parameters())
    x = torch.randn(2, 3, 67, 93)
    with torch.no_grad():
        ref, out = model(x), fast(x)
    assert max(rel_err(o.contiguous(), r) for o, r in zip(out, ref)) <= 1e-5


def test_original_model_is_untouched():
    model = featx.create_model("ResNet18FPN")
    fast = optimize_for_inference(model)
    assert isinstance(model.backbone.bn1, torch.nn.BatchNorm2d) and isinstance(fast.backbone.bn1, torch.nn.Identity)
    assert model.backbone.conv1.weight.requires_grad


def test_bench_reports_ratios_against_torchvision(tmp_path):
    r = run_cli("bench", "--model", "ResNet18FPN", "--sizes", "64x64", "--batch", "1", "2", "--repeats", "2",
                "--entries", "torchvision", "timm+tv_fpn", "featx", "featx_optimized",
                "--json", str(tmp_path / "b.json"), "--png", str(tmp_path / "b.png"), "--results", str(tmp_path / "results"))
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads((tmp_path / "b.json").read_text())
    # result files named by hardware and versions, with a markdown table and an index of the folder
    (saved,) = (tmp_path / "results").glob("*.json")
    assert json.loads(saved.read_text()) == data
    name = saved.stem
    assert name.startswith("cpu-") and f"-{data['threads']}t-resnet18fpn-torch-" in name and "onnxruntime" in name
    table = saved.with_suffix(".md").read_text()
    assert data["cpu"]["model"] in table and table.count("| torchvision |") == 2 and data["versions"] in table
    assert f"[{name}]({name}.md)" in (tmp_path / "results" / "README.md").read_text()
    assert data["matmul_peak_gflops"] > 0 and data["params_m"] == pytest.approx(13.8, abs=0.05)
    rows = {(x["entry"], tuple(x["input"])): x for x in data["rows"]}
    assert set(rows) == {(e, (b, 3, 64, 64)) for e in ("torchvision", "timm+tv_fpn", "featx", "featx_optimized") for b in (1, 2)}
    assert rows[("torchvision", (1, 3, 64, 64))]["vs_torchvision"] == 1.0
    x = rows[("featx", (2, 3, 64, 64))]
    # the ratio pairs the runs of each round: the JSON keeps them, so it can be recomputed
    base = rows[("torchvision", (2, 3, 64, 64))]["times_ms"]
    assert len(x["times_ms"]) == len(base) == 2
    assert x["vs_torchvision"] == pytest.approx(statistics.median(t / b for t, b in zip(x["times_ms"], base)), rel=0.01)
    assert x["gflops"] > 0 and x["achieved_gflops_s"] == pytest.approx(x["gflops"] / x["median_ms"] * 1000, rel=0.02)
    assert (tmp_path / "b.png").stat().st_size > 1000


def test_inplace_optimization_reuses_the_model():
    model = featx.create_model("ResNet18")
    fast = optimize_for_inference(model, inplace=True, channels_last=False)
    assert fast is model and isinstance(model.bn1, torch.nn.Identity) and fast.folded_batchnorms == 20


def test_memory_probe_reports_the_peak_a_forward_adds(tmp_path):
    from featx.bench.cpu import _peak_rss_mb

    # a fresh process builds ResNet18FPN (13.8 M params: 55 MB of fp32 weights) and runs one forward;
    # a broken probe script returns None
    mb = _peak_rss_mb("featx", "ResNet18FPN", (64, 64), 1, "off", tmp_path)
    assert mb is not None and 40 < mb < 1000
