"""Composites (backbone + neck) and the model catalogue shared by every front end.

``BackboneFPN`` wires any featx backbone to any featx neck from their ``feature_info``. The
named composites (``ResNet50FPN``, ``ResNeXt50_32x4dRetinaFPN`` ...) are generated from two
tables: architectures (``RESNET_ARCHS``) x pyramid styles (``PYRAMIDS``). Each is registered
in the featx mmengine registry under its class name and in timm as ``featx_<arch>_<pyramid>``;
every backbone is registered in timm as ``featx_<arch>``.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn

from featx.backbones.densenet import DENSENET_SPECS, DenseNet
from featx.backbones.inception import GoogLeNet, InceptionV3
from featx.backbones.mobilenet import MobileNet
from featx.backbones.resnet import RESNET_ARCHS, ResNet
from featx.backbones.timm_backbone import TIMM_ARCHS, TimmBackbone
from featx.backbones.vgg import VGG_SPECS, AlexNet, VGG
from featx.features import FeatureInfo
from featx.necks.fpn import FPN
from featx.registry import MODELS, build_module
from featx.weights import load_weights

__all__ = [
    "BackboneFPN", "PYRAMIDS", "ModelEntry", "CATALOG", "list_models", "create_model",
    "get_entry", "unknown_model_error", "Family", "FAMILIES",
]


@MODELS.register_module()
class BackboneFPN(nn.Module):
    """A backbone followed by a neck; the neck's input channels and strides come from the backbone.

    Args:
        backbone: an ``nn.Module`` with ``feature_info`` or a config, e.g. ``dict(type="ResNet", depth=50)``.
        neck: an ``nn.Module`` or a config, e.g. ``dict(type="FPN", out_channels=256, num_outs=5)``;
            ``in_channels`` and ``in_strides`` default to the backbone's outputs.
        weights: None, a torchvision classification enum name / member (fills the backbone; the
            neck keeps its initialisation), a torchvision detection enum member or its qualified
            name (``"FasterRCNN_ResNet50_FPN_Weights.COCO_V1"``: backbone and FPN), a featx / mmdet
            checkpoint file, or a URL. Loaded strictly; report in ``self.load_report``.

    Forward: ``(N, 3, H, W)`` -> tuple of pyramid maps in ascending stride order.
    ``out_channels`` (an int, as torchvision detectors read it), ``strides`` and
    ``feature_info`` describe those maps.

    Example:
        >>> m = BackboneFPN(dict(type="ResNet", depth=18), dict(type="FPN", out_channels=128, num_outs=5))
        >>> [f.name for f in m.feature_info]
        ['P2', 'P3', 'P4', 'P5', 'P6']
    """

    def __init__(self, backbone: Any, neck: Any, weights: Any = None) -> None:
        super().__init__()
        self.backbone = build_module(backbone)
        if not hasattr(self.backbone, "feature_info"):
            raise TypeError(f"backbone {type(self.backbone).__name__} has no feature_info; use a featx backbone")
        infos = self.backbone.feature_info
        self.neck = build_module(neck, in_channels=[f.channels for f in infos], in_strides=[f.stride for f in infos])
        self.feature_info: list[FeatureInfo] = list(self.neck.feature_info)
        self.load_report = load_weights(self, weights)

    @property
    def out_channels(self) -> int:
        """Channels of every pyramid level (what torchvision's detection heads read)."""
        return self.feature_info[0].channels

    @property
    def strides(self) -> list[int]:
        return [f.stride for f in self.feature_info]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.neck(self.backbone(x))


@dataclass(frozen=True)
class Pyramid:
    """A named neck setting: the FPN arguments on top of a backbone's C2..C5."""

    suffix: str
    neck: dict
    doc: str


PYRAMIDS: dict[str, Pyramid] = {
    "fpn": Pyramid(
        "FPN",
        dict(out_channels=256, num_outs=5),
        "P2-P6 (strides 4-64), P6 by max-pool: the Faster/Mask R-CNN pyramid "
        "(torchvision FeaturePyramidNetwork + LastLevelMaxPool).",
    ),
    "retinafpn": Pyramid(
        "RetinaFPN",
        dict(out_channels=256, num_outs=5, start_level=1, add_extra_convs="on_input", relu_before_extra_convs=True),
        "P3-P7 (strides 8-128), P6 by a stride-2 conv on C5 and P7 on ReLU(P6): the RetinaNet/FCOS "
        "pyramid (torchvision FeaturePyramidNetwork + LastLevelP6P7).",
    ),
}

@dataclass(frozen=True)
class Family:
    """A backbone family in the catalogue: its base class and architectures, as data.

    ``titles`` maps each architecture (the base class's ``arch_kw`` value) to its class name; an
    architecture titled like the base class itself (``AlexNet``) reuses the base class.
    """

    name: str
    base: type
    arch_kw: str
    titles: dict[str, str]
    pyramids: tuple[str, ...] = ("fpn",)


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
    Family("timm", TimmBackbone, "model_name", dict(TIMM_ARCHS)),
)
assert all(set(f.titles) == set(f.base.SPECS) for f in FAMILIES if hasattr(f.base, "SPECS"))


@dataclass(frozen=True)
class ModelEntry:
    """One catalogue row: how to build a named model and how each front end calls it."""

    name: str  # mmengine type, e.g. "ResNet50FPN"
    timm_name: str  # e.g. "featx_resnet50_fpn"
    family: str
    arch: str
    kind: str  # "backbone" | "composite"
    factory: Callable[..., nn.Module] = field(repr=False)

    def build(self, **kwargs: Any) -> nn.Module:
        return self.factory(**kwargs)


