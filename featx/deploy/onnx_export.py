"""ONNX export as a library function (``featx export``), with export profiles.

The dynamo exporter by default (``torch.onnx.export(dynamo=True)``); it gives correct symbolic
output shapes (``(H - 1) // 4 + 1``) and a smaller graph, while the TorchScript exporter
(``exporter="torchscript"``) is about 4x faster to export and runs as fast in ONNX Runtime, but its
output dims are free symbols unrelated to the input size. The file carries its own description in
ONNX metadata (``featx.*`` keys, see ``featx.deploy.metadata``), is checked by ``onnx.checker``
(full check) and strict shape inference, and is written atomically.

The graph is plain and the same on every machine: BatchNorm folded, direct convolutions. A hardware-
specific rewrite (Winograd convolutions timed for a CPU runtime) is the opt-in :mod:`featx.accel`, which
passes it to ``export_onnx`` as ``rewrite``; this module never imports it.

Profiles (``featx/deploy/profiles/*.py``, or any file of the same form) are small mmengine configs
whose keys are ``ExportSettings`` fields.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import onnx
import torch
from torch import nn

from featx.config_text import read_config_data
from featx.errors import ExportError, did_you_mean
from featx.timing import heartbeat
from featx.features import FeatureExtractor, as_output_tuple, input_channels
from featx.images import IMAGENET_MEAN, IMAGENET_STD
from featx.inference import prepare_for_inference
from featx.io import atomic_path
from featx.models import build_from_config, model_config
from featx.options import DEFAULT_OPSET, PROFILES_DIR, TARGETS, WINOGRAD_MODES, list_profiles
from featx.version import __version__

__all__ = ["ExportSettings", "ExportResult", "GraphRewrite", "dynamic_input_shapes", "export_metadata", "export_onnx", "min_input_size", "PROFILES_DIR", "list_profiles",
           "load_profile", "input_description", "DEFAULT_OPSET", "TARGETS", "WINOGRAD_MODES"]


@dataclass
class ExportSettings:
    """How to export. ``static_shape=(H, W)`` fixes the input shape (batch ``batch``); otherwise batch,
    height and width are dynamic. ``fp16`` converts weights and compute to float16, keeping the
    input and outputs float32 unless ``fp16_io``. ``target`` (``TARGETS``) is recorded in the file.
    ``winograd`` (``WINOGRAD_MODES``) other than "off" asks for the opt-in CPU rewrite, which only
    :func:`featx.accel.export_onnx_tuned` / :func:`featx.accel.export_openvino_tuned` apply."""

    static_shape: Optional[tuple[int, int]] = None
    batch: int = 1
    opset: int = DEFAULT_OPSET
    fp16: bool = False
    fp16_io: bool = False
    simplify: bool = False
    exporter: str = "dynamo"
    target: str = "any"
    winograd: str = "off"

    @property
    def name(self) -> str:
        kind = "static{}x{}".format(*self.static_shape) if self.static_shape else "dynamic"
        return f"{kind}_{'fp16' if self.fp16 else 'fp32'}"

    def validate(self) -> None:
        """Raise :class:`ExportError` for settings no export can honour."""
        if self.exporter not in ("dynamo", "torchscript"):
            raise ExportError(f"exporter must be 'dynamo' or 'torchscript', got {self.exporter!r}")
        if self.batch < 1:
            raise ExportError(f"batch must be >= 1, got {self.batch}")
        if self.exporter == "dynamo" and self.opset < 18:
            raise ExportError(f"the dynamo exporter writes opset 18 or newer, got opset {self.opset}; use "
                              "--exporter torchscript for opsets 7..17")
        if self.fp16_io and not self.fp16:
            raise ExportError("--fp16-io needs --fp16 (fp16_io: fp16 input and outputs of an fp16 model)")
        if self.target not in TARGETS:
            raise ExportError(f"target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.winograd not in WINOGRAD_MODES:
            raise ExportError(f"winograd must be one of {', '.join(WINOGRAD_MODES)}, got {self.winograd!r}")


# An export's optional graph rewrite: edits the BN-folded model in place before tracing and returns the
# featx.* metadata entries that describe what it did (featx.accel's Winograd conversion is one).
GraphRewrite = Callable[[nn.Module, ExportSettings, Callable[[str], None]], dict[str, str]]


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


def min_input_size(model: nn.Module) -> int:
    """The coarsest stride, or more where the family's unpadded convs need it (Inception-v3: 75)."""
    backbone = getattr(model, "backbone", model)  # a composite or a classifier: its backbone sets the minimum
    if not isinstance(backbone, FeatureExtractor):
        return 32
    return max([info.stride for info in backbone.stage_infos] + [backbone.min_input_size])


