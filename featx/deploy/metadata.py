"""The description an exported file carries (``featx.*`` ONNX metadata), and the model it names.

A featx export records its model config, weights, init seed, levels, strides, channels and input
normalization, so parity can rebuild the same model. A model file is untrusted input: it is rebuilt
by :func:`featx.models.build_described_model` (nothing fetched, nothing written; weights used only
when already on this machine), and anything else needs the user to say which weights to use.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union

import onnx
from torch import nn

from featx.errors import ParityError, WeightsError
from featx.models import build_described_model

__all__ = ["read_metadata", "ir_featx_info", "model_from_metadata"]


def read_metadata(path: Union[str, Path]) -> dict[str, Any]:
    """The ``featx.*`` metadata of an exported file (ONNX ``metadata_props`` or an OpenVINO IR's
    ``rt_info["featx"]``), JSON values decoded, prefix dropped."""
    path = Path(path)
    if path.is_dir():
        raise ParityError(f"{path} is a folder; expected an .onnx file or an OpenVINO .xml")
    if path.suffix == ".xml":
        return _read_ir_metadata(path)
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
