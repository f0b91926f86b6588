"""The shared base of the torchvision families that are chains of modules (VGG, AlexNet,
GoogLeNet, Inception-v3, DenseNet, MobileNet): a family is a table of ``TrunkSpec`` rows.

Each spec names torchvision's builder (also the key of its weights enum), which of the built
model's top-level modules to keep (their parameter names stay torchvision's, so torchvision
checkpoints load strictly with only the classifier dropped), and which of those modules make the
stem and each stage C2..C5. The tap of a level is the output of the last module of its stage.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from featx.errors import did_you_mean
from featx.features import FeatureInfo, SequenceExtractor, level_name
from featx.images import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["TrunkSpec", "TorchvisionTrunk", "transform_input_to_inception"]


@dataclass(frozen=True)
class TrunkSpec:
    """One architecture of a chain-of-modules family.

    Attributes:
        arch: torchvision's builder name (``"vgg16_bn"``), also its weights enum key.
        build: returns torchvision's model, randomly initialised (never downloads).
        keep: top-level attributes of that model the extractor keeps (``("features",)``).
        stem: module names run before C2 (frozen by ``frozen_stages >= 0``).
        stages: four tuples of module names: the modules whose last output is C2, C3, C4, C5.
        channels: channels of C2..C5.
        strides: nominal strides of C2..C5 (AlexNet's and Inception-v3's maps are not exact; their
            module docstrings give the real sizes).
        min_size: smallest input height/width the convolutions accept.
        transform_input: the family re-normalizes ImageNet-normalized input as torchvision does
            when its pretrained weights are loaded (GoogLeNet, Inception-v3).
        extra: modules without parameters the stages use beyond torchvision's (name -> factory).
        graph_nodes: torchvision's graph node names of C2..C5 where they differ from the modules.
        stem_levels: maps finer than C2 tapped in the stem, as ``(module, channels, stride)``, finest first:
            the levels timm's own model of the family lists before C2 (featx's timm models list them too).
    """

    arch: str
    build: Callable[[], nn.Module]
    keep: tuple[str, ...]
    stem: tuple[str, ...]
    stages: tuple[tuple[str, ...], ...]
    channels: tuple[int, ...]
    strides: tuple[int, ...] = (4, 8, 16, 32)
    min_size: int = 32
    transform_input: bool = False
    extra: tuple[tuple[str, Callable[[], nn.Module]], ...] = ()
    graph_nodes: tuple[str, ...] = ()
    stem_levels: tuple[tuple[str, int, int], ...] = ()

    @property
    def reference_nodes(self) -> tuple[str, ...]:
        """The torchvision FX graph node of each level (``create_feature_extractor`` return nodes):
        the last module of each stage unless ``graph_nodes`` says otherwise."""
        return self.graph_nodes or tuple(names[-1] for names in self.stages)


def transform_input_to_inception(x: torch.Tensor) -> torch.Tensor:
    """ImageNet mean/std-normalized input -> the (x - 0.5) / 0.5 normalization torchvision's
    GoogLeNet/Inception-v3 weights were trained with (torchvision's ``transform_input=True``)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return _renormalize(x, mean, std)


def _renormalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return x * (std / 0.5) + (mean - 0.5) / 0.5


class InceptionInputTransform(nn.Module):
    """:func:`transform_input_to_inception` as a module (for the sequential view TorchScript compiles;
    the constants are buffers, outside the state dict, as scripted code cannot read Python globals)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _renormalize(x, self.mean.to(x.device, x.dtype), self.std.to(x.device, x.dtype))


class TorchvisionTrunk(SequenceExtractor):
    """A torchvision chain-of-modules classifier as a C2..C5 extractor (see the module docstring).

    Args:
        arch: a key of the family's spec table.
        out_indices: which of C2..C5 (0..3) to return.
        frozen_stages: -1 nothing, 0 the stem, k the stem and stages 1..k.
        norm_eval: BatchNorm layers use running statistics in ``train()``.
        transform_input: re-normalize input for GoogLeNet/Inception-v3 weights; default (None):
            on once pretrained weights are loaded (torchvision's rule), off for a random init.

    Weights are loaded by the builder (``featx.create_model(..., weights=...)``), not here.
    """

    SPECS: dict[str, TrunkSpec] = {}  # each family's table
    DEFAULT_ARCH: str = ""

    def __init__(self, arch: Optional[str] = None, out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1,
                 norm_eval: bool = False, transform_input: Optional[bool] = None) -> None:
        super().__init__()
        arch = arch or self.DEFAULT_ARCH
        if arch not in self.SPECS:
            raise ValueError(f"unknown {type(self).__name__} arch {arch!r}{did_you_mean(arch, self.SPECS)}; "
                             f"expected one of {sorted(self.SPECS)}")
        spec = self.SPECS[arch]
        self.arch = arch
        self.spec = spec
        source = spec.build()
        for name in spec.keep:
            setattr(self, name, getattr(source, name))
        for name, factory in spec.extra:
            setattr(self, name, factory())
        del source  # the classifier head goes with it
        if transform_input and not spec.transform_input:
            raise ValueError(f"transform_input applies to GoogLeNet/Inception-v3 only, not {arch}")
        self.transform_input = bool(spec.transform_input and transform_input)
        self._transform_input_follows_weights = spec.transform_input and transform_input is None
        self.min_input_size = spec.min_size
        stage_infos = [FeatureInfo(level_name("C", s), c, s, names[-1])
                       for s, c, names in zip(spec.strides, spec.channels, spec.stages)]
        stem_infos = [FeatureInfo(level_name("C", s), c, s, name) for name, c, s in spec.stem_levels]
        self._init_sequence(spec.stem, spec.stages, stem_infos)
        self._init_features(stage_infos, out_indices, frozen_stages, norm_eval)

    def weights_loaded(self) -> None:
        """Pretrained weights were loaded: GoogLeNet/Inception-v3 re-normalize their input as
        torchvision does for its weights, unless ``transform_input`` was set explicitly."""
        if self._transform_input_follows_weights:
            self.transform_input = True

    def sequential_view(self) -> tuple[nn.Module, list[nn.Module]]:
        stem, stages = super().sequential_view()
        if self.transform_input:
            stem = nn.Sequential(InceptionInputTransform(), *stem)
        return stem, stages

    def forward_stem_levels(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.transform_input:
            x = transform_input_to_inception(x)
        return super().forward_stem_levels(x)
