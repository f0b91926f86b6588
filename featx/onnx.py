"""ONNX export and ONNX Runtime parity, as library functions (``featx export`` / ``featx parity``).

Export: the dynamo exporter by default (``torch.onnx.export(dynamo=True)``); it gives correct
symbolic output shapes (``(H - 1) // 4 + 1``) and a smaller graph, while the TorchScript exporter
(``exporter="torchscript"``) is about 4x faster to export and runs as fast in ONNX Runtime, but its
output dims are free symbols unrelated to the input size. The file carries its own description in
ONNX metadata (``featx.*`` keys: levels, strides, channels, input normalization, the model config,
its weights and init seed), is checked by ``onnx.checker`` (full check) and strict shape inference,
and is written atomically.

Parity: ONNX Runtime against the same model in PyTorch (rebuilt from the file's metadata, on the
same device), per output: max abs error, max abs / max|ref|, cosine, with gates per precision.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

import featx
from featx.images import IMAGENET_MEAN, IMAGENET_STD
from featx.io import atomic_path

__all__ = [
    "ExportSettings", "ExportResult", "export_onnx", "read_metadata", "model_from_metadata",
    "Gate", "GATES", "ParityReport", "ort_parity", "DEFAULT_OPSET", "DEFAULT_PARITY_SIZES", "ExportError",
    "ParityError",
]

# Opset 18: the newest the dynamo exporter targets natively; ONNX Runtime >= 1.14 runs it, as do
# TensorRT 8.6+ and OpenVINO 2023+.
DEFAULT_OPSET = 18
DEFAULT_PARITY_SIZES: tuple[tuple[int, int], ...] = ((512, 512), (800, 1216), (801, 1333), (333, 517))


class ExportError(RuntimeError):
    """The export could not be done; no file was left behind."""


class ParityError(RuntimeError):
    """The parity check could not run (wrong file, unavailable device); distinct from a failed gate."""


@dataclass
class ExportSettings:
    """How to export. ``static_shape=(H, W)`` fixes the input shape (batch ``batch``); otherwise batch,
    height and width are dynamic. ``fp16`` converts weights and compute to float16, keeping the
    input and outputs float32 unless ``fp16_io``. ``winograd`` exports wide 3x3 convs as Winograd
    F(4x4, 3x3) (MatMul-based, see :mod:`featx.winograd`): ONNX Runtime CPU runs ResNet50FPN about
    1.3x faster; it is off for fp16 exports and for files meant for int8 quantization."""

    static_shape: Optional[tuple[int, int]] = None
    batch: int = 1
    opset: int = DEFAULT_OPSET
    fp16: bool = False
    fp16_io: bool = False
    simplify: bool = False
    exporter: str = "dynamo"
    winograd: bool = True

    @property
    def name(self) -> str:
        kind = "static{}x{}".format(*self.static_shape) if self.static_shape else "dynamic"
        return f"{kind}_{'fp16' if self.fp16 else 'fp32'}"


@dataclass
class ExportResult:
    path: str
    size_mb: float
    opset: int
    exporter: str
    inputs: list[dict]
    outputs: list[dict]
    seconds: float
    metadata: dict = field(default_factory=dict)


def _model_config(model: Union[str, dict]) -> dict:
    if isinstance(model, str):
        from featx.models import get_entry

        return {"type": f"featx.{get_entry(model).name}"}
    if not isinstance(model, dict) or "type" not in model:
        raise TypeError(f"model must be a catalogue name or a config dict with 'type', got {model!r}")
    return dict(model)


def build_from_config(cfg: dict, seed: int = 0) -> nn.Module:
    """Build a model config deterministically: the same seed gives the same random init."""
    from featx.registry import build_module

    torch.manual_seed(seed)
    return build_module(dict(cfg)).eval()


def _min_input_size(model: nn.Module) -> int:
    """The coarsest stride, or more where the family's unpadded convs need it (Inception-v3: 75)."""
    backbone = getattr(model, "backbone", model)
    if not hasattr(backbone, "stage_infos"):
        return 32
    return max([info.stride for info in backbone.stage_infos] + [backbone.min_input_size])


def _value_info(values) -> list[dict]:
    import onnx

    out = []
    for v in values:
        t = v.type.tensor_type
        dims = [d.dim_param or d.dim_value for d in t.shape.dim]
        out.append({"name": v.name, "dtype": onnx.TensorProto.DataType.Name(t.elem_type).lower(), "shape": dims})
    return out