def _value_info(values) -> list[dict]:
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
    rewrite: Optional[GraphRewrite] = None,
) -> ExportResult:
    """Export a catalogue model (name) or a model config dict to ``path``.

    The model is built with ``torch.manual_seed(seed)`` so a random-init export can be rebuilt
    for parity. Writes atomically: on any failure no file exists under ``path``. ``rewrite`` edits the
    BN-folded model before tracing (see ``GraphRewrite``); without one the graph is plain.
    """
    settings = settings or ExportSettings()
    start = time.perf_counter()
    cfg = model_config(model)
    path = Path(path)
    settings.validate()
    if settings.winograd != "off" and rewrite is None:
        raise ExportError(f"winograd={settings.winograd!r} is featx.accel's CPU rewrite: export with "
                          "featx.accel.export_onnx_tuned (featx export --winograd auto), or set winograd='off'")
    model = build_from_config(cfg, seed)
    minimum = min_input_size(model)
    if settings.static_shape is not None:
        h, w = settings.static_shape
        if h < minimum or w < minimum:
            raise ExportError(
                f"static shape {h}x{w} is too small for {cfg['type']}: height and width must be at least "
                f"{minimum} (its coarsest backbone stride), e.g. --static 800 1216"
            )
    # the same inference path as eager: BatchNorm folded into the convolutions before tracing
    net = prepare_for_inference(model, inplace=True)
    rewritten = rewrite(net, settings, log) if rewrite is not None else {}
    infos = list(net.feature_info)
    out_names = [f.name.lower() for f in infos]
    if settings.static_shape is not None:
        sample = torch.rand(settings.batch, input_channels(net), h, w)
    else:
        # batch 2 and distinct H/W, so the tracer specializes none of them to a constant
        sample = torch.rand(2, input_channels(net), 320, 352)

    with atomic_path(path) as tmp:
        log(f"exporting {cfg['type']} ({settings.exporter}, opset {settings.opset}, {settings.name}) ...")
        try:
            with heartbeat(log, f"tracing and converting with torch.onnx ({settings.exporter})"):
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
        metadata = {**export_metadata(cfg, net, settings, seed, sample, minimum, settings.exporter), **rewritten}
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


def dynamic_input_shapes() -> tuple[dict, ...]:
    """torch.export's ``dynamic_shapes`` for featx's one input: batch, height and width dynamic, their ranges as
    torch infers them (positional: forward's first argument, whatever its name)."""
    dynamic = torch.export.Dim.DYNAMIC
    return ({0: dynamic, 2: dynamic, 3: dynamic},)


def export_metadata(cfg: dict, net: nn.Module, settings: ExportSettings, seed: int, sample: torch.Tensor,
                    minimum: int, exporter: str) -> dict[str, str]:
    """The ``featx.*`` entries every featx export carries (values are strings, JSON where structured): the model
    config, weights or init seed, levels (name, output, stride, channels), input description, precision, exporter,
    target, static shape and featx version."""
    infos = list(net.feature_info)
    weights = cfg.get("weights")
    return {
        "featx.version": __version__,
        "featx.model_config": json.dumps(cfg, default=str),
        "featx.init_seed": str(seed),
        "featx.weights": str(weights) if weights is not None else f"none (random init, seed {seed})",
        "featx.levels": json.dumps([{"name": f.name, "output": f.name.lower(), "stride": f.stride,
                                     "channels": f.channels} for f in infos]),
        "featx.input": json.dumps(input_description(net, minimum)),
        "featx.precision": "fp16" if settings.fp16 else "fp32",
        "featx.io_precision": "fp16" if settings.fp16 and settings.fp16_io else "fp32",
        "featx.exporter": exporter,
        "featx.target": settings.target,
        "featx.static_shape": json.dumps(list(sample.shape) if settings.static_shape else None),
    }


