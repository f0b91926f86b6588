"""``featx bench --device cuda``: featx's GPU paths timed against torchvision on one CUDA device, in one run.

Entries (each an ``(N, 3, H, W) tensor on the device -> pyramid`` callable):
  torchvision         ``resnet_fpn_backbone`` eager: the reference for ratios
  timm+tv_fpn         timm ``features_only`` + torchvision ``FeaturePyramidNetwork``, eager
  featx               featx eager
  featx_optimized     ``featx.inference.optimize_for_inference`` (BN folded) in the precision's dtype
  featx_compile       ``torch.compile`` of the optimized model (opt-in: compiling takes a minute per shape)
  featx_cuda_graph    the optimized model replayed from a CUDA graph captured per input shape (static shapes)
  featx_tuned         ``featx.accel.optimize_for_gpu``: eager, NCHW or NHWC, with or without a CUDA graph, the
                      fastest measured on this GPU per shape and precision (measured during warm-up, cached)
  featx_ort           the featx ONNX export in ONNX Runtime's CUDA provider, inputs and outputs bound on the
                      device (IO binding, :mod:`featx.deploy.iobinding`)
  featx_trt           the same file in ONNX Runtime's TensorRT provider, where onnxruntime reports it (opt-in)

Precisions: ``fp32`` (TF32 off), ``tf32`` (TF32 matmuls and convolutions), ``fp16`` and ``bf16``. The eager
entries run under ``torch.autocast`` (what a user writes); the optimized, compiled and graph entries run a
copy of the model converted to the dtype (inference only, no casts at run time); the exported entries run the
fp32 file for fp32/tf32 (ONNX Runtime's ``use_tf32`` follows) and the fp16 file for fp16 (bf16: not exported).

Each call is timed by CUDA events; rounds are interleaved in balanced orders (:func:`featx.timing.round_orders`)
after warm-up; reported per entry, precision and input: median latency and its 25-75% spread, images/s, the
ratio to torchvision eager at the same precision (median of per-round ratios), TFLOP/s from
``torch.utils.flop_counter`` and the share of a large matmul's peak measured at that precision in the same run.
Every report names the GPU, its driver, CUDA, cuDNN and the package versions.

The logic runs on any torch device (the tests run it on the CPU with injected timings); the GPU-only entries
(CUDA graphs, the CUDA and TensorRT providers) report a clear error elsewhere.
"""
from __future__ import annotations

import contextlib
import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

from featx import accel
from featx.accel.gpu import GraphReplay
from featx.bench.cpu import TimmFPN, chosen_entries, torchvision_counterpart
from featx.deploy.iobinding import BoundRunner
from featx.deploy.onnx_export import ExportSettings, export_onnx
from featx.deploy.runtimes import open_session
from featx.devices import checked_device
from featx.inference import optimize_for_inference
from featx.io import scratch_dir
from featx.models import create_model
from featx.options import GPU_BENCH_ENTRIES, PRECISIONS
from featx.stats import flops_and_shapes
from featx.timing import cuda_event_ms, interleaved_times, paired_ratio, wall_ms
from featx.version import software_versions

__all__ = ["gpu_entries", "GPU_BENCH_ENTRIES", "PRECISIONS", "DEFAULT_GPU_ENTRIES", "gpu_info", "precision_context",
           "measure_matmul_peak_tflops", "build_gpu_entry", "run_gpu_benchmark"]

DEFAULT_GPU_ENTRIES = ("torchvision", "featx", "featx_optimized", "featx_cuda_graph", "featx_tuned", "featx_ort")
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def gpu_info(device: torch.device) -> dict[str, Any]:
    """The device's name, memory, compute capability, driver, CUDA and cuDNN versions (what every report names)."""
    if device.type != "cuda":
        return {"name": str(device), "driver": None, "cuda": None, "cudnn": None}
    props = torch.cuda.get_device_properties(device)
    driver = None
    if shutil.which("nvidia-smi"):
        r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i",
                            str(device.index or 0)], capture_output=True, text=True, timeout=30)
        driver = r.stdout.strip() or None
    return {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}", "driver": driver, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version()}


@contextlib.contextmanager
def precision_context(precision: str) -> Iterator[None]:
    """TF32 on for ``tf32`` only (matmuls and cuDNN convolutions), put back afterwards."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def measure_matmul_peak_tflops(device: torch.device, precision: str, n: int = 8192, repeats: int = 10,
                               measure: Optional[Callable] = None) -> float:
    """TFLOP/s of an ``n x n`` matmul at ``precision`` on ``device``: the best of ``repeats`` (a peak)."""
    measure = measure or (cuda_event_ms if device.type == "cuda" else wall_ms)
    dtype = DTYPES[precision]
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    with precision_context(precision):
        a @ b  # warm-up (cuBLAS handles, kernel choice)
        best = min(measure(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / (best / 1000) / 1e12


class _Tuned:
    """``accel.optimize_for_gpu``'s choice for each input shape, made (measured, or read from the cache) on the
    first call with that shape: during the benchmark's warm-up."""

    def __init__(self, model: nn.Module, precision: str) -> None:
        self.model, self.precision = model, precision
        self.runs: dict[tuple, Callable] = {}
        self.choices: dict[tuple, str] = {}

    def __call__(self, x: torch.Tensor) -> Any:
        shape = tuple(x.shape)
        if shape not in self.runs:
            self.runs[shape], choice = accel.optimize_for_gpu(self.model, shape, self.precision, x.device)
            self.choices[shape] = choice.choice
        return self.runs[shape](x)