def export_onnx(
    model: Union[str, dict],
    path: Union[str, Path],
    settings: Optional[ExportSettings] = None,
    seed: int = 0,
    log: Any = print,
) -> ExportResult:
    """Export a catalogue model (name) or a model config dict to ``path``.

    The model is built with ``torch.manual_seed(seed)`` so a random-init export can be rebuilt
    for parity. Writes atomically: on any failure no file exists under ``path``.
    """
    import onnx

    settings = settings or ExportSettings()
    start = time.perf_counter()
    cfg = _model_config(model)
    path = Path(path)
    if settings.exporter not in ("dynamo", "torchscript"):
        raise ExportError(f"exporter must be 'dynamo' or 'torchscript', got {settings.exporter!r}")
    if settings.batch < 1:
        raise ExportError(f"batch must be >= 1, got {settings.batch}")
    from featx.inference import optimize_for_inference

    # the same inference path as eager: BatchNorm folded into the convolutions before tracing
    net = optimize_for_inference(build_from_config(cfg, seed), channels_last=False, inplace=True,
                                 winograd=settings.winograd and not settings.fp16)
    infos = list(net.feature_info)
    out_names = [f.name.lower() for f in infos]
    minimum = _min_input_size(net)
    if settings.static_shape is not None:
        h, w = settings.static_shape
        if h < minimum or w < minimum:
            raise ExportError(
                f"static shape {h}x{w} is too small for {cfg['type']}: height and width must be at least "
                f"{minimum} (its coarsest backbone stride), e.g. --static 800 1216"
            )
        sample = torch.rand(settings.batch, 3, h, w)
    else:
        # batch 2 and distinct H/W, so the tracer specializes none of them to a constant
        sample = torch.rand(2, 3, 320, 352)

    with atomic_path(path) as tmp:
        log(f"exporting {cfg['type']} ({settings.exporter}, opset {settings.opset}, {settings.name}) ...")
        try:
            _run_exporter(_Float16(net, settings.fp16_io).eval() if settings.fp16 else net,
                          sample.half() if settings.fp16 and settings.fp16_io else sample, tmp, out_names, settings)
        except Exception as e:
            raise ExportError(f"torch.onnx export failed ({settings.exporter}): {type(e).__name__}: {str(e)[:500]}") from e
        proto = onnx.load(str(tmp))
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        if opset != settings.opset:
            raise ExportError(f"the {settings.exporter} exporter could not write opset {settings.opset} (it wrote "
                              f"{opset}); use an opset it supports (dynamo: >= 18; torchscript: 7..20)")
        _name_dynamic_dims(proto)
        if settings.simplify:
            proto = _simplify(proto)
        weights = cfg.get("weights")
        metadata = {
            "featx.version": featx.__version__,
            "featx.model_config": json.dumps(cfg, default=str),
            "featx.init_seed": str(seed),
            "featx.weights": str(weights) if weights is not None else f"none (random init, seed {seed})",
            "featx.levels": json.dumps([{"name": f.name, "output": n, "stride": f.stride, "channels": f.channels}
                                        for f, n in zip(infos, out_names)]),
            "featx.input": json.dumps({"name": "input", "layout": "NCHW", "color": "RGB", "scale": "0..1",
                                       "mean": list(getattr(net, "mean", IMAGENET_MEAN)),
                                       "std": list(getattr(net, "std", IMAGENET_STD)),
                                       "min_size": minimum}),
            "featx.precision": "fp16" if settings.fp16 else "fp32",
            "featx.io_precision": "fp16" if settings.fp16 and settings.fp16_io else "fp32",
            "featx.exporter": settings.exporter,
            "featx.winograd_convs": str(net.winograd_convs),
            "featx.static_shape": json.dumps(list(sample.shape) if settings.static_shape else None),
        }
        del proto.metadata_props[:]
        for k, v in metadata.items():
            proto.metadata_props.add(key=k, value=v)
        proto.doc_string = f"featx {cfg['type']}: input (N,3,H,W) RGB 0..1 normalized by featx.input mean/std; outputs {', '.join(out_names)}"
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
        result = ExportResult(str(path), tmp.stat().st_size / 1e6, settings.opset, settings.exporter,
                              _value_info(inferred.graph.input), _value_info(inferred.graph.output),
                              0.0, metadata)
    result.seconds = time.perf_counter() - start
    return result


class _Float16(nn.Module):
    """fp16 weights and compute; float32 input and outputs unless ``io_fp16`` (casts at the edges)."""

    def __init__(self, net: nn.Module, io_fp16: bool) -> None:
        super().__init__()
        self.net = net.half()
        self.io_fp16 = io_fp16
        self.feature_info = net.feature_info

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = _as_tuple(self.net(x.half()))
        return outs if self.io_fp16 else tuple(o.float() for o in outs)


