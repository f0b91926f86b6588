"""The extractor contract every featx model implements, and the base every backbone shares.

An extractor maps an image batch ``(N, C, H, W)`` to a tuple of feature maps in ascending stride
order; ``feature_info`` describes each output (name, channels, stride), so necks and detectors can
be wired from the model alone, without running it.

- ``Extractor``: the contract (``feature_info``, ``channels``, ``strides``, ``forward``).
- ``FeatureExtractor``: backbones (C2..C5): stages, ``out_indices``, the freezing switches, input
  checks, gradient checkpointing. Families implement its three abstract hooks.
- ``SequenceExtractor``: backbones whose stem and stages are runs of named sub-modules.
- ``Composite``: a backbone followed by a neck (``featx.models.BackboneFPN``).

``out_channels`` has one meaning: the channel count shared by every level of a pyramid (an int,
what torchvision's detectors read). Only extractors whose levels all have the same width (FPNs and
composites) define it; ``channels`` lists each output's width for every extractor.
"""
from __future__ import annotations

import typing
from abc import ABCMeta, abstractmethod
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence

import torch
import torch.fx
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from featx.errors import ArgumentError

__all__ = ["FeatureInfo", "Extractor", "FeatureExtractor", "SequenceExtractor", "Composite", "level_name",
           "validate_out_indices", "check_image_batch", "check_feature_maps", "resolve_forward_annotations",
           "as_output_tuple", "input_channels"]


@dataclass(frozen=True)
class FeatureInfo:
    """One output level of an extractor.

    Attributes:
        name: level name by stride, ``"C2"``..``"C5"`` for backbones, ``"P2"``..``"P7"`` for necks.
        channels: number of channels of the map.
        stride: input pixels per output pixel (4 for C2, 32 for C5 at the default output stride).
        module: the sub-module whose output it is (``"layer1"``; timm's ``FeatureInfo`` reports
            it), empty when it is not one module.
    """

    name: str
    channels: int
    stride: int
    module: str = ""


def level_name(prefix: str, stride: int) -> str:
    """``level_name("C", 8) == "C3"``: levels are named by log2 of their nominal stride."""
    return f"{prefix}{int(stride).bit_length() - 1}"


def validate_out_indices(out_indices: Iterable[int], num_stages: int) -> tuple[int, ...]:
    """Check stage indices the mmdet way: in ``0..num_stages-1``, unique, ascending, non-empty."""
    if isinstance(out_indices, int) or not isinstance(out_indices, Iterable):
        raise TypeError(f"out_indices must be a sequence of ints such as (0, 1, 2, 3), got {out_indices!r}")
    indices = tuple(out_indices)
    if not indices:
        raise ValueError("out_indices must name at least one stage, got an empty sequence")
    for i in indices:
        if not isinstance(i, int) or isinstance(i, bool):
            raise TypeError(f"out_indices must contain ints, got {i!r} in {indices!r}")
        if not 0 <= i < num_stages:  # mmdet asserts max(out_indices) < num_stages: an AssertionError too
            raise ArgumentError(
                f"out_indices entries must be stage indices in 0..{num_stages - 1} "
                f"(0=C2 .. {num_stages - 1}=C{num_stages + 1}), got {i} in {indices!r}"
            )
    if len(set(indices)) != len(indices):
        raise ValueError(f"out_indices must not repeat a stage, got {indices!r}")
    if list(indices) != sorted(indices):
        raise ValueError(f"out_indices must be ascending, got {indices!r}")
    return indices


