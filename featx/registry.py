"""The one featx registry: an mmengine child of the root ``MODELS`` with scope ``"featx"``.

Downstream configs name featx models with the scope prefix, ``dict(type="featx.ResNet50FPN")``,
from any registry in the tree (mmengine's root, mmdet's, or featx's own) and with or without a
``DefaultScope``. mmengine imports ``featx.registry`` on seeing the ``featx.`` prefix, and the
``locations`` below import the modules that register the models, so nothing else needs to be
imported first. Inside featx, sub-modules are built by class or by ``"featx."``-prefixed type
(see ``build_module``): a bare name could be hijacked by another package's registry.
"""
from __future__ import annotations

from typing import Any

from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry
from torch import nn

__all__ = ["MODELS", "DATASETS", "METRICS", "HOOKS", "build_module", "scoped_type"]

MODELS = Registry(
    "model",
    parent=MMENGINE_MODELS,
    scope="featx",
    locations=["featx.backbones", "featx.necks", "featx.models", "featx.train.classifier"],
)
# Fine-tuning on mmengine's Runner (featx.train): the ImageFolder dataset, its metric and hooks.
DATASETS = Registry("dataset", parent=MMENGINE_DATASETS, scope="featx", locations=["featx.train.data"])
METRICS = Registry("metric", parent=MMENGINE_METRICS, scope="featx", locations=["featx.train.metrics"])
HOOKS = Registry("hook", parent=MMENGINE_HOOKS, scope="featx", locations=["featx.train.hooks"])


def scoped_type(type_: Any) -> Any:
    """Return ``"featx.X"`` for a bare string ``"X"``; classes and scoped names pass through."""
    if isinstance(type_, str) and "." not in type_:
        return f"featx.{type_}"
    return type_


def build_module(cfg: Any, **defaults: Any) -> nn.Module:
    """Build a sub-module from an ``nn.Module`` (returned as is) or a config dict.

    A config's ``type`` may be a class, a ``"featx."``-scoped name, or a bare name, which is
    looked up in the featx scope (never in whatever ``DefaultScope`` happens to be active).
    ``defaults`` fill keys the config leaves out.
    """
    if isinstance(cfg, nn.Module):
        return cfg
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise TypeError(f"expected an nn.Module or a config dict with a 'type' key, got {cfg!r}")
    cfg = {**defaults, **cfg}
    type_ = cfg.pop("type")
    if isinstance(type_, str):
        name = type_
        type_ = MODELS.get(scoped_type(name))
        if type_ is None:
            from featx.models import unknown_model_error

            raise unknown_model_error(name)
    return type_(**cfg)
