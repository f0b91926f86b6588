"""Winograd or direct, decided by timing on the machine at hand (as cuDNN's benchmark mode does), per runtime.

Whether Winograd F(4x4, 3x3) beats a direct 3x3 convolution depends on the CPU (AVX2 or AVX-512, the
cache sizes), the runtime (PyTorch eager, ONNX Runtime, OpenVINO), the channels and the map size: a
rule tuned on one machine was wrong on another. ``decide_winograd(model, runtime)`` finds the model's
eligible convolutions and the map size each sees at a reference input, times each distinct workload
direct and as Winograd in that runtime (F(4x4), and for the exports F(6x6), ``RUNTIME_TILES``; built as the
graph that runtime runs fastest, ``RUNTIME_GRAPH``), and converts a convolution only where Winograd was
measurably faster.
Each workload's timings are cached (``featx.accel.choices``) per CPU, software versions and thread count,
so a model is measured once and models share workloads. The decision, with its timings, is returned
so it can be logged and stored in an export's metadata.
"""
from __future__ import annotations

import copy
import logging
import statistics
from collections import Counter
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from featx.accel.choices import cached_choice, store_choice
from featx.cpu import cpu_info
from featx.accel.ir_hints import prefer_planar_winograd_input
from featx.deploy.runtimes import open_session
from featx.errors import PlanarHintWarning
from featx.features import input_channels
from featx.options import RUNTIMES
from featx.accel.scratch import memory_scratch_dir
from featx.timing import interleaved_times
from featx.version import software_versions
from featx.accel.winograd import FORMULATION, TILE, TILES, WinogradConv2d, convert_to_winograd, winograd_eligible

__all__ = ["Workload", "WinogradDecision", "decide_winograd", "confirm_on_whole_model", "conv_workloads", "TIMING_METHOD",
           "RUNTIME_TILES", "RUNTIME_GRAPH", "whole_model_verdict", "WHOLE_MODEL_REPEATS",
           "RUNTIMES", "DEFAULT_TUNING_SIZE"]

logger = logging.getLogger("featx")

DEFAULT_TUNING_SIZE = (512, 512)
MARGIN = 0.95  # Winograd must be at least 5% faster: a tie keeps the exact, lighter direct conv
# and a larger tile 5% faster than a smaller one: a tie keeps the more accurate (F(4x4): ~5e-6 vs F(6x6): ~2e-5)
# The tiles each runtime may use: optimize_for_inference promises outputs within 1e-5 of the original model,
# which F(6x6)'s 1.5e-5..3.1e-5 per layer would break; exports answer to the parity gate (5e-4 of max|ref|,
# where fp32 rounding alone gives ~1e-4 on a ResNet-50 FPN)
RUNTIME_TILES = {"torch": (TILE,), "onnxruntime": TILES, "openvino": TILES}
# the Winograd graph each runtime runs fastest (featx.accel.winograd.GRAPHS)
RUNTIME_GRAPH = {"torch": "fused_pad_transpose", "onnxruntime": "pad_depth_to_space", "openvino": "fused_pad_transpose"}
# and the converted network at least 3% faster than the direct one in the median of the rounds' paired ratios, and
# faster in at least three rounds of four (the upper quartile of the ratios below 1): a gain that shows in the median
# of a noisy machine but not round after round is not kept
WHOLE_MODEL_MARGIN = 0.97
WHOLE_MODEL_UPPER_QUARTILE = 1.0
WHOLE_MODEL_REPEATS = 9
WHOLE_MODEL_RULE = "paired-ratio-median-0.97-q3-1.0"  # in cache keys: records decided by another rule are measured again
CANDIDATE_CHANNELS = (64, 512)  # narrower convs never paid off (the transforms dominate)
# in cache keys, so verdicts timed another way are measured again: one side after the other flipped verdicts on
# a noisy machine; with ONNX Runtime's threads spinning on after each run, the side timed right after an ONNX
# Runtime run paid for it (the int8 choice's OpenVINO file, in about half of its rounds)
TIMING_METHOD = "interleaved-balanced-nospin"


