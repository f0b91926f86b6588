"""The model in its runtime (featx's inference path, ONNX Runtime or OpenVINO) and the device its input goes to."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch import nn

from featx.deploy.onnx_export import ExportSettings, export_onnx, input_description
from featx.deploy.openvino_export import export_openvino
from featx.deploy.runtimes import open_session
from featx.extraction.settings import ExtractSettings
from featx.features import as_output_tuple
from featx.inference import optimize_for_inference
from featx.models import build_from_config


def model_normalization(net: nn.Module) -> tuple[list[float], list[float]]:
    """``(mean, std)`` per input channel on a 0..1 scale: what featx's exports record as the model's input
    (its own, or ImageNet's for RGB backbones), mid-grey 0.5/0.5 where that is unknown (grayscale)."""
    spec = input_description(net, 1)
    channels = spec["channels"]
    return list(spec["mean"] or [0.5] * channels), list(spec["std"] or [0.5] * channels)


def build_runner(cfg: dict, settings: ExtractSettings, tmp: Path, model: Optional[nn.Module] = None
                 ) -> tuple[Callable[[torch.Tensor], list[torch.Tensor]], nn.Module]:
    """``(run(batch) -> the output maps, the PyTorch model)``; direct convolutions everywhere. The maps stay where
    the model ran (on the GPU for ``--device cuda``), so pooling happens there and only vectors leave it; an exported
    runtime's numpy outputs are wrapped without a copy. ``model``: ``cfg`` already built (torch runtime)."""
    model = model if model is not None else build_from_config(cfg)
    if settings.runtime == "torch":
        device = settings.input_device()  # torchrun: one GPU per process
        net = optimize_for_inference(model, inplace=False).to(device)
        precision = settings.resolved_precision()
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)

        def run(x: torch.Tensor) -> list[torch.Tensor]:
            with torch.inference_mode(), _tf32(precision == "tf32"), \
                    torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                return list(as_output_tuple(net(x.to(device, non_blocking=True))))

        return run, model
    direct = ExportSettings(exporter="torchscript")
    path = tmp / ("model.xml" if settings.runtime == "openvino" else "model.onnx")
    (export_openvino if settings.runtime == "openvino" else export_onnx)(cfg, path, direct, log=lambda m: None)
    # the same thread count as torch (--threads): processes under torchrun share the cores
    session = open_session(path, settings.device, threads=torch.get_num_threads())
    return (lambda x: [torch.from_numpy(np.asarray(o, np.float32)) for o in session.run(x.numpy())]), model


@contextlib.contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    """TF32 matmuls and cuDNN convolutions on for the block (``--precision tf32``), put back after."""
    if not enabled:
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