def _reference_net(name: str, model: str) -> nn.Module:
    if name == "torchvision":
        return resnet_fpn_backbone(backbone_name=torchvision_counterpart(model), weights=None, trainable_layers=5)
    return TimmFPN(torchvision_counterpart(model))


def _exported_entry(name: str, model: str, precision: str, device: torch.device, workdir: Path) -> Callable:
    if precision == "bf16":
        raise ValueError("no bf16 export: ONNX Runtime's CUDA provider runs fp32 (and TF32) or fp16 files")
    fp16 = precision == "fp16"
    path = workdir / f"{model}_{'fp16' if fp16 else 'fp32'}.onnx"
    if not path.exists():
        export_onnx(model, path, ExportSettings(fp16=fp16, fp16_io=fp16, target="tensorrt" if name == "featx_trt"
                                                else "cuda" if device.type == "cuda" else "any"), log=lambda m: None)
    if name == "featx_trt":
        return _tensorrt_session(path, device, precision)
    session = open_session(path, device.type, tf32=precision == "tf32")
    return session.run_on_device


def _tensorrt_session(path: Path, device: torch.device, precision: str) -> Callable:
    import onnxruntime as ort  # one of two exclusive extras (onnxruntime / onnxruntime-gpu): imported on use

    if "TensorrtExecutionProvider" not in ort.get_available_providers() or device.type != "cuda":
        raise ValueError(f"onnxruntime {ort.__version__} here has no usable TensorRT provider "
                         f"({', '.join(ort.get_available_providers())})")
    session = ort.InferenceSession(str(path), providers=[
        ("TensorrtExecutionProvider", {"trt_fp16_enable": precision == "fp16", "device_id": device.index or 0}),
        ("CUDAExecutionProvider", {"device_id": device.index or 0})])
    if session.get_providers()[0] != "TensorrtExecutionProvider":
        raise ValueError(f"ONNX Runtime did not take the TensorRT provider (it runs on {session.get_providers()})")
    return BoundRunner(session, np.float16 if precision == "fp16" else np.float32)


def build_gpu_entry(name: str, model: str, precision: str, device: torch.device, workdir: Path) -> Callable:
    """The callable for one entry at one precision on ``device``; it takes an fp32 input on the device (cast to
    the entry's dtype inside, as a deployed model would receive it)."""
    if name not in GPU_BENCH_ENTRIES:
        raise ValueError(f"unknown entry {name!r}; expected one of {GPU_BENCH_ENTRIES}")
    dtype = DTYPES[precision]
    if name in ("featx_ort", "featx_trt"):
        run = _exported_entry(name, model, precision, device, workdir)
        return lambda x: run(x.to(torch.float16) if precision == "fp16" else x)
    if name == "featx_cuda_graph" and device.type != "cuda":
        raise ValueError("CUDA graphs need a CUDA device")
    if name in ("torchvision", "timm+tv_fpn", "featx"):
        net = (_reference_net(name, model) if name != "featx" else create_model(model)).eval().to(device)
        autocast = dtype != torch.float32

        def eager(x: torch.Tensor) -> Any:
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=autocast):
                return net(x)

        return eager
    if name == "featx_tuned":
        return _Tuned(create_model(model).to(device), precision)
    net = optimize_for_inference(create_model(model), channels_last=device.type == "cuda", inplace=True).to(device, dtype)
    if name == "featx_compile":
        net = torch.compile(net, dynamic=False)
    elif name == "featx_cuda_graph":
        net = GraphReplay(net)

    def converted(x: torch.Tensor) -> Any:
        with torch.inference_mode():
            return net(x.to(dtype))

    return converted


def gpu_entries(entries: Optional[Sequence[str]]) -> list[str]:
    """The entries a GPU benchmark runs: ``entries``, or :data:`DEFAULT_GPU_ENTRIES`; CPU-only entries are refused
    with the GPU's choices."""
    return chosen_entries(entries, DEFAULT_GPU_ENTRIES, GPU_BENCH_ENTRIES, "GPU")


