"""The contract every featx extractor shares: ``FeatureInfo`` and ``FeatureExtractor``.

A feature extractor maps an image batch ``(N, C, H, W)`` to a tuple of feature maps in
ascending stride order. ``feature_info`` describes each output (name, channels, stride), so
necks and detectors can be wired from the model alone, without running it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["FeatureInfo", "FeatureExtractor", "SequenceExtractor", "validate_out_indices", "check_image_batch"]


@dataclass(frozen=True)
class FeatureInfo:
    """One output level of an extractor.

    Attributes:
        name: level name by stride, ``"C2"``..``"C5"`` for backbones, ``"P2"``..``"P7"`` for necks.
        channels: number of channels of the map.
        stride: input pixels per output pixel (4 for C2, 32 for C5 at the default output stride).
        module: the sub-module whose output it is (``"layer1"``), empty when it is not one module.
    """

    name: str
    channels: int
    stride: int
    module: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


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
        if not 0 <= i < num_stages:
            raise ValueError(
                f"out_indices entries must be stage indices in 0..{num_stages - 1} "
                f"(0=C2 .. {num_stages - 1}=C{num_stages + 1}), got {i} in {indices!r}"
            )
    if len(set(indices)) != len(indices):
        raise ValueError(f"out_indices must not repeat a stage, got {indices!r}")
    if list(indices) != sorted(indices):
        raise ValueError(f"out_indices must be ascending, got {indices!r}")
    return indices


def check_image_batch(x: object, in_channels: int, owner: str) -> None:
    """Raise a clear error unless ``x`` is a float tensor of shape ``(N, in_channels, H, W)``."""
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
    if x.shape[1] != in_channels:
        raise ValueError(f"{owner} expects {in_channels} input channels (N, {in_channels}, H, W), got shape {tuple(x.shape)}")


class FeatureExtractor(nn.Module):
    """Base of every featx backbone: stages, output selection, freezing switches.

    Subclasses build their stem and stage modules (with the weight source's parameter names),
    implement ``stem_modules``/``forward_stem``/``stage_module``, then call ``_init_features``.
    This base validates input, runs the stages up to the last of ``out_indices``, and keeps the
    three freezing switches separate:

    - ``frozen_stages``: parameters of the stem (0) and stages 1..k get ``requires_grad=False``
      and those modules stay in eval mode; re-applied on every ``train()``.
    - ``norm_eval``: every BatchNorm uses its running statistics even in ``train()``.
    - the norm layer choice (e.g. ``FrozenBatchNorm2d``) freezes BN affine parameters.
    """

    in_channels: int = 3
    min_input_size: int = 0  # families whose unpadded convs/pools need a minimum input set this

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

    # -- the contract -------------------------------------------------------------------
    @property
    def out_channels(self) -> list[int]:
        """Channels of each output, in output order."""
        return [f.channels for f in self.feature_info]

    @property
    def strides(self) -> list[int]:
        """Stride of each output (input pixels per output pixel), in output order."""
        return [f.stride for f in self.feature_info]

    def frozen_modules(self) -> list[nn.Module]:
        """Modules frozen by ``frozen_stages``: the stem for 0, plus stages 1..k for k."""
        if self.frozen_stages < 0:
            return []
        return list(self.stem_modules()) + [self.stage_module(i) for i in range(self.frozen_stages)]

    # Families implement these three; parameter names stay the weights' source names.
    def stem_modules(self) -> list[nn.Module]:  # pragma: no cover - every family overrides
        """The modules of the stem (frozen by ``frozen_stages >= 0``)."""
        raise NotImplementedError

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def stage_module(self, index: int) -> nn.Module:  # pragma: no cover - every family overrides
        """Stage ``index`` (0 -> C2 .. 3 -> C5)."""
        raise NotImplementedError

    def run_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Run stage ``index`` on ``x`` (families may run it without building a module)."""
        return self.stage_module(index)(x)

    # -- behaviour ----------------------------------------------------------------------
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

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(N, 3, H, W)`` float images -> tuple of maps ``(N, channels_i, ~H/stride_i, ~W/stride_i)``.

        Stages past the last requested output are not run.
        """
        check_image_batch(x, self.in_channels, type(self).__name__)
        if self.min_input_size and min(x.shape[-2:]) < self.min_input_size:
            raise ValueError(f"{type(self).__name__} needs inputs of at least {self.min_input_size}x{self.min_input_size} "
                             f"pixels (its convolutions and pools shrink smaller ones to nothing), got {tuple(x.shape)}")
        x = self.forward_stem(x)
        outs = []
        for i in range(self.out_indices[-1] + 1):
            x = self.run_stage(i, x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


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

    def _init_sequence(self, stem: Sequence[str], stages: Sequence[Sequence[str]]) -> None:
        self.stem_names = tuple(stem)
        self.stage_names = tuple(tuple(s) for s in stages)
        for name in self.stem_names + tuple(n for s in self.stage_names for n in s):
            self.get_submodule(name)  # fail at construction, not at the first forward

    def stem_modules(self) -> list[nn.Module]:
        return [self.get_submodule(n) for n in self.stem_names]

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.stem_names:
            x = self.get_submodule(name)(x)
        return x

    def stage_module(self, index: int) -> nn.Module:
        return _Steps([self.get_submodule(n) for n in self.stage_names[index]])

    def run_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        for name in self.stage_names[index]:
            x = self.get_submodule(name)(x)
        return x
