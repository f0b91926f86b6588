"""Winograd convolutions in a BN-folded model, measured or asked for, and the optimized model with them.

``apply_winograd(model, "auto", runtime)`` times each distinct eligible 3x3 convolution direct and as Winograd in
``runtime`` on this CPU (:func:`featx.accel.tuning.decide_winograd`), then the converted model as a whole
(:func:`featx.accel.tuning.confirm_on_whole_model`), and converts what was measured faster. ``"all"`` converts
every 3x3 stride-1 convolution with ``min_channels..max_channels`` channels, ``"off"`` none, and a mapping of
module names to tile sides (or a collection of names, F(4x4)) exactly those.

:func:`optimize_for_cpu` is :func:`featx.inference.optimize_for_inference` with this step between folding
and the memory-format change.
"""
from __future__ import annotations

from typing import Callable, Collection, Mapping, Optional, Union

import torch
from torch import nn

from featx.accel.tuning import (DEFAULT_TUNING_SIZE, RUNTIME_GRAPH, WinogradDecision, confirm_on_whole_model,
                                decide_winograd)
from featx.accel.winograd import convert_to_winograd
from featx.inference import prepare_for_inference

__all__ = ["WinogradSpec", "apply_winograd", "optimize_for_cpu"]

# "auto" | "all" | "off" | a measured decision | module name -> tile side | module names (F(4x4))
WinogradSpec = Union[str, WinogradDecision, Mapping[str, int], Collection[str]]


def _quiet(message: str) -> None:
    pass


def apply_winograd(model: nn.Module, winograd: WinogradSpec = "auto", runtime: str = "torch",
                   size: tuple[int, int] = DEFAULT_TUNING_SIZE, min_channels: int = 128, max_channels: int = 256,
                   log: Callable[[str], None] = _quiet) -> Optional[WinogradDecision]:
    """Convert ``model``'s convolutions (BN already folded) to Winograd in place, as ``winograd`` says (see the
    module docstring), in the graph ``runtime`` runs fastest (``RUNTIME_GRAPH``). Sets ``model.winograd_convs``
    (how many) and ``model.winograd_decision`` (the measured decision, or None) and returns the decision.
    ``"auto"`` measures float32 CPU models only: on CUDA cuDNN picks its own algorithms, and the transforms
    amplify fp16 rounding."""
    if runtime not in RUNTIME_GRAPH:
        raise ValueError(f"runtime must be one of {tuple(RUNTIME_GRAPH)}, got {runtime!r}")
    graph = RUNTIME_GRAPH[runtime]
    decision = winograd if isinstance(winograd, WinogradDecision) else None
    if isinstance(winograd, str):
        if winograd not in ("auto", "all", "off"):
            raise ValueError(f"winograd must be 'auto', 'all', 'off', a decision or module names, got {winograd!r}")
        if winograd == "auto":
            first = next(model.parameters(), None)
            if first is not None and first.device.type == "cpu" and first.dtype == torch.float32:
                decision = confirm_on_whole_model(model, decide_winograd(model, runtime, tuple(size), log=log), log=log)
            plan: Union[bool, Mapping[str, int], Collection[str]] = decision.conversions if decision else False
        else:
            plan = winograd == "all"
    else:
        plan = decision.conversions if decision is not None else winograd
    if isinstance(plan, bool):
        count = convert_to_winograd(model, min_channels, max_channels, graph=graph) if plan else 0
    else:
        only = plan if isinstance(plan, Mapping) else set(plan)
        count = convert_to_winograd(model, 1, 1 << 30, only=only, graph=graph)
    model.winograd_convs = count
    model.winograd_decision = decision
    return decision


def optimize_for_cpu(model: nn.Module, winograd: WinogradSpec = "auto", channels_last: bool = True,
                           inplace: bool = False, runtime: str = "torch", size: tuple[int, int] = DEFAULT_TUNING_SIZE,
                           min_channels: int = 128, max_channels: int = 256) -> nn.Module:
    """:func:`featx.inference.optimize_for_inference` plus Winograd convolutions (:func:`apply_winograd`): a copy
    of ``model`` (or ``model`` itself with ``inplace``) in eval mode, BN folded, no gradients, the convolutions
    ``winograd`` names as Winograd, channels_last. With ``"auto"`` (PyTorch eager, F(4x4, 3x3) only) the outputs
    stay within 1e-5 of the original model relative to their magnitude.

    >>> fast = optimize_for_cpu(featx.create_model("ResNet50FPN"), winograd="auto")
    >>> fast.winograd_decision.summary()
    """
    m = prepare_for_inference(model, inplace)
    apply_winograd(m, winograd, runtime, size, min_channels, max_channels)
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    return m
