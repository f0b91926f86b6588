"""featx pyramids inside torchvision's detectors (Faster/Mask/Keypoint R-CNN, RetinaNet, FCOS).

torchvision's detectors read ``backbone.out_channels`` (an int) and call the backbone to get an
``OrderedDict`` of maps. ``as_detection_backbone`` gives exactly what torchvision's own
``BackboneWithFPN`` (``resnet_fpn_backbone``) gives: the maps keyed ``"0"``, ``"1"``, ... for the
levels built from backbone stages, then ``"pool"`` for a max-pooled extra level or ``"p6"``,
``"p7"`` for conv-made ones. So torchvision's detectors work with their default anchors and RoI
poolers, exactly where ``resnet_fpn_backbone`` goes:

    >>> from torchvision.models.detection import FasterRCNN
    >>> backbone = as_detection_backbone(featx.create_model("ResNet50FPN", frozen_stages=1, norm_eval=True))
    >>> det = FasterRCNN(backbone, num_classes=91)                       # torchvision's defaults
    >>> det = FasterRCNN(backbone, num_classes=91, **detector_kwargs(backbone, "faster_rcnn"))  # any pyramid

A pyramid that does not fit what a detector asks for (anchor sizes per level, RoI pooler level
names) is caught on the detector's first call with a ``DetectorMismatchError`` that says what the
detector expects, instead of an ``IndexError`` deep inside torchvision.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Any, Optional

import torch
from torch import nn
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.ops import MultiScaleRoIAlign

from featx.errors import DetectorMismatchError
from featx.features import Composite, Extractor, resolve_forward_annotations
from featx.necks.fpn import FPN

__all__ = ["DetectionBackbone", "as_detection_backbone", "torchvision_level_names", "anchor_generator",
           "detector_kwargs", "check_detector", "DETECTORS"]

DETECTORS = ("faster_rcnn", "mask_rcnn", "keypoint_rcnn", "retinanet", "fcos")


def torchvision_level_names(model: Extractor) -> list[str]:
    """The keys torchvision's ``BackboneWithFPN`` would give ``model``'s levels: ``"0"``.. for the
    levels built from backbone stages, ``"pool"`` for a max-pooled extra level, ``"p6"``/``"p7"``
    (the level's name) for conv-made ones."""
    neck = model.neck if isinstance(model, Composite) else model
    if not isinstance(neck, FPN):
        return [str(i) for i in range(len(model.feature_info))]
    used = len(neck.lateral_convs)
    names = [str(i) for i in range(used)]
    extra = neck.feature_info[used:]
    if neck.add_extra_convs:
        names += [f.name.lower() for f in extra]
    else:
        names += ["pool" if i == 0 else f"pool{i + 1}" for i in range(len(extra))]
    return names


@resolve_forward_annotations
class DetectionBackbone(nn.Module):
    """A featx pyramid as torchvision detectors call it: ``x -> OrderedDict[key, map]`` with the keys
    of torchvision's ``BackboneWithFPN`` (see :func:`torchvision_level_names`).

    ``out_channels`` (int), ``names``, ``strides`` and ``feature_info`` describe the levels."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not isinstance(model, Extractor):
            raise TypeError(f"{type(model).__name__} is not a featx model; pass a featx composite "
                            "(e.g. featx.create_model('ResNet50FPN'))")
        channels = {f.channels for f in model.feature_info}
        if len(channels) != 1:
            raise DetectorMismatchError(
                f"torchvision detection heads need one channel count on every level, got {sorted(channels)}; "
                "put an FPN on the backbone (e.g. featx.BackboneFPN or a <Arch>FPN model)"
            )
        self.body = model
        self.out_channels: int = channels.pop()
        self.names = torchvision_level_names(model)
        self.strides = [f.stride for f in model.feature_info]
        self.feature_info = list(model.feature_info)
        _watch(self)

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        return OrderedDict(zip(self.names, self.body(x)))


def as_detection_backbone(model: nn.Module) -> DetectionBackbone:
    """Wrap a featx composite (any pyramid with equal channels per level) for torchvision detectors."""
    return model if isinstance(model, DetectionBackbone) else DetectionBackbone(model)


def anchor_generator(model: nn.Module, detector: str = "faster_rcnn") -> AnchorGenerator:
    """Anchors that fit the pyramid, torchvision's defaults expressed per stride.

    Faster/Mask/Keypoint R-CNN: one size of 8 x stride per level (32..512 on P2..P6), ratios 0.5/1/2.
    RetinaNet: 4 x stride with 3 scales per octave (32..512 on P3..P7), ratios 0.5/1/2.
    FCOS: one anchor of 1 x stride (8..128 on P3..P7), ratio 1.
    """
    strides = [f.stride for f in model.feature_info]
    if detector in ("faster_rcnn", "mask_rcnn", "keypoint_rcnn"):
        sizes = tuple((8 * s,) for s in strides)
        ratios = ((0.5, 1.0, 2.0),) * len(strides)
    elif detector == "retinanet":
        sizes = tuple((4 * s, int(4 * s * 2 ** (1 / 3)), int(4 * s * 2 ** (2 / 3))) for s in strides)
        ratios = ((0.5, 1.0, 2.0),) * len(strides)
    elif detector == "fcos":
        sizes = tuple((s,) for s in strides)
        ratios = ((1.0,),) * len(strides)
    else:
        raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
    return AnchorGenerator(sizes, ratios)


def detector_kwargs(model: nn.Module, detector: str = "faster_rcnn", **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for the torchvision detector class: anchors and RoI poolers for this pyramid.

    RoI poolers use the levels built from backbone stages with stride <= 32 (``"0"``..``"3"`` for an
    FPN), as torchvision does; the extra levels only feed the RPN.
    """
    names = model.names if isinstance(model, DetectionBackbone) else torchvision_level_names(model)
    roi_levels = [n for n, f in zip(names, model.feature_info) if f.stride <= 32 and n.isdigit()] or names
    kw: dict[str, Any] = {}
    if detector in ("faster_rcnn", "mask_rcnn", "keypoint_rcnn"):
        kw["rpn_anchor_generator"] = anchor_generator(model, detector)
        kw["box_roi_pool"] = MultiScaleRoIAlign(roi_levels, output_size=7, sampling_ratio=2)
        if detector == "mask_rcnn":
            kw["mask_roi_pool"] = MultiScaleRoIAlign(roi_levels, output_size=14, sampling_ratio=2)
        if detector == "keypoint_rcnn":
            kw["keypoint_roi_pool"] = MultiScaleRoIAlign(roi_levels, output_size=14, sampling_ratio=2)
    elif detector in ("retinanet", "fcos"):
        kw["anchor_generator"] = anchor_generator(model, detector)
    else:
        raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
    kw.update(overrides)
    return kw


# -- catching a pyramid that does not fit the detector ----------------------------------------------
_DETECTOR_TYPES = (GeneralizedRCNN, RetinaNet, FCOS)


def check_detector(detector: nn.Module) -> None:
    """Raise ``DetectorMismatchError`` unless ``detector``'s anchor generator has one entry per level
    of its featx backbone and its RoI poolers ask only for levels the backbone has."""
    backbone = getattr(detector, "backbone", None)
    if not isinstance(backbone, DetectionBackbone):
        return
    levels = ", ".join(f"{n} (stride {s})" for n, s in zip(backbone.names, backbone.strides))
    fix = ("build the detector with featx.integrations.torchvision.detector_kwargs(backbone, "
           f"'{_kind(detector)}'), or use a pyramid of the detector's default layout")
    anchors: Optional[AnchorGenerator] = getattr(getattr(detector, "rpn", None), "anchor_generator", None) or \
        getattr(detector, "anchor_generator", None)
    if anchors is not None and len(anchors.sizes) != len(backbone.names):
        raise DetectorMismatchError(
            f"{type(detector).__name__}'s anchor generator has {len(anchors.sizes)} sizes, one per level it expects "
            f"({', '.join(str(s) for s in anchors.sizes)}), but the featx pyramid has {len(backbone.names)} levels: "
            f"{levels}; {fix}")
    roi_heads = getattr(detector, "roi_heads", None)
    for pooler_name in ("box_roi_pool", "mask_roi_pool", "keypoint_roi_pool"):
        pooler = getattr(roi_heads, pooler_name, None)
        if isinstance(pooler, MultiScaleRoIAlign):
            missing = [n for n in pooler.featmap_names if n not in backbone.names]
            if missing:
                raise DetectorMismatchError(
                    f"{type(detector).__name__}'s {pooler_name} pools levels {pooler.featmap_names}, but the featx "
                    f"pyramid has no {', '.join(map(repr, missing))}; its levels are {levels}; {fix}")


def _kind(detector: nn.Module) -> str:
    name = type(detector).__name__.lower()
    return {"fasterrcnn": "faster_rcnn", "maskrcnn": "mask_rcnn", "keypointrcnn": "keypoint_rcnn"}.get(name, name)


# torchvision builds its detectors around the backbone and calls it from its own forward, so the
# check runs from a forward pre-hook on the first call of each detector holding a featx backbone.
# The global hook exists only while some featx detection backbone has not yet been checked.
_UNCHECKED: "weakref.WeakSet[DetectionBackbone]" = weakref.WeakSet()
_HOOK: list = []


def _pre_hook(module: nn.Module, args: tuple) -> None:
    if not _UNCHECKED:  # every featx detection backbone was checked or is gone
        if _HOOK:
            _HOOK.pop().remove()
        return
    if not isinstance(module, _DETECTOR_TYPES):
        return
    backbone = getattr(module, "backbone", None)
    if isinstance(backbone, DetectionBackbone) and backbone in _UNCHECKED:
        check_detector(module)
        _UNCHECKED.discard(backbone)
        if not _UNCHECKED and _HOOK:
            _HOOK.pop().remove()


def _watch(backbone: DetectionBackbone) -> None:
    _UNCHECKED.add(backbone)
    if not _HOOK:
        _HOOK.append(nn.modules.module.register_module_forward_pre_hook(_pre_hook))
