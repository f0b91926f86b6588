"""The one resolver of model names: registry names, any spelling of them, and timm names.

``resolve_name("featx_resnet50_fpn") == "ResNet50FPN"``; ``build_module`` builds an ``nn.Module``
or a config dict through the featx registry (so a bare ``"FPN"`` can never be another package's);
``create_model`` builds a registered model by name. The mmengine registry, the timm entrypoints,
the CLI and export all go through these three functions.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from featx.errors import UnknownModelError, did_you_mean
from featx.models.registry import MODELS

__all__ = ["resolve_name", "build_module", "create_model"]


def resolve_name(name: str) -> str:
    """The registered name a model name spells (``"featx.resnet50fpn"`` -> ``"ResNet50FPN"``), or an
    ``UnknownModelError`` with the closest names."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    found = MODELS.canonical_name(name)
    if found is None:
        bare = name.removeprefix("featx.").removeprefix("featx_")
        raise UnknownModelError(f"unknown featx model {name!r}{did_you_mean(bare, MODELS.names(), n=5, cutoff=0.5)}; "
                                f"`featx list` (featx.list_models()) lists them all")
    return found


def build_module(cfg: Any, **defaults: Any) -> nn.Module:
    """Build a sub-module from an ``nn.Module`` (returned as is) or a config dict.

    A config's ``type`` may be a class, a callable, a ``"featx."``-scoped name or a bare name, which
    is looked up in the featx registry (never in whatever ``DefaultScope`` happens to be active).
    ``defaults`` fill keys the config leaves out.
    """
    if isinstance(cfg, nn.Module):
        return cfg
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise TypeError(f"expected an nn.Module or a config dict with a 'type' key, got {cfg!r}")
    cfg = {**defaults, **cfg}
    type_ = cfg.pop("type")
    if isinstance(type_, str):
        type_ = MODELS.get(resolve_name(type_))
    return type_(**cfg)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model by name (any spelling, or its timm name); keyword arguments go to
    its builder: the model's own options plus ``weights=`` (see ``featx.models.sources``) and
    ``with_cp=`` (gradient checkpointing).

    >>> m = create_model("ResNet50FPN", frozen_stages=1, weights="DEFAULT")   # or "featx_resnet50_fpn"
    """
    return MODELS.get(resolve_name(name))(**kwargs)