@dataclass(frozen=True)
class Workload:
    """One distinct 3x3 convolution: channels in/out, the map it sees (H, W) and its padding."""

    cin: int
    cout: int
    h: int
    w: int
    padding: int

    @property
    def key(self) -> str:
        return f"{self.cin}x{self.cout}@{self.h}x{self.w}p{self.padding}"


@dataclass
class WinogradDecision:
    """Which convolutions to compute as Winograd (``convert``, qualified module names; ``tiles``: each
    one's output tile side, 4 or 6) and why."""

    runtime: str
    size: tuple[int, int]
    convert: list[str] = field(default_factory=list)
    # workload key -> direct_ms, winograd_ms (the best tile's), tile_ms (each tile's), tile, winograd
    timings: dict[str, dict] = field(default_factory=dict)
    cpu: str = ""
    whole_model: Optional[dict] = None  # the check of the converted model as a whole, in the same runtime
    tiles: dict[str, int] = field(default_factory=dict)

    @property
    def conversions(self) -> dict[str, int]:
        """Qualified name -> tile side of every conv to convert (F(4x4) where no tile was recorded)."""
        return {name: self.tiles.get(name, TILE) for name in self.convert}

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        won = sum(1 for t in self.timings.values() if t["winograd"])
        counts = Counter(t for t in self.conversions.values() if t != TILE)
        tiles = "".join(f", {n} of them as F({t}x{t}, 3x3)" for t, n in sorted(counts.items()))
        text = (f"Winograd for {len(self.convert)} convolutions{tiles} ({won} of {len(self.timings)} workloads faster in "
                f"{self.runtime} at {self.size[0]}x{self.size[1]} on {self.cpu})")
        if self.whole_model is not None:
            w = self.whole_model
            slower = (f"dropped (not {1 - WHOLE_MODEL_MARGIN:.0%} faster in the median round and faster in three "
                      "rounds of four)")
            planar = ""
            if "planar_input_ms" in w:
                planar = (f" ({w['planar_input_ms']:.1f} ms with the planar input-transform hint: "
                          f"{'used' if w['planar_input'] else 'not used'})")
            paired = (f", paired ratio {w['ratio']:.3f} (upper quartile {w['ratio_q3']:.3f}, {w['rounds']} rounds)"
                      if "ratio" in w else "")
            text += (f"; the whole model {w['direct_ms']:.1f} ms direct, {w['winograd_ms']:.1f} ms with them{planar}"
                     f"{paired}: {'kept' if w['keep'] else slower}")
        return text


