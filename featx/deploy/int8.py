"""int8 exports for CPUs: ONNX Runtime's static QDQ or OpenVINO/NNCF.

``export_int8(model, fp32_path, settings, calib, runtime=...)`` writes ``<stem>_int8.onnx`` (ONNX Runtime) or
``<stem>_int8.xml`` (OpenVINO) beside the fp32 export. The runtime is the one asked for (NNCF-only options
make it OpenVINO, :func:`resolve_int8_runtime`); choosing it by timing both on this CPU is the opt-in
:func:`featx.accel.export_int8_measured`. int8 always quantizes direct (non-Winograd) convolutions; a direct
export is made when the fp32 file has Winograd.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import onnx

from featx.deploy.metadata import read_metadata
from featx.deploy.onnx_export import ExportSettings, export_onnx
from featx.deploy.openvino_export import export_openvino, save_ir, set_featx_rt_info
from featx.deploy.openvino_int8 import quantize_openvino
from featx.deploy.quantize import OVERFLOW_FIXES, quantize_onnx
from featx.io import atomic_path, scratch_dir
from featx.options import INT8_RUNTIMES

__all__ = ["Int8Result", "export_int8", "resolve_int8_runtime", "add_metadata", "int8_path", "INT8_RUNTIMES"]



@dataclass
class Int8Result:
    path: str
    runtime: str
    size_mb: float
    images: int
    calib_size: tuple[int, int]
    seconds: float
    choice: dict = field(default_factory=dict)


def _direct_export(model_cfg: dict, fp32_path: Path, settings: ExportSettings, runtime: str, tmp: Path, seed: int,
                   log: Any) -> Path:
    """A direct (non-Winograd) fp32 export for ``runtime``: the user's file when it already is one."""
    suffix = ".xml" if runtime == "openvino" else ".onnx"
    if fp32_path.suffix == suffix and not int(read_metadata(fp32_path).get("winograd_convs", 0)):
        return fp32_path
    direct = tmp / f"direct{suffix}"
    direct_settings = dataclasses.replace(settings, winograd="off", fp16=False, fp16_io=False)
    note = lambda m: log(m + f" (direct, for {runtime} int8)")  # noqa: E731
    if runtime == "openvino":
        export_openvino(model_cfg, direct, direct_settings, seed=seed, log=note)
    else:
        export_onnx(model_cfg, direct, direct_settings, seed=seed, log=note)
    return direct


def resolve_int8_runtime(runtime: str, max_drop: Optional[float] = None,
                         overflow_fix: str = "auto") -> tuple[str, Optional[str]]:
    """The int8 runtime once the quantizer options are taken into account, and why it was chosen for the user
    (``None`` when it was not): ``max_drop`` and the overflow fix "first_layer_only" are NNCF's alone, so they
    make "auto" (featx.accel's measured choice) OpenVINO and are refused with "onnxruntime"; "enable" and
    "disable" apply in both runtimes
    (:mod:`featx.deploy.quantize`). Checked before anything is exported."""
    if runtime not in INT8_RUNTIMES:
        raise ValueError(f"runtime must be one of {INT8_RUNTIMES}, got {runtime!r}")
    if overflow_fix not in OVERFLOW_FIXES:
        raise ValueError(f"overflow_fix must be one of {OVERFLOW_FIXES}, got {overflow_fix!r}")
    nncf_only = overflow_fix == "first_layer_only"
    if max_drop is None and not nncf_only:
        return runtime, None
    if runtime == "onnxruntime":
        raise ValueError("--max-drop and --overflow-fix first_layer_only are NNCF's: use --runtime openvino (or auto)")
    if runtime == "openvino":
        return runtime, None
    return "openvino", "--max-drop needs NNCF" if max_drop is not None else "--overflow-fix first_layer_only is NNCF's"


def _quantize(runtime: str, direct: Path, out: Path, calib: Union[str, Path], size: tuple[int, int], count: int,
              method: str, max_drop: Optional[float], overflow_fix: str, log: Any) -> int:
    if runtime == "openvino":
        return quantize_openvino(direct, out, calib, size, count, max_drop=max_drop, overflow_fix=overflow_fix,
                                 log=log).images
    return quantize_onnx(direct, out, calib, size, count, method, overflow_fix=overflow_fix, log=log).images


def add_metadata(path: Path, key: str, value: str) -> None:
    """Add one ``featx.*`` metadata entry to an exported file (.onnx or IR .xml), atomically."""
    if path.suffix == ".xml":
        import openvino as ov  # the optional `openvino` extra

        model = ov.Core().read_model(str(path))
        set_featx_rt_info(model, {key: value})
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:  # read_model maps the .bin: save a copy first
            staged = Path(tmp) / "m.xml"
            ov.save_model(model, str(staged), compress_to_fp16=False)
            save_ir(ov.Core().read_model(str(staged)), path)
        return
    proto = onnx.load(str(path))
    proto.metadata_props.add(key=key, value=value)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))


def int8_path(fp32_path: Union[str, Path], runtime: str) -> Path:
    """Where the int8 companion of ``fp32_path`` goes: ``<stem>_int8.onnx`` or ``<stem>_int8.xml``."""
    stem = Path(fp32_path).with_suffix("")
    return stem.with_name(stem.name + "_int8" + (".xml" if runtime == "openvino" else ".onnx"))


def export_int8(model_cfg: dict, fp32_path: Union[str, Path], settings: ExportSettings, calib: Union[str, Path],
                calib_size: tuple[int, int] = (512, 512), count: int = 32, method: str = "percentile",
                runtime: str = "onnxruntime", max_drop: Optional[float] = None, seed: int = 0,
                overflow_fix: str = "auto", log: Any = print, out: Optional[Union[str, Path]] = None) -> Int8Result:
    """The int8 companion of the fp32 export at ``fp32_path`` (see the module docstring), written to ``out``
    (default :func:`int8_path`). ``max_drop`` is NNCF's (:func:`featx.deploy.openvino_int8.quantize_openvino`);
    ``overflow_fix`` applies in both runtimes (:mod:`featx.deploy.quantize`)."""
    runtime, why = resolve_int8_runtime(runtime, max_drop, overflow_fix)
    if runtime == "auto":
        raise ValueError("runtime 'auto' (time both int8 runtimes on this CPU) is featx.accel.export_int8_measured; "
                         "pass runtime='onnxruntime' or 'openvino'")
    start = time.perf_counter()
    fp32_path = Path(fp32_path)
    path = Path(out) if out is not None else int8_path(fp32_path, runtime)
    with scratch_dir() as tmp:
        direct = _direct_export(model_cfg, fp32_path, settings, runtime, Path(tmp), seed, log)
        images = _quantize(runtime, direct, path, calib, tuple(calib_size), count, method, max_drop, overflow_fix, log)
    choice = {"runtime": runtime, "why": why} if why else {}
    if choice:
        add_metadata(path, "featx.int8_choice", json.dumps(choice))
    size = path.stat().st_size + (path.with_suffix(".bin").stat().st_size if path.suffix == ".xml" else 0)
    return Int8Result(str(path), runtime, size / 1e6, images, tuple(calib_size), time.perf_counter() - start, choice)
