"""int8 ONNX: static quantization with ONNX Runtime's tools, calibrated on real images.

``quantize_onnx(fp32_onnx, out, calib_folder)`` runs ONNX Runtime's pre-processing (shape
inference, graph optimization), calibrates activation ranges on images from a folder
(preprocessed as the model expects: resized, ImageNet-normalized), and writes a QDQ model with
per-channel int8 weights and uint8 activations. The featx metadata is carried over with
``featx.precision = "int8"``, so ``featx parity`` applies the int8 gate.

Without VNNI, x86 CPUs multiply u8 activations by s8 weights with VPMADDUBSW, whose 16-bit sums of two
products saturate (255 x 127 x 2 > 32767); VNNI's VPDPBUSD accumulates in 32 bits. Both int8 paths
guard against it as their tools advise, chosen for the CPU that quantizes (``overflow_fix``, one of
``OVERFLOW_FIXES``; "auto": "enable" without VNNI, "disable" with it): ONNX Runtime's ``reduce_range``
(its documentation: ``reduce_range=True`` on x86 CPUs without VNNI) and NNCF's overflow fix both
quantize the weights to 7 bits (|w| <= 64: 255 x 64 x 2 < 32767), so a file made with the fix gets the
same integer sums with VNNI and without. A file made without it on a VNNI machine warns when opened on a CPU
without VNNI (:func:`featx.deploy.runtimes.int8_saturation_risk`).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import onnx

from featx.cpu import cpu_info
from featx.deploy.metadata import read_metadata
from featx.errors import QuantizationError
from featx.images import IMAGENET_MEAN, IMAGENET_STD, expand_image_paths, load_image, resize_normalize
from featx.io import atomic_path, scratch_dir
from featx.options import CALIBRATION_METHODS, OVERFLOW_FIXES

__all__ = ["QuantizeResult", "calibration_inputs", "quantization_source", "quantize_onnx", "CALIBRATION_METHODS",
           "OVERFLOW_FIXES", "overflow_fix_for_this_cpu", "resolve_overflow_fix"]



def overflow_fix_for_this_cpu() -> str:
    """``"enable"`` without VNNI (u8 x s8 products can saturate there), ``"disable"`` with it."""
    return "disable" if cpu_info().vnni else "enable"


def resolve_overflow_fix(asked: str) -> tuple[str, str]:
    """The overflow fix to quantize with for ``asked`` (one of ``OVERFLOW_FIXES``), and why, for the log."""
    if asked not in OVERFLOW_FIXES:
        raise ValueError(f"overflow_fix must be one of {OVERFLOW_FIXES}, got {asked!r}")
    if asked != "auto":
        return asked, "as asked"
    fix = overflow_fix_for_this_cpu()
    return fix, f"{'no ' if fix == 'enable' else ''}VNNI on {cpu_info().model}"


@dataclass
class QuantizeResult:
    path: str
    size_mb: float
    images: int
    calib_size: tuple[int, int]
    method: str
    seconds: float
    overflow_fix: str  # "enable": 7-bit weights (ONNX Runtime's reduce_range); "disable": 8-bit


def calibration_inputs(folder: Union[str, Path], size: tuple[int, int], count: int,
                       mean: Sequence[float], std: Sequence[float], channels: int = 3) -> list[np.ndarray]:
    """Up to ``count`` images found under ``folder`` (an ImageFolder or any folder of images),
    chosen evenly over the sorted list, as ``(1, channels, H, W)`` float32 arrays: RGB (or gray for
    one channel), resized to ``size``, scaled to 0..1 and normalized. Unreadable files are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"calibration folder not found: {folder}")
    paths = expand_image_paths([folder])
    if not paths:
        raise ValueError(f"no images under {folder} to calibrate on")
    if len(paths) > count:  # spread over classes: an even stride through the sorted list
        paths = [paths[int(i * len(paths) / count)] for i in range(count)]
    out = []
    for p in paths:
        try:
            image = load_image(p)
        except ValueError:  # unreadable: skipped, as training does
            continue
        if channels == 1:
            image = image.mean(0, keepdim=True)
        out.append(resize_normalize(image, size, mean, std).unsqueeze(0).numpy().astype(np.float32))
    if not out:
        raise ValueError(f"none of the images under {folder} could be read")
    return out


