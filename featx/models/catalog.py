"""The model catalogue: families and pyramid styles as data, every entry registered explicitly.

Each backbone family is a base class and its architectures (``FAMILIES``); each architecture is a
backbone entry (``ResNet50``) and, per pyramid style of its family (``PYRAMIDS``), a composite
entry (``ResNet50FPN``, ``ResNet50RetinaFPN``). ``register_entries()`` puts every entry, plus
the base classes (``ResNet``, ``FPN``, ``BackboneFPN``, ...), into the featx mmengine registry as
a builder: ``builder(weights=None, with_cp=False, **options)`` constructs, then loads weights
(as torchvision's ``resnet50()`` and timm's ``build_model_with_cfg`` do; constructors never load).
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from torch import nn

from featx.backbones.densenet import DENSENET_SPECS, DenseNet
from featx.backbones.inception import GoogLeNet, InceptionV3
from featx.backbones.lenet import LeNet5
from featx.backbones.mobilenet import MobileNet
from featx.backbones.resnet import RESNET_ARCHS, ResNet
from featx.backbones.timm_backbone import TIMM_ARCHS, TimmBackbone
from featx.backbones.vgg import VGG_SPECS, AlexNet, VGG
from featx.models import mmdet_args
from featx.models.composite import BackboneFPN
from featx.models.mmdet_args import from_mmdet_resnet_args, pretrained_weights
from featx.models.resolve import resolve_name
from featx.models.sources import load_weights
from featx.necks.fpn import FPN
from featx.models.registry import MODELS

__all__ = ["Pyramid", "PYRAMIDS", "Family", "FAMILIES", "ModelEntry", "CATALOG", "BASES", "build_model",
           "list_models", "get_entry"]


@dataclass(frozen=True)
class Pyramid:
    """A named neck setting: the FPN arguments on top of a backbone's C2..C5."""

    key: str  # timm-name suffix: "fpn"
    suffix: str  # class-name suffix: "FPN"
    neck: dict
    doc: str


PYRAMIDS: dict[str, Pyramid] = {
    "fpn": Pyramid(
        "fpn", "FPN", dict(out_channels=256, num_outs=5),
        "P2-P6 (strides 4-64), P6 by max-pool: the Faster/Mask R-CNN pyramid "
        "(torchvision FeaturePyramidNetwork + LastLevelMaxPool).",
    ),
    "retinafpn": Pyramid(
        "retinafpn", "RetinaFPN",
        dict(out_channels=256, num_outs=5, start_level=1, add_extra_convs="on_input", relu_before_extra_convs=True),
        "P3-P7 (strides 8-128), P6 by a stride-2 conv on C5 and P7 on ReLU(P6): the RetinaNet/FCOS "
        "pyramid (torchvision FeaturePyramidNetwork + LastLevelP6P7).",
    ),
}


@dataclass(frozen=True)
class Family:
    """A backbone family in the catalogue: its base class and architectures, as data.

    ``titles`` maps each architecture (the base class's ``arch_kw`` value; None for a base with one
    architecture) to its entry name. ``levels`` is the number of stages (C2..C5: 4); ``source`` is
    where its weights and its reference implementation come from ("torchvision", "timm", or "featx"
    for a family only featx has, trained here).
    """

    name: str
    base: type
    arch_kw: Optional[str]
    titles: dict[str, str]
    pyramids: tuple[str, ...] = ("fpn",)
    levels: int = 4
    source: str = "torchvision"


def _resnet_title(arch: str) -> str:
    """``"resnext50_32x4d"`` -> ``"ResNeXt50_32x4d"``, ``"wide_resnet50_2"`` -> ``"WideResNet50_2"``."""
    m = re.match(r"(wide_resnet|resnext|resnet)(.*)", arch)
    assert m, arch
    return {"resnet": "ResNet", "resnext": "ResNeXt", "wide_resnet": "WideResNet"}[m.group(1)] + m.group(2)


