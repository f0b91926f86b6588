"""Small layer builders shared by every family: norm layers from a config, conv+norm+act.

Norm configs use mmdet's vocabulary: ``dict(type="BN" | "SyncBN" | "GN" | "FrozenBN",
requires_grad=True, eps=1e-5, num_groups=32)``; a bare string is shorthand for ``dict(type=...)``.
``requires_grad=False`` freezes the affine parameters (a BN-affine freeze that keeps statistics
trainable); ``FrozenBN`` freezes both (torchvision's ``FrozenBatchNorm2d``).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Optional, Union

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

__all__ = ["NormCfg", "NORM_TYPES", "mmcv_conv_factory", "mmcv_plugin_layer", "build_norm", "norm_abbr", "ConvNormAct", "build_activation"]

NormCfg = Union[None, str, dict, Callable[[int], nn.Module]]

_NORMS: dict[str, tuple[str, Callable[..., nn.Module]]] = {
    # type: (parameter-name abbreviation used by mmdet's ConvModule, factory)
    "BN": ("bn", lambda c, eps, momentum, **_: nn.BatchNorm2d(c, eps=eps, momentum=momentum)),
    "SyncBN": ("bn", lambda c, eps, momentum, **_: nn.SyncBatchNorm(c, eps=eps, momentum=momentum)),
    "GN": ("gn", lambda c, eps, num_groups=32, **_: nn.GroupNorm(num_groups, c, eps=eps)),
    "FrozenBN": ("bn", lambda c, eps, **_: FrozenBatchNorm2d(c, eps=eps)),
}
_ALIASES = {"BatchNorm2d": "BN", "SyncBatchNorm": "SyncBN", "GroupNorm": "GN", "FrozenBatchNorm2d": "FrozenBN"}
NORM_TYPES = frozenset(_NORMS) | frozenset(_ALIASES)  # every norm type name build_norm takes


def _normalize_norm_cfg(cfg: NormCfg) -> dict | None:
    if cfg is None:
        return None
    if isinstance(cfg, str):
        cfg = {"type": cfg}
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise TypeError(f"norm_cfg must be None, a type name or dict(type=...), got {cfg!r}")
    cfg = dict(cfg)
    cfg["type"] = _ALIASES.get(cfg["type"], cfg["type"])
    if cfg["type"] not in _NORMS:
        raise ValueError(f"unknown norm type {cfg['type']!r}; expected one of {sorted(_NORMS)}")
    return cfg


def norm_abbr(cfg: NormCfg) -> str:
    """mmdet's attribute name for a norm layer: ``"bn"`` or ``"gn"``."""
    c = _normalize_norm_cfg(cfg)
    return _NORMS[c["type"]][0] if c else ""


def build_norm(cfg: NormCfg, channels: int) -> nn.Module:
    """Build the norm layer for ``channels`` from ``cfg`` (see module docstring), or call a factory."""
    if callable(cfg) and not isinstance(cfg, (dict, str)):
        return cfg(channels)
    c = _normalize_norm_cfg(cfg)
    if c is None:
        return nn.Identity()
    options = {k: v for k, v in c.items() if k not in ("type", "requires_grad")}
    if c["type"] == "GN" and channels % options.get("num_groups", 32):
        raise ValueError(f"GN with {options.get('num_groups', 32)} groups cannot normalize {channels} channels")
    options.setdefault("eps", 1e-5)
    options.setdefault("momentum", 0.1)
    layer = _NORMS[c["type"]][1](channels, **options)
    if not c.get("requires_grad", True):
        for p in layer.parameters():
            p.requires_grad = False
    return layer


def build_activation(cfg: Any) -> nn.Module:
    """``None`` -> identity; ``"ReLU"`` / ``dict(type="ReLU")`` etc. -> that ``torch.nn`` activation."""
    if cfg is None:
        return nn.Identity()
    if isinstance(cfg, str):
        cfg = {"type": cfg}
    cfg = dict(cfg)
    name = cfg.pop("type")
    cls = getattr(nn, name, None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise ValueError(f"unknown activation {name!r}; expected a torch.nn activation such as 'ReLU'")
    return cls(**cfg)


def mmcv_conv_factory(cfg: dict) -> Callable[..., nn.Module]:
    """mmcv's ``build_conv_layer`` bound to ``cfg`` (``dict(type="ConvWS")``, ``dict(type="DCNv2", ...)``): the
    layers mmdet's ResNet, ConvModule and FPN build for ``conv_cfg`` and ``dcn``, with the same parameter names as
    ``nn.Conv2d``. mmcv is needed only for these."""
    try:
        from mmcv.cnn import build_conv_layer
        if cfg.get("type") in ("DCN", "DCNv2"):
            import mmcv.ops  # noqa: F401  (registers the deformable convolutions; needs mmcv's compiled ops)
    except ImportError as e:
        raise ImportError(f"{cfg.get('type')} convolutions are mmcv's: install mmcv with its compiled ops "
                          f"(`make mmdet`, or pip install 'featx[mmdet]' beside mmcv) ({e})") from None
    return partial(build_conv_layer, dict(cfg))


def mmcv_plugin_layer(cfg: dict, in_channels: int) -> tuple[str, nn.Module]:
    """mmcv's ``build_plugin_layer`` for one of mmdet's block plugins (``dict(type="ContextBlock", ratio=1/16)``,
    ``postfix`` optional): ``(name, layer)``, named as mmdet names it (``context_block``, ``gen_attention_block``)."""
    try:
        from mmcv.cnn import build_plugin_layer
    except ImportError as e:
        raise ImportError(f"plugins are mmcv's layers: install mmcv (`make mmdet`) ({e})") from None
    cfg = dict(cfg)
    postfix = cfg.pop("postfix", "")
    return build_plugin_layer(cfg, postfix=postfix, in_channels=in_channels)


class ConvNormAct(nn.Module):
    """Conv2d -> optional norm -> optional activation, with mmdet ``ConvModule`` parameter names.

    Names: ``conv`` plus ``bn``/``gn`` for the norm, so mmdet FPN checkpoints load as they are.
    The conv has a bias only when there is no norm (mmdet's ``bias="auto"``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        norm_cfg: NormCfg = None,
        act_cfg: Any = None,
        conv_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__()
        conv = mmcv_conv_factory(conv_cfg) if conv_cfg is not None else nn.Conv2d  # mmdet's ConvWS, through mmcv
        self.conv = conv(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=norm_cfg is None)
        self.norm_name = ""
        if norm_cfg is not None:
            self.norm_name = "bn" if callable(norm_cfg) else norm_abbr(norm_cfg)
            self.add_module(self.norm_name, build_norm(norm_cfg, out_channels))
        self.act = build_activation(act_cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm_name:
            x = getattr(self, self.norm_name)(x)
        return self.act(x)