CATALOG: dict[str, ModelEntry] = {}


def _make_composite(family: Family, arch: str, pyramid: Pyramid) -> type:
    name = f"{family.titles[arch]}{pyramid.suffix}"
    base = family.base

    def __init__(self, neck: Optional[dict] = None, weights: Any = None, **backbone_kwargs: Any) -> None:
        for fixed in ("arch", "depth", "model_name"):
            if fixed in backbone_kwargs:
                raise TypeError(f"{name} fixes the architecture ({arch}); use BackboneFPN for another one")
        neck_cfg = {"type": FPN, **pyramid.neck, **(neck or {})}
        BackboneFPN.__init__(self, backbone=dict(type=base, **{family.arch_kw: arch}, **backbone_kwargs),
                             neck=neck_cfg, weights=weights)

    doc = (
        f"{arch} backbone + FPN neck: {pyramid.doc}\n\n"
        f"    Keyword arguments go to ``featx.{base.__name__}`` (out_indices, frozen_stages, norm_eval, ...);\n"
        f"    ``neck=dict(...)`` overrides the FPN settings {pyramid.neck}; ``weights=`` as for ``BackboneFPN``.\n"
    )
    cls = type(name, (BackboneFPN,), {"__init__": __init__, "__doc__": doc, "__module__": __name__, "arch": arch})
    MODELS.register_module(module=cls)
    return cls


def _make_backbone(family: Family, arch: str) -> type:
    name = family.titles[arch]
    base = family.base
    if name == base.__name__:  # a one-architecture family: the base class is the model
        return base

    def __init__(self, **kwargs: Any) -> None:
        for fixed in ("arch", "depth", "model_name"):
            if fixed in kwargs:
                raise TypeError(f"{name} fixes the architecture ({arch}); use featx.{base.__name__}(...) for another one")
        base.__init__(self, **{family.arch_kw: arch}, **kwargs)

    doc = f"{arch} as a C2..C5 feature extractor; keyword arguments as for ``featx.{base.__name__}``."
    cls = type(name, (base,), {"__init__": __init__, "__doc__": doc, "__module__": __name__})
    MODELS.register_module(module=cls)
    return cls


def _register_timm(entry: ModelEntry) -> None:
    """Register ``entry`` with timm so ``timm.create_model(entry.timm_name, **kwargs)`` builds it."""
    from timm.models import register_model

    def entrypoint(pretrained: bool = False, pretrained_cfg: Any = None, pretrained_cfg_overlay: Any = None,
                   cache_dir: Any = None, **kwargs: Any) -> nn.Module:
        if pretrained and kwargs.get("weights") is None:
            kwargs["weights"] = "DEFAULT"  # torchvision's recommended ImageNet weights
        return entry.build(**kwargs)

    entrypoint.__name__ = entry.timm_name
    entrypoint.__qualname__ = entry.timm_name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"featx {entry.name} ({entry.kind})."
    globals()[entry.timm_name] = entrypoint
    register_model(entrypoint)


def _populate() -> None:
    for family in FAMILIES:
        for arch in family.titles:
            backbone_cls = _make_backbone(family, arch)
            globals()[backbone_cls.__name__] = backbone_cls
            CATALOG[family.titles[arch]] = ModelEntry(family.titles[arch], f"featx_{arch}", family.name, arch,
                                                      "backbone", backbone_cls)
            for key in family.pyramids:
                cls = _make_composite(family, arch, PYRAMIDS[key])
                globals()[cls.__name__] = cls
                CATALOG[cls.__name__] = ModelEntry(cls.__name__, f"featx_{arch}_{key}", family.name, arch, "composite", cls)
    for entry in CATALOG.values():
        _register_timm(entry)


_populate()


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower().removeprefix("featx."))


def list_models(pattern: Optional[str] = None) -> list[str]:
    """Catalogue names (mmengine type names), optionally filtered by a shell-style pattern."""
    import fnmatch

    names = sorted(CATALOG)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n.lower(), pattern.lower()) or fnmatch.fnmatch(CATALOG[n].timm_name, pattern.lower())]
    return names


def unknown_model_error(name: str) -> ValueError:
    candidates = {e.name: e.name for e in CATALOG.values()} | {e.timm_name: e.name for e in CATALOG.values()}
    close = difflib.get_close_matches(str(name), list(candidates), n=5, cutoff=0.5)
    hint = f" Close matches: {', '.join(dict.fromkeys(candidates[c] for c in close))}." if close else ""
    return ValueError(f"unknown featx model {name!r}.{hint} `featx.list_models()` lists all {len(CATALOG)} models.")


def get_entry(name: str) -> ModelEntry:
    """Find a catalogue entry by mmengine name ("ResNet50FPN", "featx.ResNet50FPN") or timm name."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    wanted = _key(name)
    for entry in CATALOG.values():
        if wanted in (_key(entry.name), _key(entry.timm_name), _key(entry.timm_name.removeprefix("featx_"))):
            return entry
    raise unknown_model_error(name)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a catalogue model by name with keyword arguments passed through.

    >>> m = create_model("ResNet50FPN", frozen_stages=1)   # or "featx_resnet50_fpn"
    """
    return get_entry(name).build(**kwargs)
