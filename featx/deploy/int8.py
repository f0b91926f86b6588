"""int8 exports for the CPU at hand: ONNX Runtime's static QDQ or OpenVINO/NNCF, chosen by measuring.

``export_int8(model, fp32_path, settings, calib)`` writes ``<stem>_int8.onnx`` (ONNX Runtime) or
``<stem>_int8.xml`` (OpenVINO) beside the fp32 export. With ``runtime="auto"`` both are built once,
each timed in its own runtime on a calibration-size input (median after warm-up), and the faster kept;
the choice and both timings are cached per CPU, versions, threads, model and input size
(``featx.choices``), logged, and stored in the file's metadata (``featx.int8_choice``). int8 always
quantizes direct (non-Winograd) convolutions; a direct export is made when the fp32 file has Winograd.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import onnx
import torch

from featx.choices import cached_choice, store_choice
from featx.cpu import cpu_info
from featx.deploy.metadata import read_metadata
from featx.deploy.onnx_export import ExportSettings, export_onnx
from featx.deploy.openvino_export import export_openvino, save_ir, set_featx_rt_info
from featx.deploy.openvino_int8 import quantize_openvino
from featx.deploy.quantize import OVERFLOW_FIXES, quantize_onnx
from featx.deploy.runtimes import open_session
from featx.io import atomic_path
from featx.timing import interleaved_medians
from featx.tuning import TIMING_METHOD, software_versions

__all__ = ["Int8Result", "export_int8", "resolve_int8_runtime", "INT8_RUNTIMES"]

INT8_RUNTIMES = ("auto", "onnxruntime", "openvino")


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
    direct_settings = dataclasses.replace(settings, winograd=False, fp16=False, fp16_io=False)
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
    make "auto" OpenVINO and are refused with "onnxruntime"; "enable" and "disable" apply in both runtimes
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


def _time_files(paths: dict[str, Path], channels: int, size: tuple[int, int], threads: int,
                repeats: int = 7) -> dict[str, float]:
    """Median ms per file (runtime name -> path), the runs interleaved so machine drift weighs on all alike."""
    sessions = {name: open_session(path, "cpu", threads) for name, path in paths.items()}
    x = np.random.default_rng(0).standard_normal((1, channels, *size)).astype(np.float32)
    medians = interleaved_medians({name: (lambda s=s: s.run(x)) for name, s in sessions.items()}, repeats)
    return {name: round(ms, 2) for name, ms in medians.items()}


def _add_metadata(path: Path, key: str, value: str) -> None:
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


def export_int8(model_cfg: dict, fp32_path: Union[str, Path], settings: ExportSettings, calib: Union[str, Path],
                calib_size: tuple[int, int] = (512, 512), count: int = 32, method: str = "percentile",
                runtime: str = "auto", max_drop: Optional[float] = None, seed: int = 0, overflow_fix: str = "auto",
                log: Any = print) -> Int8Result:
    """The int8 companion of the fp32 export at ``fp32_path`` (see the module docstring). ``max_drop`` is NNCF's
    (:func:`featx.deploy.openvino_int8.quantize_openvino`); ``overflow_fix`` applies in both runtimes
    (:mod:`featx.deploy.quantize`)."""
    runtime, why = resolve_int8_runtime(runtime, max_drop, overflow_fix)
    start = time.perf_counter()
    fp32_path = Path(fp32_path)
    stem = fp32_path.with_suffix("")
    cpu, threads = cpu_info(), torch.get_num_threads()
    channels = int((read_metadata(fp32_path).get("input") or {}).get("channels") or 3)
    key = (f"int8-runtime|{cpu.key}|{software_versions()}|threads {threads}|{TIMING_METHOD}|{model_cfg.get('type')}|"
           f"{calib_size[0]}x{calib_size[1]}")
    choice: dict = {"runtime": runtime, "why": why} if why else {}
    if runtime == "auto":
        cached = cached_choice(key)
        if cached is not None:
            runtime, choice = cached["runtime"], dict(cached, cached=True)
            log(f"int8 runtime: {runtime} (measured before on {cpu.model}: {cached['timings_ms']})")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        candidates = ["onnxruntime", "openvino"] if runtime == "auto" else [runtime]
        built: dict[str, Path] = {}
        images = 0
        for rt in candidates:
            direct = _direct_export(model_cfg, fp32_path, settings, rt, tmp, seed, log)
            out = (tmp / f"int8_{rt}{'.xml' if rt == 'openvino' else '.onnx'}") if runtime == "auto" else \
                stem.with_name(stem.name + "_int8" + (".xml" if rt == "openvino" else ".onnx"))
            images = _quantize(rt, direct, out, calib, tuple(calib_size), count, method, max_drop, overflow_fix, log)
            built[rt] = out
        if runtime == "auto":
            timings = _time_files(built, channels, tuple(calib_size), threads)
            runtime = min(timings, key=timings.get)
            choice = {"runtime": runtime, "timings_ms": timings, "input": [1, channels, *calib_size],
                      "threads": threads, "cpu": cpu.describe()}
            store_choice(key, choice)
            log(f"int8 runtime: {runtime} (measured now on {cpu.model}, 1x{channels}x{calib_size[0]}x{calib_size[1]}: "
                + ", ".join(f"{rt} {ms:.1f} ms" for rt, ms in timings.items()) + ")")
            final = stem.with_name(stem.name + "_int8" + (".xml" if runtime == "openvino" else ".onnx"))
            if runtime == "openvino":
                import openvino as ov  # the optional `openvino` extra

                save_ir(ov.Core().read_model(str(built[runtime])), final)
            else:
                with atomic_path(final) as t:
                    t.write_bytes(built[runtime].read_bytes())
            built[runtime] = final
        path = built[runtime]
    if choice:
        _add_metadata(path, "featx.int8_choice", json.dumps(choice))
    size = path.stat().st_size + (path.with_suffix(".bin").stat().st_size if path.suffix == ".xml" else 0)
    return Int8Result(str(path), runtime, size / 1e6, images, tuple(calib_size), time.perf_counter() - start, choice)
