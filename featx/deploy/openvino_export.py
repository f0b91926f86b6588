"""OpenVINO export (``featx export MODEL --format openvino``): an IR (``.xml`` + ``.bin``) converted by
OpenVINO's own converter from featx's ONNX export, with featx's metadata in the IR's runtime info.

The ONNX export is the one ``featx export`` writes (inference path: BN folded; dynamic batch, height
and width unless a static shape is asked for; TorchScript exporter, as the converter needs no symbolic
shapes); ``openvino.convert_model`` turns it into an
OpenVINO model, so no graph is edited by hand (the opt-in :mod:`featx.accel` may add runtime hints to the
saved IR through ``edit_ir``). Every ``featx.*`` ONNX metadata key is stored as
``rt_info["featx"][key]`` (``featx.deploy.metadata.read_metadata`` reads either format). The
weights stay fp32 (``compress_to_fp16=False``: an fp16 IR would change the numbers parity checks).
The two files are written atomically: each to a temporary name, the ``.bin`` renamed first.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

from featx.deploy.onnx_export import ExportSettings, GraphRewrite, export_onnx
from featx.errors import ExportError
from featx.io import atomic_path, scratch_dir

__all__ = ["OpenVINOExportResult", "IREdit", "export_openvino", "save_ir", "set_featx_rt_info"]

# An optional edit of a saved IR's .xml (staged, before it takes its final name), given the file's featx metadata
IREdit = Callable[[Path, dict], None]


@dataclass
class OpenVINOExportResult:
    path: str
    bin_path: str
    size_mb: float
    seconds: float
    inputs: list[dict]
    outputs: list[dict]
    metadata: dict = field(default_factory=dict)


def set_featx_rt_info(model: Any, metadata: dict[str, str]) -> None:
    """Store ``featx.*`` metadata (string values) as ``rt_info["featx"][key]``."""
    for key, value in metadata.items():
        model.set_rt_info(str(value), ["featx", key.removeprefix("featx.")])


def save_ir(model: Any, path: Union[str, Path], edit: Optional[Callable[[Path], None]] = None) -> tuple[Path, Path]:
    """Save an OpenVINO model as ``path`` (.xml) + its ``.bin``, atomically; returns both paths. ``edit``
    changes the staged .xml before it is renamed (runtime hints)."""
    import openvino as ov  # the optional `openvino` extra

    path = Path(path)
    if path.suffix != ".xml":
        raise ExportError(f"an OpenVINO IR is an .xml file (with its .bin beside it), got {path}")
    bin_path = path.with_suffix(".bin")
    with atomic_path(path) as xml_tmp, atomic_path(bin_path) as bin_tmp:
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}.") as tmp:
            staged = Path(tmp) / "model.xml"
            ov.save_model(model, str(staged), compress_to_fp16=False)
            if edit is not None:
                edit(staged)
            os.replace(staged.with_suffix(".bin"), bin_tmp)  # an .xml finds its .bin by its own stem
            os.replace(staged, xml_tmp)
    return path, bin_path


def _ports(ports) -> list[dict]:
    return [{"name": p.get_any_name(), "dtype": p.get_element_type().get_type_name(), "shape": str(p.get_partial_shape())}
            for p in ports]


def export_openvino(model: Union[str, dict], path: Union[str, Path], settings: Optional[ExportSettings] = None,
                    seed: int = 0, log: Any = print, rewrite: Optional[GraphRewrite] = None,
                    edit_ir: Optional[IREdit] = None) -> OpenVINOExportResult:
    """Export a catalogue model (name) or a model config to an OpenVINO IR at ``path`` (.xml). ``rewrite`` goes
    to the ONNX export (:func:`featx.deploy.onnx_export.export_onnx`); ``edit_ir`` edits the saved .xml."""
    import openvino as ov  # the optional `openvino` extra

    # the intermediate ONNX only feeds OpenVINO's converter, which infers every shape itself: the TorchScript
    # exporter writes it ~4x faster than dynamo (ResNet50FPN: 31 s -> 12 s for the whole IR export)
    settings = dataclasses.replace(settings or ExportSettings(), exporter="torchscript")
    if settings.fp16:
        raise ExportError("an OpenVINO IR is exported in fp32 (OpenVINO's CPU plugin picks its own precisions); drop --fp16")
    start = time.perf_counter()
    path = Path(path)
    if path.suffix != ".xml":
        raise ExportError(f"an OpenVINO IR is an .xml file (with its .bin beside it), got {path}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {path.parent}")
    with scratch_dir() as tmp:  # the ONNX file only feeds the converter
        onnx_path = Path(tmp) / "model.onnx"
        onnx_result = export_onnx(model, onnx_path, settings, seed=seed, log=log, rewrite=rewrite)
        log("converting to OpenVINO IR (openvino.convert_model) ...")
        try:
            ov_model = ov.convert_model(str(onnx_path))
        except Exception as e:
            raise ExportError(f"openvino.convert_model failed: {type(e).__name__}: {str(e)[:400]}") from e
    metadata = dict(onnx_result.metadata)
    metadata["featx.format"] = "openvino"
    metadata["featx.openvino_version"] = ov.get_version()
    set_featx_rt_info(ov_model, metadata)
    xml, bin_path = save_ir(ov_model, path, edit=(lambda staged: edit_ir(staged, metadata)) if edit_ir else None)
    return OpenVINOExportResult(str(xml), str(bin_path), (xml.stat().st_size + bin_path.stat().st_size) / 1e6,
                                time.perf_counter() - start, _ports(ov_model.inputs), _ports(ov_model.outputs), metadata)
