"""int8 for OpenVINO with NNCF's post-training quantization, calibrated on real images.

``quantize_openvino(fp32_ir, out_ir, calib_folder)`` reads a direct (non-Winograd) fp32 IR, calibrates
on images from a folder (the same reader as the ONNX Runtime int8 path: ``calibration_inputs``) and
writes an int8 IR with featx's metadata (``precision = "int8"``), so ``featx parity`` applies the int8
gate. NNCF's overflow fix (7-bit weights in the first layer or all layers, against the saturation of
the pre-VNNI u8 x s8 instructions; :mod:`featx.deploy.quantize`) is chosen for the CPU it runs on: on,
everywhere, without VNNI; off with VNNI; ``overflow_fix`` sets it for another deployment CPU (an IR
quantized on a VNNI build machine and run on an AVX2-only one needs "enable"; opening such an IR there warns, see
:func:`featx.deploy.runtimes.open_session`). ``max_drop`` switches to NNCF's accuracy-aware quantization:
layers go back to fp32 until the mean cosine to the fp32 outputs (on held-out calibration images) drops
by at most ``max_drop``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from featx.cpu import cpu_info
from featx.deploy.openvino_export import save_ir, set_featx_rt_info
from featx.deploy.quantize import quantization_source, resolve_overflow_fix
from featx.errors import QuantizationError

__all__ = ["OpenVINOQuantizeResult", "quantize_openvino", "mean_cosine"]


@dataclass
class OpenVINOQuantizeResult:
    path: str
    size_mb: float
    images: int
    calib_size: tuple[int, int]
    overflow_fix: str
    accuracy_control: Optional[dict]
    seconds: float


def mean_cosine(outputs: list[np.ndarray], references: list[np.ndarray]) -> float:
    """Mean over levels of the cosine between flattened maps."""
    values = []
    for o, r in zip(outputs, references):
        of, rf = np.asarray(o, np.float64).ravel(), np.asarray(r, np.float64).ravel()
        values.append(float(of @ rf / max(np.linalg.norm(of) * np.linalg.norm(rf), 1e-30)))
    return float(np.mean(values))


def quantize_openvino(fp32_path: Union[str, Path], out_path: Union[str, Path], calib_folder: Union[str, Path],
                      calib_size: tuple[int, int] = (512, 512), count: int = 32, max_drop: Optional[float] = None,
                      overflow_fix: str = "auto", log: Any = print) -> OpenVINOQuantizeResult:
    """Write an NNCF int8 copy of the fp32 IR ``fp32_path`` to ``out_path`` (.xml + .bin). ``overflow_fix``:
    one of ``OVERFLOW_FIXES``; "auto" is this CPU's (see the module docstring)."""
    fix, why = resolve_overflow_fix(overflow_fix)
    import nncf  # the optional `openvino` extra
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    start = time.perf_counter()
    meta, inputs = quantization_source(fp32_path, calib_folder, calib_size, count)
    advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix(fix))
    model = ov.Core().read_model(str(fp32_path))
    log(f"NNCF: calibrating on {len(inputs)} images from {calib_folder} at {calib_size[0]}x{calib_size[1]} "
        f"(overflow fix {fix}: {why}) ...")
    control = None
    if max_drop is None:
        quantized = nncf.quantize(model, nncf.Dataset(inputs), subset_size=len(inputs), advanced_parameters=advanced)
    else:
        if len(inputs) < 4:
            raise QuantizationError("accuracy-aware quantization needs at least 4 calibration images (half validate)")
        held_out = inputs[len(inputs) // 2:]
        compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        references = [[np.asarray(v) for v in compiled(x).values()] for x in held_out]
        items = list(zip(held_out, references))

        def validate(candidate, data) -> float:
            return float(np.mean([mean_cosine(list(candidate(x).values()), refs) for x, refs in data]))

        quantized = nncf.quantize_with_accuracy_control(
            model, nncf.Dataset(inputs), nncf.Dataset(items, lambda item: item[0]), validate, max_drop=max_drop,
            subset_size=len(inputs), advanced_quantization_parameters=advanced)
        final = ov.Core().compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        control = {"metric": "mean cosine to fp32 over levels", "max_drop": max_drop,
                   "held_out_images": len(held_out), "int8": validate(final, items)}
    metadata = {f"featx.{k}": (v if isinstance(v, str) else json.dumps(v)) for k, v in meta.items()}
    metadata["featx.precision"] = "int8"
    metadata["featx.int8"] = json.dumps({"tool": f"nncf {nncf.__version__}", "format": "OpenVINO FakeQuantize",
                                         "overflow_fix": fix, "cpu": cpu_info().describe(), "accuracy_control": control,
                                         "calibration": {"images": len(inputs), "folder": str(calib_folder),
                                                         "size": list(calib_size)}})
    set_featx_rt_info(quantized, metadata)
    xml, bin_path = save_ir(quantized, out_path)
    return OpenVINOQuantizeResult(str(xml), (xml.stat().st_size + bin_path.stat().st_size) / 1e6, len(inputs),
                                  tuple(calib_size), fix, control, time.perf_counter() - start)
