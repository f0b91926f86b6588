"""Parity as a library function (``featx parity``): an exported file in its runtime (ONNX Runtime for
``.onnx``, OpenVINO for an IR ``.xml``) against the same model in PyTorch (rebuilt from the file's
metadata, on the same device), per output: max abs error, max abs / max|ref|, cosine
(``featx.compare``), with gates per precision.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from featx.compare import compare_arrays
from featx.deploy.metadata import check_metadata, graph_precision, model_from_metadata, read_metadata
from featx.deploy.placement import off_device_nodes, provider_placement
from featx.deploy.runtimes import open_session
from featx.errors import ParityError
from featx.features import as_output_tuple, input_channels
from featx.images import IMAGENET_MEAN, IMAGENET_STD, load_image, resize_normalize, sample_image_path
from featx.timing import interleaved_medians

__all__ = ["base_gate", "gate_with_overrides", "Gate", "GATES", "OutputResult", "ParityReport", "parity", "DEFAULT_PARITY_SIZES"]

DEFAULT_PARITY_SIZES: tuple[tuple[int, int], ...] = ((512, 512), (800, 1216), (801, 1333), (333, 517))


# -- parity ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gate:
    """Pass when ``max|ort - ref| <= max_rel * max|ref|`` and cosine >= ``min_cos`` for every output."""

    max_rel: float
    min_cos: float
    why: str


GATES: dict[str, Gate] = {
    "fp32": Gate(5e-4, 0.99999, "fp32 rounding alone gives ~1e-4 relative on a ResNet-50 FPN"),
    "tf32": Gate(1e-2, 0.9999, "TF32 keeps 10 mantissa bits (~5e-4 per op), compounded over ~60 layers"),
    "fp16": Gate(5e-2, 0.999, "fp16 weights and activations keep 10 mantissa bits and round every op, "
                 "so a deep pyramid drifts ~1e-2 relative; cosine shows the maps still agree"),
    "int8": Gate(0.5, 0.99, "int8 activations carry ~8 bits of a calibrated range, so single values move by "
                 "several percent of the maximum; the gate is on the map as a whole (cosine)"),
}


def base_gate(precision: str, tf32: bool = False) -> Gate:
    """The gate of ``precision`` ("fp32", "tf32", "fp16", "int8"); fp32 run with TF32 allowed (``tf32``) takes TF32's."""
    return GATES["tf32" if precision == "fp32" and tf32 else precision]


def gate_with_overrides(precision: Optional[str], tf32: bool = False, max_rel: Optional[float] = None,
                        min_cos: Optional[float] = None) -> Optional[Gate]:
    """The gate a user set (``max_rel`` and/or ``min_cos`` over the gate of ``precision``, the one the user asked
    for or the file's graph computes in (:func:`featx.deploy.metadata.graph_precision`), never the file's claim;
    TF32 with ``tf32``), or None when neither is set (parity then picks that precision's gate)."""
    if min_cos is not None and not -1 <= min_cos <= 1:
        raise ValueError(f"--min-cos must be in -1..1, got {min_cos}")
    if max_rel is None and min_cos is None:
        return None
    base = base_gate(precision or "fp32", tf32)
    return replace(base, max_rel=max_rel if max_rel is not None else base.max_rel,
                   min_cos=min_cos if min_cos is not None else base.min_cos, why="set on the command line")


@dataclass
class OutputResult:
    output: str
    size: tuple[int, int]
    batch: int
    shape: tuple[int, ...]
    max_abs: float
    rel: float
    cosine: float
    passed: bool


@dataclass
class ParityReport:
    path: str
    runtime: str  # "onnxruntime 1.32.0 on cpu (CPUExecutionProvider)", what really ran
    device: str
    providers: list[str]
    precision: str
    gate: dict
    results: list[OutputResult] = field(default_factory=list)
    latency_ms: dict = field(default_factory=dict)
    # on CUDA (ONNX Runtime): the nodes another provider ran, {provider: {op type: nodes}}; empty when all ran there
    off_device: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    def to_dict(self) -> dict:
        return {"path": self.path, "runtime": self.runtime, "device": self.device, "providers": self.providers,
                "precision": self.precision, "gate": self.gate, "passed": self.passed, "latency_ms": self.latency_ms,
                "off_device": self.off_device, "results": [asdict(r) for r in self.results]}


