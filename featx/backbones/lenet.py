"""LeNet-5 (LeCun et al., 1998) as a small-image feature extractor: levels S2, S4 and C5.

The network: C1 6@5x5 -> S2 2x2 subsampling -> C3 16@5x5 -> S4 2x2 subsampling -> C5 120@5x5, then F6
(84) and the output layer, on 32x32 inputs (28x28 digits padded by 2). featx keeps the feature part:

| level | after | channels | stride | 32x32 input |
|---|---|---|---|---|
| S2 | C1 + subsampling | 6 | 2 | 14x14 |
| S4 | C3 + subsampling | 16 | 4 | 5x5 |
| C5 | C5 | 120 | 4 (a 5x5 valid conv, no further subsampling) | 1x1 |

``style="classic"``: tanh and average-pool subsampling (the paper's squashing function and averaging
S-layers, without their per-map trainable coefficients, and with C3 connected to all six S2 maps
instead of the paper's sparse table); ``style="modern"``: ReLU and max-pooling, as the PyTorch tutorial
writes it. C5 is a convolution (as in the paper), so larger inputs give a C5 map instead of one vector.
For digits, icons and patches, not detection: inputs must be at least 32x32 (C5 needs a 5x5 S4 map).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from featx.features import FeatureExtractor, FeatureInfo

__all__ = ["LeNet5", "LENET_STYLES"]

LENET_STYLES = {"classic": (nn.Tanh, nn.AvgPool2d), "modern": (nn.ReLU, nn.MaxPool2d)}


class LeNet5(FeatureExtractor):
    """LeNet-5's feature layers (see the module docstring).

    Args:
        style: ``"classic"`` (tanh, average pooling) or ``"modern"`` (ReLU, max-pooling).
        in_channels: 1 (grayscale, the paper's) or 3 (RGB).
        out_indices: levels to return, 0..2 = S2, S4, C5.
        frozen_stages: -1 nothing, k the first k stages (LeNet has no separate stem, so 0 freezes nothing).
        norm_eval: accepted for the common contract; LeNet-5 has no normalization layers.

    Shapes: ``(N, in_channels, H, W)`` with H, W >= 32 -> S2 ``(N, 6, (H-4)//2, (W-4)//2)``, S4
    ``(N, 16, ((H-4)//2-4)//2, ...)``, C5 ``(N, 120, S4_h - 4, S4_w - 4)``.

    Example:
        >>> [tuple(f.shape) for f in LeNet5().eval()(torch.rand(1, 1, 32, 32))]
        [(1, 6, 14, 14), (1, 16, 5, 5), (1, 120, 1, 1)]
    """

    min_input_size = 32
    first_conv = "conv1"

    @classmethod
    def coarsest_side(cls, side: int) -> int:
        """C5's side (see the shapes above): three unpadded 5x5 convolutions, two 2x2 pools."""
        return ((side - 4) // 2 - 4) // 2 - 4

    def __init__(self, style: str = "classic", in_channels: int = 1, out_indices: Iterable[int] = (0, 1, 2),
                 frozen_stages: int = -1, norm_eval: bool = False) -> None:
        super().__init__()
        if style not in LENET_STYLES:
            raise ValueError(f"style must be one of {sorted(LENET_STYLES)} (tanh + average pooling, or ReLU + "
                             f"max-pooling), got {style!r}")
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int (1 for grayscale, 3 for RGB), got {in_channels!r}")
        self.arch = "lenet5"
        self.style = style
        self.in_channels = in_channels
        act, pool = LENET_STYLES[style]
        self.conv1 = nn.Conv2d(in_channels, 6, 5)     # C1
        self.act1 = act()
        self.pool1 = pool(2)                            # S2
        self.conv2 = nn.Conv2d(6, 16, 5)               # C3
        self.act2 = act()
        self.pool2 = pool(2)                            # S4
        self.conv3 = nn.Conv2d(16, 120, 5)             # C5
        self.act3 = act()
        infos = [FeatureInfo("S2", 6, 2, "pool1"), FeatureInfo("S4", 16, 4, "pool2"), FeatureInfo("C5", 120, 4, "act3")]
        self._init_features(infos, out_indices, frozen_stages, norm_eval)

    _STAGES = (("conv1", "act1", "pool1"), ("conv2", "act2", "pool2"), ("conv3", "act3"))

    def stem_modules(self) -> list[nn.Module]:
        return []

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def stage_module(self, index: int) -> nn.Module:
        return nn.Sequential(*(getattr(self, n) for n in self._STAGES[index]))

    def stage_module_names(self, index: int) -> list[str]:
        return list(self._STAGES[index])

    def sequential_view(self) -> tuple[nn.Module, list[nn.Module]]:
        return nn.Identity(), [self.stage_module(i) for i in range(len(self._STAGES))]

    def run_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        for name in self._STAGES[index]:
            x = getattr(self, name)(x)
        return x
