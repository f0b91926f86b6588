"""Feature Pyramid Network with mmdet's arguments and semantics.

With the same weights and settings it computes exactly torchvision's ``FeaturePyramidNetwork``:
``add_extra_convs=False`` is ``LastLevelMaxPool`` (P6 = 1x1 max-pool, stride 2, of P5), and
``add_extra_convs="on_input"``/``"on_output"`` with ``relu_before_extra_convs=True`` is
``LastLevelP6P7`` (P6 from C5 or P5, P7 from ReLU(P6)). Parameter names are mmdet's
(``lateral_convs.i.conv``, ``fpn_convs.i.conv``), so mmdet FPN checkpoints load as they are.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from featx.features import Extractor, FeatureInfo, check_feature_maps, level_name
from featx.layers import ConvNormAct, NormCfg

__all__ = ["FPN"]

# the input check is one opaque call in torch.fx graphs (create_feature_extractor), here as in featx.features
torch.fx.wrap("check_feature_maps")

_EXTRA_MODES = ("on_input", "on_lateral", "on_output")


class FPN(Extractor):
    """Top-down feature pyramid: lateral 1x1 convs, size-based upsampling, 3x3 output convs.

    Args:
        in_channels: channels of each input level (e.g. ``[256, 512, 1024, 2048]`` for C2..C5).
        out_channels: channels of every output level.
        num_outs: number of outputs; those past the used input levels are extra levels.
        start_level: index of the first input level used (1 skips C2, RetinaNet-style).
        end_level: index of the last input level used, **inclusive**; -1 means the last input.
            When it is not the last input, no extra levels are allowed.
        add_extra_convs: ``False``: extra levels are 1x1 max-pools with stride 2 of the last
            output. ``True``/``"on_input"``: stride-2 3x3 convs, the first on the last used
            input; ``"on_lateral"``: on its lateral; ``"on_output"``: on the last output.
        relu_before_extra_convs: apply ReLU before each extra conv after the first.
        no_norm_on_lateral: no norm in the lateral 1x1 convs even when ``norm_cfg`` is set.
        norm_cfg: norm in every conv (None, "BN", "GN", dict(type=..., ...)).
        act_cfg: activation after every conv (None, "ReLU", dict(type=...)).
        conv_cfg: mmcv's convolution for every conv, as mmdet's FPN takes it (``dict(type="ConvWS")``); needs mmcv.
        upsample_cfg: ``F.interpolate`` options; default ``dict(mode="nearest")``. Without
            ``scale_factor`` the upsampled map takes the next level's size, so any input size works.
        in_strides: strides of the input levels, for ``feature_info`` (default 4, 8, 16, ...).

    Shapes: inputs ``(N, in_channels[i], H_i, W_i)``; outputs ``(N, out_channels, H_j, W_j)`` with
    the used inputs' sizes, then each extra level at ``ceil(H/2)`` of the previous.

    Example:
        >>> fpn = FPN([256, 512, 1024, 2048], 256, num_outs=5)  # P2..P6, Faster R-CNN
        >>> retina = FPN([256, 512, 1024, 2048], 256, num_outs=5, start_level=1,
        ...              add_extra_convs="on_input")            # P3..P7, RetinaNet
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int,
        num_outs: int,
        start_level: int = 0,
        end_level: int = -1,
        add_extra_convs: Union[bool, str] = False,
        relu_before_extra_convs: bool = False,
        no_norm_on_lateral: bool = False,
        norm_cfg: NormCfg = None,
        act_cfg: Any = None,
        upsample_cfg: Optional[dict] = None,
        in_strides: Optional[Sequence[int]] = None,
        conv_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__()
        if isinstance(in_channels, int) or not isinstance(in_channels, Sequence) or not in_channels:
            raise TypeError(f"in_channels must be a non-empty list of ints, got {in_channels!r}")
        if not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in in_channels):
            raise ValueError(f"in_channels must be positive ints, got {list(in_channels)}")
        if not isinstance(out_channels, int) or isinstance(out_channels, bool) or out_channels < 1:
            raise ValueError(f"out_channels must be a positive int, got {out_channels!r}")
        if not isinstance(num_outs, int) or isinstance(num_outs, bool) or num_outs < 1:
            raise ValueError(f"num_outs must be a positive int, got {num_outs!r}")
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_ins = len(self.in_channels)
        self.num_outs = num_outs
        if in_strides is None:
            in_strides = [4 * 2**i for i in range(self.num_ins)]
        if len(in_strides) != self.num_ins:
            raise ValueError(f"in_strides has {len(in_strides)} entries but in_channels has {self.num_ins}")
        self.in_strides = [int(s) for s in in_strides]
        if any(b < a for a, b in zip(self.in_strides, self.in_strides[1:])):
            raise ValueError(f"in_strides must be ascending (inputs finest first), got {self.in_strides}")

        if not isinstance(start_level, int) or not 0 <= start_level < self.num_ins:
            raise ValueError(f"start_level must be in 0..{self.num_ins - 1} for {self.num_ins} inputs, got {start_level!r}")
        if end_level == -1 or end_level == self.num_ins - 1:
            self.backbone_end_level = self.num_ins
            if self.num_outs < self.num_ins - start_level:
                raise ValueError(
                    f"num_outs={num_outs} is too small: inputs {start_level}..{self.num_ins - 1} "
                    f"give {self.num_ins - start_level} levels"
                )
        else:
            if not isinstance(end_level, int) or not start_level <= end_level < self.num_ins:
                raise ValueError(
                    f"end_level must be -1 or in {start_level}..{self.num_ins - 1} (inclusive), got {end_level!r}"
                )
            self.backbone_end_level = end_level + 1
            if self.num_outs != end_level - start_level + 1:
                raise ValueError(
                    f"with end_level={end_level} (not the last input) no extra levels are allowed: "
                    f"num_outs must be {end_level - start_level + 1}, got {num_outs}"
                )
        self.start_level = start_level
        self.end_level = end_level

        if isinstance(add_extra_convs, bool):
            self.add_extra_convs: Union[bool, str] = "on_input" if add_extra_convs else False
        elif isinstance(add_extra_convs, str) and add_extra_convs in _EXTRA_MODES:
            self.add_extra_convs = add_extra_convs
        else:
            raise ValueError(f"add_extra_convs must be a bool or one of {_EXTRA_MODES}, got {add_extra_convs!r}")
        self.relu_before_extra_convs = relu_before_extra_convs
        self.upsample_cfg = dict(upsample_cfg) if upsample_cfg is not None else {"mode": "nearest"}

        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for i in range(self.start_level, self.backbone_end_level):
            self.lateral_convs.append(
                ConvNormAct(self.in_channels[i], out_channels, 1,
                            norm_cfg=None if no_norm_on_lateral else norm_cfg, act_cfg=act_cfg, conv_cfg=conv_cfg)
            )
            self.fpn_convs.append(ConvNormAct(out_channels, out_channels, 3, padding=1, norm_cfg=norm_cfg, act_cfg=act_cfg,
                                              conv_cfg=conv_cfg))
        extra_levels = self.num_outs - self.backbone_end_level + self.start_level
        if self.add_extra_convs:
            for i in range(extra_levels):
                cin = self.in_channels[self.backbone_end_level - 1] if i == 0 and self.add_extra_convs == "on_input" else out_channels
                self.fpn_convs.append(ConvNormAct(cin, out_channels, 3, stride=2, padding=1, norm_cfg=norm_cfg, act_cfg=act_cfg,
                                                  conv_cfg=conv_cfg))

        self._init_weights()
        strides = self.in_strides[self.start_level:self.backbone_end_level]
        while len(strides) < self.num_outs:
            strides.append(strides[-1] * 2)
        # Levels are numbered from the first used input's stride on, one per level, so a dilated
        # backbone (two inputs at stride 16) still gives distinct names.
        first = int(level_name("P", strides[0])[1:])
        self.feature_info = [FeatureInfo(f"P{first + j}", self.out_channels, s) for j, s in enumerate(strides)]

    def _init_weights(self) -> None:
        # torchvision's FPN init: kaiming_uniform(a=1), zero bias (mmdet uses xavier_uniform).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

    def forward(self, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Tuple of ``len(in_channels)`` maps in ascending stride -> tuple of ``num_outs`` maps."""
        inputs = check_feature_maps(list(inputs), self.in_channels, "FPN")
        laterals = [conv(inputs[i + self.start_level]) for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):
            if "scale_factor" in self.upsample_cfg:
                up = F.interpolate(laterals[i], **self.upsample_cfg)
            else:
                up = F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], **self.upsample_cfg)
            laterals[i - 1] = laterals[i - 1] + up
        used = len(laterals)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(used)]
        if self.num_outs > used:
            if not self.add_extra_convs:
                for _ in range(self.num_outs - used):
                    # = F.max_pool2d(x, 1, stride=2) (torchvision's LastLevelMaxPool), written as the strided
                    # slice it is: OpenVINO's int8 CPU pipeline zeroed a 1x1 MaxPool's output (2026.4)
                    outs.append(outs[-1][:, :, ::2, ::2])
            else:
                source = {
                    "on_input": lambda: inputs[self.backbone_end_level - 1],
                    "on_lateral": lambda: laterals[-1],
                    "on_output": lambda: outs[-1],
                }[self.add_extra_convs]()
                outs.append(self.fpn_convs[used](source))
                for i in range(used + 1, self.num_outs):
                    x = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                    outs.append(self.fpn_convs[i](x))
        return tuple(outs)