FAMILIES: tuple[Family, ...] = (
    Family("resnet", ResNet, "arch", {a: _resnet_title(a) for a in RESNET_ARCHS}, ("fpn", "retinafpn")),
    Family("vgg", VGG, "arch", {a: a.upper().replace("_BN", "BN") for a in VGG_SPECS}),
    Family("alexnet", AlexNet, "arch", {"alexnet": "AlexNet"}),
    Family("googlenet", GoogLeNet, "arch", {"googlenet": "GoogLeNet"}),
    Family("inception", InceptionV3, "arch", {"inception_v3": "InceptionV3"}),
    Family("densenet", DenseNet, "arch", {a: a.replace("densenet", "DenseNet") for a in DENSENET_SPECS}),
    Family("mobilenet", MobileNet, "arch", {"mobilenet_v2": "MobileNetV2", "mobilenet_v3_large": "MobileNetV3Large",
                                            "mobilenet_v3_small": "MobileNetV3Small"}),
    Family("timm", TimmBackbone, "model_name", dict(TIMM_ARCHS), source="timm"),
    # small images (digits, icons, patches): no pyramid; levels S2, S4, C5
    Family("lenet", LeNet5, None, {"lenet5": "LeNet5"}, pyramids=(), levels=3, source="featx"),
)
assert all(set(f.titles) == set(f.base.SPECS) for f in FAMILIES if hasattr(f.base, "SPECS"))

# Registered under their class names beside the catalogue (architecture chosen by arguments).
BASES: dict[str, type] = {cls.__name__: cls for cls in (ResNet, VGG, AlexNet, GoogLeNet, InceptionV3, DenseNet, MobileNet,
                                                        TimmBackbone, LeNet5, FPN, BackboneFPN)}


@dataclass(frozen=True)
class ModelEntry:
    """One catalogue row: a named architecture (backbone) or architecture + pyramid (composite)."""

    name: str  # registry name, e.g. "ResNet50FPN"
    family: Family = field(repr=False)
    arch: str
    pyramid: Optional[Pyramid] = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        return "composite" if self.pyramid else "backbone"

    @property
    def timm_name(self) -> str:
        """Its name in timm's registry (backbones only are timm models; see featx.integrations.timm)."""
        return f"featx_{self.arch}" + (f"_{self.pyramid.key}" if self.pyramid else "")

    def construct(self, **kwargs: Any) -> nn.Module:
        """The model with random initialisation (no weights); keyword arguments are the base class's."""
        for fixed in ("arch", "depth", "model_name"):
            if fixed in kwargs:
                raise TypeError(f"{self.name} fixes the architecture ({self.arch}); use "
                                f"featx.{self.family.base.__name__}(...) or BackboneFPN for another one")
        arch = {self.family.arch_kw: self.arch} if self.family.arch_kw else {}
        if self.pyramid is None:
            return self.family.base(**arch, **kwargs)
        neck = {"type": FPN, **self.pyramid.neck, **(kwargs.pop("neck", None) or {})}
        backbone = self.family.base(**arch, **kwargs)
        return BackboneFPN(backbone, neck)

    def build(self, **kwargs: Any) -> nn.Module:
        """Construct, then load ``weights=`` (see :func:`build_model`)."""
        return build_model(self.construct, name=self.name, **kwargs)


def build_model(construct: Callable[..., nn.Module], weights: Any = None, with_cp: bool = False,
                progress: bool = True, allow_download: bool = True, name: Optional[str] = None, **kwargs: Any) -> nn.Module:
    """``construct(**kwargs)``, then gradient checkpointing (``with_cp``, mmdet's name) and weights
    (``featx.models.sources``; ``allow_download=False`` uses only files already on disk). The
    model's ``name`` is its registry name, and its ``load_report`` says what was loaded (None: nothing)."""
    model = construct(**kwargs)
    model.name = name or type(model).__name__
    if with_cp:
        model.set_grad_checkpointing(True)
    model.load_report = (load_weights(model, weights, progress, allow_download) if weights is not None else None)
    return model


def _catalogue() -> dict[str, ModelEntry]:
    entries: dict[str, ModelEntry] = {}
    for family in FAMILIES:
        for arch, title in family.titles.items():
            entries[title] = ModelEntry(title, family, arch)
            for key in family.pyramids:
                pyramid = PYRAMIDS[key]
                entries[title + pyramid.suffix] = ModelEntry(title + pyramid.suffix, family, arch, pyramid)
    return entries


CATALOG: dict[str, ModelEntry] = _catalogue()


def _registry_builder(name: str, construct: Callable[..., nn.Module], doc: str) -> Callable[..., nn.Module]:
    def builder(**kwargs: Any) -> nn.Module:
        return build_model(construct, name=name, **kwargs)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = doc
    return builder


