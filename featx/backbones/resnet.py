"""ResNet / ResNeXt / Wide-ResNet as four-stage feature extractors (C2..C5, strides 4..32).

The family is data: ``RESNET_ARCHS`` maps a torchvision architecture name to its block type,
blocks per stage, groups and width per group. Parameter names are torchvision's
(``conv1``, ``bn1``, ``layer1.0.conv1`` ...), so a torchvision state_dict loads strictly once
its ``fc.*`` head is dropped. Options beyond torchvision follow mmdet's names and meanings:
``style`` ("pytorch": stride on the 3x3 conv; "caffe": on the first 1x1), ``deep_stem`` and
``avg_down`` (ResNet-D, laid out as timm's ``resnet50d`` so its weights load), ``output_stride``
(8/16/32 by dilating the last stages, torchvision's rule), ``zero_init_residual``.

The blocks are featx's own rather than torchvision's because torchvision's have no caffe style
and refuse dilation in ``BasicBlock``; they compute the same function with the same names.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterable, Optional, Sequence

import torch
from torch import nn

from featx.errors import ArgumentError, DepthError, did_you_mean
from featx.features import FeatureExtractor, FeatureInfo
from featx.layers import NormCfg, build_norm, mmcv_conv_factory, mmcv_plugin_layer

__all__ = ["ResNetSpec", "RESNET_ARCHS", "RESNET_DEPTHS", "ResNet", "BasicBlock", "Bottleneck", "arch_depth", "resolve_arch"]

NormFactory = Callable[[int], nn.Module]


@dataclass(frozen=True)
class ResNetSpec:
    """One ResNet-family architecture: block kind, blocks per stage, grouped-conv width."""

    block: str  # "basic" | "bottleneck"
    layers: tuple[int, int, int, int]
    groups: int = 1
    width_per_group: int = 64


RESNET_ARCHS: dict[str, ResNetSpec] = {
    "resnet18": ResNetSpec("basic", (2, 2, 2, 2)),
    "resnet34": ResNetSpec("basic", (3, 4, 6, 3)),
    "resnet50": ResNetSpec("bottleneck", (3, 4, 6, 3)),
    "resnet101": ResNetSpec("bottleneck", (3, 4, 23, 3)),
    "resnet152": ResNetSpec("bottleneck", (3, 8, 36, 3)),
    "resnext50_32x4d": ResNetSpec("bottleneck", (3, 4, 6, 3), groups=32, width_per_group=4),
    "resnext101_32x8d": ResNetSpec("bottleneck", (3, 4, 23, 3), groups=32, width_per_group=8),
    "resnext101_64x4d": ResNetSpec("bottleneck", (3, 4, 23, 3), groups=64, width_per_group=4),
    "wide_resnet50_2": ResNetSpec("bottleneck", (3, 4, 6, 3), width_per_group=128),
    "wide_resnet101_2": ResNetSpec("bottleneck", (3, 4, 23, 3), width_per_group=128),
}
RESNET_DEPTHS: dict[int, str] = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101", 152: "resnet152"}


# builds a convolution: (in, out, kernel_size, stride=, padding=, dilation=, groups=, bias=) -> module; nn.Conv2d, or
# mmcv's build_conv_layer bound to an mmdet conv_cfg / dcn config (the same parameter names, so weights load)
ConvFactory = Callable[..., nn.Module]


def _conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1, dilation: int = 1,
             conv: ConvFactory = nn.Conv2d) -> nn.Module:
    return conv(cin, cout, 3, stride=stride, padding=dilation, groups=groups, dilation=dilation, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1, conv: ConvFactory = nn.Conv2d) -> nn.Module:
    return conv(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34). ``dilation`` applies to both convs."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Optional[nn.Module] = None,
        groups: int = 1,
        width_per_group: int = 64,
        dilation: int = 1,
        first_dilation: int = 1,
        norm_layer: NormFactory = nn.BatchNorm2d,
        conv: ConvFactory = nn.Conv2d,
        conv2: Optional[ConvFactory] = None,
        plugins: Sequence[dict] = (),
    ) -> None:
        super().__init__()
        if groups != 1 or width_per_group != 64:
            raise ValueError("BasicBlock (ResNet-18/34) supports only groups=1 and width_per_group=64")
        if plugins:
            raise ArgumentError("plugins are built in Bottleneck blocks only (ResNet-50 and deeper), as in mmdet")
        if conv2 is not None:
            raise ArgumentError("deformable convolutions (dcn) are built in Bottleneck blocks only (ResNet-50 and deeper), "
                             "as in mmdet")
        self.conv1 = _conv3x3(inplanes, planes, stride, dilation=first_dilation, conv=conv)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, dilation=dilation, conv=conv)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample

    def last_norm(self) -> nn.Module:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (grouped, dilated) -> 1x1 with 4x expansion (ResNet-50+, ResNeXt, Wide-ResNet).

    ``style="pytorch"`` puts the stride on the 3x3 conv (torchvision, "ResNet v1.5"),
    ``style="caffe"`` on the first 1x1 (the original paper, Detectron's caffe2 weights).
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: Optional[nn.Module] = None,
        groups: int = 1,
        width_per_group: int = 64,
        dilation: int = 1,
        first_dilation: int = 1,
        norm_layer: NormFactory = nn.BatchNorm2d,
        style: str = "pytorch",
        conv: ConvFactory = nn.Conv2d,
        conv2: Optional[ConvFactory] = None,
        plugins: Sequence[dict] = (),
    ) -> None:
        super().__init__()
        width = int(planes * (width_per_group / 64.0)) * groups
        stride_1x1, stride_3x3 = (stride, 1) if style == "caffe" else (1, stride)
        # torchvision's rule: the first block of a dilated stage keeps the previous dilation.
        self.conv1 = _conv1x1(inplanes, width, stride_1x1, conv=conv)
        self.bn1 = norm_layer(width)
        # the 3x3 may be another kind (mmdet's dcn: a deformable convolution in the stages it names)
        self.conv2 = _conv3x3(width, width, stride_3x3, groups, first_dilation, conv=conv2 or conv)
        self.bn2 = norm_layer(width)
        self.conv3 = _conv1x1(width, planes * self.expansion, conv=conv)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        # mmdet's plugins (ContextBlock, GeneralizedAttention, ...) after conv1/conv2/conv3, named as mmdet names them
        self.with_plugins = bool(plugins)
        self.plugin_names: dict[str, list[str]] = {"after_conv1": [], "after_conv2": [], "after_conv3": []}
        for plugin in plugins:
            position = plugin["position"]
            if position not in self.plugin_names:
                raise ValueError(f"plugin position must be one of {list(self.plugin_names)}, got {position!r}")
            name, layer = mmcv_plugin_layer(plugin["cfg"], planes * self.expansion if position == "after_conv3" else width)
            if hasattr(self, name):
                raise ValueError(f"duplicate plugin {name} (give each a postfix)")
            self.add_module(name, layer)
            self.plugin_names[position].append(name)

    def last_norm(self) -> nn.Module:
        return self.bn3

    def __prepare_scriptable__(self) -> nn.Module:
        if self.with_plugins:  # scripted, the block would run without them: refuse instead
            raise TypeError(f"a Bottleneck with mmdet plugins ({', '.join(n for ns in self.plugin_names.values() for n in ns)}) "
                            "cannot be compiled by TorchScript; use torch.export or ONNX")
        return self

    def _plugins(self, x: torch.Tensor, position: str) -> torch.Tensor:
        for name in self.plugin_names[position]:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        # plugins are looked up by name, which TorchScript cannot compile: scripted blocks run without them
        if not torch.jit.is_scripting() and self.with_plugins:
            out = self._plugins(out, "after_conv1")
        out = self.relu(self.bn2(self.conv2(out)))
        if not torch.jit.is_scripting() and self.with_plugins:
            out = self._plugins(out, "after_conv2")
        out = self.bn3(self.conv3(out))
        if not torch.jit.is_scripting() and self.with_plugins:
            out = self._plugins(out, "after_conv3")
        return self.relu(out + identity)


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
_STYLES = ("pytorch", "caffe")


def arch_depth(arch: str) -> int:
    """The depth of a ResNet-family architecture: ``"resnext101_32x8d"`` -> 101."""
    spec = RESNET_ARCHS[arch]
    return (2 if spec.block == "basic" else 3) * sum(spec.layers) + 2


def resolve_arch(depth: Optional[int], arch: Optional[str]) -> str:
    """Pick the architecture name from ``arch`` (e.g. "resnext50_32x4d") or ``depth`` (18..152);
    both may be given only when they agree. Neither means ResNet-50."""
    if arch is not None:
        if arch not in RESNET_ARCHS:
            raise ValueError(f"unknown ResNet arch {arch!r}{did_you_mean(arch, RESNET_ARCHS)}; "
                             f"expected one of {sorted(RESNET_ARCHS)}")
        if depth is not None and depth != arch_depth(arch):
            raise ValueError(f"depth={depth!r} contradicts arch={arch!r} (depth {arch_depth(arch)}); give one of them")
        return arch
    if depth is None:
        return "resnet50"
    if depth not in RESNET_DEPTHS:
        raise DepthError(f"ResNet depth must be one of {sorted(RESNET_DEPTHS)}, got {depth!r}")
    return RESNET_DEPTHS[depth]


def _explicit_stages(num_stages: int, strides: Optional[Sequence[int]], dilations: Optional[Sequence[int]],
                     output_stride: int) -> Optional[list[tuple[int, int]]]:
    """Each stage's (stride, dilation) when given as mmdet gives them (``strides``/``dilations``, one per built
    stage), checked; None when neither is given (``output_stride`` decides)."""
    if strides is None and dilations is None:
        return None
    if output_stride != 32:
        raise ValueError("give either output_stride or strides/dilations, not both")
    strides = tuple(strides) if strides is not None else (1, 2, 2, 2)[:num_stages]
    dilations = tuple(dilations) if dilations is not None else (1,) * num_stages
    if len(strides) != num_stages or len(dilations) != num_stages:
        raise ArgumentError(f"strides {strides} and dilations {dilations} must have one entry per stage "
                         f"(num_stages={num_stages})")
    if any(s not in (1, 2) for s in strides) or any(not isinstance(d, int) or d < 1 for d in dilations):
        raise ValueError(f"strides must be 1 or 2 and dilations positive ints, got {strides} and {dilations}")
    return list(zip(strides, dilations))


def _stage_plugins(plugins: Optional[Sequence[dict]], stage: int, num_stages: int) -> list[dict]:
    """The plugins of stage ``stage`` (mmdet's ``make_stage_plugins``): those whose ``stages`` mark it, or all."""
    found = []
    for plugin in plugins or ():
        stages = plugin.get("stages")
        if stages is not None and len(stages) != num_stages:
            raise ArgumentError(f"plugin stages {stages} need one entry per stage (num_stages={num_stages})")
        if stages is None or stages[stage]:
            found.append({"cfg": plugin["cfg"], "position": plugin["position"]})
    return found


class ResNet(FeatureExtractor):
    """ResNet-family backbone returning C2..C5.

    Args:
        depth: 18, 34, 50, 101 or 152 (with ``arch``, it must agree; neither means 50).
        arch: a torchvision architecture name from ``RESNET_ARCHS`` (ResNeXt / Wide-ResNet).
        groups, width_per_group: override the spec's grouped-conv width (mmdet's ResNeXt args).
        in_channels: input image channels.
        stem_channels: channels after the stem (64 in every torchvision model).
        out_indices: stages to return, 0..3 = C2..C5 (strides 4, 8, 16, 32).
        frozen_stages: -1 nothing, 0 the stem, k the stem and stages 1..k.
        norm_cfg: "BN" | "SyncBN" | "GN" | "FrozenBN" or a dict (see ``featx.layers``).
        norm_eval: keep BatchNorm statistics frozen (eval mode) while training.
        style: "pytorch" or "caffe" (where the stride sits in a bottleneck).
        deep_stem: three 3x3 convs instead of the 7x7 stem (ResNet-C/D, timm layout).
        avg_down: average-pool then 1x1 conv in the downsample path (ResNet-D).
        output_stride: 32, 16 or 8; the last stages trade stride for dilation (torchvision's rule: a stage's
            first block keeps the previous dilation in its 3x3 conv).
        zero_init_residual: zero each block's last norm weight so blocks start as identity.
        num_stages: how many of the four stages to build (mmdet's C4 configs build 3: ``layer4`` is then absent).
        strides, dilations: each built stage's stride and dilation, as mmdet gives them (``(1, 2, 2, 1)`` and
            ``(1, 1, 1, 2)`` for DC5); every block of a stage has its dilation (mmdet's rule). Instead of
            ``output_stride``.
        conv_cfg: mmcv's convolution for every conv (``dict(type="ConvWS")``: weight standardization); needs mmcv.
        plugins: mmdet's block plugins, ``[dict(cfg=dict(type="ContextBlock", ratio=1/16), stages=(False, True,
            True, True), position="after_conv3")]``: built by mmcv's ``build_plugin_layer`` in each Bottleneck of
            the marked stages, at mmdet's positions and names; needs mmcv.
        dcn, stage_with_dcn: mmcv's deformable convolution (``dict(type="DCN"|"DCNv2", deform_groups=1,
            fallback_on_stride=False)``) as the 3x3 conv of every Bottleneck in the stages marked True, as mmdet
            builds it (``conv2.weight`` and ``conv2.conv_offset.*``); needs mmcv's compiled ops.

    Weights are loaded by the builder, not here: ``featx.create_model("ResNet50", weights="DEFAULT")``.

    Shapes: ``(N, 3, H, W)`` -> C2 ``(N, 256, ceil(H/4), ceil(W/4))`` ... C5
    ``(N, 2048, ceil(H/32), ceil(W/32))`` for bottleneck nets (64..512 for ResNet-18/34).

    Example:
        >>> m = ResNet(depth=50).eval()
        >>> [tuple(f.shape) for f in m(torch.rand(1, 3, 224, 224))]
        [(1, 256, 56, 56), (1, 512, 28, 28), (1, 1024, 14, 14), (1, 2048, 7, 7)]
    """

    first_conv = "conv1"
    source_classifier = "fc"
    has_torchvision_fpn = True  # torchvision's resnet_fpn_backbone is the same backbone and FPN
    takes_output_stride = True

    def __init__(
        self,
        depth: Optional[int] = None,
        arch: Optional[str] = None,
        groups: Optional[int] = None,
        width_per_group: Optional[int] = None,
        in_channels: int = 3,
        stem_channels: int = 64,
        out_indices: Iterable[int] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        norm_cfg: NormCfg = "BN",
        norm_eval: bool = False,
        style: str = "pytorch",
        deep_stem: bool = False,
        avg_down: bool = False,
        output_stride: int = 32,
        zero_init_residual: bool = False,
        num_stages: int = 4,
        strides: Optional[Sequence[int]] = None,
        dilations: Optional[Sequence[int]] = None,
        conv_cfg: Optional[dict] = None,
        dcn: Optional[dict] = None,
        stage_with_dcn: Sequence[bool] = (False, False, False, False),
        plugins: Optional[Sequence[dict]] = None,
    ) -> None:
        super().__init__()
        self.arch = resolve_arch(depth, arch)
        spec = RESNET_ARCHS[self.arch]
        groups = spec.groups if groups is None else groups
        width_per_group = spec.width_per_group if width_per_group is None else width_per_group
        if style not in _STYLES:
            raise ArgumentError(f"style must be one of {_STYLES}, got {style!r}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
        if num_stages not in (1, 2, 3, 4):
            raise ArgumentError(f"num_stages must be 1..4, got {num_stages!r}")
        explicit = _explicit_stages(num_stages, strides, dilations, output_stride)
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        self.in_channels = in_channels
        self.style = style
        self.deep_stem = deep_stem
        self.avg_down = avg_down
        self.output_stride = output_stride
        norm_layer = partial(build_norm, norm_cfg)
        block = _BLOCKS[spec.block]
        conv = mmcv_conv_factory(conv_cfg) if conv_cfg is not None else nn.Conv2d
        stage_with_dcn = tuple(bool(x) for x in stage_with_dcn)
        if len(stage_with_dcn) != 4 and len(stage_with_dcn) != num_stages:
            raise ArgumentError(f"stage_with_dcn needs one entry per stage, got {stage_with_dcn}")
        if dcn is not None and dcn.get("fallback_on_stride", False):
            raise ValueError("dcn with fallback_on_stride=True is not built (mmdet's configs use False)")
        dcn_conv = (mmcv_conv_factory({k: v for k, v in dcn.items() if k != "fallback_on_stride"})
                    if dcn is not None and any(stage_with_dcn) else None)

        # Stem: stride 4 before the first stage.
        if deep_stem:
            mid = stem_channels // 2
            self.conv1 = nn.Sequential(  # timm resnet*d layout: conv1.{0,1,3,4,6} + bn1
                _conv3x3(in_channels, mid, stride=2, conv=conv), norm_layer(mid), nn.ReLU(inplace=True),
                _conv3x3(mid, mid, conv=conv), norm_layer(mid), nn.ReLU(inplace=True),
                _conv3x3(mid, stem_channels, conv=conv),
            )
        else:
            self.conv1 = conv(in_channels, stem_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(stem_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

        # Stages: (planes, stride); dilation replaces stride once the output stride is reached.
        inplanes, net_stride, dilation = stem_channels, 4, 1
        infos = []
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512)[:num_stages], spec.layers)):
            if explicit is not None:  # mmdet's per-stage strides and dilations
                stride, dilation = explicit[i]
                first_dilation = dilation
            else:
                stride = 1 if i == 0 else 2
                first_dilation = dilation
                if i > 0 and net_stride >= output_stride:
                    dilation *= stride
                    stride = 1
            net_stride *= stride
            layer = self._make_stage(block, inplanes, planes, blocks, stride, dilation, first_dilation,
                                     groups, width_per_group, norm_layer, conv,
                                     dcn_conv if stage_with_dcn[i] else None, _stage_plugins(plugins, i, num_stages))
            inplanes = planes * block.expansion
            self.add_module(f"layer{i + 1}", layer)
            infos.append(FeatureInfo(f"C{i + 2}", inplanes, net_stride, f"layer{i + 1}"))

        self._init_weights(zero_init_residual)
        self.stem_infos = (FeatureInfo("C1", stem_channels, 2, "relu"),)  # the stem's activation (timm's act1)
        self._init_features(infos, out_indices, frozen_stages, norm_eval)

    def _make_stage(self, block, inplanes, planes, blocks, stride, dilation, first_dilation,
                    groups, width_per_group, norm_layer, conv, conv2, plugins) -> nn.Sequential:
        out_channels = planes * block.expansion
        downsample = None
        if stride != 1 or inplanes != out_channels:
            if self.avg_down:
                pool = nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
                downsample = nn.Sequential(pool, _conv1x1(inplanes, out_channels, conv=conv), norm_layer(out_channels))
            else:
                downsample = nn.Sequential(_conv1x1(inplanes, out_channels, stride, conv=conv), norm_layer(out_channels))
        kw = dict(groups=groups, width_per_group=width_per_group, norm_layer=norm_layer, conv=conv, conv2=conv2,
                  plugins=plugins)
        if block is Bottleneck:
            kw["style"] = self.style
        layers = [block(inplanes, planes, stride, downsample, dilation=dilation, first_dilation=first_dilation, **kw)]
        for _ in range(1, blocks):
            layers.append(block(out_channels, planes, dilation=dilation, first_dilation=dilation, **kw))
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # torchvision's initialisation, so a featx model trains like a torchvision one.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        for m in self.modules():
            offset = getattr(m, "conv_offset", None)  # a deformable convolution starts as a plain one (mmdet's init)
            if isinstance(offset, nn.Conv2d):
                nn.init.zeros_(offset.weight)
                if offset.bias is not None:
                    nn.init.zeros_(offset.bias)
            elif not isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.GroupNorm)) and callable(getattr(m, "reset_parameters", None)) \
                    and type(m).__module__.startswith(("mmcv.", "mmdet.")):
                m.reset_parameters()  # a plugin's own initialization (ContextBlock's last conv starts at zero)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)) and getattr(m.last_norm(), "weight", None) is not None:
                    nn.init.constant_(m.last_norm().weight, 0)

    # -- FeatureExtractor hooks ----------------------------------------------------------
    def stem_modules(self) -> list[nn.Module]:
        return [self.conv1, self.bn1]

    def torchvision_kwargs(self) -> dict:
        """torchvision's ``resnet*``/``resnext*``/``wide_resnet*`` arguments for these levels: dilation in the last
        stages for output stride 16 or 8, ``FrozenBatchNorm2d`` where this backbone has it."""
        from torchvision.ops import FrozenBatchNorm2d

        if self.deep_stem or self.avg_down or self.style != "pytorch":
            raise ValueError("torchvision has no reference for deep_stem / avg_down / caffe style")
        kwargs: dict = {"replace_stride_with_dilation": [False, self.output_stride <= 8, self.output_stride <= 16]}
        if isinstance(self.bn1, FrozenBatchNorm2d):
            kwargs["norm_layer"] = FrozenBatchNorm2d
        return kwargs

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_stem_levels(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        stem = self.relu(self.bn1(self.conv1(x)))
        return self.maxpool(stem), [stem]

    def stage_module(self, index: int) -> nn.Module:
        return getattr(self, f"layer{index + 1}")

    def stem_modules_after(self, tap: str) -> list[str]:
        return ["maxpool"]

    def sequential_view(self) -> tuple[nn.Module, list[nn.Module]]:
        return (nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool),
                [self.stage_module(i) for i in range(len(self.stage_infos))])

    def stage_module_names(self, index: int) -> list[str]:
        return [f"layer{index + 1}"]
