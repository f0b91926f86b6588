"""The description an exported file carries (``featx.*`` ONNX metadata), and the model it names.

A featx export records its model config, weights, init seed, levels, strides, channels and input
normalization, so parity can rebuild the same model. A model file is untrusted input: it is rebuilt
by :func:`featx.models.build_described_model` (nothing fetched, nothing written; weights used only
when already on this machine), and anything else needs the user to say which weights to use.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Union

import onnx
from torch import nn

from featx.deploy.pt2_archive import pt2_precision, read_pt2_metadata
from featx.errors import ParityError, WeightsError
from featx.models import build_described_model

__all__ = ["read_metadata", "ir_featx_info", "model_from_metadata", "graph_precision", "check_metadata", "PRECISIONS"]

PRECISIONS = ("fp32", "fp16", "int8")  # what a featx export can be; TF32 is a way to run fp32, not a file's precision
# ONNX ops of a quantized graph (QDQ or integer ops)
_INT8_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
             "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul"}


def read_metadata(path: Union[str, Path]) -> dict[str, Any]:
    """The ``featx.*`` metadata of an exported file (ONNX ``metadata_props`` or an OpenVINO IR's
    ``rt_info["featx"]``), JSON values decoded, prefix dropped."""
    path = Path(path)
    if path.is_dir():
        raise ParityError(f"{path} is a folder; expected an .onnx file, an OpenVINO .xml or a .pt2")
    if path.suffix == ".xml":
        return _read_ir_metadata(path)
    if path.suffix == ".pt2":
        return read_pt2_metadata(path)
    if not path.is_file():
        raise ParityError(f"ONNX file not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ParityError(f"{path} is not an ONNX model ({type(e).__name__}: {str(e)[:200]})") from None
    if not proto.graph.node:
        raise ParityError(f"{path} is not an ONNX model (no graph)")
    return {prop.key[6:]: _decode(prop.value) for prop in proto.metadata_props if prop.key.startswith("featx.")}


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _read_ir_metadata(path: Path) -> dict[str, Any]:
    import openvino as ov  # the optional `openvino` extra

    if not path.is_file() or not path.with_suffix(".bin").is_file():
        raise ParityError(f"OpenVINO IR not found: {path} and {path.with_suffix('.bin').name} are both needed")
    try:
        model = ov.Core().read_model(str(path))
    except Exception as e:
        raise ParityError(f"{path} is not an OpenVINO IR ({type(e).__name__}: {str(e)[:200]})") from None
    return ir_featx_info(model)


def ir_featx_info(model: Any) -> dict[str, Any]:
    """The ``featx.*`` entries of an OpenVINO model's runtime info (``rt_info["featx"]``), JSON values
    decoded; empty for a model featx did not write."""
    info = model.get_rt_info()
    if "featx" not in info.keys():
        return {}
    return {k: _decode(v.astype(str)) for k, v in info["featx"].items()}


def model_from_metadata(meta: dict) -> nn.Module:
    """The model an exported file describes, rebuilt offline (see the module docstring)."""
    if "model_config" not in meta:
        raise ParityError("the ONNX file has no featx metadata (not exported by featx?); pass the model to compare "
                          "with (--model)")
    try:
        return build_described_model(meta["model_config"], "the file's metadata",
                                     "pass --model and --weights PATH to compare with weights you have",
                                     int(meta.get("init_seed", 0)))
    except (WeightsError, ValueError) as e:
        raise ParityError(str(e)) from None


def graph_precision(path: Union[str, Path]) -> str:
    """The precision an exported file really computes in, read from its graph, not its metadata: ``"int8"`` when it
    quantizes (ONNX quantize/dequantize or integer ops, OpenVINO FakeQuantize), ``"fp16"`` when its float weights
    are half precision, else ``"fp32"``."""
    path = Path(path)
    if path.suffix == ".pt2":
        return pt2_precision(path)
    if path.suffix == ".xml":
        import xml.etree.ElementTree as ET

        try:
            root = ET.parse(path).getroot()
        except (ET.ParseError, OSError) as e:
            raise ParityError(f"{path} is not an OpenVINO IR ({e})") from None
        layers = list(root.iter("layer"))
        if any(layer.get("type") == "FakeQuantize" for layer in layers):
            return "int8"
        consts = [layer.find("data") for layer in layers if layer.get("type") == "Const"]
        return "fp16" if any(d is not None and d.get("element_type") == "f16" for d in consts) else "fp32"
    proto = onnx.load(str(path), load_external_data=False)
    if any(node.op_type in _INT8_OPS for node in proto.graph.node):
        return "int8"
    floats = [t.data_type for t in proto.graph.initializer
              if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)]
    return "fp16" if floats and floats.count(onnx.TensorProto.FLOAT16) * 2 > len(floats) else "fp32"


def _finite_list(value: Any, length: int, positive: bool) -> bool:
    return (isinstance(value, list) and len(value) == length
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive)
                    for v in value))


def check_metadata(meta: dict[str, Any], path: Union[str, Path], outputs: list[str], precision: str) -> None:
    """Refuse (``ParityError``) a file whose featx metadata contradicts its graph or makes no sense: a precision
    featx does not write or other than the graph's (``precision``, from :func:`graph_precision`), levels that are
    not its outputs, an input normalization that is not finite or has a non-positive std."""
    claimed = meta.get("precision", "fp32")
    if claimed not in PRECISIONS:
        raise ParityError(f"{path}: its metadata says precision {str(claimed)[:40]!r}, which featx does not write "
                          f"({', '.join(PRECISIONS)})")
    if claimed != precision:
        raise ParityError(f"{path}: its metadata says {claimed}, but its graph computes in {precision}; a file's "
                          "claim never picks the gate (pass --precision to choose one)")
    levels = meta.get("levels")
    if levels is not None:
        named = [lv.get("output") for lv in levels] if isinstance(levels, list) and all(isinstance(lv, dict) for lv in levels) else None
        if named != outputs:
            raise ParityError(f"{path}: its metadata's levels {str(levels)[:120]} are not its outputs {outputs}")
    norm = meta.get("input")
    if norm is not None:
        if not isinstance(norm, dict):
            raise ParityError(f"{path}: its metadata's input description is not a description: {str(norm)[:120]}")
        channels = norm.get("channels")
        if not (isinstance(channels, int) and 1 <= channels <= 64):
            raise ParityError(f"{path}: its metadata's input channels {str(channels)[:20]} are not 1..64")
        for key, positive in (("mean", False), ("std", True)):
            if norm.get(key) is not None and not _finite_list(norm[key], channels, positive):
                raise ParityError(f"{path}: its metadata's input {key} {str(norm[key])[:80]} is not {channels} finite "
                                  f"numbers{' above 0' if positive else ''}")
