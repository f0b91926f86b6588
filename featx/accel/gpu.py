"""featx.accel on a GPU: a model's inference options chosen by measuring them on the device at hand.

``optimize_for_gpu(model, shape, precision)`` times, for one input shape and precision, the candidates

  eager            the model as given, under ``torch.autocast`` at the precision (what a user runs)
  contiguous       BN folded (``featx.inference.optimize_for_inference``), weights in the precision's dtype, NCHW
  channels_last    the same in NHWC (tensor cores prefer it in fp16/bf16; in fp32 it can be slower)
  *+graph          either, replayed from a CUDA graph captured for the shape (static shapes; CUDA only)
  *+compile        either through ``torch.compile`` (asked with ``compile=True``: a minute per shape)

interleaved, by CUDA events on a GPU (the wall clock elsewhere), and returns the fastest as a callable with
the choice and every median. ``eager`` is a candidate, so the result is never slower than eager as measured.
The choice is cached per GPU (name, capability), torch version, model, shape and precision
(``featx.accel.choices``), so each is measured once.
"""
from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn

from featx.accel.choices import cached_choice, store_choice
from featx.cpu import cpu_info
from featx.inference import optimize_for_inference
from featx.timing import cuda_event_ms, interleaved_times, wall_ms

__all__ = ["GpuChoice", "GraphReplay", "optimize_for_gpu", "candidate_runners"]

DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
Timer = Callable[[dict[str, Callable[[], object]]], dict[str, list[float]]]


@dataclass
class GpuChoice:
    """The candidate chosen and the median ms of each one measured (``medians``), for one shape and precision."""

    choice: str
    shape: tuple[int, ...]
    precision: str
    medians: dict[str, float] = field(default_factory=dict)
    cached: bool = False


class GraphReplay:
    """``fn`` replayed from a CUDA graph, captured on the first call with each input shape and dtype: the input is
    copied into the graph's static buffer and the outputs are the graph's own tensors (valid until the next
    call). Capture needs a CUDA device and static shapes."""

    def __init__(self, fn: Callable[[torch.Tensor], Any]) -> None:
        self.fn = fn
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, Any]] = {}

    def __call__(self, x: torch.Tensor) -> Any:
        key = (tuple(x.shape), x.dtype)
        if key not in self.graphs:
            static = x.clone()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):  # cuDNN and the allocator settle before capture
                    self.fn(static)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self.fn(static)
            self.graphs[key] = (graph, static, out)
        graph, static, out = self.graphs[key]
        static.copy_(x)
        graph.replay()
        return out


def candidate_runners(model: nn.Module, example: torch.Tensor, precision: str, graphs: bool, compile: bool
                      ) -> dict[str, Callable[[torch.Tensor], Any]]:
    """Each candidate as ``fn(x)`` for inputs like ``example`` (fp32, on the device)."""
    device = example.device
    dtype = DTYPES[precision]  # TF32 is a global switch, set by the caller for every candidate alike

    def eager(x: torch.Tensor) -> Any:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            return model(x)

    runners: dict[str, Callable] = {"eager": eager}
    folded = optimize_for_inference(copy.deepcopy(model), channels_last=False, inplace=True).to(device, dtype)
    for layout in ("contiguous", "channels_last"):
        net = folded if layout == "contiguous" else copy.deepcopy(folded).to(memory_format=torch.channels_last)
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format

        def run(x: torch.Tensor, net: nn.Module = net, fmt: torch.memory_format = fmt) -> Any:
            with torch.inference_mode():
                return net(x.to(dtype).contiguous(memory_format=fmt))

        runners[layout] = run
        if compile:
            compiled = torch.compile(net, dynamic=False)
            runners[f"{layout}+compile"] = lambda x, c=compiled, fmt=fmt: _no_grad(c, x.to(dtype).contiguous(memory_format=fmt))
        if graphs and device.type == "cuda":
            runners[f"{layout}+graph"] = GraphReplay(run)
    return runners


def _no_grad(fn: Callable, x: torch.Tensor) -> Any:
    with torch.inference_mode():
        return fn(x)


def _default_timer(device: torch.device, repeats: int) -> Timer:
    def timer(fns: dict[str, Callable[[], object]]) -> dict[str, list[float]]:
        measure = cuda_event_ms if device.type == "cuda" else wall_ms
        return interleaved_times(fns, repeats, warmup=2, measure=measure)

    return timer


def _key(model: nn.Module, shape: tuple[int, ...], precision: str, device: torch.device, options: str) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        where = f"{props.name} sm{props.major}{props.minor}"
    else:
        where = cpu_info().key
    params = sum(p.numel() for p in model.parameters())
    return (f"gpu-layout|{where}|torch {torch.__version__}|{type(model).__name__}:{params}|"
            f"{'x'.join(map(str, shape))}|{precision}|{options}")


def optimize_for_gpu(model: nn.Module, shape: tuple[int, ...], precision: str = "fp16",
                     device: Optional[torch.device] = None, graphs: bool = True, compile: bool = False,
                     repeats: int = 10, use_cache: bool = True, timer: Optional[Timer] = None
                     ) -> tuple[Callable[[torch.Tensor], Any], GpuChoice]:
    """The fastest candidate (see the module docstring) for inputs of ``shape`` at ``precision`` on ``device``
    (default: the model's), as ``(fn(x) -> outputs, GpuChoice)``. ``fn`` takes fp32 inputs of that shape on the
    device. ``timer`` (``{name: fn} -> {name: [ms, ...]}``) is for tests."""
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {tuple(DTYPES)}, got {precision!r}")
    model = model.eval()
    device = device or next(model.parameters()).device
    model = model.to(device)
    example = torch.randn(*shape, device=device)
    runners = candidate_runners(model, example, precision, graphs, compile)
    key = _key(model, tuple(shape), precision, device, f"graphs={graphs},compile={compile}")
    if use_cache:
        hit = cached_choice(key)
        if isinstance(hit, dict) and hit.get("choice") in runners:
            return runners[hit["choice"]], GpuChoice(hit["choice"], tuple(shape), precision, hit.get("medians", {}), True)
    timer = timer or _default_timer(device, repeats)
    times = timer({name: (lambda fn=fn: fn(example)) for name, fn in runners.items()})
    medians = {name: statistics.median(t) for name, t in times.items()}
    choice = min(medians, key=lambda name: (medians[name], name != "eager"))  # a tie keeps eager
    if use_cache:
        store_choice(key, {"choice": choice, "medians": {k: round(v, 4) for k, v in medians.items()}})
    return runners[choice], GpuChoice(choice, tuple(shape), precision, medians)