def input_description(net: nn.Module, minimum: int) -> dict:
    """What the exported model takes: layout, colour, scale and normalization. The normalization is
    the model's own when it records one (a fine-tuned classifier), ImageNet's for RGB backbones (their
    torchvision/timm weights expect it), and unknown (None) otherwise."""
    channels = input_channels(net)
    rgb = channels == 3
    return {"name": "input", "layout": "NCHW", "channels": channels, "color": "RGB" if rgb else "gray" if channels == 1
            else f"{channels} channels", "scale": "0..1",
            "mean": list(getattr(net, "mean", IMAGENET_MEAN if rgb else None) or []) or None,
            "std": list(getattr(net, "std", IMAGENET_STD if rgb else None) or []) or None, "min_size": minimum}


class _Float16(nn.Module):
    """fp16 weights and compute; float32 input and outputs unless ``io_fp16`` (casts at the edges)."""

    def __init__(self, net: nn.Module, io_fp16: bool) -> None:
        super().__init__()
        self.net = net.half()
        self.io_fp16 = io_fp16
        self.feature_info = net.feature_info

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = as_output_tuple(self.net(x.half()))
        return outs if self.io_fp16 else tuple(o.float() for o in outs)


def _run_exporter(net: nn.Module, sample: torch.Tensor, path: Path, out_names: list[str], s: ExportSettings) -> None:
    if s.exporter == "dynamo":
        shapes = None
        if s.static_shape is None:
            shapes = dynamic_input_shapes()
        # the exporter narrates its passes on stdout; keep the tool's output to its own summary
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(net, (sample,), str(path), dynamo=True, input_names=["input"], output_names=out_names,
                              dynamic_shapes=shapes, opset_version=s.opset, external_data=False, optimize=True)
    else:
        axes = None
        if s.static_shape is None:
            axes = {"input": {0: "batch", 2: "height", 3: "width"}}
            axes.update({n: {0: "batch", 2: f"{n}_height", 3: f"{n}_width"} for n in out_names})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (sample,), str(path), dynamo=False, input_names=["input"], output_names=out_names,
                              dynamic_axes=axes, opset_version=s.opset)


def _name_dynamic_dims(proto) -> None:
    """Rename the exporter's symbols (``s77``) to ``batch``/``height``/``width`` in every shape."""
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
        import onnxslim  # optional (--simplify): not a featx dependency
    except ImportError:
        raise ExportError("--simplify needs onnxslim: pip install onnxslim") from None
    return onnxslim.slim(proto)


def load_profile(name: str) -> ExportSettings:
    """``ExportSettings`` from a shipped profile name (``"static_fp32"``) or a profile file's path. A profile is
    read as data (:func:`featx.config_text.read_config_data`): ``name = literal`` lines only, nothing in it is run."""
    path = Path(name) if name.endswith(".py") else PROFILES_DIR / f"{name}.py"
    if not path.is_file():
        raise ValueError(f"unknown export profile {name!r}{did_you_mean(name, list_profiles())}; "
                         f"shipped: {', '.join(list_profiles())}, or a path to a .py profile")
    values = read_config_data(path, "profile")  # a profile is data: `name = literal` lines, nothing run
    fields = set(ExportSettings.__dataclass_fields__)
    unknown = set(values) - fields
    if unknown:
        raise ValueError(f"profile {path} has unknown keys {sorted(unknown)}; allowed: {sorted(fields)}")
    settings = ExportSettings(**values)
    if settings.static_shape is not None:
        settings.static_shape = tuple(settings.static_shape)
    return settings
