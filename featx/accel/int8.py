"""The int8 runtime chosen by measuring: ONNX Runtime's QDQ file and NNCF's IR both built, timed on this CPU.

``export_int8_measured(...)`` is :func:`featx.deploy.int8.export_int8` with ``runtime="auto"``: both int8 files
are built once, each timed in its own runtime on a calibration-size input (median after warm-up, the runs
interleaved), and the faster kept under the usual name. The choice and both timings are cached per CPU,
versions, threads, model and input size (:mod:`featx.accel.choices`), logged, and stored in the file's metadata
(``featx.int8_choice``). NNCF-only options (``max_drop``, the first-layer overflow fix) make it OpenVINO
without measuring.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from featx.accel.choices import cached_choice, store_choice
from featx.accel.tuning import TIMING_METHOD
from featx.cpu import cpu_info
from featx.deploy.int8 import Int8Result, add_metadata, export_int8, int8_path, resolve_int8_runtime
from featx.deploy.metadata import read_metadata
from featx.deploy.onnx_export import ExportSettings
from featx.deploy.openvino_export import save_ir
from featx.deploy.runtimes import open_session
from featx.io import atomic_path, scratch_dir
from featx.timing import interleaved_medians
from featx.version import software_versions

__all__ = ["export_int8_measured", "time_files"]


def time_files(paths: dict[str, Path], channels: int, size: tuple[int, int], threads: int,
               repeats: int = 7) -> dict[str, float]:
    """Median ms per file (runtime name -> path), the runs interleaved so machine drift weighs on all alike."""
    sessions = {name: open_session(path, "cpu", threads) for name, path in paths.items()}
    x = np.random.default_rng(0).standard_normal((1, channels, *size)).astype(np.float32)
    medians = interleaved_medians({name: (lambda s=s: s.run(x)) for name, s in sessions.items()}, repeats)
    return {name: round(ms, 2) for name, ms in medians.items()}


def _install(built: Path, final: Path) -> None:
    """Copy the built int8 file (and an IR's .bin) to its final name, atomically."""
    if final.suffix == ".xml":
        import openvino as ov  # the optional `openvino` extra

        save_ir(ov.Core().read_model(str(built)), final)
    else:
        with atomic_path(final) as tmp:
            tmp.write_bytes(built.read_bytes())


def export_int8_measured(model_cfg: dict, fp32_path: Union[str, Path], settings: ExportSettings,
                         calib: Union[str, Path], calib_size: tuple[int, int] = (512, 512), count: int = 32,
                         method: str = "percentile", max_drop: Optional[float] = None, seed: int = 0,
                         overflow_fix: str = "auto", log: Any = print) -> Int8Result:
    """The int8 companion of ``fp32_path`` in the runtime measured faster on this CPU (see the module docstring)."""
    runtime, _ = resolve_int8_runtime("auto", max_drop, overflow_fix)
    options = dict(calib_size=calib_size, count=count, method=method, max_drop=max_drop, seed=seed,
                   overflow_fix=overflow_fix, log=log)
    if runtime != "auto":  # NNCF-only options: OpenVINO, nothing to measure
        return export_int8(model_cfg, fp32_path, settings, calib, runtime=runtime, **options)
    start = time.perf_counter()
    cpu, threads = cpu_info(), torch.get_num_threads()
    channels = int((read_metadata(fp32_path).get("input") or {}).get("channels") or 3)
    key = (f"int8-runtime|{cpu.key}|{software_versions()}|threads {threads}|{TIMING_METHOD}|{model_cfg.get('type')}|"
           f"{calib_size[0]}x{calib_size[1]}")
    cached = cached_choice(key)
    if cached is not None:
        log(f"int8 runtime: {cached['runtime']} (measured before on {cpu.model}: {cached['timings_ms']})")
        result = export_int8(model_cfg, fp32_path, settings, calib, runtime=cached["runtime"], **options)
        choice = dict(cached, cached=True)
    else:
        with scratch_dir() as tmp:
            built = {rt: export_int8(model_cfg, fp32_path, settings, calib, runtime=rt,
                                     out=Path(tmp) / f"int8_{rt}{'.xml' if rt == 'openvino' else '.onnx'}", **options)
                     for rt in ("onnxruntime", "openvino")}
            timings = time_files({rt: Path(r.path) for rt, r in built.items()}, channels, tuple(calib_size), threads)
            runtime = min(timings, key=timings.get)
            choice = {"runtime": runtime, "timings_ms": timings, "input": [1, channels, *calib_size],
                      "threads": threads, "cpu": cpu.describe()}
            store_choice(key, choice)
            log(f"int8 runtime: {runtime} (measured now on {cpu.model}, 1x{channels}x{calib_size[0]}x{calib_size[1]}: "
                + ", ".join(f"{rt} {ms:.1f} ms" for rt, ms in timings.items()) + ")")
            final = int8_path(fp32_path, runtime)
            _install(Path(built[runtime].path), final)
            result = built[runtime]
            result.path = str(final)
    add_metadata(Path(result.path), "featx.int8_choice", json.dumps(choice))
    result.choice, result.seconds = choice, time.perf_counter() - start
    return result