def run_gpu_benchmark(
    model: str = "ResNet50FPN",
    sizes: Sequence[tuple[int, int]] = ((800, 1216),),
    batches: Sequence[int] = (1, 8),
    entries: Sequence[str] = DEFAULT_GPU_ENTRIES,
    precisions: Sequence[str] = ("fp32", "tf32", "fp16", "bf16"),
    warmup: int = 3,
    repeats: int = 20,
    device: str = "cuda",
    log: Callable = print,
    measure: Optional[Callable[[Callable[[], object]], float]] = None,
    peaks: Optional[dict[str, float]] = None,
) -> dict[str, Any]:
    """Time every entry at every precision on the same inputs; every size at ``batches[0]``, the first size at
    the rest. ``measure`` (ms of one call; CUDA events on a GPU) and ``peaks`` (TFLOP/s per precision; measured
    here when None) are for tests."""
    dev = checked_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    for p in precisions:
        if p not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {p!r}")
    if repeats < 1 or warmup < 0 or not batches or any(b < 1 for b in batches):
        raise ValueError("repeats >= 1, warmup >= 0 and batch sizes >= 1 are needed")
    if {"torchvision", "timm+tv_fpn"} & set(entries):
        torchvision_counterpart(model)  # fails now, not after minutes of timing
    measure = measure or (cuda_event_ms if dev.type == "cuda" else wall_ms)
    if peaks is None:
        peaks = {p: measure_matmul_peak_tflops(dev, p) for p in precisions}
        log("matmul peak: " + ", ".join(f"{p} {v:.1f} TFLOP/s" for p, v in peaks.items()))
    runs = [(s, batches[0]) for s in sizes] + [(sizes[0], b) for b in batches[1:]]
    result: dict[str, Any] = {"model": model, "device": str(dev), "gpu": gpu_info(dev), "versions": software_versions(),
                              "matmul_peak_tflops": peaks, "rows": [], "best": []}
    with torch.device("meta"):
        meta_model = create_model(model).eval()
    with scratch_dir() as tmp:
        for precision in precisions:
            with precision_context(precision):
                callables: dict[str, Callable] = {}
                for name in entries:
                    log(f"building {name} ({precision}) ...")
                    try:
                        callables[name] = build_gpu_entry(name, model, precision, dev, Path(tmp))
                    except Exception as e:  # reported in the table, the others still run
                        result["rows"].append({"entry": name, "precision": precision,
                                               "error": f"{type(e).__name__}: {str(e)[:200]}"})
                for size, batch in runs:
                    with torch.device("meta"):
                        gflops, _ = flops_and_shapes(meta_model, torch.empty(batch, 3, *size))
                    x = torch.randn(batch, 3, *size, device=dev)
                    label = f"{precision} {batch}x3x{size[0]}x{size[1]}"
                    timings = _timed(callables, x, warmup, repeats, measure, log, label)
                    result["rows"] += _rows(timings, precision, [batch, 3, *size], gflops, peaks[precision])
                    result["best"].append(_best(result["rows"], precision, [batch, 3, *size]))
                del callables
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
    result["best"] = [b for b in result["best"] if b]
    return result


def _timed(callables: dict[str, Callable], x: torch.Tensor, warmup: int, repeats: int, measure: Callable,
           log: Callable, label: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, fn in callables.items():
        log(f"  {name} {label}: warm-up ...")
        try:
            for _ in range(max(1, warmup)):
                fn(x)
            out[name] = []
        except Exception as e:  # reported in the table, the others still run
            out[name] = f"{type(e).__name__}: {str(e)[:200]}"
    ready = {name: (lambda fn=fn: fn(x)) for name, fn in callables.items() if isinstance(out[name], list)}
    log(f"  {label}: {repeats} timed rounds over {len(ready)} entries ...")
    out.update(interleaved_times(ready, repeats, warmup=0, measure=measure))
    return out


def _rows(timings: dict[str, Any], precision: str, shape: list[int], gflops: float, peak: float) -> list[dict]:
    base = timings.get("torchvision")
    base = base if isinstance(base, list) else None
    rows = []
    for name, times in timings.items():
        if isinstance(times, str):
            rows.append({"entry": name, "precision": precision, "input": shape, "error": times})
            continue
        med = statistics.median(times)
        q = statistics.quantiles(times, n=4) if len(times) > 1 else [med, med, med]
        achieved = gflops / med  # GFLOP per ms = TFLOP/s
        rows.append({"entry": name, "precision": precision, "input": shape, "median_ms": round(med, 3),
                     "p25_ms": round(q[0], 3), "p75_ms": round(q[2], 3),
                     "images_per_s": round(shape[0] / med * 1000, 1), "gflops": round(gflops, 1),
                     "tflops_s": round(achieved, 2), "of_peak": round(achieved / peak, 3) if peak else None,
                     "vs_torchvision": round(paired_ratio(times, base), 3) if base else None,
                     "times_ms": [round(t, 3) for t in times]})
    return rows


def _best(rows: list[dict], precision: str, shape: list[int]) -> Optional[dict]:
    """featx's fastest entry for one precision and input, with its ratio to torchvision eager."""
    timed = [r for r in rows if r.get("precision") == precision and r.get("input") == shape and "median_ms" in r
             and r["entry"].startswith("featx")]
    if not timed:
        return None
    best = min(timed, key=lambda r: r["median_ms"])
    return {"precision": precision, "input": shape, "entry": best["entry"], "median_ms": best["median_ms"],
            "vs_torchvision": best["vs_torchvision"], "of_peak": best["of_peak"]}
