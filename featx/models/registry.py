"""featx's model registry: an mmengine child of the root ``MODELS``, scope ``"featx"``, whose lookups forgive
spelling.

Downstream configs name featx models with the scope prefix, ``dict(type="featx.ResNet50FPN")``, from any registry
in the tree (mmengine's root, mmdet's, or featx's own) and with or without a ``DefaultScope``: mmengine imports
``featx.registry`` (the scope's index, which holds this registry and training's) on seeing the ``featx.`` prefix,
and the ``locations`` below import the modules that register entries, so nothing needs importing first.

``FeatxRegistry.get`` finds an entry by its registered name (``"ResNet50FPN"``) and also by any spelling that
differs only in case, punctuation or a ``featx_`` prefix (``"resnet50fpn"``, ``"featx_resnet50_fpn"``, timm's name),
so mmengine, timm and ``featx.create_model`` resolve names the same way. This module imports nothing of featx: the
model packages register into it.
"""
from __future__ import annotations

import re
from typing import Any, Optional

from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

__all__ = ["FeatxRegistry", "MODELS", "normalize_name", "scoped_type"]


def normalize_name(name: str) -> str:
    """The spelling-insensitive key of a name: ``"featx.ResNet50_FPN"`` -> ``"resnet50fpn"``."""
    key = name.lower()
    for prefix in ("featx.", "featx_"):
        key = key.removeprefix(prefix)
    return re.sub(r"[^a-z0-9]", "", key)


def scoped_type(type_: Any) -> Any:
    """``"featx.X"`` for a bare string ``"X"``; classes, functions and scoped names pass through."""
    if isinstance(type_, str) and "." not in type_:
        return f"featx.{type_}"
    return type_


class FeatxRegistry(Registry):
    """An mmengine ``Registry`` whose ``get`` also matches spellings (see the module docstring)."""

    def canonical_name(self, name: str) -> Optional[str]:
        """The registered name ``name`` spells, or None: ``"featx_resnet50_fpn"`` -> ``"ResNet50FPN"``."""
        self.import_from_location()
        scope, real = self.split_scope_key(name)
        if scope not in (None, self.scope):
            return None
        if real in self._module_dict:
            return real
        wanted = normalize_name(real)
        return next((k for k in self._module_dict if normalize_name(k) == wanted), None)

    def get(self, key: str) -> Any:
        found = super().get(key)
        if found is not None:
            return found
        name = self.canonical_name(key) if isinstance(key, str) else None
        return self._module_dict[name] if name is not None else None

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self.import_from_location()
        return sorted(self._module_dict)


# the catalogue's models and necks register in featx.models; ImageClassifier in featx.models.classifier
MODELS = FeatxRegistry("model", parent=MMENGINE_MODELS, scope="featx", locations=["featx.models", "featx.models.classifier"])
