"""VGG (11/13/16/19, with and without BatchNorm) and AlexNet as C2..C5 extractors, torchvision's keys.

Taps (torchvision ``features`` indices; VGG's are derived from its layer table):

- VGG: C2 = last ReLU of block 3 (stride 4, 256 ch), C3 = last ReLU of block 4 (stride 8, 512),
  C4 = last ReLU of block 5 (stride 16, 512), C5 = the fifth max-pool (stride 32, 512). The
  stem is blocks 1-2 with the first pool; its levels (timm's first two) are the last ReLUs of blocks 1
  (stride 1, 64 ch) and 2 (stride 2, 128). Taking the activations *before* each pool keeps the
  deepest map at each stride (as SSD's VGG does with conv4_3).
- AlexNet: C2 = ReLU 1 (``features.1``), C3 = ReLU 2 (``features.4``), C4 = ReLU 5
  (``features.11``), C5 = the last max-pool (``features.12``). Its 11x11/4 conv and unpadded 3x3/2
  pools make the strides inexact: a 224 input gives 55, 27, 13, 6 (real strides 4.07, 8.3, 17.2,
  37.3; ``feature_info`` states the nominal 4, 8, 16, 32). The FPN's size-based upsampling
  handles the uneven sizes. No stem: C2 is the first conv.
"""
from __future__ import annotations

import torchvision.models as tvm
from torch import nn
from torchvision.models.vgg import cfgs as VGG_LAYER_TABLES
from torchvision.models.vgg import make_layers

from featx.backbones.trunk import TorchvisionTrunk, TrunkSpec

__all__ = ["VGG", "AlexNet", "VGG_SPECS", "ALEXNET_SPECS"]

_VGG_DEPTHS = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}


class _VGGFeatures:
    """torchvision's VGG without its 120M-parameter classifier: only ``features``, built and
    initialised as torchvision's ``VGG.__init__`` does for those modules."""

    def __init__(self, table: str, batch_norm: bool) -> None:
        self.features = make_layers(VGG_LAYER_TABLES[table], batch_norm=batch_norm)
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


def _vgg_spec(arch: str) -> TrunkSpec:
    table = _VGG_DEPTHS[arch.removesuffix("_bn")]
    batch_norm = arch.endswith("_bn")
    per_conv = 3 if batch_norm else 2  # conv (+ bn) + relu
    index, pools = 0, []
    for item in VGG_LAYER_TABLES[table]:
        if item == "M":
            pools.append(index)
            index += 1
        else:
            index += per_conv
    names = [f"features.{i}" for i in range(index)]
    p2, p3, p4, p5 = pools[1:]
    return TrunkSpec(
        arch=arch, build=lambda: _VGGFeatures(table, batch_norm), keep=("features",),
        stem=tuple(names[:p2]),
        stages=(tuple(names[p2:p3]), tuple(names[p3:p4]), tuple(names[p4:p5]), (names[p5],)),
        channels=(256, 512, 512, 512),
        stem_levels=((names[pools[0] - 1], 64, 1), (names[p2 - 1], 128, 2)),  # the last ReLUs of blocks 1 and 2
    )


VGG_SPECS: dict[str, TrunkSpec] = {a: _vgg_spec(a) for d in _VGG_DEPTHS for a in (d, f"{d}_bn")}

ALEXNET_SPECS: dict[str, TrunkSpec] = {
    "alexnet": TrunkSpec(
        arch="alexnet", build=lambda: tvm.alexnet(weights=None), keep=("features",), stem=(),
        stages=(("features.0", "features.1"), ("features.2", "features.3", "features.4"),
                tuple(f"features.{i}" for i in range(5, 12)), ("features.12",)),
        channels=(64, 192, 256, 256), min_size=63,
    ),
}


class VGG(TorchvisionTrunk):
    """torchvision's VGG (``arch`` in ``VGG_SPECS``: vgg11..vgg19, ``_bn`` variants) as C2..C5.

    >>> VGG("vgg16_bn", weights="DEFAULT")(torch.rand(1, 3, 224, 224))  # C2..C5: 256x56x56 .. 512x7x7
    """

    SPECS = VGG_SPECS
    DEFAULT_ARCH = "vgg16"
    first_conv = "features.0"

    @classmethod
    def coarsest_side(cls, side: int) -> int:
        """Five 2x2 stride-2 max pools that drop an odd row (71 -> 35, 17, 8, 4, 2)."""
        return side // 32


class AlexNet(TorchvisionTrunk):
    """torchvision's AlexNet as C2..C5 (nominal strides; see the module docstring)."""

    SPECS = ALEXNET_SPECS
    DEFAULT_ARCH = "alexnet"
    first_conv = "features.0"

    @classmethod
    def coarsest_side(cls, side: int) -> int:
        """conv 11x11 stride 4 pad 2, then three 3x3 stride-2 max pools without padding (224 -> 55, 27, 13, 6)."""
        side = (side + 2 * 2 - 11) // 4 + 1
        for _ in range(3):
            side = (side - 3) // 2 + 1
        return side