def _run_exporter(net: nn.Module, sample: torch.Tensor, path: Path, out_names: list[str], s: ExportSettings) -> None:
    import contextlib
    import io

    if s.exporter == "dynamo":
        shapes = None
        if s.static_shape is None:
            dyn = torch.export.Dim.DYNAMIC
            shapes = ({0: dyn, 2: dyn, 3: dyn},)  # positional: forward's first argument, whatever its name
        # the exporter narrates its passes on stdout; keep the tool's output to its own summary
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(net, (sample,), str(path), dynamo=True, input_names=["input"], output_names=out_names,
                              dynamic_shapes=shapes, opset_version=s.opset, external_data=False, optimize=True)
    else:
        axes = None
        if s.static_shape is None:
            axes = {"input": {0: "batch", 2: "height", 3: "width"}}
            axes.update({n: {0: "batch", 2: f"{n}_height", 3: f"{n}_width"} for n in out_names})
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (sample,), str(path), dynamo=False, input_names=["input"], output_names=out_names,
                              dynamic_axes=axes, opset_version=s.opset)


def _name_dynamic_dims(proto) -> None:
    """Rename the exporter's symbols (``s77``) to ``batch``/``height``/``width`` in every shape."""
    import re

    dims = proto.graph.input[0].type.tensor_type.shape.dim
    names = {dims[i].dim_param: new for i, new in ((0, "batch"), (2, "height"), (3, "width")) if dims[i].dim_param}
    if not names:
        return
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    for value in list(proto.graph.input) + list(proto.graph.output) + list(proto.graph.value_info):
        for d in value.type.tensor_type.shape.dim:
            if d.dim_param:
                d.dim_param = pattern.sub(lambda m: names[m.group(1)], d.dim_param)


def _simplify(proto):
    try:
        import onnxslim
    except ImportError:
        raise ExportError("--simplify needs onnxslim: pip install onnxslim") from None
    return onnxslim.slim(proto)