def parity(
    path: Union[str, Path],
    model: Optional[nn.Module] = None,
    device: str = "auto",
    sizes: Optional[Sequence[tuple[int, int]]] = None,
    batches: Sequence[int] = (1, 2),
    repeats: int = 5,
    tf32: bool = False,
    gate: Optional[Gate] = None,
    threads: Optional[int] = None,
    seed: int = 0,
    log: Any = print,
    meta: Optional[dict] = None,
    precision: Optional[str] = None,
    max_rel: Optional[float] = None,
    min_cos: Optional[float] = None,
    trust_code: bool = False,
) -> ParityReport:
    """Run an exported file (``.onnx`` in ONNX Runtime, an OpenVINO ``.xml`` in OpenVINO, a ``.pt2`` in torch: only
    with ``trust_code``, as loading one runs its code) and ``model``
    (default: rebuilt from the file's metadata) in PyTorch on the same inputs and device; compare every
    output.

    Every size runs at ``batches[0]``; the first size also at each further batch. A file exported
    with a static shape runs at that shape only; other sizes are a clear ``ParityError``.

    The gate is ``gate``, else that of ``precision`` (what the user asks), else that of the precision the file's
    graph computes in, with the user's ``max_rel``/``min_cos`` over it (:func:`gate_with_overrides`). The file's metadata is checked against its graph before anything is built or run
    (:func:`featx.deploy.metadata.check_metadata`): a file never picks its own gate.
    """
    if precision is not None and precision not in GATES:
        raise ValueError(f"precision must be one of {tuple(GATES)}, got {precision!r}")
    if repeats < 0:
        raise ValueError(f"repeats must be >= 0, got {repeats}")
    if not batches or any(b < 1 for b in batches):
        raise ValueError(f"batch sizes must be >= 1, got {list(batches)}")
    meta = read_metadata(path) if meta is None else meta
    session = open_session(path, device, threads, tf32, trust_code=trust_code)
    device = session.device
    graph = graph_precision(path)
    check_metadata(meta, path, session.outputs, graph)  # before the model it names is built
    precision = precision or graph
    net = (model if model is not None else model_from_metadata(meta)).eval()
    expected = [f.name.lower() for f in net.feature_info]
    if gate is None:
        on_tf32 = device == "cuda" and tf32
        gate = gate_with_overrides(precision, on_tf32, max_rel, min_cos) or base_gate(precision, on_tf32)
    if session.outputs != expected:
        raise ParityError(f"{path} outputs {session.outputs}, but the model gives {expected}: is it for another model?")
    channels = input_channels(net)
    fixed = session.static_shape
    if fixed is not None:
        if sizes is not None and any(tuple(s) != fixed[2:] for s in sizes):
            raise ParityError(
                f"{path} was exported with a static input {'x'.join(map(str, fixed))}; it cannot run "
                f"{', '.join('x'.join(map(str, s)) for s in sizes if tuple(s) != fixed[2:])}. Use --sizes "
                f"{fixed[2]}x{fixed[3]} or export with dynamic shapes."
            )
        sizes, batches = [fixed[2:]], [fixed[0]]
    sizes = list(sizes or DEFAULT_PARITY_SIZES)

    torch_device = torch.device(device)
    net = net.to(torch_device)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    report = ParityReport(str(path), session.describe(), device, session.providers, precision, asdict(gate))
    runs = [(s, batches[0]) for s in sizes] + [(sizes[0], b) for b in batches[1:]]
    g = torch.Generator().manual_seed(seed)
    photo = precision == "int8"  # int8 ranges are calibrated on real images: test on one, not on noise
    norm = meta.get("input") or {}
    for (h, w), b in runs:
        log(f"  {b}x{channels}x{h}x{w} ..." + (" (the bundled photo)" if photo else ""))
        x = _photo_batch(b, h, w, norm, channels) if photo else torch.randn(b, channels, h, w, generator=g)
        on_device = x.to(torch_device)
        with torch.no_grad():
            ref = [r.float().cpu().numpy() for r in as_output_tuple(net(on_device))]
        got = [o.float().cpu().numpy() for o in session.run_on_device(on_device)]  # one copy, after the run
        if len(got) != len(ref):
            raise ParityError(f"{path} gives {len(got)} outputs, the model {len(ref)}: is it for another model?")
        for name, o, r in zip(session.outputs, got, ref):
            d = compare_arrays(o, r)
            report.results.append(OutputResult(name, (h, w), b, d.shape, d.max_abs, d.rel, d.cosine,
                                               d.rel <= gate.max_rel and d.cosine >= gate.min_cos))
    if device == "cuda" and session.runtime == "onnxruntime":
        (h, w), b = runs[0]
        placed = provider_placement(path, "cuda", torch.randn(b, channels, h, w, generator=g).numpy().astype(session.input_dtype))
        report.off_device = off_device_nodes(placed, "CUDAExecutionProvider")
        if report.off_device:
            log("  not on CUDA: " + "; ".join(f"{p}: " + ", ".join(f"{op} x{n}" for op, n in ops.items())
                                               for p, ops in report.off_device.items()))
    if repeats > 0:
        report.latency_ms = _latency(session, net, runs[0], channels, precision, torch_device, repeats, g)
    return report