def check_image_batch(x: torch.Tensor, in_channels: int, owner: str, min_size: int = 0,
                      like: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Return ``x`` unless it is not a float tensor ``(N, in_channels, H, W)`` with H, W >= ``min_size``
    of the dtype (outside autocast) and on the device of ``like`` (the model's first parameter), else raise a
    clear error.

    Under ``torch.fx`` tracing it is one opaque call, so traced graphs (``create_feature_extractor``, timm's FX
    tests) keep the check; ``like`` is then the graph's parameter, so the check follows the graph to another
    device or dtype. Scripted (``torch.jit.script`` of such a graph) it checks the shape only."""
    if torch.jit.is_scripting():
        if x.dim() != 4 or x.size(1) != in_channels:
            raise ValueError(f"{owner} expects a 4-D tensor (N, {in_channels}, H, W), got shape {x.shape}")
        if min(x.size(2), x.size(3)) < max(min_size, 1):
            raise ValueError(f"{owner} needs inputs of at least {max(min_size, 1)} pixels a side, got shape {x.shape}")
    else:
        _check_image_batch_eager(x, in_channels, owner, min_size, like)
    return x


@torch.jit.unused
def _check_image_batch_eager(x: torch.Tensor, in_channels: int, owner: str, min_size: int,
                             like: Optional[torch.Tensor]) -> None:
    """:func:`check_image_batch` in Python, with messages that say how to fix the input (``x`` may be any object)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{owner} expects a torch.Tensor of shape (N, {in_channels}, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"{owner} expects a 4-D tensor (N, {in_channels}, H, W), got {x.dim()}-D shape {tuple(x.shape)}"
            + ("; add a batch dimension with x.unsqueeze(0)" if x.dim() == 3 else "")
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{owner} expects a floating-point tensor (normalized float32/float16/bfloat16), got {x.dtype}; "
            "convert images with x.float() / 255 and normalize"
        )
    dtype, device = (like.dtype, like.device) if like is not None else (None, None)
    if dtype is not None and x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
        name = str(dtype).removeprefix("torch.")
        raise TypeError(f"{owner} has {name} weights and expects {name} input, got {str(x.dtype).removeprefix('torch.')}; "
                        f"convert the input (x.to(torch.{name})) or the model (model.to(torch.{str(x.dtype).removeprefix('torch.')}))")
    if device is not None and x.device != device:
        raise ValueError(f"{owner} has its weights on {device} and got an input on {x.device}; move one to the other "
                         f"(x.to('{device}') or model.to('{x.device}'))"
                         + ("; a meta tensor has no data to compute with" if "meta" in (x.device.type, device.type) else ""))
    if x.shape[1] != in_channels:
        raise ValueError(f"{owner} expects {in_channels} input channels (N, {in_channels}, H, W), got shape {tuple(x.shape)}")
    if min(x.shape[-2:]) < max(min_size, 1):
        raise ValueError(f"{owner} needs inputs of at least {max(min_size, 1)}x{max(min_size, 1)} pixels "
                         f"(its convolutions and pools shrink smaller ones to nothing), got shape {tuple(x.shape)}")


def check_feature_maps(inputs: List[torch.Tensor], in_channels: List[int], owner: str) -> List[torch.Tensor]:
    """Return ``inputs`` (a list of maps) unless they are not ``len(in_channels)`` maps ``(N, in_channels[i], H_i, W_i)``
    in ascending stride (non-increasing size) order; FX-opaque and scriptable like :func:`check_image_batch`."""
    if torch.jit.is_scripting():
        if len(inputs) != len(in_channels):
            raise ValueError(f"{owner} expects {len(in_channels)} input levels, got {len(inputs)}")
        for i in range(len(inputs)):
            if inputs[i].dim() != 4 or inputs[i].size(1) != in_channels[i]:
                raise ValueError(f"{owner} input {i} must be (N, {in_channels[i]}, H, W), got {inputs[i].shape}")
    else:
        _check_feature_maps_eager(inputs, in_channels, owner)
    return inputs


@torch.jit.unused
def _check_feature_maps_eager(inputs: List[torch.Tensor], in_channels: List[int], owner: str) -> None:
    """:func:`check_feature_maps` in Python (the inputs may be any objects), with the order check."""
    if len(inputs) != len(in_channels):
        raise ValueError(f"{owner} expects {len(in_channels)} input levels (in_channels={list(in_channels)}), "
                         f"got {len(inputs)}")
    for i, (x, c) in enumerate(zip(inputs, in_channels)):
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != c:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{owner} input {i} must be (N, {c}, H, W), got {shape}")
    for i in range(1, len(inputs)):
        if inputs[i].shape[-2] > inputs[i - 1].shape[-2] or inputs[i].shape[-1] > inputs[i - 1].shape[-1]:
            raise ValueError(
                f"{owner} inputs must be in ascending stride order (finest first, as backbones return them); "
                f"input {i} is {tuple(inputs[i].shape[-2:])}, larger than input {i - 1} {tuple(inputs[i - 1].shape[-2:])}")


def resolve_forward_annotations(cls: type) -> type:
    """Evaluate the annotations of ``cls.forward`` (strings in modules that write ``from __future__ import
    annotations``) into types, and return ``cls``. torch.fx copies a traced root's annotations into the code it
    generates, and TorchScript must be able to read them (``x: torch.Tensor``, not ``x: 'torch.Tensor'``)."""
    forward = cls.__dict__.get("forward")
    if forward is not None:
        try:
            forward.__annotations__ = typing.get_type_hints(forward)
        except (NameError, TypeError):  # a name imported for type checkers only: the strings stay
            pass
    return cls


def input_channels(model: nn.Module) -> int:
    """Image channels a model takes: its backbone's ``in_channels`` (3 unless the family says otherwise,
    e.g. LeNet-5's 1)."""
    return int(getattr(getattr(model, "backbone", model), "in_channels", 3))


def as_output_tuple(out: object) -> tuple:
    """A model's output as a tuple: extractors return a tuple of maps, a classifier one logits tensor."""
    return (out,) if isinstance(out, torch.Tensor) else tuple(out)


torch.fx.wrap("check_image_batch")
torch.fx.wrap("check_feature_maps")


class Extractor(nn.Module, metaclass=ABCMeta):
    """The contract of every featx model: ``forward(x)`` returns a tuple of maps described, in
    order, by ``feature_info``."""

    feature_info: list[FeatureInfo]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        resolve_forward_annotations(cls)

    @property
    def channels(self) -> list[int]:
        """Channels of each output, in output order."""
        return [f.channels for f in self.feature_info]

    @property
    def strides(self) -> list[int]:
        """Stride of each output (input pixels per output pixel), in output order."""
        return [f.stride for f in self.feature_info]

    @property
    def size_divisibility(self) -> int:
        """The coarsest output stride: inputs padded to a multiple of it give maps that tile the input exactly
        (detectron2's ``Backbone.size_divisibility``)."""
        return max(self.strides)

    @abstractmethod
    def forward(self, x):  # noqa: D102 - documented by each implementation
        ...

    def weights_loaded(self) -> None:
        """Called by the builder once pretrained weights are in (a family may adapt, e.g. its input
        normalization); nothing by default."""


class FeatureExtractor(Extractor):
    """Base of every featx backbone: stages, output selection, freezing, checks, checkpointing.

    Families build their stem and stage modules (with the weight source's parameter names),
    implement ``stem_modules``/``forward_stem``/``stage_module``, then call ``_init_features``.
    This base validates input, runs the stages up to the last of ``out_indices``, and keeps the
    three freezing switches separate:

    - ``frozen_stages``: parameters of the stem (0) and stages 1..k get ``requires_grad=False``
      and those modules stay in eval mode; re-applied on every ``train()``.
    - ``norm_eval``: every BatchNorm uses its running statistics even in ``train()``.
    - the norm layer choice (e.g. ``FrozenBatchNorm2d``) freezes BN affine parameters.

    ``set_grad_checkpointing()`` (timm's name; mmdet's ``with_cp=True``) recomputes each stage in
    the backward pass instead of storing its activations.
    """

    in_channels: int = 3
    min_input_size: int = 0  # families whose unpadded convs/pools need a minimum input set this
    # per-family facts, beside the model as timm's pretrained cfgs keep them: the first convolution's module path
    # (timm's first_conv, adapted for in_chans != 3), and the classifier of the source library's classification
    # model (one Linear on the pooled C5 map) that a classification head can take, None when there is none
    first_conv: str = ""
    source_classifier: Optional[str] = None
    # torchvision builds this family's <Arch>FPN itself (resnet_fpn_backbone: the backbone's torchvision model, with
    # ``torchvision_kwargs``, in a BackboneWithFPN): check-weights compares such composites whole, and the
    # benchmarks time torchvision's beside featx's
    has_torchvision_fpn: bool = False
    # the backbone takes ``output_stride`` (8, 16: dilation in the last stages), as timm's ResNets do
    takes_output_stride: bool = False

    @classmethod
    def source_classifier_of(cls, arch: str) -> Optional[str]:
        """:attr:`source_classifier` of one architecture of the family (the same for every one unless a family
        says otherwise)."""
        return cls.source_classifier

    def torchvision_kwargs(self) -> dict:
        """Keyword arguments of the torchvision classification model that computes this backbone's levels with
        its options (none by default); ``ValueError`` where torchvision has no such model."""
        return {}

    @classmethod
    def coarsest_side(cls, side: int) -> int:
        """The side, in pixels of the map, of C5 for a square input of ``side`` pixels (timm's ``pool_size``):
        ``ceil(side / 32)``, as every stride-2 step of a padded network gives; a family whose convolutions or pools
        are unpadded says its own."""
        return -(-side // 32)
    grad_checkpointing: bool = False
    # Maps finer than C2 inside the stem (stride 2, VGG's stride 1 too), finest first. featx's own API
    # (out_indices, mmdet) selects C2..C5 only; timm's models of the same family list these levels first,
    # so featx's timm models do too (``featx.integrations.timm``).
    stem_infos: tuple[FeatureInfo, ...] = ()

    def _init_features(
        self,
        stage_infos: Sequence[FeatureInfo],
        out_indices: Iterable[int],
        frozen_stages: int,
        norm_eval: bool,
    ) -> None:
        self.stage_infos = tuple(stage_infos)
        self.out_indices = validate_out_indices(out_indices, len(self.stage_infos))
        if not isinstance(frozen_stages, int) or isinstance(frozen_stages, bool) or not -1 <= frozen_stages <= len(self.stage_infos):
            raise ValueError(
                f"frozen_stages must be an int in -1..{len(self.stage_infos)} "
                f"(-1 nothing, 0 stem, k stem + stages 1..k), got {frozen_stages!r}"
            )
        self.frozen_stages = frozen_stages
        self.norm_eval = bool(norm_eval)
        self.feature_info = [self.stage_infos[i] for i in self.out_indices]
        self._freeze_stages()

    def frozen_modules(self) -> list[nn.Module]:
        """Modules frozen by ``frozen_stages``: the stem for 0, plus stages 1..k for k."""
        if self.frozen_stages < 0:
            return []
        return list(self.stem_modules()) + [self.stage_module(i) for i in range(self.frozen_stages)]

    # -- what each family implements (parameter names stay the weights' source names) ---------
    @abstractmethod
    def stem_modules(self) -> list[nn.Module]:
        """The modules of the stem (frozen by ``frozen_stages >= 0``)."""

    @abstractmethod
    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, H, W)`` -> the input of stage 0."""

    def forward_stem_levels(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The stem, also returning its levels: ``(input of stage 0, [map of each of stem_infos])``.
        Families with ``stem_infos`` implement it; it computes what ``forward_stem`` does."""
        return self.forward_stem(x), []

    @abstractmethod
    def stage_module(self, index: int) -> nn.Module:
        """Stage ``index`` (0 -> C2 .. 3 -> C5) as one module."""

    @abstractmethod
    def stage_module_names(self, index: int) -> list[str]:
        """Names of the sub-modules stage ``index`` runs, in order (``["layer1"]``)."""

    def run_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Run stage ``index`` on ``x`` (families may run it without building a module)."""
        return self.stage_module(index)(x)

    def sequential_view(self) -> tuple[nn.Module, list[nn.Module]]:
        """The stem and each stage as modules that compute them in a plain ``forward`` (the same module
        objects, regrouped): what ``torch.jit.script`` compiles, as scripted code cannot look modules up
        by name. The input checks are not part of it."""
        raise NotImplementedError(f"{type(self).__name__} has no sequential view for TorchScript")

    def prune_stages_after(self, last: int) -> None:
        """Drop the stages after ``last`` (their modules become ``nn.Identity``): a model that will
        only ever be asked for C2..C{last + 2} stops holding the rest. ``-1`` drops every stage (only
        the stem's levels remain, for ``forward_levels``; see :meth:`prune_stem_after`)."""
        if not -1 <= last < len(self.stage_infos):
            raise ValueError(f"last must be a stage index in -1..{len(self.stage_infos) - 1}, got {last}")
        for i in range(last + 1, len(self.stage_infos)):
            for name in self.stage_module_names(i):
                self.set_submodule(name, nn.Identity())
        self.out_indices = (tuple(i for i in self.out_indices if i <= last) or (last,)) if last >= 0 else ()
        self.feature_info = [self.stage_infos[i] for i in self.out_indices]

    def prune_stem_after(self, level: int) -> None:
        """After :meth:`prune_stages_after` ``(-1)``: drop the stem's modules after its level ``level``
        (an index of ``stem_infos``), so the stem ends at that map (as timm prunes to a stem feature)."""
        if self.out_indices or not 0 <= level < len(self.stem_infos):
            raise ValueError(f"prune_stem_after takes a stem level in 0..{len(self.stem_infos) - 1} once every stage is "
                             f"pruned (prune_stages_after(-1)), got {level}")
        for name in self.stem_modules_after(self.stem_infos[level].module):
            self.set_submodule(name, nn.Identity())

    def stem_modules_after(self, tap: str) -> list[str]:
        """Names of the stem's modules that run after the module ``tap`` (a stem level's)."""
        raise NotImplementedError(f"{type(self).__name__} has no stem levels")

    def check_input(self, x: object) -> torch.Tensor:
        """``x`` when it is a valid image batch for this backbone, else a clear error."""
        return check_image_batch(x, self.in_channels, type(self).__name__, self.min_input_size,
                                 next(self.parameters(), None))

    # -- behaviour ----------------------------------------------------------------------
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stage during backward instead of keeping its activations (saves memory)."""
        self.grad_checkpointing = bool(enable)

    def _freeze_stages(self) -> None:
        for module in self.frozen_modules():
            module.eval()
            for p in module.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> "FeatureExtractor":
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def forward_stages(self, x: torch.Tensor, last: int) -> list[torch.Tensor]:
        """Stem, then stages ``0..last``; returns every stage's output (``C2``.. up to ``last``)."""
        return self._run_stages(self.forward_stem(x), last)

    def forward_levels(self, x: torch.Tensor, last: int) -> list[torch.Tensor]:
        """Every level up to ``last`` of ``stem_infos + stage_infos``: the stem's maps, then C2.. (the
        stem runs whole; stages after the last wanted level do not run)."""
        x, outs = self.forward_stem_levels(x)
        return outs[: last + 1] + self._run_stages(x, last - len(self.stem_infos))

    def _run_stages(self, x: torch.Tensor, last: int) -> list[torch.Tensor]:
        outs = []
        for i in range(last + 1):
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(self.run_stage, i, x, use_reentrant=False)
            else:
                x = self.run_stage(i, x)
            outs.append(x)
        return outs

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(N, 3, H, W)`` float images -> tuple of maps ``(N, channels_i, ~H/stride_i, ~W/stride_i)``.

        Stages past the last requested output are not run.
        """
        x = self.check_input(x)
        if not self.out_indices:
            raise RuntimeError(f"every stage of this {type(self).__name__} was pruned; only its stem levels remain "
                               "(forward_levels)")
        outs = self.forward_stages(x, self.out_indices[-1])
        return tuple(outs[i] for i in self.out_indices)


class _Steps(nn.Module):
    """Runs sub-modules in order. Built per call from names, so it never owns (or duplicates) the
    parameters: the modules stay registered under their source names (torchvision's/timm's keys)."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        super().__init__()
        self.steps = list(modules)  # a plain list: not registered as children

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            x = step(x)
        return x

    def parameters(self, recurse: bool = True):  # the frozen_stages switch iterates these
        for step in self.steps:
            yield from step.parameters(recurse)

    def train(self, mode: bool = True) -> "_Steps":
        for step in self.steps:
            step.train(mode)
        return self


class SequenceExtractor(FeatureExtractor):
    """A ``FeatureExtractor`` whose stem and stages are runs of named sub-modules.

    Families whose source model is a chain of modules (torchvision's VGG, AlexNet, GoogLeNet,
    Inception-v3, DenseNet, MobileNet; timm's feature nets) keep the source's modules under the
    source's attribute names, so checkpoints load strictly, and describe each stage as the
    names of the modules it runs (``"features.4"``, ``"inception3a"``, ...).
    """

    _stem_taps: frozenset = frozenset()

    def _init_sequence(self, stem: Sequence[str], stages: Sequence[Sequence[str]],
                       stem_infos: Sequence[FeatureInfo] = ()) -> None:
        """``stem``, ``stages``: module names run in order; ``stem_infos``: levels tapped at the output of
        stem modules (``FeatureInfo.module`` names one of ``stem``), finest first."""
        self.stem_names = tuple(stem)
        self.stage_names = tuple(tuple(s) for s in stages)
        for name in self.stem_names + tuple(n for s in self.stage_names for n in s):
            self.get_submodule(name)  # fail at construction, not at the first forward
        missing = [f.module for f in stem_infos if f.module not in self.stem_names]
        if missing:
            raise ValueError(f"stem levels must tap stem modules {self.stem_names}, got {missing}")
        self.stem_infos = tuple(stem_infos)
        self._stem_taps = frozenset(f.module for f in self.stem_infos)

    def stem_modules(self) -> list[nn.Module]:
        return [self.get_submodule(n) for n in self.stem_names]

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stem_levels(x)[0]

    def forward_stem_levels(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        taps = []
        for name in self.stem_names:
            x = self.get_submodule(name)(x)
            if name in self._stem_taps:
                taps.append(x)
        return x, taps

    def stage_module(self, index: int) -> nn.Module:
        return _Steps([self.get_submodule(n) for n in self.stage_names[index]])

    def stem_modules_after(self, tap: str) -> list[str]:
        return list(self.stem_names[self.stem_names.index(tap) + 1:])

    def sequential_view(self) -> tuple[nn.Module, list[nn.Module]]:
        stem = nn.Sequential(*(self.get_submodule(n) for n in self.stem_names))
        return stem, [nn.Sequential(*(self.get_submodule(n) for n in names)) for names in self.stage_names]

    def stage_module_names(self, index: int) -> list[str]:
        return list(self.stage_names[index])

    def run_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        for name in self.stage_names[index]:
            x = self.get_submodule(name)(x)
        return x


class Composite(Extractor):
    """A backbone followed by a neck: ``forward(x) = neck(backbone(x))``; its levels are the neck's.

    ``out_channels`` is the width of every level (the neck's), as torchvision's detectors read it.
    """

    backbone: FeatureExtractor
    neck: Extractor

    @property
    def out_channels(self) -> int:
        return int(self.neck.out_channels)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)

    def weights_loaded(self) -> None:
        self.backbone.weights_loaded()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.neck(self.backbone(x))