# -- reading an exported file ----------------------------------------------------------------------
def read_metadata(path: Union[str, Path]) -> dict[str, Any]:
    """The ``featx.*`` metadata of an exported file, JSON values decoded."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ParityError(f"ONNX file not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ParityError(f"{path} is not an ONNX model ({type(e).__name__}: {str(e)[:200]})") from None
    if not proto.graph.node:
        raise ParityError(f"{path} is not an ONNX model (no graph)")
    meta: dict[str, Any] = {}
    for prop in proto.metadata_props:
        if prop.key.startswith("featx."):
            try:
                meta[prop.key[6:]] = json.loads(prop.value)
            except json.JSONDecodeError:
                meta[prop.key[6:]] = prop.value
    return meta


def model_from_metadata(meta: dict) -> nn.Module:
    if "model_config" not in meta:
        raise ParityError("the ONNX file has no featx metadata (not exported by featx?); pass the model to compare with")
    return build_from_config(meta["model_config"], int(meta.get("init_seed", 0)))


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
    onnx: str
    device: str
    providers: list[str]
    precision: str
    gate: dict
    results: list[OutputResult] = field(default_factory=list)
    latency_ms: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    def to_dict(self) -> dict:
        return {"onnx": self.onnx, "device": self.device, "providers": self.providers, "precision": self.precision,
                "gate": self.gate, "passed": self.passed, "latency_ms": self.latency_ms,
                "results": [asdict(r) for r in self.results]}


def _providers(device: str) -> tuple[list, str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    cuda_ok = "CUDAExecutionProvider" in available and torch.cuda.is_available()
    if device == "auto":
        device = "cuda" if cuda_ok else "cpu"
    if device == "cuda":
        if not cuda_ok:
            raise ParityError(
                f"--device cuda asked, but CUDA is not usable here: onnxruntime providers {available}, "
                f"torch.cuda.is_available()={torch.cuda.is_available()}. Install featx[gpu] (onnxruntime-gpu, "
                "without onnxruntime) on a machine with an NVIDIA GPU, or use --device cpu."
            )
        return ["CUDAExecutionProvider"], "cuda"
    if device != "cpu":
        raise ParityError(f"--device must be auto, cuda or cpu, got {device!r}")
    return ["CPUExecutionProvider"], "cpu"


def ort_parity(
    onnx_path: Union[str, Path],
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
) -> ParityReport:
    """Run ``onnx_path`` in ONNX Runtime and ``model`` (default: rebuilt from the file's metadata) in
    PyTorch on the same inputs and device; compare every output.

    Every size runs at ``batches[0]``; the first size also at each further batch. A file exported
    with a static shape runs at that shape only; other sizes are a clear ``ParityError``.
    """
    import onnxruntime as ort

    meta = read_metadata(onnx_path) if meta is None else meta
    providers, device = _providers(device)
    net = model if model is not None else model_from_metadata(meta)
    net = net.eval()
    expected = [f.name.lower() for f in net.feature_info]
    precision = meta.get("precision", "fp32")
    if gate is None:
        gate = (GATES[precision] if precision in ("fp16", "int8")
                else GATES["tf32"] if (device == "cuda" and tf32) else GATES["fp32"])

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    provider_options = [{"use_tf32": int(tf32)}] if device == "cuda" else None
    try:
        session = ort.InferenceSession(str(onnx_path), options, providers=providers, provider_options=provider_options)
    except Exception as e:
        raise ParityError(f"ONNX Runtime cannot load {onnx_path}: {str(e)[:300]}") from None
    used = session.get_providers()
    if device == "cuda" and used[0] != "CUDAExecutionProvider":
        raise ParityError(f"asked for CUDA but ONNX Runtime runs on {used}; refusing to report a CPU result as CUDA")
    outputs = [o.name for o in session.get_outputs()]
    if outputs != expected:
        raise ParityError(f"{onnx_path} outputs {outputs}, but the model gives {expected}: is it for another model?")
    in_meta = session.get_inputs()[0]
    in_type = np.float16 if "float16" in in_meta.type else np.float32
    static = [d if isinstance(d, int) else None for d in in_meta.shape]
    if all(isinstance(d, int) for d in static):
        fixed = (static[2], static[3])
        if sizes is not None and any(tuple(s) != fixed for s in sizes):
            raise ParityError(
                f"{onnx_path} was exported with a static input {'x'.join(map(str, static))}; it cannot run "
                f"{', '.join('x'.join(map(str, s)) for s in sizes if tuple(s) != fixed)}. Use --sizes "
                f"{fixed[0]}x{fixed[1]} or export with dynamic shapes."
            )
        sizes, batches = [fixed], [static[0]]
    sizes = list(sizes or DEFAULT_PARITY_SIZES)

    torch_device = torch.device(device)
    net = net.to(torch_device)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    report = ParityReport(str(onnx_path), device, used, precision, asdict(gate))
    runs = [(s, batches[0]) for s in sizes] + [(sizes[0], b) for b in batches[1:]]
    g = torch.Generator().manual_seed(seed)
    photo = precision == "int8"  # int8 ranges are calibrated on real images: test on one, not on noise
    norm = meta.get("input") or {}
    for (h, w), b in runs:
        log(f"  {b}x3x{h}x{w} ..." + (" (the bundled photo)" if photo else ""))
        x = _photo_batch(b, h, w, norm) if photo else torch.randn(b, 3, h, w, generator=g)
        with torch.no_grad():
            ref = [r.float().cpu().numpy() for r in _as_tuple(net(x.to(torch_device)))]
        got = session.run(None, {in_meta.name: x.numpy().astype(in_type)})
        for name, o, r in zip(outputs, got, ref):
            o = o.astype(np.float32)
            if o.shape != r.shape:
                report.results.append(OutputResult(name, (h, w), b, tuple(o.shape), float("inf"), float("inf"), 0.0, False))
                continue
            max_abs = float(np.abs(o - r).max())
            rel = max_abs / max(float(np.abs(r).max()), 1e-12)
            of, rf = o.ravel().astype(np.float64), r.ravel().astype(np.float64)
            cos = float(of @ rf / max(np.linalg.norm(of) * np.linalg.norm(rf), 1e-30))
            report.results.append(OutputResult(name, (h, w), b, tuple(o.shape), max_abs, rel, cos,
                                               rel <= gate.max_rel and cos >= gate.min_cos))
    if repeats > 0:
        (h, w), b = runs[0]
        x = torch.randn(b, 3, h, w, generator=g)
        feed = {in_meta.name: x.numpy().astype(in_type)}
        report.latency_ms = {"input": [b, 3, h, w], "repeats": repeats,
                             "ort": _median_ms(lambda: session.run(None, feed), repeats),
                             "torch_eager": _median_ms(lambda: _torch_call(net, x.to(torch_device), device), repeats)}
        report.latency_ms["ort_over_torch"] = report.latency_ms["ort"] / report.latency_ms["torch_eager"]
    return report


def _photo_batch(batch: int, h: int, w: int, norm: dict) -> torch.Tensor:
    """The bundled photo resized to ``h x w`` and normalized as the model expects; odd batch
    entries are mirrored so a batch is not one image repeated."""
    from featx.images import load_image, resize_normalize, sample_image_path

    x = resize_normalize(load_image(sample_image_path()), (h, w), norm.get("mean", IMAGENET_MEAN),
                         norm.get("std", IMAGENET_STD))
    return torch.stack([x if i % 2 == 0 else x.flip(-1) for i in range(batch)])


def _as_tuple(out: Any) -> tuple:
    """Extractors return a tuple of maps, a classifier one logits tensor: always a tuple."""
    return (out,) if isinstance(out, torch.Tensor) else tuple(out)


def _torch_call(net: nn.Module, x: torch.Tensor, device: str):
    with torch.no_grad():
        out = net(x)
    if device == "cuda":
        torch.cuda.synchronize()
    return out


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)
