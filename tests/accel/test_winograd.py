"""Winograd F(4x4, 3x3): exact matrices, equal outputs at any size/padding, which convs qualify,
and the inference path / ONNX export that use it."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import featx
from featx import accel
from featx.accel import optimize_for_cpu
from featx.inference import optimize_for_inference as plain_optimize
from featx.deploy.metadata import read_metadata
from featx.deploy.onnx_export import ExportSettings, export_onnx
from featx.deploy.parity import parity
from featx.errors import ParityError
from featx.accel.winograd import FORMULATION, WinogradConv2d, convert_to_winograd, winograd_eligible, winograd_matrices
from helpers import rel_err


def test_matrices_compute_a_3_tap_correlation_exactly():
    bt, g, at = winograd_matrices()
    assert bt.shape == (6, 6) and g.shape == (6, 3) and at.shape == (4, 6)
    torch.manual_seed(0)
    d, w = torch.randn(6, 100, dtype=torch.float64), torch.randn(3, 100, dtype=torch.float64)
    y = at @ ((g @ w) * (bt @ d))
    ref = torch.stack([sum(w[k] * d[i + k] for k in range(3)) for i in range(4)])
    assert (y - ref).abs().max().item() < 1e-12


def test_other_point_sets_and_bad_ones():
    bt, g, at = winograd_matrices(2, 3, [0, 1, Fraction(-1)])  # F(2, 3), Lavin's points; any sequence
    d, w = torch.randn(4, 10, dtype=torch.float64), torch.randn(3, 10, dtype=torch.float64)
    ref = torch.stack([sum(w[k] * d[i + k] for k in range(3)) for i in range(2)])
    assert (at @ ((g @ w) * (bt @ d)) - ref).abs().max().item() < 1e-12
    with pytest.raises(ValueError, match="distinct finite points"):
        winograd_matrices(4, 3, (0, 1, 1, 2, -2))


def _reference(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return nn.functional.conv2d(x.double(), conv.weight.double(),
                                None if conv.bias is None else conv.bias.double(), padding=conv.padding)


@pytest.mark.parametrize("cin,cout,batch,h,w,padding,bias", [
    (128, 130, 2, 37, 50, 1, True),   # odd sizes: tiles overhang and are cropped
    (128, 128, 1, 8, 12, 0, False),   # no padding: output shrinks by 2
    (129, 131, 1, 5, 6, 2, True),     # padding 2: output grows by 2
    (128, 128, 1, 1, 1, 1, True),     # a single pixel
])
@pytest.mark.parametrize("tile", [4, 6])
def test_winograd_conv_equals_the_convolution(cin, cout, batch, h, w, padding, bias, tile):
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, 3, padding=padding, bias=bias)
    x = torch.randn(batch, cin, h, w)
    with torch.no_grad():
        ref, direct, out = _reference(conv, x), conv(x), WinogradConv2d(conv, tile)(x)
    assert out.shape == direct.shape == (batch, cout, h + 2 * padding - 2, w + 2 * padding - 2)
    # fp32 rounding against float64: F(4x4) measured 2.8e-6..3.6e-6 (the direct conv: 0.4e-6..2.3e-6; the
    # textbook points (0, 1, -1, 2, -2) give about 8e-6 on a 256-channel layer); F(6x6) 1.5e-5..3.1e-5
    assert rel_err(out, ref) <= (5e-6 if tile == 4 else 5e-5)


@pytest.mark.parametrize("tile", [4, 6])
def test_both_winograd_graphs_give_the_same_numbers_and_each_runtime_gets_its_own(tile):
    from featx.accel.tuning import RUNTIME_GRAPH

    torch.manual_seed(0)
    conv = nn.Conv2d(128, 128, 3, padding=1)
    x = torch.randn(2, 128, 19, 30)
    with torch.no_grad():
        a, b = (WinogradConv2d(conv, tile, graph)(x) for graph in ("fused_pad_transpose", "pad_depth_to_space"))
    assert rel_err(a, b) < 1e-6  # the same arithmetic, laid out differently
    with pytest.raises(ValueError, match="graph must be one of"):
        WinogradConv2d(conv, tile, "shuffle")
    model = featx.create_model("ResNet18FPN").eval()
    for runtime in ("torch", "onnxruntime", "openvino"):
        fast = optimize_for_cpu(model, "all", runtime=runtime)
        assert {m.graph for m in fast.modules() if isinstance(m, WinogradConv2d)} == {RUNTIME_GRAPH[runtime]}
    with pytest.raises(ValueError, match="runtime must be one of"):
        optimize_for_cpu(model, "all", runtime="tensorrt")
    with pytest.raises(ValueError, match="winograd must be 'auto', 'all', 'off'"):
        optimize_for_cpu(model, "on")
    assert RUNTIME_GRAPH == {"torch": "fused_pad_transpose", "onnxruntime": "pad_depth_to_space", "openvino": "fused_pad_transpose"}


def test_tile_sides_and_their_matrices():
    bt, g, at = winograd_matrices(6)
    assert bt.shape == (8, 8) and g.shape == (8, 3) and at.shape == (6, 8)
    conv = nn.Conv2d(128, 128, 3, padding=1)
    big = WinogradConv2d(conv, 6)
    assert big.u.shape == (64, 128, 128) and big.input_transform.shape == (64, 1, 8, 8) and "F(6x6, 3x3)" in repr(big)
    with pytest.raises(ValueError, match="tile must be one of"):
        WinogradConv2d(conv, 5)
    with pytest.raises(ValueError, match="give points"):
        winograd_matrices(5)
    model = featx.create_model("ResNet18FPN").eval()
    tiles = {"backbone.layer3.1.conv2": 6, "neck.fpn_convs.0.conv": 4}
    assert convert_to_winograd(model, 1, 1 << 30, only=tiles) == 2
    assert {n: m.tile for n, m in model.named_modules() if isinstance(m, WinogradConv2d)} == tiles


def test_channels_last_input():
    conv = nn.Conv2d(128, 128, 3, padding=1)
    x = torch.randn(2, 128, 20, 24).to(memory_format=torch.channels_last)
    with torch.no_grad():
        assert rel_err(WinogradConv2d(conv)(x), _reference(conv, x)) <= 1e-5


@pytest.mark.parametrize("conv,eligible", [
    (nn.Conv2d(128, 128, 3, padding=1), True),
    (nn.Conv2d(128, 256, 3, padding=0, bias=False), True),
    (nn.Conv2d(128, 128, 3, stride=2, padding=1), False),
    (nn.Conv2d(128, 128, 3, padding=2, dilation=2), False),
    (nn.Conv2d(128, 128, 3, padding=1, groups=32), False),
    (nn.Conv2d(128, 128, 1), False),
    (nn.Conv2d(64, 64, 3, padding=1), False),        # narrow: faster direct
    (nn.Conv2d(256, 512, 3, padding=1), True),
    (nn.Conv2d(128, 128, 3, padding=(1, 0)), False),
    (nn.Conv2d(128, 128, 3, padding=1, padding_mode="reflect"), False),
    (nn.ConvTranspose2d(128, 128, 3, padding=1), False),
])
def test_which_convs_qualify(conv, eligible):
    assert winograd_eligible(conv) is eligible


def test_resnet50fpn_converts_its_wide_stride1_3x3_convs():
    model = featx.create_model("ResNet50FPN").eval()
    # layer2: 3, layer3: 5 (each first block's 3x3 has stride 2), FPN outputs: 4; layer4's 512-channel
    # convs only with a higher winograd_max_channels
    fast = optimize_for_cpu(model, "all")
    assert fast.winograd_convs == 12 == sum(isinstance(m, WinogradConv2d) for m in fast.modules())
    assert optimize_for_cpu(model, "all", max_channels=512).winograd_convs == 14
    assert optimize_for_cpu(model, "off").winograd_convs == 0
    assert optimize_for_cpu(model.double()).winograd_convs == 0  # measured: float32 CPU models only
    # the core's path converts nothing, whatever the machine
    assert not any(isinstance(m, WinogradConv2d) for m in plain_optimize(model).modules())
    # ResNet18FPN: layer2-3: 3 each, FPN: 4; with min_channels=64 also layer1's 4 (2 blocks x 2)
    assert convert_to_winograd(featx.create_model("ResNet18FPN"), min_channels=64, max_channels=256) == 14


@pytest.mark.slow
def test_winograd_export_runs_in_onnx_runtime_within_the_fp32_gate(tmp_path):
    path = tmp_path / "r18.onnx"
    r = accel.export_onnx_tuned("ResNet18FPN", path, ExportSettings(winograd="all"), log=lambda m: None)
    assert r.metadata["featx.winograd_convs"] == "10"  # layer2-3: 3 each, FPN: 4
    assert r.metadata["featx.target"] == "cpu"  # asked "any" (ExportSettings' default): Winograd makes it a CPU file
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    # per Winograd conv two MatMuls, two 4-D Transposes and a DepthToSpace: ONNX Runtime's graph (it ran
    # the single 6-D transpose that OpenVINO gets 25% slower)
    assert ops.count("MatMul") == 20 and ops.count("Transpose") == 20 and ops.count("DepthToSpace") == 10
    report = parity(path, sizes=[(97, 131), (64, 64)], batches=(1, 2), repeats=0, log=lambda m: None)
    assert report.passed and max(x.rel for x in report.results) < 5e-5
    direct = tmp_path / "direct.onnx"
    export_onnx("ResNet18FPN", direct, ExportSettings(), log=lambda m: None)
    assert "winograd_convs" not in read_metadata(direct) and read_metadata(direct)["target"] == "any"
    assert "MatMul" not in {n.op_type for n in onnx.load(str(direct)).graph.node}


@pytest.mark.slow
def test_an_export_with_measured_f6x6_convs_passes_the_fp32_parity_gate(tmp_path, monkeypatch):
    import featx.accel.tuning as tuning

    monkeypatch.setenv("FEATX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "_measure", lambda w, r, n, t: {"direct_ms": 3.0, "winograd_ms": 1.0, "tile": 6,
                                                                "winograd": True})
    monkeypatch.setattr(tuning, "_whole_model_times", lambda *a: {"direct": [2.0], "winograd": [1.0]})
    path = tmp_path / "r18.onnx"
    accel.export_onnx_tuned("ResNet18FPN", path, ExportSettings(exporter="torchscript", winograd="auto"), log=lambda m: None)
    decision = read_metadata(path)["winograd_decision"]
    assert len(decision["tiles"]) == 17 and set(decision["tiles"].values()) == {6}  # every 64..512-channel 3x3
    weights = {tuple(i.dims) for i in onnx.load(str(path)).graph.initializer}
    assert (64, 1, 8, 8) in weights and (36, 1, 6, 6) not in weights
    report = parity(path, sizes=[(97, 131), (64, 64)], batches=(1,), repeats=0, log=lambda m: None)
    assert report.passed and max(x.rel for x in report.results) < 2e-4


# -- measured on this machine ----------------------------------------------------------------------------
def test_the_decision_follows_the_measurements_and_is_cached(tmp_path, monkeypatch):
    from featx.accel.tuning import conv_workloads, decide_winograd

    monkeypatch.setenv("FEATX_CACHE_DIR", str(tmp_path))
    model = featx.create_model("ResNet18FPN").eval()
    workloads = conv_workloads(model, (256, 256))
    # ResNet-18 FPN at 256x256: layer1 64@64x64 (4), layer2 128@32 (3), layer3 256@16 (3), layer4 512@8 (3),
    # FPN outputs 256@64/32/16/8 (4)
    assert len(workloads) == 17 and workloads["backbone.layer3.1.conv2"].key == "256x256@16x16p1"

    def only_256(workload, runtime, repeats, threads):  # a CPU where only the 256-channel convs gain
        faster = workload.cin == workload.cout == 256
        return {"direct_ms": 2.0, "winograd_ms": 1.0 if faster else 3.0, "winograd": faster}

    d = decide_winograd(model, "onnxruntime", (256, 256), measure=only_256, log=lambda m: None)
    assert d.convert == sorted(n for n, w in workloads.items() if w.cin == w.cout == 256) and len(d.convert) == 7
    assert d.timings["256x256@16x16p1"] == {"direct_ms": 2.0, "winograd_ms": 1.0, "winograd": True}

    def must_not_measure(*args):
        raise AssertionError("measured again instead of using the cache")

    assert decide_winograd(model, "onnxruntime", (256, 256), measure=must_not_measure, log=lambda m: None).convert == d.convert
    fast = optimize_for_cpu(model, d)
    assert fast.winograd_convs == 7 and fast.winograd_decision is d
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        assert max(rel_err(o.contiguous(), r) for o, r in zip(fast(x), model(x))) < 1e-5


def test_the_decision_gives_each_conv_its_measured_tile(tmp_path, monkeypatch):
    from featx.accel.tuning import confirm_on_whole_model, conv_workloads, decide_winograd
    import featx.accel.tuning as tuning

    monkeypatch.setenv("FEATX_CACHE_DIR", str(tmp_path))
    model = plain_optimize(featx.create_model("ResNet18FPN").eval(), channels_last=False)
    workloads = conv_workloads(model, (256, 256))

    def f6_on_big_maps(workload, runtime, repeats, threads):  # F(6x6) on 64x64 maps, F(4x4) elsewhere
        return {"direct_ms": 3.0, "winograd_ms": 1.0, "tile": 6 if workload.h == 64 else 4, "winograd": True}

    with pytest.raises(ValueError, match="tile outside"):  # F(6x6) is not for PyTorch eager
        decide_winograd(model, "torch", (256, 256), measure=f6_on_big_maps, use_cache=False, log=lambda m: None)
    d = decide_winograd(model, "onnxruntime", (256, 256), measure=f6_on_big_maps, log=lambda m: None)
    big = {n for n, w in workloads.items() if w.h == 64}
    assert big and d.tiles == {n: 6 if n in big else 4 for n in workloads} and d.conversions == d.tiles
    assert f"{len(big)} of them as F(6x6, 3x3)" in d.summary()
    timed = []
    monkeypatch.setattr(tuning, "_whole_model_times", lambda direct, conv, *a: timed.append(
        {n: m.tile for n, m in conv.named_modules() if isinstance(m, WinogradConv2d)}) or {"direct": [2.0], "winograd": [1.0]})
    confirm_on_whole_model(model, d, log=lambda m: None)
    assert timed == [d.tiles]  # the whole model was timed with each conv's own tile
    fast = optimize_for_cpu(model, d)
    assert {n: m.tile for n, m in fast.named_modules() if isinstance(m, WinogradConv2d)} == d.tiles
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        assert max(rel_err(o.contiguous(), r) for o, r in zip(fast(x), model(x))) < 1e-4
    # a decision stored before tiles existed (no "tiles") converts with F(4x4)
    d.tiles = {}
    assert set(d.conversions.values()) == {4}


def _injected_medians(table):
    """A stand-in for the timer: each candidate's median from ``table(candidate names, input) -> dict``, recording
    which candidates were asked for."""
    asked = []

    def medians(candidates, x, runtime, repeats, threads, warmup, planar_variant=False):
        asked.append(sorted(candidates))
        return table(set(candidates), x)

    return medians, asked


def test_pytorch_eager_times_f4x4_only_and_converts_what_measured_faster(tmp_path, monkeypatch):
    import featx.accel.tuning as tuning
    from featx.accel.tuning import decide_winograd

    monkeypatch.setenv("FEATX_CACHE_DIR", str(tmp_path))
    # 128-channel convs 2x faster as Winograd, 256-channel ones 3% (under the 5% margin), the rest slower
    gain = {64: 1.5, 128: 0.5, 256: 0.97, 512: 1.2}
    medians, asked = _injected_medians(lambda names, x: {"direct": 1.0, "F4": gain[x.shape[1]]})
    monkeypatch.setattr(tuning, "_direct_vs_winograd_medians", medians)
    model = featx.create_model("ResNet18").eval()
    d = decide_winograd(model, "torch", (64, 64), repeats=2, log=lambda m: None)
    assert asked and all(a == ["F4", "direct"] for a in asked)  # F(6x6) would break the 1e-5 promise
    assert set(d.timings) == {"64x64@16x16p1", "128x128@8x8p1", "256x256@4x4p1", "512x512@2x2p1"}
    assert d.convert == ["layer2.0.conv2", "layer2.1.conv1", "layer2.1.conv2"]  # the 128x128 stride-1 3x3s
    assert set(d.tiles.values()) == {4} and (tmp_path / "choices.json").is_file()


@pytest.mark.parametrize("f6,tile", [(0.90, 6), (0.96, 4)])  # F(6x6) kept only when >= 5% faster than F(4x4)
def test_an_exported_runtime_times_both_tiles_and_takes_f6x6_only_when_clearly_faster(monkeypatch, f6, tile):
    import featx.accel.tuning as tuning
    from featx.accel.tuning import Workload, _measure

    medians, asked = _injected_medians(lambda names, x: {"direct": 2.0, "F4": 1.0, "F6": f6})
    monkeypatch.setattr(tuning, "_direct_vs_winograd_medians", medians)
    t = _measure(Workload(128, 128, 24, 36, 1), "onnxruntime", 3, 2)
    assert asked == [["F4", "F6", "direct"]]
    assert t == {"direct_ms": 2.0, "winograd_ms": {6: f6, 4: 1.0}[tile], "tile_ms": {"4": 1.0, "6": f6}, "tile": tile,
                 "winograd": True}


def test_a_workload_record_agrees_with_the_tile_and_winograd_choices_made_from_it(monkeypatch):
    # F(6x6) 0.94996 ms against F(4x4) 1.0 ms is under the 5% margin unrounded, but is recorded as 0.95
    import featx.accel.tuning as tuning
    from featx.accel.tuning import Workload, _measure

    monkeypatch.setattr(tuning, "_direct_vs_winograd_medians",
                        lambda candidates, *a, **k: {"direct": 1.05258, "F4": 1.0, "F6": 0.94996})
    t = _measure(Workload(64, 64, 24, 36, 1), "onnxruntime", 3, 2)
    assert t == {"direct_ms": 1.053, "winograd_ms": 1.0, "tile_ms": {"4": 1.0, "6": 0.95}, "tile": 4,
                 "winograd": True}


@pytest.mark.parametrize("rounds, keep", [
    ([9.6, 9.5, 9.7, 9.6, 9.6], True),  # >= 3% faster in the median round and faster round after round
    ([9.8, 9.8, 9.7, 9.8, 9.8], False),  # faster, but by less than 3%
    ([9.0, 9.1, 9.2, 10.4, 10.6], False),  # 8% faster in the median round, slower in two rounds of five: noise
])
def test_the_whole_model_check_drops_conversions_that_do_not_pay(tmp_path, monkeypatch, rounds, keep):
    import json
    import statistics

    import featx.accel.tuning as tuning
    from featx.accel.choices import store_choice
    from featx.accel.tuning import WinogradDecision, confirm_on_whole_model

    monkeypatch.setenv("FEATX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "_whole_model_times", lambda *a: {"direct": [10.0] * 5, "winograd": list(rounds)})
    model = featx.create_model("ResNet18").eval()
    names = ["layer3.0.conv2", "layer3.1.conv1"]
    d = confirm_on_whole_model(model, WinogradDecision("torch", (64, 64), list(names)), repeats=5, log=lambda m: None)
    ratios = sorted(r / 10.0 for r in rounds)
    assert d.whole_model == {"direct_ms": 10.0, "winograd_ms": round(statistics.median(rounds), 2),
                             "ratio": round(ratios[2], 3), "ratio_q3": round(ratios[3], 3), "rounds": 5, "keep": keep}
    assert d.convert == (names if keep else [])
    # the record is cached: a machine where the converted network was slower as a whole converts nothing
    key = next(iter(json.loads((tmp_path / "choices.json").read_text())))
    store_choice(key, {"direct_ms": 10.0, "winograd_ms": 11.0, "ratio": 1.1, "ratio_q3": 1.1, "rounds": 5, "keep": False})
    monkeypatch.setattr(tuning, "_whole_model_times", lambda *a: pytest.fail("measured again instead of the cache"))
    again = confirm_on_whole_model(model, WinogradDecision("torch", (64, 64), list(names)), repeats=5, log=lambda m: None)
    assert again.convert == [] and again.whole_model["winograd_ms"] == 11.0


def test_alternatives_are_timed_interleaved_so_a_slow_phase_weighs_on_both():
    # the machine turns 4x slower halfway through: timed one after the other, the same work looks 4x
    # apart (the sequential verdicts that flipped Winograd decisions); interleaved, the medians agree
    import statistics
    import time as _time

    from featx.timing import interleaved_medians, time_ms

    calls = []

    def work(name):
        def run():
            calls.append(name)
            _time.sleep(0.002 if len(calls) <= 12 else 0.008)
        return run

    medians = interleaved_medians({"a": work("a"), "b": work("b")}, repeats=11, warmup=1)
    assert calls[:2] == ["a", "b"] and calls[2:] == ["a", "b", "b", "a"] * 5 + ["a", "b"]  # rotated rounds
    assert 0.8 < medians["a"] / medians["b"] < 1.25
    calls.clear()
    sequential = {name: statistics.median(time_ms(work(name), 11, warmup=1)) for name in "ab"}
    assert sequential["b"] / sequential["a"] > 2.5
    with pytest.raises(ValueError):
        interleaved_medians({"a": work("a")}, repeats=0)


def test_round_orders_balance_positions_and_predecessors():
    # a rotation puts every name in every position but keeps each one's predecessor: what that predecessor
    # leaves behind (spinning threads, a cold cache) would land on the same name every round
    from collections import Counter

    from featx.timing import round_orders

    for n in range(1, 13):
        names = [f"e{i}" for i in range(n)]
        period = n if n % 2 == 0 else 2 * n
        rows = list(round_orders(names, 2 * period))
        assert rows[:period] == rows[period:] and all(sorted(r) == sorted(names) for r in rows)
        positions = Counter((name, i) for r in rows[:period] for i, name in enumerate(r))
        assert set(positions.values()) == {period // n}  # every name in every position equally often
        if n > 1:
            after = Counter((r[i - 1], r[i]) for r in rows[:period] for i in range(1, n))
            assert len(after) == n * (n - 1) and len(set(after.values())) == 1  # after every other name equally often
    assert list(round_orders(["a", "b", "c"], 0)) == [] and list(round_orders([], 2)) == [[], []]


def test_paired_ratio_cancels_drift_between_rounds():
    from featx.timing import paired_ratio

    # round 2 runs on a 3x slower machine: each round's ratio is 0.5, the ratio of the medians is not
    a, b = [10.0, 30.0, 10.0], [20.0, 60.0, 20.0]
    assert paired_ratio(a, b) == 0.5
    assert paired_ratio([10.0, 30.0, 30.0], [20.0, 20.0, 60.0]) == 0.5  # medians would say 1.5
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])


def test_a_static_export_decides_winograd_at_its_own_input_size(tmp_path, monkeypatch):
    # the verdict depends on the map sizes: a file fixed at 96x128 is tuned at 96x128, a dynamic one at
    # the reference 512x512 (the timer is replaced: the sizes it is asked for are what is tested)
    from featx.deploy.metadata import read_metadata
    from featx.accel.tuning import DEFAULT_TUNING_SIZE
    import featx.accel.tuning as tuning

    monkeypatch.setenv("FEATX_CACHE_DIR", str(tmp_path))
    seen = []

    def measure(workload, runtime, repeats, threads):
        seen.append((workload.h, workload.w))
        return {"direct_ms": 2.0, "winograd_ms": 1.0, "winograd": True}

    def whole_model(direct, converted, size, runtime, repeats, threads):
        seen_whole.append((tuple(size), runtime))
        return {"direct": [2.0], "winograd": [1.0]}

    seen_whole = []
    monkeypatch.setattr(tuning, "_measure", measure)
    monkeypatch.setattr(tuning, "_whole_model_times", whole_model)
    out = tmp_path / "static.onnx"
    accel.export_onnx_tuned(dict(type="ResNet18FPN"), out, ExportSettings(static_shape=(96, 128), exporter="torchscript",
                                                                    winograd="auto"),
                log=lambda m: None)
    decision = read_metadata(out)["winograd_decision"]
    assert decision["size"] == [96, 128] and (24, 32) in seen and len(decision["convert"]) > 0
    assert seen_whole == [((96, 128), "onnxruntime")] and decision["whole_model"]["keep"] is True
    seen.clear()
    accel.export_onnx_tuned(dict(type="ResNet18FPN"), tmp_path / "dynamic.onnx", ExportSettings(exporter="torchscript",
                                                                                          winograd="auto"),
                log=lambda m: None)
    assert read_metadata(tmp_path / "dynamic.onnx")["winograd_decision"]["size"] == list(DEFAULT_TUNING_SIZE)
    assert (DEFAULT_TUNING_SIZE[0] // 4, DEFAULT_TUNING_SIZE[1] // 4) in seen


@pytest.mark.parametrize("times, recorded", [
    # medians that differ by less than the 0.01 ms a record keeps: the choice is the one the record shows
    ({"direct": [10.0], "winograd": [7.884], "winograd_planar": [7.876]},
     {"direct_ms": 10.0, "winograd_ms": 7.88, "planar_input_ms": 7.88, "planar_input": False, "ratio": 0.788,
      "ratio_q3": 0.788, "rounds": 1, "keep": True}),
    ({"direct": [10.0], "winograd": [9.6996]},
     {"direct_ms": 10.0, "winograd_ms": 9.7, "ratio": 0.97, "ratio_q3": 0.97, "rounds": 1, "keep": True}),
    ({"direct": [10.0], "winograd": [9.7006]},
     {"direct_ms": 10.0, "winograd_ms": 9.7, "ratio": 0.97, "ratio_q3": 0.97, "rounds": 1, "keep": True}),
    ({"direct": [10.0], "winograd": [9.7051]},
     {"direct_ms": 10.0, "winograd_ms": 9.71, "ratio": 0.971, "ratio_q3": 0.971, "rounds": 1, "keep": False}),
])
def test_a_whole_model_record_agrees_with_the_choice_made_from_it(tmp_path, monkeypatch, times, recorded):
    # the choice is made on the rounded values the record keeps, so a cached record always agrees with it
    import featx.accel.tuning as tuning
    from featx.accel.tuning import WinogradDecision, confirm_on_whole_model

    monkeypatch.setenv("FEATX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "_whole_model_times", lambda *a: dict(times))
    model = featx.create_model("ResNet18").eval()
    d = confirm_on_whole_model(model, WinogradDecision("openvino", (64, 64), ["layer3.0.conv2"]), log=lambda m: None)
    assert d.whole_model == recorded
    assert d.convert == (["layer3.0.conv2"] if recorded["keep"] else [])


def test_an_export_keeps_winograd_only_if_the_whole_model_is_faster_in_its_runtime(tmp_path, monkeypatch):
    # every conv faster alone, the exported network slower as a whole (as layout changes around the
    # Winograd ops can make it): the export has no Winograd MatMul and says why in its metadata
    import featx.accel.tuning as tuning

    monkeypatch.setenv("FEATX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "_measure", lambda w, r, n, t: {"direct_ms": 2.0, "winograd_ms": 1.0, "winograd": True})
    monkeypatch.setattr(tuning, "_whole_model_times", lambda d, c, size, runtime, n, t: {"direct": [10.0], "winograd": [9.8]})
    out = tmp_path / "r18.onnx"
    logged = []
    accel.export_onnx_tuned(dict(type="ResNet18FPN"), out, ExportSettings(exporter="torchscript", winograd="auto"),
                      log=logged.append)
    assert any("whole model 10.0 ms direct, 9.8 ms with them, paired ratio 0.980" in line and "dropped" in line
               for line in logged), logged
    meta = read_metadata(out)
    assert meta["winograd_decision"]["convert"] == [] and meta["winograd_decision"]["whole_model"] == {
        "direct_ms": 10.0, "winograd_ms": 9.8, "ratio": 0.98, "ratio_q3": 0.98, "rounds": 1, "keep": False}
    assert meta["winograd_convs"] == 0
    assert not [n for n in onnx.load(str(out)).graph.node if n.op_type == "MatMul"]


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_the_whole_model_check_times_the_exported_network_in_its_runtime(tmp_path, monkeypatch, runtime):
    from featx.accel.choices import cached_choice
    from featx.cpu import cpu_info
    from featx.accel.tuning import TIMING_METHOD, WHOLE_MODEL_RULE, WinogradDecision, confirm_on_whole_model
    from featx.version import software_versions

    import featx.accel.tuning as tuning

    monkeypatch.setenv("FEATX_CACHE_DIR", str(tmp_path))
    exported = {}  # the real exporter and runtime, watched: which files were timed, with how many MatMuls
    real_runner = tuning._exported_runner

    real_session = tuning.open_session
    loaded = {}  # every file a session was opened on, with its hint tags (IRs)

    def watched_runner(module, x, rt, threads, path):
        run = real_runner(module, x, rt, threads, path)
        exported[path.stem] = (rt, sum(n.op_type == "MatMul" for n in onnx.load(str(path)).graph.node))
        return run

    def watched_session(path, device, threads, runtime):
        path = Path(path)
        loaded[path.stem] = (runtime, path.suffix,
                             path.read_text().count('name="primitives_priority"') if path.suffix == ".xml" else None)
        return real_session(path, device, threads, runtime=runtime)

    monkeypatch.setattr(tuning, "_exported_runner", watched_runner)
    monkeypatch.setattr(tuning, "open_session", watched_session)
    model = plain_optimize(featx.create_model("ResNet18FPN"), channels_last=False)
    names = ["backbone.layer4.0.conv2", "neck.fpn_convs.0.conv"]
    d = confirm_on_whole_model(model, WinogradDecision(runtime, (64, 96), list(names)), repeats=2, threads=2,
                               log=lambda m: None)
    result = d.whole_model
    assert result["direct_ms"] > 0 and result["winograd_ms"] > 0
    planar = runtime == "openvino" and "avx2" in cpu_info().flags  # the hint names an AVX2 kernel
    assert ("planar_input" in result) == planar  # (the choices made from these timings: tested on injected ones)
    assert d.convert == (names if result["keep"] else [])
    # the whole networks were exported and timed in that runtime: direct without MatMuls, the converted
    # one with two per Winograd conv (GEMMs and output transform), each ONNX file loaded as it is (OpenVINO
    # reads it with its ONNX frontend); in OpenVINO on AVX2 the converted network also as an IR with the hint
    # on every input transform (exported once, not twice); the session takes it off any this CPU has no planar
    # jit kernel for as it compiles (on an AVX-512 Xeon layer4's 2x3 map, padded to 7x8, has none: hinted, it
    # ran ref_any_f32; with oneDNN's AVX2 dispatch it runs jit_avx2_f32)
    assert exported == {"direct": (runtime, 0), "winograd": (runtime, 2 * len(names))}
    planar_tags = loaded.pop("winograd_planar", None)
    assert loaded == {"direct": (runtime, ".onnx", None), "winograd": (runtime, ".onnx", None)}
    assert planar_tags is None if not planar else (planar_tags[:2] == ("openvino", ".xml") and planar_tags[2] == len(names))
    n_params = sum(p.numel() for p in model.parameters())
    key = (f"winograd-model|{runtime}|{cpu_info().key}|{software_versions()}|threads 2|{TIMING_METHOD}|{FORMULATION}|"
           f"{type(model).__name__}:{n_params}|64x96|{','.join(names)}|{WHOLE_MODEL_RULE}|rounds 2"
           + ("|planar-input-jit" if planar else ""))
    assert cached_choice(key) == result


def _winograd_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(32, 128, 1), nn.ReLU(), WinogradConv2d(nn.Conv2d(128, 128, 3, padding=1)), nn.ReLU(),
                         nn.Conv2d(128, 32, 1)).eval()


def _winograd_ir(tmp_path, name="w"):
    """A 1x1 conv, a Winograd 3x3 conv and a 1x1 conv (so the runtime picks layouts around it) as an IR."""
    import openvino as ov

    net = _winograd_net()
    x = torch.randn(1, 32, 40, 56)
    onnx_path = tmp_path / f"{name}.onnx"
    with torch.no_grad():
        torch.onnx.export(net, (x,), str(onnx_path), dynamo=False, input_names=["input"], opset_version=18,
                          dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}})
    xml = tmp_path / f"{name}.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    return xml, x


def test_a_dynamic_winograd_ir_runs_without_pad_or_depth_to_space_nodes(tmp_path):
    """The pads are constants (OpenVINO folds them into the input-transform conv; pads computed from the
    shape ran as a reference-kernel Pad) and the tiles go into place in one transpose (no DepthToSpace)."""
    import openvino as ov

    xml, x = _winograd_ir(tmp_path)
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": "f32"})
    kinds = [o.get_rt_info()["layerType"].astype(str) for o in compiled.get_runtime_model().get_ops()]
    assert "Pad" not in kinds and "DepthToSpace" not in kinds
    assert kinds.count("MatMul") == 2 and kinds.count("Transpose") == 2, kinds
    for h, w in ((40, 56), (37, 50), (9, 5)):  # dynamic H, W: tiles overhang and are cropped at odd sizes
        xi = torch.randn(1, 32, h, w)
        with torch.no_grad():
            ref = _winograd_net()(xi)
        out = torch.from_numpy(compiled.create_infer_request().infer({0: xi.numpy()})[0])
        assert out.shape == ref.shape and rel_err(out, ref) < 1e-5


def _transforms_on_jit_kernels_when_hinted(xml: Path) -> tuple[int, int]:
    """(transforms this CPU runs on a jit kernel when every one is hinted, transforms): the expected
    ``PlanarHints`` of ``xml``, found by the same kernel query the code makes (compile the fully hinted IR, ask
    OpenVINO which layers it put on a reference kernel), on a copy. Which transforms have a planar jit kernel
    depends on the CPU: with AVX-512 every one; with AVX2 only, F(6x6)'s padded one has none."""
    import shutil

    import openvino as ov

    from featx.accel.ir_hints import prefer_planar_winograd_input, winograd_input_layers
    from featx.deploy.openvino_hints import reference_kernel_layers
    import xml.etree.ElementTree as ET

    copy = xml.with_name(f"{xml.stem}_probe.xml")
    shutil.copy(xml, copy)
    shutil.copy(xml.with_suffix(".bin"), copy.with_suffix(".bin"))
    hints = prefer_planar_winograd_input(copy, check_kernels=False)
    assert hints.kept == hints.transforms  # without the check every transform keeps the hint
    names = {layer.get("name") for layer in winograd_input_layers(ET.parse(copy).getroot())}
    compiled = ov.Core().compile_model(str(copy), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return hints.transforms - len(reference_kernel_layers(compiled, names)), hints.transforms


def _no_reference_convolutions(xml: Path) -> list[str]:
    """The convolutions of the IR at ``xml`` that OpenVINO runs on a reference kernel on this CPU."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2})
    return [op.get_rt_info()["primitiveType"].astype(str) for op in compiled.get_runtime_model().get_ops()
            if op.get_rt_info()["layerType"].astype(str) == "Convolution"
            and op.get_rt_info()["primitiveType"].astype(str).startswith("ref")]


@pytest.mark.parametrize("tile", [4, 6])
def test_openvino_reading_the_onnx_file_compiles_the_network_the_converted_ir_gives(tmp_path, tile):
    """The exports time their candidates from static-shape ONNX files read by OpenVINO's ONNX frontend (no
    convert_model, no IR written and read): what they time must be what convert_model's IR runs, down to each
    node's kernel. (With dynamic shapes the two differ in a few shape-computing nodes; the tuning exports are
    static.)"""
    import collections

    import openvino as ov

    from featx.accel.ir_hints import prefer_planar_winograd_input
    from featx.deploy.runtimes import open_session

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(32, 128, 1), nn.ReLU(), WinogradConv2d(nn.Conv2d(128, 128, 3, padding=1), tile),
                        nn.ReLU(), WinogradConv2d(nn.Conv2d(128, 64, 3), tile)).eval()
    x = torch.randn(1, 32, 37, 50)
    onnx_path = tmp_path / "w.onnx"
    with torch.no_grad():
        torch.onnx.export(net, (x,), str(onnx_path), dynamo=False, input_names=["input"], opset_version=18)
    xml = tmp_path / "w.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": "f32"}

    def kernels(model) -> collections.Counter:
        ops = core.compile_model(model, "CPU", config).get_runtime_model().get_ordered_ops()
        return collections.Counter((o.get_rt_info()["layerType"].astype(str), o.get_rt_info()["primitiveType"].astype(str))
                                   for o in ops)

    from_ir, from_onnx = kernels(core.read_model(str(xml))), kernels(core.read_model(str(onnx_path)))
    assert from_onnx == from_ir and from_ir[("MatMul", next(k for t, k in from_ir if t == "MatMul"))] == 4
    # the planar-hint candidate: the frontend's model saved as an IR and hinted, as the shipped IR is hinted
    hinted = {}
    for name, model in (("ir", core.read_model(str(xml))), ("onnx", core.read_model(str(onnx_path)))):
        path = tmp_path / f"{name}_planar.xml"
        ov.save_model(model, str(path), compress_to_fp16=False)
        expected = _transforms_on_jit_kernels_when_hinted(path)
        assert prefer_planar_winograd_input(path) == expected and expected[1] == 2
        if tile == 4:  # F(4x4)'s transform has a planar jit kernel wherever there is AVX2
            assert expected == (2, 2)
        assert _no_reference_convolutions(path) == []  # what the hint leaves never runs a reference kernel
        hinted[name] = kernels(core.read_model(str(path)))
    assert hinted["onnx"] == hinted["ir"]
    ir_session = open_session(xml, "cpu", 2)
    onnx_session = open_session(onnx_path, "cpu", 2, runtime="openvino")
    assert onnx_session.runtime == "openvino" and onnx_session.outputs == ir_session.outputs
    out_ir, out_onnx = ir_session.run(x.numpy())[0], onnx_session.run(x.numpy())[0]
    assert out_onnx.shape == (1, 64, 35, 48) and np.array_equal(out_onnx, out_ir)
    with pytest.raises(ParityError, match="cannot run an OpenVINO IR"):
        open_session(xml, "cpu", runtime="onnxruntime")
    with pytest.raises(ParityError, match="runtime must be"):
        open_session(onnx_path, "cpu", runtime="tensorrt")


def test_the_planar_input_hint_tags_each_winograd_input_transform_and_openvino_honours_it(tmp_path):
    import shutil

    import openvino as ov

    from featx.cpu import cpu_info
    from featx.accel.ir_hints import prefer_planar_winograd_input

    plain, x = _winograd_ir(tmp_path)
    hinted = tmp_path / "hinted.xml"
    shutil.copy(plain, hinted)
    shutil.copy(plain.with_suffix(".bin"), hinted.with_suffix(".bin"))
    assert prefer_planar_winograd_input(hinted) == (1, 1)
    assert prefer_planar_winograd_input(hinted) == (1, 1)  # again: replaced, not added twice
    assert hinted.read_text().count('name="primitives_priority"') == 1
    core = ov.Core()
    tagged = {o.get_friendly_name(): o.get_rt_info()["primitives_priority_0"].astype(str)
              for o in core.read_model(hinted).get_ops() if "primitives_priority_0" in o.get_rt_info()}
    assert list(tagged.values()) == ["cpu:jit_avx2"]  # restored as the typed attribute the plugin reads
    outputs, kernel = {}, {}
    for path in (plain, hinted):
        compiled = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": "f32"})
        outputs[path.stem] = compiled.create_infer_request().infer({0: x.numpy()})[0]
        kernels = {o.get_friendly_name(): o.get_rt_info()["primitiveType"].astype(str)
                   for o in compiled.get_runtime_model().get_ops()}
        kernel[path.stem] = kernels[next(iter(tagged))]
    if "avx2" in cpu_info().flags:
        # the hint moves the input transform onto a jit kernel that reads the planar layout: jit_avx2 on an AVX2-only
        # CPU; on an AVX-512 one jit_avx512_f32, where OpenVINO's own choice is brgconv_avx512_f32 behind a reorder
        assert kernel["hinted"] != kernel["w"] and kernel["hinted"].startswith("jit_avx"), kernel
        if "avx512f" not in cpu_info().flags:
            assert kernel["hinted"].startswith("jit_avx2"), kernel
    # the same numbers up to fp32 rounding (kernels sum in different orders: 1.6e-6 between the two measured)
    with torch.no_grad():
        ref = _winograd_net().double()(x.double())
    assert all(rel_err(torch.from_numpy(out), ref) < 5e-6 for out in outputs.values())
    # F(6x6)'s input transforms (8x8 kernel, stride 6) are tagged too
    import openvino as ov_
    torch.manual_seed(0)
    six = nn.Sequential(WinogradConv2d(nn.Conv2d(128, 128, 3, padding=1), 6), WinogradConv2d(nn.Conv2d(128, 128, 3), 4))
    ov_.save_model(ov_.convert_model(six.eval(), example_input=torch.randn(1, 128, 20, 26)), str(tmp_path / "six.xml"),
                   compress_to_fp16=False)
    expected = _transforms_on_jit_kernels_when_hinted(tmp_path / "six.xml")
    assert prefer_planar_winograd_input(tmp_path / "six.xml") == expected and expected[1] == 2
    assert expected[0] >= 1  # F(4x4)'s transform keeps it on every CPU with AVX2
    assert _no_reference_convolutions(tmp_path / "six.xml") == []
    # an IR without Winograd is left as it was
    direct = tmp_path / "direct.xml"
    ov.save_model(ov.convert_model(nn.Conv2d(8, 8, 3, padding=1).eval(), example_input=torch.randn(1, 8, 16, 16)),
                  str(direct), compress_to_fp16=False)
    before = direct.read_bytes()
    assert prefer_planar_winograd_input(direct) == (0, 0) and direct.read_bytes() == before


_HINTED_KERNELS = """
import json, sys, numpy as np, torch, openvino as ov
from torch import nn
from featx.accel.ir_hints import prefer_planar_winograd_input
from featx.accel.winograd import WinogradConv2d
torch.manual_seed(0)
net = nn.Sequential(WinogradConv2d(nn.Conv2d(64, 64, 3, padding=1), 6), WinogradConv2d(nn.Conv2d(64, 64, 3, padding=1), 4),
                    WinogradConv2d(nn.Conv2d(64, 64, 3), 6)).eval()
