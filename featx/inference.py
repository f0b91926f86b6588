"""The plain inference path: BatchNorm folded into the preceding convolutions, channels_last, no autograd.

``optimize_for_inference(model)`` returns a copy; the original is untouched. Folding is exact in
real arithmetic (``w' = w * gamma / sqrt(var + eps)``, ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``);
in fp32 the outputs stay within 1e-5 of the original model relative to their magnitude (ResNet50FPN:
about 3e-6). The result is the same on every machine; hardware-specific rewrites (Winograd convolutions
timed on this CPU) are the opt-in :mod:`featx.accel`.

Which norm follows which conv is known from featx's own layout (the weights' source names):
``convN``/``bnN`` pairs in ResNet blocks and the stem, ``(conv, bn)`` runs inside ``nn.Sequential``
(downsample paths, the deep stem), and ``ConvNormAct``'s ``conv``/``bn``.
"""
from __future__ import annotations

import copy
import time
from typing import Any, Optional

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.ops import FrozenBatchNorm2d

from featx.layers import ConvNormAct

__all__ = ["CompiledForInference", "compile_for_inference", "fold_batchnorm", "prepare_for_inference",
           "optimize_for_inference"]

_BN = (nn.BatchNorm2d, FrozenBatchNorm2d)


def _folded(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                getattr(bn, "eps", 1e-5), bn.weight, bn.bias)
    fused = copy.deepcopy(conv)
    fused.weight = nn.Parameter(w.detach(), requires_grad=False)
    fused.bias = nn.Parameter(b.detach(), requires_grad=False)
    return fused


def _last_conv(module: nn.Module):
    if isinstance(module, nn.Conv2d):
        return module, None, None
    if isinstance(module, nn.Sequential) and len(module) and isinstance(module[-1], nn.Conv2d):
        return module[-1], module, len(module) - 1
    return None, None, None


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm that directly follows a conv into it, in place; returns how many."""
    count = 0
    for module in list(model.modules()):
        # convN -> bnN pairs (ResNet stem and blocks); conv1 may be the deep stem's Sequential
        for i in ("1", "2", "3"):
            conv, bn = getattr(module, f"conv{i}", None), getattr(module, f"bn{i}", None)
            if isinstance(bn, _BN):
                target, parent, idx = _last_conv(conv) if conv is not None else (None, None, None)
                if target is None:
                    continue
                fused = _folded(target, bn)
                if parent is None:
                    setattr(module, f"conv{i}", fused)
                else:
                    parent[idx] = fused
                setattr(module, f"bn{i}", nn.Identity())
                count += 1
        if isinstance(module, ConvNormAct) and isinstance(getattr(module, module.norm_name, None), _BN):
            module.conv = _folded(module.conv, getattr(module, module.norm_name))
            setattr(module, module.norm_name, nn.Identity())
            count += 1
        if isinstance(module, nn.Sequential):
            for j in range(len(module) - 1):
                if isinstance(module[j], nn.Conv2d) and isinstance(module[j + 1], _BN):
                    module[j] = _folded(module[j], module[j + 1])
                    module[j + 1] = nn.Identity()
                    count += 1
    return count


def prepare_for_inference(model: nn.Module, inplace: bool = False) -> nn.Module:
    """A copy of ``model`` (or ``model`` itself with ``inplace=True``) in eval mode, BatchNorm folded
    (``folded_batchnorms`` says how many), no gradients: the common start of every inference path."""
    m = (model if inplace else copy.deepcopy(model)).eval()
    m.folded_batchnorms = fold_batchnorm(m)
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def optimize_for_inference(model: nn.Module, channels_last: bool = True, inplace: bool = False) -> nn.Module:
    """A copy of ``model`` (or ``model`` itself with ``inplace=True``, which saves holding the weights
    twice) for inference: eval mode, BN folded, no gradients and, with ``channels_last``, NHWC weights
    (oneDNN's preferred layout on CPUs; outputs then come back in that memory format, same values and
    shape). Plain and deterministic: the same graph on every machine.

    >>> fast = optimize_for_inference(featx.create_model("ResNet50FPN", weights="DEFAULT"))
    """
    m = prepare_for_inference(model, inplace)
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    return m


class CompiledForInference(nn.Module):
    """An optimized model (:func:`optimize_for_inference`) compiled by ``torch.compile`` (Inductor) with frozen
    weights, one graph (``fullgraph``) and dynamic batch, height and width. Compiling happens at the first call;
    ``compile_seconds`` says how long it took (None before). A later input may compile once more where Inductor's
    kernel choices depend on the size (ResNet50FPN: 800x1216 after 512x512); Inductor caches compiled graphs on
    disk, so the same model compiles faster the next time. Outputs as the model's, within fp32 rounding (1e-4
    relative)."""

    def __init__(self, model: nn.Module, channels_last: bool = True, dynamic: bool = True,
                 mode: Optional[str] = None) -> None:
        super().__init__()
        self.model = optimize_for_inference(model, channels_last=channels_last)
        self.compiled = torch.compile(self.model, fullgraph=True, dynamic=dynamic, mode=mode)
        self.compile_seconds: Optional[float] = None

    def forward(self, x: torch.Tensor) -> Any:
        import torch._inductor.config as inductor  # freezing: weights become constants Inductor can fold and re-lay
        import torch.fx.experimental._config as shapes

        # no duck shaping: a square first input would tie height to width, and the first non-square one recompile
        with torch.no_grad(), inductor.patch(freezing=True), shapes.patch(use_duck_shape=False):
            if self.compile_seconds is None:
                start = time.perf_counter()
                out = self.compiled(x)
                self.compile_seconds = time.perf_counter() - start
                return out
            return self.compiled(x)


def compile_for_inference(model: nn.Module, channels_last: bool = True, dynamic: bool = True,
                          mode: Optional[str] = None) -> CompiledForInference:
    """The PyTorch-native fast path in one call: BN folded, channels_last, ``torch.compile`` with Inductor and
    frozen weights (see :class:`CompiledForInference`). The original model is untouched.

    >>> fast = compile_for_inference(featx.create_model("ResNet50FPN", weights="DEFAULT"))
    >>> feats = fast(x); fast.compile_seconds
    """
    return CompiledForInference(model, channels_last, dynamic, mode)
