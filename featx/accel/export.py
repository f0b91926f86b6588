"""Exports for a CPU runtime with the opt-in rewrites: Winograd convolutions, and OpenVINO's planar-kernel hint.

``export_onnx`` / ``export_openvino`` are :func:`featx.deploy.onnx_export.export_onnx` /
:func:`featx.deploy.openvino_export.export_openvino` with :func:`winograd_rewrite` for the file's runtime
(ONNX Runtime, OpenVINO): with ``settings.winograd == "auto"`` the convolutions measured faster as Winograd
in that runtime on this CPU, at the static input size when the export has one (map sizes change the verdict)
or else at 512x512. The decision and its timings go into the file's metadata (``featx.winograd_decision``).
An OpenVINO IR also gets the planar-kernel hint on its Winograd input transforms where the whole-model check
measured it faster (:mod:`featx.accel.ir_hints`).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Optional, Union

from torch import nn

from featx.accel.ir_hints import PLANAR_INPUT_PRIORITY, prefer_planar_winograd_input
from featx.accel.optimize import apply_winograd
from featx.accel.tuning import DEFAULT_TUNING_SIZE
from featx.deploy.onnx_export import ExportResult, ExportSettings, GraphRewrite
from featx.deploy.onnx_export import export_onnx as export_plain_onnx
from featx.deploy.openvino_export import OpenVINOExportResult
from featx.deploy.openvino_export import export_openvino as export_plain_openvino
from featx.errors import ExportError

__all__ = ["winograd_rewrite", "export_onnx_tuned", "export_openvino_tuned", "CPU_SETTINGS"]

# what featx.accel's exports do without settings: a CPU file with the convolutions measured faster as Winograd
CPU_SETTINGS = ExportSettings(target="cpu", winograd="auto")


def winograd_rewrite(runtime: str) -> GraphRewrite:
    """The export rewrite that converts convolutions to Winograd as ``settings.winograd`` says, for ``runtime``
    ("onnxruntime" or "openvino"), and records what it did (``featx.winograd_convs``, ``featx.winograd_decision``)."""

    def rewrite(net: nn.Module, settings: ExportSettings, log: Callable[[str], None]) -> dict[str, str]:
        if settings.winograd != "off" and settings.target in ("cuda", "tensorrt"):
            raise ExportError(f"Winograd convolutions are timed for a CPU runtime; a {settings.target} target keeps "
                              "direct convolutions (--winograd off)")
        if settings.winograd != "off" and settings.fp16:
            raise ExportError("Winograd convolutions are for fp32 exports (the transforms amplify fp16 rounding); "
                              "drop --fp16 or use --winograd off")
        decision = apply_winograd(net, settings.winograd, runtime, tuple(settings.static_shape or DEFAULT_TUNING_SIZE))
        if decision is not None:
            log(decision.summary())
        described = (decision.to_dict() if decision is not None else
                     {"set": {"off": "off", "all": "on (128..256 channels)"}.get(settings.winograd, settings.winograd)})
        # a graph with Winograd MatMuls was timed on, and is for, a CPU runtime: it says so whatever was asked
        target = {"featx.target": "cpu"} if net.winograd_convs and settings.target == "any" else {}
        return {"featx.winograd_convs": str(net.winograd_convs), "featx.winograd_decision": json.dumps(described),
                **target}

    return rewrite


def export_onnx_tuned(model: Union[str, dict], path: Union[str, Path], settings: Optional[ExportSettings] = None,
                seed: int = 0, log: Any = print) -> ExportResult:
    """An ONNX export for ONNX Runtime on this CPU (see the module docstring); settings default to
    ``CPU_SETTINGS``."""
    return export_plain_onnx(model, path, settings or dataclasses.replace(CPU_SETTINGS), seed, log,
                             rewrite=winograd_rewrite("onnxruntime"))


def _planar_hint_editor(log: Callable[[str], None]) -> Callable[[Path, dict], None]:
    """The IR edit that hints the Winograd input transforms where the export's whole-model check measured that
    faster (its ``featx.winograd_decision``), and logs how many carry the hint."""

    def edit(xml: Path, metadata: dict) -> None:
        whole_model = json.loads(metadata.get("featx.winograd_decision", "{}")).get("whole_model") or {}
        if not (whole_model.get("planar_input") and whole_model.get("keep", False)):
            return
        hints = prefer_planar_winograd_input(xml)
        others = hints.transforms - hints.kept
        untagged = (f" ({others} {'other has' if others == 1 else 'others have'} no such kernel on this CPU and "
                    f"{'keeps' if others == 1 else 'keep'} OpenVINO's own)" if others else "")
        log(f"OpenVINO hint: {hints.kept} of {hints.transforms} Winograd input transforms on a planar jit kernel "
            f"({PLANAR_INPUT_PRIORITY}){untagged}")

    return edit


def export_openvino_tuned(model: Union[str, dict], path: Union[str, Path], settings: Optional[ExportSettings] = None,
                    seed: int = 0, log: Any = print) -> OpenVINOExportResult:
    """An OpenVINO IR for this CPU (see the module docstring); settings default to ``CPU_SETTINGS``."""
    return export_plain_openvino(model, path, settings or dataclasses.replace(CPU_SETTINGS), seed, log,
                                 rewrite=winograd_rewrite("openvino"), edit_ir=_planar_hint_editor(log))