x = torch.randn(1, 64, 40, 52)
torch.onnx.export(net, (x,), sys.argv[1] + ".onnx", dynamo=False, input_names=["input"], opset_version=18,
                  dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}})
xml = sys.argv[1] + ".xml"
ov.save_model(ov.convert_model(sys.argv[1] + ".onnx"), xml, compress_to_fp16=False)
tagged = prefer_planar_winograd_input(xml).kept
compiled = ov.Core().compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2})
out = compiled.create_infer_request().infer({0: x.numpy()})[0]
with torch.no_grad():
    ref = net.double()(x.double()).float().numpy()
convs = {op.get_friendly_name(): op.get_rt_info()["primitiveType"].astype(str) for op in compiled.get_runtime_model().get_ops()
         if op.get_rt_info()["layerType"].astype(str) == "Convolution"}
print(json.dumps({"tagged": tagged, "convs": convs, "err": float(np.abs(out - ref).max() / np.abs(ref).max())}))
"""


@pytest.mark.parametrize("isa", ["native", "AVX2"])
def test_the_planar_hint_goes_only_where_this_cpu_has_a_jit_kernel_for_it(tmp_path, isa):
    """A hinted convolution the plugin has no jit kernel for runs on the reference kernel: with oneDNN's AVX2
    dispatch (capped on an AVX-512 machine, as it is on an AVX2-only one) F(6x6)'s padded input transform took
    7.3 s in ResNet50FPN. The hint is given where a probe of that convolution got a jit kernel, so no
    convolution of a hinted IR runs a reference kernel, and F(4x4)'s transforms keep the hint."""
    import json
    import os
    import subprocess
    import sys

    from featx.cpu import cpu_info

    if "avx2" not in cpu_info().flags:
        pytest.skip("the planar hint names an AVX2 kernel; this CPU has no AVX2")
    env = dict(os.environ, **({"ONEDNN_MAX_CPU_ISA": isa} if isa != "native" else {}))
    run = subprocess.run([sys.executable, "-c", _HINTED_KERNELS, str(tmp_path / "m")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["err"] < 5e-5
    kernels = result["convs"]
    assert len(kernels) == 3 and not [k for k in kernels.values() if k.startswith("ref")], kernels
    f4 = next(name for name in kernels if name.startswith("/1/"))
    assert kernels[f4].startswith("jit_avx"), kernels  # F(4x4)'s transform hinted onto the planar jit kernel
    assert 1 <= result["tagged"] <= 3


@pytest.mark.parametrize("planar_faster", [True, False])
def test_an_openvino_export_carries_the_hint_only_where_its_check_measured_it_faster(tmp_path, monkeypatch, planar_faster):
    import featx.accel.tuning as tuning
    monkeypatch.setenv("FEATX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "_measure", lambda w, r, n, t: {"direct_ms": 2.0, "winograd_ms": 1.0, "winograd": True})
    monkeypatch.setattr(tuning, "_whole_model_times", lambda d, c, size, runtime, n, t: {
        "direct": [10.0], "winograd": [8.0], "winograd_planar": [7.0 if planar_faster else 8.5]})
    logged = []
    out = tmp_path / "r18.xml"
    accel.export_openvino_tuned("ResNet18FPN", out, log=logged.append)
    meta = read_metadata(out)
    n_winograd = meta["winograd_convs"]
    assert n_winograd > 0 and meta["winograd_decision"]["whole_model"] == {
        "direct_ms": 10.0, "winograd_ms": 8.0, "planar_input_ms": 7.0 if planar_faster else 8.5,
        "planar_input": planar_faster, "ratio": 0.7 if planar_faster else 0.8,
        "ratio_q3": 0.7 if planar_faster else 0.8, "rounds": 1, "keep": True}
    assert out.read_text().count('name="primitives_priority"') == (n_winograd if planar_faster else 0)
    assert any("with the planar input-transform hint: " + ("used" if planar_faster else "not used") in line
               for line in logged), logged
    hint_lines = [line for line in logged if "Winograd input transforms on a planar jit kernel (cpu:jit_avx2)" in line]
    assert hint_lines == ([f"OpenVINO hint: {n_winograd} of {n_winograd} Winograd input transforms on a planar jit "
                           "kernel (cpu:jit_avx2)"] if planar_faster else []), logged


_FOREIGN_HINTS = """
import json, sys, warnings, numpy as np, torch, openvino as ov
from featx.deploy.openvino_hints import hinted_layers as planar_hinted_layers, read_without_hints, reference_kernel_layers
from featx.deploy.runtimes import open_session
from featx.errors import PlanarHintWarning
xml = sys.argv[1]
core, config = ov.Core(), {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2}
model = core.read_model(xml)
hinted = planar_hinted_layers(model)
slow = reference_kernel_layers(core.compile_model(model, "CPU", config), hinted)
plain = core.compile_model(read_without_hints(xml, slow), "CPU", config)
left = [op.get_rt_info()["primitiveType"].astype(str) for op in plain.get_runtime_model().get_ops()
        if op.get_rt_info()["layerType"].astype(str) == "Convolution"]
x = np.random.default_rng(0).standard_normal((1, 64, 40, 52)).astype(np.float32)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    session = open_session(xml, "cpu", 2)
warned = [str(w.message) for w in caught if issubclass(w.category, PlanarHintWarning)]
print(json.dumps({"hinted": sorted(hinted), "slow": sorted(slow), "left": left, "warned": warned,
                  "out": session.run(x)[0].tolist()}))
"""


@pytest.mark.parametrize("isa", ["native", "AVX2"])
def test_an_ir_hinted_on_another_cpu_runs_without_the_hints_this_one_has_no_kernel_for(tmp_path, isa):
    """An IR is hinted where it is exported. Loaded on a CPU without a jit kernel for a hinted transform (oneDNN's
    AVX2 dispatch: F(6x6)'s padded one), that layer would run the reference kernel; the session compiles it without
    the hint instead, warns, and gives the same outputs."""
    import json
    import os
    import subprocess
    import sys

    import openvino as ov

    from featx.cpu import cpu_info
    from featx.accel.ir_hints import winograd_input_layers
    from featx.deploy.openvino_hints import set_priority
    import xml.etree.ElementTree as ET

    if "avx2" not in cpu_info().flags:
        pytest.skip("the planar hint names an AVX2 kernel; this CPU has no AVX2")
    torch.manual_seed(0)
    net = nn.Sequential(WinogradConv2d(nn.Conv2d(64, 64, 3, padding=1), 6), nn.ReLU(),
                        WinogradConv2d(nn.Conv2d(64, 64, 3, padding=1), 4)).eval()
    onnx_path, xml = tmp_path / "m.onnx", tmp_path / "m.xml"
    with torch.no_grad():
        torch.onnx.export(net, (torch.randn(1, 64, 40, 52),), str(onnx_path), dynamo=False, input_names=["input"],
                          opset_version=18, dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}})
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    tree = ET.parse(xml)  # every transform hinted, as a CPU with kernels for all of them would hint it
    transforms = winograd_input_layers(tree.getroot())
    set_priority(transforms, "cpu:jit_avx2")
    tree.write(xml, encoding="utf-8", xml_declaration=True)
    env = dict(os.environ, **({"ONEDNN_MAX_CPU_ISA": isa} if isa != "native" else {}))
    run = subprocess.run([sys.executable, "-c", _FOREIGN_HINTS, str(xml)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["hinted"] == sorted(layer.get("name") for layer in transforms) and len(result["hinted"]) == 2
    if isa == "AVX2":  # F(6x6)'s transform (pads 1 and 6) has no planar jit kernel in oneDNN's AVX2 dispatch
        assert len(result["slow"]) == 1
    assert bool(result["warned"]) == bool(result["slow"])
    if result["slow"]:
        assert result["slow"][0] in result["warned"][0] and "reference kernel" in result["warned"][0]
    assert not [k for k in result["left"] if k.startswith("ref")], result["left"]
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 64, 40, 52)).astype(np.float32))
    with torch.no_grad():
        ref = net.double()(x.double())
    assert rel_err(torch.tensor(result["out"]), ref) < 5e-5
