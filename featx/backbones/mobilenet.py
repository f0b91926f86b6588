"""MobileNetV2 and MobileNetV3 (large, small) as C2..C5 extractors, torchvision's keys.

Each tap is the last block of the last run of blocks at a stride (``features`` indices); the stem's
last module is the stride-2 level (16 ch) timm's MobileNets list first:

| arch | stem | C2 (s4) | C3 (s8) | C4 (s16) | C5 (s32) |
|---|---|---|---|---|---|
| mobilenet_v2 | 0-1 | 3 (24 ch) | 6 (32) | 13 (96) | 18 (1280, the final 1x1 conv) |
| mobilenet_v3_large | 0-1 | 3 (24) | 6 (40) | 12 (112) | 16 (960, the final 1x1 conv) |
| mobilenet_v3_small | 0 | 1 (16) | 3 (24) | 8 (48) | 12 (576, the final 1x1 conv) |
"""
from __future__ import annotations

from typing import Optional

import torchvision.models as tvm

from featx.backbones.trunk import TorchvisionTrunk, TrunkSpec

__all__ = ["MobileNet", "MOBILENET_SPECS"]


def _mobilenet_spec(arch: str, stem_end: int, taps: tuple[int, int, int, int], channels: tuple[int, ...],
                    stem_channels: int = 16) -> TrunkSpec:
    bounds = (stem_end,) + tuple(t + 1 for t in taps)
    stages = tuple(tuple(f"features.{i}" for i in range(a, b)) for a, b in zip(bounds, bounds[1:]))
    return TrunkSpec(arch=arch, build=lambda: getattr(tvm, arch)(weights=None), keep=("features",),
                     stem=tuple(f"features.{i}" for i in range(stem_end)), stages=stages, channels=channels,
                     stem_levels=((f"features.{stem_end - 1}", stem_channels, 2),))


MOBILENET_SPECS: dict[str, TrunkSpec] = {
    "mobilenet_v2": _mobilenet_spec("mobilenet_v2", 2, (3, 6, 13, 18), (24, 32, 96, 1280)),
    "mobilenet_v3_large": _mobilenet_spec("mobilenet_v3_large", 2, (3, 6, 12, 16), (24, 40, 112, 960)),
    "mobilenet_v3_small": _mobilenet_spec("mobilenet_v3_small", 1, (1, 3, 8, 12), (16, 24, 48, 576)),
}


class MobileNet(TorchvisionTrunk):
    """torchvision's MobileNetV2 / V3 (``arch`` in ``MOBILENET_SPECS``) as C2..C5."""

    SPECS = MOBILENET_SPECS
    DEFAULT_ARCH = "mobilenet_v2"
    first_conv = "features.0.0"

    @classmethod
    def source_classifier_of(cls, arch: str) -> Optional[str]:
        """MobileNetV2's classifier is one Linear after dropout; V3's has a hidden layer, so no head takes it."""
        return "classifier.1" if arch == "mobilenet_v2" else None
