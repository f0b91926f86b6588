"""GoogLeNet (Inception v1) and Inception-v3 as C2..C5 extractors, torchvision's keys.

- GoogLeNet: stem = conv1 (its level, stride 2, 64 ch) + maxpool1; C2 = conv3 (stride 4, 192 ch), C3 = inception3b (stride 8,
  480), C4 = inception4e (stride 16, 832), C5 = inception5b (stride 32, 1024). Its ceil-mode pools
  keep the strides exact (224 -> 56, 28, 14, 7).
- Inception-v3: stem = Conv2d_1a/2a/2b (its level: Conv2d_2b_3x3, stride 2, 64 ch); C2 = Conv2d_4a_3x3 (192 ch), C3 = Mixed_5d
  (288), C4 = Mixed_6e (768), C5 = Mixed_7c (2048). Its unpadded convolutions make the strides
  inexact: 299 -> 71, 35, 17, 8 (real strides 4.2, 8.5, 17.6, 37.4); ``feature_info`` states the
  nominal 4, 8, 16, 32, and inputs must be at least 75x75.

The auxiliary classifiers are heads: not built, and dropped (reported) when a checkpoint has them.
With pretrained weights both re-normalize their input as torchvision does (``transform_input``).
"""
from __future__ import annotations

import torchvision.models as tvm

from featx.backbones.trunk import TorchvisionTrunk, TrunkSpec

__all__ = ["GoogLeNet", "InceptionV3", "GOOGLENET_SPECS", "INCEPTION_V3_SPECS"]

_GOOGLENET_BODY = ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
                   "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
                   "inception5a", "inception5b")
GOOGLENET_SPECS: dict[str, TrunkSpec] = {
    "googlenet": TrunkSpec(
        arch="googlenet", build=lambda: tvm.googlenet(weights=None, aux_logits=False, init_weights=True),
        keep=_GOOGLENET_BODY, stem=("conv1", "maxpool1"),
        stages=(("conv2", "conv3"), ("maxpool2", "inception3a", "inception3b"),
                ("maxpool3", "inception4a", "inception4b", "inception4c", "inception4d", "inception4e"),
                ("maxpool4", "inception5a", "inception5b")),
        channels=(192, 480, 832, 1024), transform_input=True, stem_levels=(("conv1", 64, 2),),
    ),
}

_INCEPTION_V3_BODY = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                      "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                      "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")
INCEPTION_V3_SPECS: dict[str, TrunkSpec] = {
    "inception_v3": TrunkSpec(
        arch="inception_v3", build=lambda: tvm.inception_v3(weights=None, aux_logits=False, init_weights=True),
        keep=_INCEPTION_V3_BODY, stem=("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"),
        stages=(("maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3"), ("maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d"),
                ("Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"), ("Mixed_7a", "Mixed_7b", "Mixed_7c")),
        channels=(192, 288, 768, 2048), min_size=75, transform_input=True, stem_levels=(("Conv2d_2b_3x3", 64, 2),),
    ),
}


class GoogLeNet(TorchvisionTrunk):
    """torchvision's GoogLeNet as C2..C5 (see the module docstring)."""

    SPECS = GOOGLENET_SPECS
    DEFAULT_ARCH = "googlenet"
    first_conv = "conv1.conv"
    source_classifier = "fc"

    @classmethod
    def coarsest_side(cls, side: int) -> int:
        """conv 7x7 stride 2 pad 3, then max pools with ``ceil_mode``: three 3x3 stride 2, one 2x2 stride 2
        (224 -> 112, 56, 28, 14, 7; 71 -> 36, 18, 9, 4, 2)."""
        side = (side + 2 * 3 - 7) // 2 + 1
        for _ in range(3):
            side = -(-(side - 3) // 2) + 1
        return -(-(side - 2) // 2) + 1


class InceptionV3(TorchvisionTrunk):
    """torchvision's Inception-v3 as C2..C5 (nominal strides; see the module docstring)."""

    SPECS = INCEPTION_V3_SPECS
    DEFAULT_ARCH = "inception_v3"
    first_conv = "Conv2d_1a_3x3.conv"
    source_classifier = "fc"

    @classmethod
    def coarsest_side(cls, side: int) -> int:
        """Unpadded 3x3s: stride-2 conv, conv, pool; conv; pool; Mixed_6a's and Mixed_7a's stride-2 branches
        (299 -> 149, 147, 73, 71, 35, 17, 8)."""
        side = (side - 3) // 2 + 1 - 2  # Conv2d_1a (stride 2), Conv2d_2a
        side = (side - 3) // 2 + 1 - 2  # maxpool1, Conv2d_4a
        for _ in range(3):  # maxpool2, Mixed_6a, Mixed_7a
            side = (side - 3) // 2 + 1
        return side