def conv_workloads(model: nn.Module, size: tuple[int, int] = DEFAULT_TUNING_SIZE,
                   channels: tuple[int, int] = CANDIDATE_CHANNELS) -> dict[str, Workload]:
    """The model's eligible 3x3 convolutions (qualified name -> workload) at a ``1 x C x size`` input,
    found on the meta device (shapes only, no arithmetic)."""
    probe = copy.deepcopy(model).to("meta").eval()
    found: dict[str, Workload] = {}
    hooks = []
    for name, module in probe.named_modules():
        if winograd_eligible(module, channels[0], channels[1]):
            def hook(m, args, _name=name):
                h, w = args[0].shape[-2:]
                found[_name] = Workload(m.in_channels, m.out_channels, int(h), int(w), int(m.padding[0]))
            hooks.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            probe(torch.empty(1, input_channels(model), *size, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    return found


def _torch_runner(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    module = module.eval().to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)

    def run() -> object:
        with torch.inference_mode():
            return module(x)
    return run


def _exported_runner(module: nn.Module, x: torch.Tensor, runtime: str, threads: int, path: Path) -> Callable[[], object]:
    """``module`` exported to ``path`` (.onnx, the static shape of ``x``), loaded in ``runtime``. OpenVINO reads
    the ONNX file with its ONNX frontend: for a static-shape file the compiled network is the one
    ``openvino.convert_model`` + an IR gives (the same kernels and outputs, tested), loaded in 0.4 s instead of
    1.8 s for ResNet50FPN; an export times ~24 such files."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (x,), str(path), dynamo=False, input_names=["input"], opset_version=18)
    return _session_runner(path, x, threads, runtime)


def _planar_ir_runner(onnx_path: Path, x: torch.Tensor, threads: int) -> Callable[[], object]:
    """The ONNX file at ``onnx_path`` (no second export) as an IR with the planar input-transform hint, loaded in
    OpenVINO (the hint is an IR attribute: set from Python, the CPU plugin does not read it)."""
    import openvino as ov  # the optional `openvino` extra

    hinted = onnx_path.with_name(f"{onnx_path.stem}_planar.xml")
    ov.save_model(ov.Core().read_model(str(onnx_path)), str(hinted), compress_to_fp16=False)
    # every transform hinted, compiled once: the session takes the hint off those this CPU would run on a
    # reference kernel as it loads the IR (what the export's own check does), so its warning says nothing new here
    prefer_planar_winograd_input(hinted, check_kernels=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PlanarHintWarning)
        return _session_runner(hinted, x, threads, "openvino")


def _session_runner(path: Path, x: torch.Tensor, threads: int, runtime: str) -> Callable[[], object]:
    session = open_session(path, "cpu", threads, runtime=runtime)
    feed = x.numpy()
    return lambda: session.run(feed)


def _direct_vs_winograd_medians(modules: dict[str, nn.Module], x: torch.Tensor, runtime: str,
                                repeats: int, threads: int, warmup: int, planar_variant: bool = False) -> dict[str, float]:
    """Median ms of each module of :func:`_direct_vs_winograd_times`."""
    times = _direct_vs_winograd_times(modules, x, runtime, repeats, threads, warmup, planar_variant)
    return {name: statistics.median(t) for name, t in times.items()}


def _direct_vs_winograd_times(modules: dict[str, nn.Module], x: torch.Tensor, runtime: str,
                              repeats: int, threads: int, warmup: int, planar_variant: bool = False) -> dict[str, list[float]]:
    """Each round's ms of each module (name -> module, e.g. "direct" and "winograd") on ``x`` in ``runtime``
    (PyTorch eager, or each exported and loaded in ONNX Runtime / OpenVINO), timed interleaved; with
    ``planar_variant`` in OpenVINO also "winograd_planar", the "winograd" IR with the planar input-transform hint."""
    with memory_scratch_dir() as tmp:  # in memory where there is room: the whole networks are ~100-250 MB files
        if runtime == "torch":
            runners = {name: _torch_runner(m, x) for name, m in modules.items()}
        else:
            runners = {name: _exported_runner(m, x, runtime, threads, Path(tmp) / f"{name}.onnx")
                       for name, m in modules.items()}
            if planar_variant and runtime == "openvino":
                runners["winograd_planar"] = _planar_ir_runner(Path(tmp) / "winograd.onnx", x, threads)
        return interleaved_times(runners, repeats, warmup=warmup)


def _measure(workload: Workload, runtime: str, repeats: int, threads: int) -> dict:
    """The workload direct and as Winograd with each tile side ``runtime`` may use (``RUNTIME_TILES``), timed
    interleaved in it: the best tile (a larger one only if 5% faster than the smaller), and Winograd or not
    (5% faster than direct)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(workload.cin, workload.cout, 3, padding=workload.padding, bias=True)
    tiles = RUNTIME_TILES[runtime]
    candidates = {"direct": conv, **{f"F{m}": WinogradConv2d(conv, m, RUNTIME_GRAPH[runtime]) for m in tiles}}
    x = torch.randn(1, workload.cin, workload.h, workload.w)
    # rounded to the 0.001 ms recorded before any choice, so that a record agrees with its choices
    medians = {name: round(ms, 3) for name, ms in
               _direct_vs_winograd_medians(candidates, x, runtime, repeats, threads, warmup=2).items()}
    tile = tiles[0]
    for m in tiles[1:]:
        if medians[f"F{m}"] < MARGIN * medians[f"F{tile}"]:
            tile = m
    direct, winograd = medians["direct"], medians[f"F{tile}"]
    return {"direct_ms": direct, "winograd_ms": winograd, "tile_ms": {str(m): medians[f"F{m}"] for m in tiles}, "tile": tile,
            "winograd": winograd < MARGIN * direct}


def decide_winograd(model: nn.Module, runtime: str = "torch", size: tuple[int, int] = DEFAULT_TUNING_SIZE,
                    repeats: int = 7, threads: Optional[int] = None, use_cache: bool = True,
                    measure: Optional[Callable[[Workload, str, int, int], dict]] = None,
                    log: Callable[[str], None] = logger.info) -> WinogradDecision:
    """Time every distinct eligible workload of ``model`` direct and Winograd in ``runtime`` (see the
    module docstring) and return which convolutions to convert. ``measure`` replaces the timer (tests)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    threads = threads or torch.get_num_threads()
    cpu = cpu_info()
    decision = WinogradDecision(runtime, tuple(size), cpu=cpu.describe())
    workloads = conv_workloads(model, size)
    measure = measure or _measure
    prefix = f"winograd|{runtime}|{cpu.key}|{software_versions()}|threads {threads}|{TIMING_METHOD}|{FORMULATION}"
    fresh = 0
    distinct = list(dict.fromkeys(workloads.values()))
    for i, workload in enumerate(distinct, 1):
        key = f"{prefix}|{workload.key}"
        result = cached_choice(key) if use_cache else None
        if result is None:
            log(f"  timing 3x3 conv {i}/{len(distinct)} direct and as Winograd in {runtime}: {workload.key}")
            result = measure(workload, runtime, repeats, threads)
            fresh += 1
            if use_cache:
                store_choice(key, result)
        decision.timings[workload.key] = result
    decision.convert = sorted(name for name, w in workloads.items() if decision.timings[w.key]["winograd"])
    decision.tiles = {name: int(decision.timings[workloads[name].key].get("tile", TILE)) for name in decision.convert}
    if any(tile not in RUNTIME_TILES[runtime] for tile in decision.tiles.values()):
        raise ValueError(f"a measurement gave {runtime} a tile outside {RUNTIME_TILES[runtime]}: {decision.tiles}")
    log(decision.summary() + (f"; measured {fresh} workloads now" if fresh else "; from the cache"))
    return decision


def _whole_model_times(direct: nn.Module, converted: nn.Module, size: tuple[int, int], runtime: str,
                       repeats: int, threads: int) -> dict[str, list[float]]:
    """Each round's ms of the two whole models in ``runtime`` (exported for ONNX Runtime / OpenVINO), timed
    interleaved on one random ``1 x C x size`` input; in OpenVINO on an AVX2 CPU also the converted
    model with the planar input-transform hint ("winograd_planar")."""
    x = torch.randn(1, input_channels(direct), *size)
    return _direct_vs_winograd_times({"direct": direct, "winograd": converted}, x, runtime, repeats, threads, warmup=1,
                                       planar_variant=_planar_hint_applies(runtime))


def _planar_hint_applies(runtime: str) -> bool:
    """The hint names an AVX2 kernel: a candidate in OpenVINO on CPUs that have it."""
    return runtime == "openvino" and "avx2" in cpu_info().flags


def confirm_on_whole_model(model: nn.Module, decision: WinogradDecision, repeats: int = WHOLE_MODEL_REPEATS,
                           use_cache: bool = True,
                           threads: Optional[int] = None, log: Callable[[str], None] = logger.info) -> WinogradDecision:
    """Time ``model`` (BN folded) as a whole, direct and with the decision's convolutions as Winograd, in
    the decision's runtime (PyTorch eager in channels_last, or the model exported to ONNX Runtime /
    OpenVINO) at the decision's size, ``repeats`` interleaved rounds; keep the conversions only if the whole model
    is faster with them by a margin that survives noise: the median of the rounds' paired ratios (converted /
    direct, each round's two runs seconds apart) at most 0.97, and the upper quartile below 1
    (:func:`whole_model_verdict`). Each conv faster alone does not make the network faster: the transformed
    weights and intermediates compete for the caches, and a runtime's layout changes around the Winograd ops
    cost time of their own. In OpenVINO on an AVX2 CPU the converted model is also timed with the planar
    input-transform hint (:mod:`featx.accel.ir_hints`), and the faster of the two is the one compared and
    recorded (``planar_input``). Cached like the workloads."""
    if not decision.convert:
        return decision
    if decision.runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {decision.runtime!r}")
    threads = threads or torch.get_num_threads()
    cpu = cpu_info()
    n_params = sum(p.numel() for p in model.parameters())
    key = (f"winograd-model|{decision.runtime}|{cpu.key}|{software_versions()}|threads {threads}|{TIMING_METHOD}|{FORMULATION}|"
           f"{type(model).__name__}:{n_params}|{decision.size[0]}x{decision.size[1]}|{_conversions_key(decision)}|"
           f"{WHOLE_MODEL_RULE}|rounds {repeats}"
           # the hint goes only where this CPU has a jit kernel for it (before, F(6x6)'s ran a reference kernel on AVX2)
           + ("|planar-input-jit" if _planar_hint_applies(decision.runtime) else ""))
    result = cached_choice(key) if use_cache else None
    if result is None:
        log(f"  timing the whole model with and without Winograd in {decision.runtime} at "
            f"{decision.size[0]}x{decision.size[1]} ({repeats} rounds) ...")
        direct = copy.deepcopy(model).eval()
        converted = copy.deepcopy(direct)
        convert_to_winograd(converted, 1, 1 << 30, only=decision.conversions,
                            graph=RUNTIME_GRAPH[decision.runtime])
        times = _whole_model_times(direct, converted, decision.size, decision.runtime, repeats, threads)
        result = whole_model_verdict(times)
        if use_cache:
            store_choice(key, result)
    decision.whole_model = result
    if not result["keep"]:
        log(f"Winograd dropped: the whole model took {result['winograd_ms']:.1f} ms with it and "
            f"{result['direct_ms']:.1f} ms without, in {decision.runtime} at {decision.size[0]}x{decision.size[1]} "
            f"on {cpu.model}")
        decision.convert, decision.tiles = [], {}
    return decision


def whole_model_verdict(times: dict[str, list[float]]) -> dict:
    """The record of a whole-model check from each round's ms of "direct", "winograd" and (OpenVINO on AVX2)
    "winograd_planar": medians (rounded to the 0.01 ms recorded), whether the planar hint was the faster converted
    variant, the paired ratios of the faster one to direct (median and upper quartile, rounded to the 0.001
    recorded) and the verdict, made from those recorded values so that a record always agrees with its choice."""
    medians = {name: round(statistics.median(t), 2) for name, t in times.items()}
    d, w = medians["direct"], medians["winograd"]
    result: dict = {"direct_ms": d, "winograd_ms": w}
    chosen = "winograd"
    if "winograd_planar" in medians:  # OpenVINO: with the planar input-transform hint, if that was faster
        planar = medians["winograd_planar"]
        result |= {"planar_input_ms": planar, "planar_input": planar < w}
        chosen = "winograd_planar" if planar < w else "winograd"
    ratios = [t / b for t, b in zip(times[chosen], times["direct"])]
    median = round(statistics.median(ratios), 3)
    upper = round(statistics.quantiles(ratios, n=4, method="inclusive")[2] if len(ratios) > 1 else ratios[0], 3)
    result |= {"ratio": median, "ratio_q3": upper, "rounds": len(ratios),
               "keep": median <= WHOLE_MODEL_MARGIN and upper < WHOLE_MODEL_UPPER_QUARTILE}
    return result


def _conversions_key(decision: WinogradDecision) -> str:
    """The conversions for a cache key: names, with the tile where it is not the default F(4x4)."""
    return ",".join(name if tile == TILE else f"{name}:F{tile}" for name, tile in decision.conversions.items())
