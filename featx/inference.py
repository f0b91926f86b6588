"""An inference path: BatchNorm folded into the preceding convolutions, wide 3x3 convolutions as
Winograd F(4x4, 3x3), channels_last, no autograd.

``optimize_for_inference(model)`` returns a copy; the original is untouched. Folding is exact in
real arithmetic (``w' = w * gamma / sqrt(var + eps)``, ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``);
Winograd is exact in real arithmetic too (:mod:`featx.winograd`). In fp32 the outputs stay within
1e-5 of the original model relative to their magnitude (ResNet50FPN: about 3e-6).

Which norm follows which conv is known from featx's own layout (the weights' source names):
``convN``/``bnN`` pairs in ResNet blocks and the stem, ``(conv, bn)`` runs inside ``nn.Sequential``
(downsample paths, the deep stem), and ``ConvNormAct``'s ``conv``/``bn``.
"""
from __future__ import annotations

import copy
from typing import Collection, Mapping, Union

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.ops import FrozenBatchNorm2d

from featx.layers import ConvNormAct
from featx.tuning import DEFAULT_TUNING_SIZE, RUNTIME_GRAPH, WinogradDecision, confirm_on_whole_model, decide_winograd
from featx.winograd import convert_to_winograd

__all__ = ["fold_batchnorm", "optimize_for_inference"]

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


def optimize_for_inference(
    model: nn.Module,
    channels_last: bool = True,
    inplace: bool = False,
    winograd: Union[None, bool, WinogradDecision, Collection[str], Mapping[str, int]] = None,
    winograd_min_channels: int = 128,
    winograd_max_channels: int = 256,
    tuning_runtime: str = "torch",
    tuning_size: tuple[int, int] = DEFAULT_TUNING_SIZE,
) -> nn.Module:
    """A copy of ``model`` (or ``model`` itself with ``inplace=True``, which saves holding the weights
    twice) for inference: eval mode, BN folded, no gradients, channels_last weights, and the 3x3
    convolutions that are faster as Winograd F(4x4, 3x3) on this machine replaced by
    :class:`featx.winograd.WinogradConv2d` (4x fewer multiplies, more memory traffic; the exports, measured
    in their runtime, may also use F(6x6, 3x3)).

    ``winograd``:

    - ``None`` (default): measured. For a float32 model on the CPU, ``featx.tuning.decide_winograd``
      times each distinct eligible convolution (64..512 channels, at the map size a ``tuning_size``
      input gives it) direct and Winograd in ``tuning_runtime`` (the exports pass their runtime) and
      converts only those Winograd made faster; the converted model as a whole must then also be >= 3%
      faster in that runtime (``confirm_on_whole_model``). Cached per CPU and versions, so measured once. On
      CUDA and for other dtypes: off (cuDNN picks its own algorithms; transforms amplify fp16 rounding).
    - ``True``: every eligible conv with channels in ``[winograd_min_channels, winograd_max_channels]``.
    - ``False``: none. A ``WinogradDecision``, a collection of module names, or a mapping of module names to
      tile sides (4: F(4x4, 3x3), 6: F(6x6, 3x3)): those.

    ``tuning_runtime`` also picks the graph of the converted convs (the one that runtime runs fastest,
    ``featx.tuning.RUNTIME_GRAPH``).

    The decision is kept as ``model.winograd_decision`` (None when not measured). Feed the result
    inputs as usual; with ``channels_last`` the convolutions run in NHWC (oneDNN's preferred layout on
    CPUs) and outputs come back in that memory format (same values, same shape).
    """
    if tuning_runtime not in RUNTIME_GRAPH:
        raise ValueError(f"tuning_runtime must be one of {tuple(RUNTIME_GRAPH)}, got {tuning_runtime!r}")
    m = (model if inplace else copy.deepcopy(model)).eval()
    m.folded_batchnorms = fold_batchnorm(m)
    # after folding: the Winograd weights are transformed from the folded ones
    m.winograd_decision = None
    if winograd is None:
        first = next(m.parameters(), None)
        if first is not None and first.device.type == "cpu" and first.dtype == torch.float32:
            winograd = confirm_on_whole_model(m, decide_winograd(m, tuning_runtime, tuning_size))
        else:
            winograd = False
    if isinstance(winograd, WinogradDecision):
        m.winograd_decision = winograd
        winograd = winograd.conversions
    graph = RUNTIME_GRAPH[tuning_runtime]  # the Winograd graph that runtime runs fastest
    if isinstance(winograd, bool):
        m.winograd_convs = (convert_to_winograd(m, winograd_min_channels, winograd_max_channels, graph=graph)
                            if winograd else 0)
    else:
        m.winograd_convs = convert_to_winograd(m, 1, 1 << 30, only=winograd if isinstance(winograd, Mapping) else set(winograd),
                                               graph=graph)
    for p in m.parameters():
        p.requires_grad_(False)
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    return m