def quantization_source(fp32_path: Union[str, Path], calib_folder: Union[str, Path], calib_size: tuple[int, int],
                        count: int) -> tuple[dict, list[np.ndarray]]:
    """What every int8 path starts from: the fp32 export's metadata (checked: fp32, direct convolutions)
    and its calibration inputs, preprocessed as the file says its input is."""
    meta = read_metadata(fp32_path)
    if meta.get("precision", "fp32") != "fp32":
        raise QuantizationError(f"{fp32_path} is {meta.get('precision')}; int8 quantization starts from an fp32 export")
    if int(meta.get("winograd_convs", 0)):
        # the Winograd transform domain has a wider, channel-mixed range than the conv's activations;
        # int8 per-tensor scales there lose the accuracy the direct convolutions keep
        raise QuantizationError(f"{fp32_path} has {meta['winograd_convs']} Winograd convolutions; quantize an export "
                                "made without them (featx export --winograd off, the default)")
    norm = meta.get("input") or {}
    channels = int(norm.get("channels") or 3)
    inputs = calibration_inputs(calib_folder, calib_size, count, norm.get("mean") or IMAGENET_MEAN[:channels],
                                norm.get("std") or IMAGENET_STD[:channels], channels)
    return meta, inputs


def quantize_onnx(fp32_path: Union[str, Path], out_path: Union[str, Path], calib_folder: Union[str, Path],
                  calib_size: tuple[int, int] = (512, 512), count: int = 32, method: str = "percentile",
                  overflow_fix: str = "auto", log: Any = print) -> QuantizeResult:
    """Write a statically quantized (QDQ, per-channel int8 weights) copy of ``fp32_path``. ``overflow_fix``
    "enable" quantizes the weights to 7 bits (``reduce_range``), "disable" to 8; "auto" is this CPU's choice
    (see the module docstring). NNCF's "first_layer_only" has no ONNX Runtime counterpart."""
    # ONNX Runtime is one of two exclusive extras (onnxruntime / onnxruntime-gpu): imported on use
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {CALIBRATION_METHODS}, got {method!r}")
    fix, why = resolve_overflow_fix(overflow_fix)
    if fix == "first_layer_only":
        raise ValueError("ONNX Runtime's reduce_range takes 7-bit weights in every layer or none: overflow fix "
                         "first_layer_only is NNCF's (use enable, or the openvino runtime)")
    start = time.perf_counter()
    meta, inputs = quantization_source(fp32_path, calib_folder, calib_size, count)
    log(f"calibrating on {len(inputs)} images from {calib_folder} at {calib_size[0]}x{calib_size[1]} ({method}; "
        f"{'7' if fix == 'enable' else '8'}-bit weights, overflow fix {fix}: {why}) ...")

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(inputs)

        def get_next(self) -> Optional[dict]:
            x = next(self._it, None)
            return None if x is None else {"input": x}

    out_path = Path(out_path)
    with scratch_dir() as tmp, atomic_path(out_path) as final:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        calib = {"percentile": CalibrationMethod.Percentile, "minmax": CalibrationMethod.MinMax,
                 "entropy": CalibrationMethod.Entropy}[method]
        quantized = Path(tmp) / "int8.onnx"
        quantize_static(str(pre), str(quantized), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=fix == "enable", activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=calib,
                        extra_options={"CalibPercentile": 99.99, "CalibTensorRangeSymmetric": False},
                        calibration_providers=["CPUExecutionProvider"])
        proto = onnx.load(str(quantized))
        props = {p.key: p.value for p in onnx.load(str(fp32_path), load_external_data=False).metadata_props}
        props["featx.precision"] = "int8"
        props["featx.int8"] = json.dumps({"format": "QDQ", "activations": "uint8",
                                          "weights": f"int8 per-channel{', 7-bit range' if fix == 'enable' else ''}",
                                          "overflow_fix": fix, "cpu": cpu_info().describe(),
                                          "calibration": {"method": method, "images": len(inputs),
                                                          "folder": str(calib_folder), "size": list(calib_size)}})
        del proto.metadata_props[:]
        for k, v in props.items():
            proto.metadata_props.add(key=k, value=v)
        onnx.save(proto, str(final))
        onnx.checker.check_model(str(final))
        size_mb = final.stat().st_size / 1e6
    return QuantizeResult(str(out_path), size_mb, len(inputs), tuple(calib_size), method,
                          time.perf_counter() - start, fix)
