"""Benchmark featx against what a user would pick instead, in one run, same input and threads.

Entries (each an ``(N, 3, H, W) -> pyramid`` callable):
  torchvision          ``resnet_fpn_backbone`` (FrozenBatchNorm2d, eval) - the reference for ratios
  timm+tv_fpn          timm ``features_only`` + torchvision ``FeaturePyramidNetwork`` + max-pool P6
  featx                featx eager
  featx_optimized      ``featx.inference.optimize_for_inference`` (BN folded, channels_last)
  featx_ort            the featx ONNX export in ONNX Runtime
  featx_openvino       the featx OpenVINO IR in OpenVINO
  featx_compile        ``featx.inference.compile_for_inference``: the optimized model through Inductor with frozen
                       weights (opt-in: compiling takes minutes)
  featx_aoti           ``featx export --format aoti``: an AOTInductor package for this CPU, run by torch's
                       ``aoti_load_package`` (opt-in: compiling takes minutes)
  featx_ort_int8       the direct ONNX export quantized by ONNX Runtime (QDQ, per-channel), calibrated on
                       the photos matplotlib ships (opt-in)
  featx_openvino_int8  the direct IR quantized by NNCF, calibrated on the same photos (opt-in)
  featx_*_direct       featx_optimized / featx_ort / featx_openvino on direct convolutions only (opt-in)

With ``winograd="auto"`` (or ``"all"``) the optimized and exported entries take featx.accel's Winograd
convolutions (measured in each entry's runtime on this CPU); the ``_direct`` entries stay plain, so one run
shows what the opt-in layer adds.

Timed runs go round-robin over the entries (after each one's warm-up), in an order that changes from
round to round (``featx.timing.round_orders``: every entry in every position and right after every other
entry equally often), so a drift of a shared machine, or what one entry leaves behind for the next, weighs
on every entry alike.

Every report names the CPU (model and ISA flags: AVX2, AVX-512, VNNI, AMX) and the runtime versions:
ratios and the best path change from one CPU to another.

Reported per entry and input: median latency and spread (25th-75th percentile) after warm-up,
images/s, ratio to torchvision (the median over rounds of each round's ratio, so the machine's drift
between rounds cancels; with ``featx_openvino_direct`` among the entries also the ratio to it, and per
input featx's fastest fp32 entry by that ratio; the JSON keeps every timed run, ``times_ms``, in round order), GFLOPs (``torch.utils.flop_counter``) and achieved
GFLOP/s against this machine's measured fp32 matmul peak. GFLOPs are the model's direct-convolution
FLOPs for every entry, so a Winograd entry's GFLOP/s is an effective rate (it does fewer
multiplies) and may exceed the peak. ``peak_rss_mb`` (``--memory``) is the
peak resident memory that building the entry and one forward add to a fresh process (imports
excluded).
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import timm
import torch
from torch import nn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from featx import accel
from featx.cpu import cpu_info
from featx.deploy.onnx_export import ExportSettings, export_onnx
from featx.deploy.openvino_export import export_openvino
from featx.deploy.openvino_int8 import quantize_openvino
from featx.deploy.pt2_export import export_pt2
from featx.deploy.quantize import quantize_onnx
from featx.deploy.runtimes import open_session
from featx.images import sample_image_path
from featx.inference import compile_for_inference, optimize_for_inference
from featx.io import atomic_path, scratch_dir
from featx.models import create_model, get_entry
from featx.options import BENCH_ENTRIES, WINOGRAD_MODES
from featx.stats import flops_and_shapes
from featx.timing import interleaved_times, paired_ratio, time_ms
from featx.version import software_versions

__all__ = ["cpu_entries", "chosen_entries", "ENTRIES", "WINOGRAD_MODES", "TimmFPN", "torchvision_counterpart", "measure_matmul_peak", "run_benchmark", "build_entry",
           "bench_chart"]

ENTRIES = BENCH_ENTRIES
OPENVINO_DIRECT = "featx_openvino_direct"  # OpenVINO on the direct export: the yardstick of featx's fp32 paths
# featx's fp32 paths, the ones that compete against the yardstick (not the int8 files, not the yardstick itself)
FEATX_FP32 = tuple(e for e in ENTRIES if e.startswith("featx") and not e.endswith("_int8") and e != OPENVINO_DIRECT)


def torchvision_counterpart(model: str) -> str:
    """The torchvision architecture ``resnet_fpn_backbone`` builds for a featx ResNet FPN composite."""
    entry = get_entry(model)
    if not entry.family.base.has_torchvision_fpn or entry.pyramid is None or entry.pyramid.key != "fpn":
        raise ValueError(f"torchvision's resnet_fpn_backbone has no counterpart of {model}: the torchvision and "
                         "timm+tv_fpn entries need a ResNet-family <Arch>FPN model")
    return entry.arch


def measure_matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """fp32 GFLOP/s of an ``n x n`` matmul with the current thread count: the best of ``repeats``
    (a peak, so a moment of interference from other processes does not lower it)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = min(time_ms(lambda: a @ b, repeats, warmup=1)) / 1000
    return 2 * n**3 / best / 1e9


