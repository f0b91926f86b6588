"""pytest plugin: run timm's own ``tests/test_models.py`` on featx's timm models (``featx_*``) only.

Loaded with ``-p timm_featx`` before timm's test module is imported, it

- makes ``timm.list_models`` (which timm's tests call at import time to parametrize) list only
  ``featx_*`` names. timm's filters apply as timm applies them to its own model of the same family:
  an exclusion pattern excludes a featx model when it matches its name, its name without ``featx_``
  or the name of timm's model of the family (``densenet*`` in timm's TorchScript exclusions excludes
  ``featx_densenet121``), and a ``module=`` filter keeps a featx model when timm's model of the family
  lives in one of those modules (``resnet``, ``densenet``, ``vgg``, ...). featx models with no timm
  family (AlexNet, GoogLeNet, LeNet-5) match no module filter;
- deselects every test not parametrized with a ``featx_*`` model (timm's tests of named timm models),
  and the tests in ``EXEMPT``: checks timm's test skips by model name for its own model of the
  family, which a ``featx_`` name cannot match.
"""
from __future__ import annotations

import fnmatch
from typing import Iterable, Optional, Union

import pytest
import timm
import timm.models
import timm.models._registry as registry

import featx  # noqa: F401  (registers the featx_* models)

_list_models = registry.list_models

# featx timm name -> timm's own model of the family, where timm's name is not featx's without the prefix
_TIMM_NAMES = {"featx_mobilenet_v2": "mobilenetv2_100", "featx_mobilenet_v3_large": "mobilenetv3_large_100",
               "featx_mobilenet_v3_small": "mobilenetv3_small_100"}


# (test, model) -> why: where timm's test body exempts its own model of the family by name
EXEMPT = {
    ("test_model_forward_features", "featx_inception_v3"):
        "test_model_forward_features skips its lower bound on map sizes for 'inception_v3*' (valid padding "
        "shrinks small inputs below input / (2 * reduction)); featx_inception_v3 is the same network",
    ("test_model_forward_features", "featx_lenet5"):
        "LeNet-5 (featx's own family) has valid 5x5 convolutions like the Inceptions timm exempts: its C5 is 1x1 "
        "at its 32x32 input, below 32 / (2 * 4)",
}


def timm_equal(name: str) -> Optional[str]:
    """timm's own model of the family of featx model ``name`` (tag stripped), or None."""
    base = name.split(".", 1)[0]
    equal = _TIMM_NAMES.get(base, base.removeprefix("featx_"))
    return equal if equal in registry._model_to_module else None


def _patterns(value: Union[str, Iterable[str]]) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    return list(value or [])


def _excluded(name: str, patterns: list[str]) -> bool:
    base = name.split(".", 1)[0]
    candidates = {name, base, base.removeprefix("featx_"), timm_equal(name) or base}
    return any(fnmatch.fnmatch(c, p) for c in candidates for p in patterns)


def list_featx_models(filter: Union[str, list[str]] = "", module: Union[str, list[str]] = "", pretrained: bool = False,
                      exclude_filters: Union[str, list[str]] = "", name_matches_cfg: bool = False,
                      include_tags: Optional[bool] = None) -> list[str]:
    """timm's ``list_models`` limited to ``featx_*`` (see the module docstring)."""
    names = [n for n in _list_models(filter, "", pretrained, "", name_matches_cfg, include_tags) if n.startswith("featx_")]
    modules = _patterns(module)
    if modules:
        names = [n for n in names if timm_equal(n) and registry._model_to_module[timm_equal(n)] in modules]
    excludes = _patterns(exclude_filters)
    return [n for n in names if not _excluded(n, excludes)]


def pytest_configure(config: pytest.Config) -> None:
    for where in (timm, timm.models, registry):
        where.list_models = list_featx_models


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        model = str(getattr(getattr(item, "callspec", None), "params", {}).get("model_name", ""))
        test = getattr(item, "originalname", item.name)
        (keep if model.startswith("featx_") and (test, model) not in EXEMPT else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep
