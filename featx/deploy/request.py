"""What ``featx export`` is asked for, checked and completed before any work: the settings a profile and its
overrides give, the int8 runtime, and where the file goes.

Every rule that ties two options together lives here (not in the CLI), so Python callers and the command
refuse the same combinations with the same words.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple, Optional

from featx.deploy.int8 import resolve_int8_runtime
from featx.deploy.onnx_export import ExportSettings, load_profile

__all__ = ["export_settings", "Int8Plan", "int8_plan", "default_export_path", "FORMAT_SUFFIX"]

FORMAT_SUFFIX = {"onnx": ".onnx", "openvino": ".xml", "pt2": ".pt2", "aoti": ".pt2"}


def export_settings(profile: str = "dynamic_fp32", **overrides: Any) -> ExportSettings:
    """The settings of ``profile`` (a shipped name or a .py path) with every override that is not None applied
    (``ExportSettings`` field names), checked."""
    settings = load_profile(profile)
    unknown = set(overrides) - set(ExportSettings.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown export settings {sorted(unknown)}")
    given = {k: (tuple(v) if k == "static_shape" else v) for k, v in overrides.items() if v is not None}
    settings = dataclasses.replace(settings, **given)
    settings.validate()
    return settings


class Int8Plan(NamedTuple):
    """How an export's int8 companion is made: ``runtime`` as :func:`featx.deploy.int8.export_int8` takes it, and
    whether it is ``measured`` (both runtimes timed on this CPU: :func:`featx.accel.export_int8_measured`)."""
    runtime: str
    measured: bool


def int8_plan(settings: ExportSettings, fmt: str, int8: bool, calib: Optional[str] = None,
              runtime: Optional[str] = None, max_drop: Optional[float] = None,
              overflow_fix: str = "auto") -> Optional[Int8Plan]:
    """How an export with these options quantizes, or None without ``int8``. The runtime is the one asked for,
    else the fp32 file's own (ONNX Runtime for .onnx, OpenVINO for an IR), and NNCF-only options (``max_drop``,
    the first-layer overflow fix) make it OpenVINO; ``runtime="auto"`` is measured. Refuses options that do not go
    together, before anything is exported."""
    if not int8:
        if runtime is not None or max_drop is not None or overflow_fix != "auto":
            raise ValueError("--runtime, --max-drop and --overflow-fix choose how --int8 quantizes; add --int8")
        return None
    if fmt in ("pt2", "aoti"):
        raise ValueError("--int8 quantizes for ONNX Runtime or OpenVINO; use --format onnx or openvino")
    if not calib:
        raise ValueError("--int8 needs --calib FOLDER: static quantization calibrates on real images")
    if not Path(calib).is_dir():
        raise FileNotFoundError(f"calibration folder not found: {calib}")
    if settings.fp16:
        raise ValueError("--int8 quantizes an fp32 export; drop --fp16 (or the fp16 profile)")
    if fmt == "openvino" and runtime == "onnxruntime":
        raise ValueError("--format openvino with --int8 --runtime onnxruntime mixes runtimes; pick one")
    if runtime is None:  # NNCF's options resolve "auto" to OpenVINO, with the reason recorded in the file
        nncf_only = max_drop is not None or overflow_fix == "first_layer_only"
        runtime = "auto" if nncf_only else "openvino" if fmt == "openvino" else "onnxruntime"
    resolved, _ = resolve_int8_runtime(runtime, max_drop, overflow_fix)
    return Int8Plan(runtime, resolved == "auto")


def default_export_path(model: str, cfg: dict, settings: ExportSettings, fmt: str,
                        output: Optional[str] = None) -> Path:
    """``output`` (checked to end in the format's suffix), else ``export/<model>_<settings.name><suffix>`` when an
    ``export/`` folder is here, else ``./<model>_<settings.name><suffix>``; a checkpoint is named by its stem."""
    if fmt not in FORMAT_SUFFIX:
        raise ValueError(f"format must be one of {', '.join(FORMAT_SUFFIX)}, got {fmt!r}")
    suffix = FORMAT_SUFFIX[fmt]
    if output:
        out = Path(output)
    else:
        folder = Path("export") if Path("export").is_dir() else Path(".")
        stem = Path(model).stem if model.endswith((".pth", ".pt")) else cfg["type"].removeprefix("featx.")
        out = folder / f"{stem}_{settings.name}{suffix}"
    if out.suffix != suffix:
        raise ValueError(f"a {fmt} export must end in {suffix}, got {out}")
    return out