def _latency(session: Any, net: nn.Module, run: tuple, channels: int, precision: str, device: torch.device,
             repeats: int, g: torch.Generator) -> dict:
    """Like with like: both sides take an input already on the device and leave their outputs there (ONNX
    Runtime through IO binding), at the file's precision (an fp16 file against a half model on CUDA; on a CPU,
    and for int8 files, against PyTorch fp32, which the line says), interleaved, medians in ms."""
    (h, w), b = run
    x = torch.randn(b, channels, h, w, generator=g).to(device)
    torch_net, torch_x, torch_precision = net, x, "fp32"
    if precision == "fp16" and device.type == "cuda":
        torch_net, torch_x, torch_precision = copy.deepcopy(net).half(), x.half(), "fp16"
    fed = x.half() if session.input_dtype == np.float16 else x

    def runtime() -> None:
        session.run_on_device(fed)
        _synchronize(device)

    times = interleaved_medians({"runtime": runtime, "torch": lambda: _torch_call(torch_net, torch_x, device.type)},
                                repeats, warmup=1)
    return {"input": [b, channels, h, w], "repeats": repeats, "runtime": times["runtime"], "torch_eager": times["torch"],
            "torch_precision": torch_precision,
            "io": ("torch tensors" if session.runtime in ("torch.export", "AOTInductor") else
                   "IO binding" if session.run_tensor else "numpy through the host"),
            "runtime_over_torch": times["runtime"] / times["torch"]}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _photo_batch(batch: int, h: int, w: int, norm: dict, channels: int = 3) -> torch.Tensor:
    """The bundled photo resized to ``h x w`` and normalized as the model expects (gray for a
    one-channel model); odd batch entries are mirrored so a batch is not one image repeated."""
    image = load_image(sample_image_path())
    if channels == 1:
        image = image.mean(0, keepdim=True)
    x = resize_normalize(image, (h, w), norm.get("mean") or IMAGENET_MEAN[:channels],
                         norm.get("std") or IMAGENET_STD[:channels])
    return torch.stack([x if i % 2 == 0 else x.flip(-1) for i in range(batch)])


def _torch_call(net: nn.Module, x: torch.Tensor, device: str):
    with torch.no_grad():
        out = net(x)
    if device == "cuda":
        torch.cuda.synchronize()
    return out
