"""mmdet's ResNet/ResNeXt arguments, with mmdet's meaning and defaults, for ``featx.ResNet`` and ``featx.ResNeXt``.

An mmdet user's first move is to take one of mmdet's configs and change ``type='ResNet'`` to ``type='featx.ResNet'``
(or ``'ResNeXt'`` to ``'featx.ResNeXt'``) and nothing else. :func:`from_mmdet_resnet_args` turns such a config's
keyword arguments into featx's:

- ``num_stages``, ``strides`` and ``dilations`` keep mmdet's meaning (C4 configs build three stages; DC5 dilates
  the last stage, every block of it, as mmdet does);
- ``init_cfg=dict(type='Pretrained', checkpoint=...)`` (and the older ``pretrained=``) load weights when
  ``init_weights()`` is called, as mmengine's runner does after building: ``torchvision://<arch>`` is torchvision's
  ``IMAGENET1K_V1`` file (the one mmengine maps that name to), a local path or URL is read by featx's loader;
- ``base_channels``/``stem_channels`` (64 only), ``conv_cfg=None`` and ``with_cp`` are taken as mmdet means them;
- ResNeXt's ``groups`` and ``base_width`` are torchvision's ``groups`` and ``width_per_group``;
- ``conv_cfg`` (``ConvWS``), ``dcn``/``stage_with_dcn`` and ``plugins`` build mmcv's layers where mmdet builds
  them (mmcv, with its compiled ops for DCN, needed; an error names it otherwise);
- what featx does not build (stem widths other than 64) is refused with the way out, never dropped: the model
  would silently be another one.

A config that uses any of mmdet's own argument names (every mmdet config passes ``num_stages`` or ``init_cfg``)
also gets mmdet's defaults where featx's differ: ``norm_eval=True`` and ``zero_init_residual=True``. A config in
featx's own vocabulary (``dict(type="featx.ResNet", depth=50)``) keeps featx's (torchvision's) defaults.
"""
from __future__ import annotations

from typing import Any, Optional

from featx.errors import ArgumentError

__all__ = ["MMDET_ONLY_ARGS", "MMDET_DEFAULTS", "from_mmdet_resnet_args", "pretrained_weights", "speaks_mmdet"]

# argument names mmdet's ResNet takes and featx's own vocabulary does not
MMDET_ONLY_ARGS = ("num_stages", "strides", "dilations", "init_cfg", "pretrained", "base_channels", "stem_channels",
                   "conv_cfg", "dcn", "stage_with_dcn", "plugins", "base_width")
MMDET_DEFAULTS = {"norm_eval": True, "zero_init_residual": True}  # mmdet's ResNet, where featx's differ


def speaks_mmdet(kwargs: dict) -> bool:
    """Whether a ResNet config uses mmdet's own argument names (see the module docstring)."""
    return any(k in kwargs for k in MMDET_ONLY_ARGS)


def _refuse(what: str, why: str) -> None:
    raise ValueError(f"featx.ResNet does not build {what} ({why}); keep mmdet's ResNet (type='ResNet') for this "
                     "config, or drop the argument to get a model without it")


def _pretrained_source(kwargs: dict) -> Optional[str]:
    init_cfg, pretrained = kwargs.pop("init_cfg", None), kwargs.pop("pretrained", None)
    if pretrained is not None and init_cfg is not None:
        raise ArgumentError("give init_cfg or pretrained, not both (mmdet refuses this too)")
    if pretrained is not None:
        if not isinstance(pretrained, str):
            raise TypeError(f"pretrained must be a checkpoint name or path, got {pretrained!r}")
        return pretrained
    if init_cfg is None:
        return None
    cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    sources = [c.get("checkpoint") for c in cfgs if isinstance(c, dict) and c.get("type") == "Pretrained"]
    others = [c for c in cfgs if not (isinstance(c, dict) and c.get("type") == "Pretrained")]
    if others:  # Kaiming/Constant/... initializers: featx's ResNet initializes as torchvision does
        _refuse(f"init_cfg {others}", "featx initializes as torchvision does; only Pretrained is taken")
    if len(sources) != 1 or not isinstance(sources[0], str):
        raise ValueError(f"init_cfg must name one Pretrained checkpoint, got {init_cfg!r}")
    return sources[0]


def pretrained_weights(source: str, arch: str) -> str:
    """featx's ``weights=`` for the checkpoint an mmdet config names (``init_cfg``/``pretrained``), checked against
    the built ``arch``."""
    if source.startswith("torchvision://"):
        named = source.removeprefix("torchvision://").lower()
        if named != arch:
            raise ValueError(f"init_cfg loads torchvision's {named} into a {arch}; they do not fit")
        return "IMAGENET1K_V1"  # mmengine's torchvision:// names are torchvision's first ImageNet weights
    if "://" in source and not source.startswith(("http://", "https://")):
        raise ValueError(f"featx cannot resolve {source!r} (an mmengine model-zoo name); download the checkpoint and "
                         "set init_cfg=dict(type='Pretrained', checkpoint=PATH), or pass weights=PATH")
    return source


def from_mmdet_resnet_args(kwargs: dict, resnext: bool = False, mmdet_class: bool = False) -> tuple[dict, Optional[str]]:
    """featx ``ResNet`` keyword arguments for an mmdet ``ResNet``/``ResNeXt`` config's (see the module docstring),
    and the checkpoint its ``init_cfg``/``pretrained`` names (for :func:`pretrained_weights`), or None.
    ``mmdet_class``: the type is one only mmdet has (``ResNeXt``, ``ResNetV1d``), so mmdet's defaults apply."""
    kwargs = dict(kwargs)
    mmdet = speaks_mmdet(kwargs) or resnext or mmdet_class
    if kwargs.get("dcn") is None:  # stage_with_dcn without dcn builds no deformable convolution in mmdet either
        kwargs.pop("dcn", None), kwargs.pop("stage_with_dcn", None)
    if not kwargs.get("plugins"):
        kwargs.pop("plugins", None)
    if kwargs.get("conv_cfg") is None or (isinstance(kwargs["conv_cfg"], dict)
                                          and kwargs["conv_cfg"].get("type") in ("Conv", "Conv2d")):
        kwargs.pop("conv_cfg", None)  # mmdet's default: plain convolutions
    for width in ("base_channels", "stem_channels"):
        value = kwargs.pop(width, None)
        if value not in (None, 64):
            _refuse(f"{width}={value}", "torchvision's ResNets are 64 wide at the stem")
    if resnext:
        kwargs.setdefault("groups", 1)  # mmdet's ResNeXt defaults
        kwargs["width_per_group"] = kwargs.pop("base_width", 4)
    elif "base_width" in kwargs:
        _refuse("base_width", "it is a ResNeXt argument: use type='featx.ResNeXt'")
    source = _pretrained_source(kwargs)
    if mmdet:
        for key, value in MMDET_DEFAULTS.items():
            kwargs.setdefault(key, value)
    return kwargs, source