class TimmFPN(nn.Module):
    """timm features_only (levels 1-4) + torchvision FeaturePyramidNetwork + max-pool P6: what a timm user builds."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        self.body = timm.create_model(arch, pretrained=False, features_only=True, out_indices=(1, 2, 3, 4))
        self.fpn = FeaturePyramidNetwork(self.body.feature_info.channels(), 256, extra_blocks=LastLevelMaxPool())

    def forward(self, x):
        return self.fpn({str(i): f for i, f in enumerate(self.body(x))})


def _exported_entry(name: str, model: str, workdir: Path, winograd: str) -> Callable[[torch.Tensor], Any]:
    """The ONNX Runtime / OpenVINO entries: the featx export (int8: of direct convolutions) in its runtime."""
    openvino = name.startswith("featx_openvino")
    int8 = name.endswith("_int8")
    suffix = ".xml" if openvino else ".onnx"
    mode = "off" if int8 else winograd
    path = workdir / f"{model}_winograd_{mode}{suffix}"
    if not path.exists():
        if mode == "off":
            (export_openvino if openvino else export_onnx)(model, path, ExportSettings(), log=lambda m: None)
        else:
            settings = ExportSettings(target="cpu", winograd=mode)
            (accel.export_openvino_tuned if openvino else accel.export_onnx_tuned)(model, path, settings, log=lambda m: None)
    if int8:
        out = workdir / f"{model}_int8{suffix}"
        if not out.exists():  # calibrated on the photos matplotlib ships
            if openvino:
                quantize_openvino(path, out, sample_image_path().parent, (512, 512), 8, log=lambda m: None)
            else:
                quantize_onnx(path, out, sample_image_path().parent, (512, 512), 8, log=lambda m: None)
        path = out
    session = open_session(path, "auto", torch.get_num_threads())
    return lambda x: session.run(x.numpy())


def build_entry(name: str, model: str, workdir: Path, winograd: str = "off") -> Callable[[torch.Tensor], Any]:
    """The callable for one benchmark entry (models in eval mode, no autograd). ``winograd``: "off" (the plain
    core), "auto" (featx.accel: the convolutions measured faster as Winograd in each entry's runtime), "all"
    (every 128..256-channel 3x3)."""
    if winograd not in WINOGRAD_MODES:
        raise ValueError(f"winograd must be one of {WINOGRAD_MODES}, got {winograd!r}")
    if name.endswith("_direct"):  # the same entry on direct convolutions only: what Winograd adds, in one run
        return build_entry(name.removesuffix("_direct"), model, workdir, winograd="off")
    if name == "torchvision":
        net = resnet_fpn_backbone(backbone_name=torchvision_counterpart(model), weights=None, trainable_layers=5).eval()
    elif name == "timm+tv_fpn":
        net = TimmFPN(torchvision_counterpart(model)).eval()
    elif name == "featx":
        net = create_model(model).eval()
    elif name == "featx_compile":  # Inductor with frozen weights; its first call compiles (not timed)
        net = compile_for_inference(create_model(model))
    elif name == "featx_optimized":
        net = (optimize_for_inference(create_model(model), inplace=True) if winograd == "off" else
               accel.optimize_for_cpu(create_model(model), winograd, inplace=True))
    elif name in ("featx_ort", "featx_ort_int8", "featx_openvino", "featx_openvino_int8"):
        return _exported_entry(name, model, workdir, winograd)
    elif name == "featx_aoti":  # featx export --format aoti, run by torch's own loader
        from torch._inductor import aoti_load_package

        path = workdir / f"{model}_aoti.pt2"
        if not path.exists():
            export_pt2(model, path, aoti=True, log=lambda m: None)
        net = aoti_load_package(str(path))
    else:
        raise ValueError(f"unknown entry {name!r}; expected one of {ENTRIES}")

    def call(x: torch.Tensor):
        with torch.inference_mode():
            return net(x)

    return call


def _time_interleaved(callables: dict[str, Callable], x: torch.Tensor, warmup: int, repeats: int, log: Callable,
                      label: str) -> dict[str, Any]:
    """Each entry's timed runs in ms, taken round-robin in balanced orders (``featx.timing.round_orders``), so a
    slow drift of the machine (other tenants, clocks) weighs on every entry alike; an entry that fails gets its error."""
    out: dict[str, Any] = {}
    for name, fn in callables.items():
        log(f"  {name} {label}: warm-up ...")
        try:
            for _ in range(max(1, warmup + (1 if name == "featx_compile" else 0))):  # compiling is no measurement
                fn(x)
            out[name] = []
        except Exception as e:  # reported in the table, the others still run
            out[name] = f"{type(e).__name__}: {str(e)[:200]}"
    log(f"  {label}: {repeats} timed rounds over {len(callables)} entries ...")
    ready = {name: (lambda fn=fn: fn(x)) for name, fn in callables.items() if isinstance(out[name], list)}
    out.update(interleaved_times(ready, repeats, warmup=0))
    return out


_RSS_PROBE = """
import sys, torch
from pathlib import Path
torch.set_num_threads({threads})
from featx.bench.cpu import build_entry

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
x = torch.rand({batch}, 3, {h}, {w})
open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark after imports
base = status("VmRSS:")
f = build_entry({entry!r}, {model!r}, Path({workdir!r}), {winograd!r})
f(x)
print(status("VmHWM:") - base)
"""


def _peak_rss_mb(entry: str, model: str, size: tuple[int, int], batch: int, winograd: str,
                 workdir: Path) -> Optional[float]:
    """Peak resident memory added by building ``entry`` and running one forward, in a fresh process
    (Linux: the high-water mark is reset after imports through /proc/self/clear_refs). ONNX entries
    reuse the files already exported to ``workdir``, so exporting is not counted as inference."""
    code = _RSS_PROBE.format(threads=torch.get_num_threads(), batch=batch, h=size[0], w=size[1], entry=entry, model=model,
                              winograd=winograd, workdir=str(workdir))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        return None
    return round(float(r.stdout.strip().splitlines()[-1]), 1)


def cpu_entries(entries: Optional[Sequence[str]], precision: Optional[Sequence[str]] = None) -> list[str]:
    """The entries a CPU benchmark runs: ``entries``, or the first six of :data:`ENTRIES`; GPU entries and
    precisions (``featx bench --device cuda``'s) are refused with the CPU's choices."""
    if precision:
        raise ValueError("--precision is for --device cuda; the CPU benchmark runs fp32 (int8 entries: featx_*_int8)")
    return chosen_entries(entries, ENTRIES[:6], ENTRIES, "CPU")


def chosen_entries(entries: Optional[Sequence[str]], default: Sequence[str], allowed: Sequence[str],
                   kind: str) -> list[str]:
    """``entries`` (or ``default``) when every one is a ``kind`` ("CPU" or "GPU") benchmark entry of ``allowed``;
    else an error naming the others and where they run."""
    chosen = list(entries or default)
    others = sorted(set(chosen) - set(allowed))
    if others:
        where = "use --device cuda" if kind == "CPU" else "drop --device cuda"
        raise ValueError(f"{', '.join(others)}: not {kind} entries; {where} ({kind} entries: {', '.join(allowed)})")
    return chosen


def run_benchmark(
    model: str = "ResNet50FPN",
    sizes: Sequence[tuple[int, int]] = ((512, 512), (800, 1216)),
    batches: Sequence[int] = (1, 4),
    entries: Sequence[str] = ENTRIES[:6],
    warmup: int = 1,
    repeats: int = 5,
    memory: bool = False,
    log: Callable = print,
    winograd: str = "off",
) -> dict[str, Any]:
    """Time every entry on the same inputs; every size at ``batches[0]``, the first size at the rest."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if not batches or any(b < 1 for b in batches):
        raise ValueError(f"batch sizes must be >= 1, got {list(batches)}")
    if {"torchvision", "timm+tv_fpn"} & set(entries):
        torchvision_counterpart(model)  # fails now, not after minutes of timing the other entries
    peak = measure_matmul_peak()
    log(f"matmul peak: {peak:.1f} GFLOP/s (fp32, 2048^3, {torch.get_num_threads()} threads; measured again at the end)")
    runs = [(s, batches[0]) for s in sizes] + [(sizes[0], b) for b in batches[1:]]
    results: dict[str, Any] = {"model": model, "threads": torch.get_num_threads(), "matmul_peak_gflops": peak,
                               "device": "cpu", "cpu": cpu_info().to_dict(), "versions": software_versions(),
                               "winograd": winograd,
                               "rows": [], "fastest_fp32_vs_openvino_direct": []}
    with torch.device("meta"):
        meta_model = create_model(model).eval()
        params_m = sum(p.numel() for p in meta_model.parameters()) / 1e6
    results["params_m"] = round(params_m, 2)
    with scratch_dir() as tmp:
        callables = {}
        for name in entries:
            log(f"building {name} ...")
            try:
                callables[name] = build_entry(name, model, Path(tmp), winograd)
            except Exception as e:  # reported in the table, the others still run
                results["rows"].append({"entry": name, "error": f"{type(e).__name__}: {str(e)[:200]}"})
        costs = []
        for size, batch in runs:
            with torch.device("meta"):
                costs.append(flops_and_shapes(meta_model, torch.empty(batch, 3, *size))[0])
        log(f"plan: {len(callables)} entries x {len(runs)} inputs ("
            + ", ".join(f"batch {b} at {s[0]}x{s[1]}" for s, b in runs)
            + f"), {warmup} warm-up + {repeats} timed runs each; the time left is estimated after the first input")
        started = time.perf_counter()
        for k, ((size, batch), gflops) in enumerate(zip(runs, costs)):
            if k:  # seconds per GFLOP so far, times the GFLOPs still to run
                left = (time.perf_counter() - started) / sum(costs[:k]) * sum(costs[k:])
                log(f"about {left / 60:.1f} min left ({len(runs) - k} of {len(runs)} inputs)")
            x = torch.randn(batch, 3, *size)
            timings = _time_interleaved(callables, x, warmup, repeats, log, f"{batch}x3x{size[0]}x{size[1]}")
            base = timings.get("torchvision")
            base = base if isinstance(base, list) else None
            ov_direct = timings.get(OPENVINO_DIRECT)
            ov_direct = ov_direct if isinstance(ov_direct, list) else None
            for name, times in timings.items():
                if isinstance(times, str):
                    results["rows"].append({"entry": name, "input": [batch, 3, *size], "error": times})
                    continue
                med = statistics.median(times)
                q = statistics.quantiles(times, n=4) if len(times) > 1 else [med, med, med]
                row = {"entry": name, "input": [batch, 3, *size], "median_ms": round(med, 1),
                       "p25_ms": round(q[0], 1), "p75_ms": round(q[2], 1), "images_per_s": round(batch / med * 1000, 3),
                       "gflops": round(gflops, 3), "achieved_gflops_s": round(gflops / med * 1000, 1),
                       "of_peak": round(gflops / med * 1000 / peak, 3),
                       "vs_torchvision": round(paired_ratio(times, base), 3) if base else None,
                       "times_ms": [round(t, 1) for t in times]}
                if ov_direct:
                    row["vs_openvino_direct"] = round(paired_ratio(times, ov_direct), 3)
                if memory:
                    row["peak_rss_mb"] = _peak_rss_mb(name, model, size, batch, winograd, Path(tmp))
                results["rows"].append(row)
            if ov_direct:
                results["fastest_fp32_vs_openvino_direct"].append(_fastest_fp32(results["rows"], [batch, 3, *size]))
    end_peak = measure_matmul_peak()
    if end_peak > peak:  # the machine was busier at the start: use the higher peak for every row
        results["matmul_peak_gflops"] = peak = end_peak
        for row in results["rows"]:
            if "achieved_gflops_s" in row:
                row["of_peak"] = round(row["achieved_gflops_s"] / peak, 3)
    return results


def _fastest_fp32(rows: list[dict], shape: list[int]) -> dict:
    """The featx fp32 entry with the lowest per-round ratio to OpenVINO on the direct export, for one input
    (the deployment issue's target: <= 0.9x); the reference libraries and the int8 files do not compete."""
    timed = [r for r in rows if r.get("input") == shape and "vs_openvino_direct" in r and r["entry"] in FEATX_FP32]
    best = min(timed, key=lambda r: r["vs_openvino_direct"])
    return {"input": shape, "entry": best["entry"], "ratio": best["vs_openvino_direct"]}


def bench_chart(result: dict, path: str) -> None:
    """A bar chart (PNG) of each entry's latency relative to torchvision, per input."""
    import matplotlib  # the Agg backend must be chosen before pyplot is imported

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [x for x in result["rows"] if "error" not in x and x.get("vs_torchvision")]
    inputs = list(dict.fromkeys("x".join(map(str, x["input"])) for x in rows))
    entries = list(dict.fromkeys(x["entry"] for x in rows))
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    width = 0.8 / max(1, len(entries))
    for j, e in enumerate(entries):
        vals = [next((x["vs_torchvision"] for x in rows if x["entry"] == e and "x".join(map(str, x["input"])) == i), 0)
                for i in inputs]
        ax.bar([k + j * width for k in range(len(inputs))], vals, width, label=e)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([k + width * (len(entries) - 1) / 2 for k in range(len(inputs))], inputs)
    ax.set_ylabel("latency / torchvision (lower is faster)")
    ax.set_title(f"{result['model']}, {result['threads']} threads, {result['cpu']['model']}\n{result['cpu']['isa']}",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
