"""DenseNet-121/161/169/201 as C2..C5 extractors, torchvision's keys.

Stem = conv0/norm0/relu0/pool0 (stride 4; its level is relu0, stride 2). C2 = denseblock1, C3 = transition1 + denseblock2,
C4 = transition2 + denseblock3, C5 = transition3 + denseblock4 + norm5 + ReLU (the map
torchvision's classifier pools). Each tap is a dense block's full concatenated output.
"""
from __future__ import annotations

import torchvision.models as tvm
from torch import nn

from featx.backbones.trunk import TorchvisionTrunk, TrunkSpec

__all__ = ["DenseNet", "DENSENET_SPECS"]

# arch -> channels of C2..C5 (num_init_features + growth * layers, halved by each transition)
_DENSENET_CHANNELS = {
    "densenet121": (256, 512, 1024, 1024),
    "densenet161": (384, 768, 2112, 2208),
    "densenet169": (256, 512, 1280, 1664),
    "densenet201": (256, 512, 1792, 1920),
}


def _densenet_spec(arch: str) -> TrunkSpec:
    f = "features."
    return TrunkSpec(
        arch=arch, build=lambda: getattr(tvm, arch)(weights=None), keep=("features",),
        stem=(f + "conv0", f + "norm0", f + "relu0", f + "pool0"),
        stages=((f + "denseblock1",), (f + "transition1", f + "denseblock2"), (f + "transition2", f + "denseblock3"),
                (f + "transition3", f + "denseblock4", f + "norm5", "relu5")),
        channels=_DENSENET_CHANNELS[arch],
        extra=(("relu5", lambda: nn.ReLU(inplace=False)),),  # torchvision applies F.relu after norm5
        graph_nodes=(f + "denseblock1", f + "denseblock2", f + "denseblock3", "relu"),
        stem_levels=((f + "relu0", 96 if arch == "densenet161" else 64, 2),),
    )


DENSENET_SPECS: dict[str, TrunkSpec] = {a: _densenet_spec(a) for a in _DENSENET_CHANNELS}


class DenseNet(TorchvisionTrunk):
    """torchvision's DenseNet (``arch``: densenet121/161/169/201) as C2..C5."""

    SPECS = DENSENET_SPECS
    DEFAULT_ARCH = "densenet121"
    first_conv = "features.conv0"
    source_classifier = "classifier"

    @classmethod
    def coarsest_side(cls, side: int) -> int:
        """conv 7x7 stride 2 pad 3, max pool 3x3 stride 2 pad 1, then three transitions' 2x2 average pools that drop
        an odd row (71 -> 36, 18, 9, 4, 2)."""
        side = (side + 2 * 3 - 7) // 2 + 1
        side = (side + 2 * 1 - 3) // 2 + 1
        return side // 8
