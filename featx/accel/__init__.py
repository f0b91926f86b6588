"""Opt-in speed for particular hardware: convolutions as Winograd F(4x4)/F(6x6) where timed faster on this CPU,
OpenVINO's planar-kernel hint, the int8 runtime chosen by timing both, and on a GPU the memory format, CUDA
graphs and torch.compile chosen by timing them (``optimize_for_gpu``).

Nothing in featx's core imports this package: the core's models, ``optimize_for_inference`` and exports are
plain and the same on every machine. Ask for these layers explicitly:

>>> from featx import accel
>>> fast = accel.optimize_for_cpu(model, winograd="auto")             # PyTorch eager on this CPU
>>> accel.export_onnx_tuned("ResNet50FPN", "r50.onnx")               # featx export --winograd auto
>>> accel.export_openvino_tuned("ResNet50FPN", "r50.xml")            # ... --format openvino --winograd auto
>>> accel.export_int8_measured(cfg, "r50.onnx", settings, "photos/")  # ... --int8 --runtime auto
>>> run, choice = accel.optimize_for_gpu(model.cuda(), (8, 3, 800, 1216), "fp16")  # never slower than eager

Every choice made by measuring is cached per CPU, software versions and thread count
(``$FEATX_CACHE_DIR/choices.json``) and stored in the exported file's metadata.
"""
import warnings
from typing import Any

from featx.accel.export import CPU_SETTINGS, export_onnx_tuned, export_openvino_tuned, winograd_rewrite
from featx.accel.gpu import GpuChoice, optimize_for_gpu
from featx.accel.int8 import export_int8_measured
from featx.accel.optimize import apply_winograd, optimize_for_cpu
from featx.accel.tuning import WinogradDecision, confirm_on_whole_model, decide_winograd

__all__ = ["CPU_SETTINGS", "export_onnx_tuned", "export_openvino_tuned", "winograd_rewrite", "export_int8_measured",
           "apply_winograd", "optimize_for_cpu", "WinogradDecision", "confirm_on_whole_model", "decide_winograd",
           "GpuChoice", "optimize_for_gpu"]

# the names these had when they shared the core's (featx.deploy's export_onnx, featx.inference's optimize_for_inference)
_OLD_NAMES = {"export_onnx": "export_onnx_tuned", "export_openvino": "export_openvino_tuned",
              "optimize_for_inference": "optimize_for_cpu"}


def __getattr__(name: str) -> Any:
    if name in _OLD_NAMES:
        warnings.warn(f"featx.accel.{name} is featx.accel.{_OLD_NAMES[name]} now (featx's core has its own {name}); "
                      "the old name will be removed", DeprecationWarning, stacklevel=2)
        return globals()[_OLD_NAMES[name]]
    raise AttributeError(f"module 'featx.accel' has no attribute {name!r}")
