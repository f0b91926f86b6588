"""featx pyramids inside torchvision's detectors (Faster/Mask/Keypoint R-CNN, RetinaNet, FCOS).

torchvision's detectors read ``backbone.out_channels`` (an int) and call the backbone to get an
``OrderedDict`` of maps. ``as_detection_backbone`` gives exactly that, keyed by level name
(``"p2"``..). ``detector_kwargs`` builds the anchor generator and RoI poolers that fit the
pyramid's levels and strides, so nothing is matched by hand:

    >>> from torchvision.models.detection import FasterRCNN
    >>> body = featx.create_model("ResNet50FPN", frozen_stages=1, norm_eval=True)
    >>> det = FasterRCNN(as_detection_backbone(body), num_classes=91, **detector_kwargs(body, "faster_rcnn"))
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign

__all__ = ["DetectionBackbone", "as_detection_backbone", "anchor_generator", "detector_kwargs", "DETECTORS"]

DETECTORS = ("faster_rcnn", "mask_rcnn", "keypoint_rcnn", "retinanet", "fcos")


class DetectionBackbone(nn.Module):
    """A featx pyramid as torchvision detectors call it: ``x -> OrderedDict[level name, map]``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not hasattr(model, "feature_info"):
            raise TypeError(f"{type(model).__name__} has no feature_info; pass a featx model")
        channels = {f.channels for f in model.feature_info}
        if len(channels) != 1:
            raise ValueError(
                f"torchvision detection heads need one channel count on every level, got {sorted(channels)}; "
                "put an FPN on the backbone (e.g. featx.BackboneFPN or a <Arch>FPN model)"
            )
        self.body = model
        self.out_channels: int = channels.pop()
        self.names = [f.name.lower() for f in model.feature_info]
        self.strides = [f.stride for f in model.feature_info]

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

    RoI poolers use the levels with stride <= 32 (P2..P5 for an FPN), as torchvision does; the
    coarser extra levels only feed the RPN.
    """
    names = [f.name.lower() for f in model.feature_info]
    roi_levels = [n for n, f in zip(names, model.feature_info) if f.stride <= 32] or names
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
