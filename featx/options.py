"""The vocabulary of featx's settings: every named choice a command or function accepts, in one place that
imports nothing heavy, so ``featx --help`` can list them without loading torch.

The library modules that act on these choices import them from here.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_OPSET", "TARGETS", "WINOGRAD_MODES", "PROFILES_DIR", "list_profiles", "INT8_RUNTIMES",
           "CALIBRATION_METHODS", "OVERFLOW_FIXES", "BENCH_ENTRIES", "GPU_BENCH_ENTRIES", "PRECISIONS", "DIGITS_CONFIG",
           "RUNTIMES", "POOLS", "STORE_DTYPES", "DEVICE_KINDS", "DECODERS", "EXTRACT_DEFAULTS"]

# Opset 18: the newest the dynamo exporter targets natively; ONNX Runtime >= 1.14 runs it, as do
# TensorRT 8.6+ and OpenVINO 2023+.
DEFAULT_OPSET = 18
# what an exported file is made for, recorded as featx.target: any runtime, a CPU runtime (ONNX Runtime,
# OpenVINO), or a GPU one (ONNX Runtime's CUDA provider, TensorRT); only a CPU target may take featx.accel's rewrites
TARGETS = ("any", "cpu", "cuda", "tensorrt")
# Winograd convolutions (featx.accel): off (the plain graph), auto (those measured faster in the runtime on this
# CPU), all (every 128..256-channel 3x3 stride-1 conv)
WINOGRAD_MODES = ("off", "auto", "all")
# export profiles: small config files whose keys are ExportSettings fields
PROFILES_DIR = Path(__file__).resolve().parent / "deploy" / "profiles"
# int8 runtimes: auto times both on this CPU (featx.accel)
INT8_RUNTIMES = ("auto", "onnxruntime", "openvino")
CALIBRATION_METHODS = ("percentile", "minmax", "entropy")
# 7-bit weights against u8 x s8 saturation (featx.deploy.quantize): "auto" is this CPU's choice; then NNCF's
# OverflowFix values, of which ONNX Runtime (reduce_range: every layer or none) takes "enable" and "disable"
OVERFLOW_FIXES = ("auto", "enable", "first_layer_only", "disable")
# featx bench's entries (featx.bench); the first six run by default
BENCH_ENTRIES = ("torchvision", "timm+tv_fpn", "featx", "featx_optimized", "featx_ort", "featx_openvino", "featx_compile",
                 "featx_aoti", "featx_optimized_direct", "featx_ort_direct", "featx_openvino_direct", "featx_ort_int8",
                 "featx_openvino_int8")
# featx bench --device cuda (featx.gpu_bench): its entries and the precisions it times them at
GPU_BENCH_ENTRIES = ("torchvision", "timm+tv_fpn", "featx", "featx_optimized", "featx_compile", "featx_cuda_graph",
                     "featx_tuned", "featx_ort", "featx_trt")
# compute precisions: featx bench --device cuda times these, featx extract --precision takes them (or auto)
PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
# where a model runs (featx extract --runtime, featx.accel's measured choices)
RUNTIMES = ("torch", "onnxruntime", "openvino")
# featx extract: pooling per level, the stored dtype, where JPEGs are decoded
POOLS = ("avg", "max", "gem")
STORE_DTYPES = ("fp16", "fp32")
DEVICE_KINDS = ("auto", "cpu", "cuda")  # where something runs, or auto: featx parity --device, featx extract --decode
DECODERS = DEVICE_KINDS
# featx extract's defaults (featx.extraction.ExtractSettings and the command's arguments)
EXTRACT_DEFAULTS = {"size": 224, "pool": "avg", "gem_p": 3.0, "dtype": "fp16", "batch_size": 32, "workers": 2,
                    "runtime": "torch", "device": "cpu", "shard_batches": 16, "precision": "auto", "decode": "auto"}
# the config featx finetune-demo trains
DIGITS_CONFIG = "configs/finetune/resnet18_digits.py"


def list_profiles() -> list[str]:
    """Names of the export profiles shipped with featx."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.py"))
