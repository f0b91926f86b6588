"""``BackboneFPN``: any featx backbone followed by any featx neck, wired from ``feature_info``."""
from __future__ import annotations

from typing import Any

from featx.features import Composite, FeatureExtractor, FeatureInfo
from featx.models.resolve import build_module

__all__ = ["BackboneFPN"]


class BackboneFPN(Composite):
    """A backbone followed by a neck; the neck's input channels and strides come from the backbone.

    Args:
        backbone: a featx backbone (``nn.Module``) or a config, e.g. ``dict(type="ResNet", depth=50)``.
        neck: an ``nn.Module`` or a config, e.g. ``dict(type="FPN", out_channels=256, num_outs=5)``;
            ``in_channels`` and ``in_strides`` default to the backbone's outputs.

    Forward: ``(N, 3, H, W)`` -> tuple of pyramid maps in ascending stride order.
    ``out_channels`` (an int, as torchvision detectors read it), ``strides`` and
    ``feature_info`` describe those maps. Weights are loaded by the builder:
    ``featx.create_model("BackboneFPN", backbone=..., neck=..., weights=...)``.

    Example:
        >>> m = BackboneFPN(dict(type="ResNet", depth=18), dict(type="FPN", out_channels=128, num_outs=5))
        >>> [f.name for f in m.feature_info]
        ['P2', 'P3', 'P4', 'P5', 'P6']
    """

    def __init__(self, backbone: Any, neck: Any) -> None:
        super().__init__()
        self.backbone = build_module(backbone)
        if not isinstance(self.backbone, FeatureExtractor):
            raise TypeError(f"backbone {type(self.backbone).__name__} is not a featx backbone (FeatureExtractor)")
        infos = self.backbone.feature_info
        self.neck = build_module(neck, in_channels=[f.channels for f in infos], in_strides=[f.stride for f in infos])
        self.feature_info: list[FeatureInfo] = list(self.neck.feature_info)