def _entry_doc(entry: ModelEntry) -> str:
    base = entry.family.base.__name__
    if entry.pyramid is None:
        return (f"{entry.arch} as a C2..C5 feature extractor (featx.{base}); keyword arguments as for "
                f"featx.{base}, plus weights= and with_cp=.")
    return (f"{entry.arch} backbone + FPN neck: {entry.pyramid.doc} Keyword arguments go to featx.{base} "
            f"(out_indices, frozen_stages, norm_eval, ...); neck=dict(...) overrides the FPN settings "
            f"{entry.pyramid.neck}; plus weights= and with_cp=.")


def _mmdet_resnet_builder(name: str, resnext: bool, v1d: bool = False) -> Callable[..., nn.Module]:
    """``featx.ResNet`` / ``featx.ResNeXt`` in a config: featx's ResNet, taking mmdet's arguments with mmdet's
    meaning and defaults as well (:mod:`featx.models.mmdet_args`); weights an mmdet ``init_cfg`` names load when
    ``init_weights()`` is called (mmengine's runner calls it after building), ``weights=`` at once."""
    def builder(**kwargs: Any) -> nn.Module:
        if v1d:  # mmdet's ResNetV1d: the deep stem and average-pool downsampling (ResNet-D)
            kwargs = {"deep_stem": True, "avg_down": True, **kwargs}
        translated, source = from_mmdet_resnet_args(kwargs, resnext, mmdet_class=v1d)
        if resnext and "arch" not in translated and "depth" in translated:
            arch = f"resnext{translated['depth']}_{translated['groups']}x{translated['width_per_group']}d"
            if arch in RESNET_ARCHS:  # torchvision's own ResNeXt: named so, its weights fit
                translated = {k: v for k, v in translated.items() if k not in ("depth", "groups", "width_per_group")}
                translated["arch"] = arch
        if source is not None and translated.get("weights") is not None:
            raise ValueError("give weights= or init_cfg/pretrained, not both")
        model = build_model(ResNet, name=name, **translated)
        if source is not None:
            _load_on_init_weights(model, source)
        return model

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = (ResNet.__doc__ or "") + "\n" + (mmdet_args.__doc__ or "")
    return builder


def _load_on_init_weights(model: nn.Module, source: str) -> None:
    """Give ``model`` mmengine's ``init_weights()``: loading the checkpoint ``source`` names then, once, as mmdet's
    ``init_cfg`` would (a name featx cannot resolve is an error there, as a download that fails is in mmdet)."""
    model.init_cfg = {"type": "Pretrained", "checkpoint": source}
    model.is_init = False

    def init_weights() -> None:
        if not model.is_init:
            model.load_report = load_weights(model, pretrained_weights(source, model.arch))
            model.is_init = True

    model.init_weights = init_weights


def register_entries() -> None:
    """Register every catalogue entry and base class in the featx mmengine registry (as builders)."""
    for name, cls in BASES.items():
        if name not in CATALOG and cls is not ResNet:
            MODELS.register_module(name=name, module=_registry_builder(name, cls, cls.__doc__ or ""), force=True)
    MODELS.register_module(name="ResNet", module=_mmdet_resnet_builder("ResNet", resnext=False), force=True)
    MODELS.register_module(name="ResNeXt", module=_mmdet_resnet_builder("ResNeXt", resnext=True), force=True)
    MODELS.register_module(name="ResNetV1d", module=_mmdet_resnet_builder("ResNetV1d", resnext=False, v1d=True),
                           force=True)
    for name, entry in CATALOG.items():
        MODELS.register_module(name=name, module=_registry_builder(name, entry.construct, _entry_doc(entry)), force=True)


register_entries()


def list_models(pattern: Optional[str] = None) -> list[str]:
    """Catalogue names, optionally filtered by a shell-style pattern on the name or timm name."""
    names = sorted(CATALOG)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n.lower(), pattern.lower())
                 or fnmatch.fnmatch(CATALOG[n].timm_name, pattern.lower())]
    return names


def get_entry(name: str) -> ModelEntry:
    """The catalogue entry a name spells (``"resnet50fpn"``, ``"featx_resnet50_fpn"``)."""
    resolved = resolve_name(name)
    if resolved not in CATALOG:
        raise ValueError(f"{resolved} is a configurable base class, not a catalogue model; "
                         f"catalogue models: featx list")
    return CATALOG[resolved]
