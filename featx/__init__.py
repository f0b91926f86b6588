"""featx: detection-ready multi-stage CNN feature extractors with a configurable FPN neck.

``import featx`` is cheap: the public names below are imported on first use (PEP 562), so the ``featx``
command starts without loading torch. featx's models are registered

- in mmengine's registry (scope ``featx``) on demand: mmengine imports ``featx.registry`` on seeing a
  ``"featx."`` type, and the registry's locations import the models;
- in timm's (``featx_<arch>``) as soon as both featx and timm are imported, in either order: at once when
  timm is already imported, else right after timm's own import finishes (an import hook, removed once it has
  run). featx's model modules import timm only inside functions, so that registration never meets a
  half-imported featx module.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

from featx.version import __version__

# public name -> the module that defines it
_PUBLIC = {
    "MODELS": "featx.registry", "FeatxError": "featx.errors", "FeatureInfo": "featx.features",
    "Extractor": "featx.features", "FeatureExtractor": "featx.features", "Composite": "featx.features",
    "ResNet": "featx.backbones", "VGG": "featx.backbones", "AlexNet": "featx.backbones", "GoogLeNet": "featx.backbones",
    "InceptionV3": "featx.backbones", "DenseNet": "featx.backbones", "MobileNet": "featx.backbones",
    "TimmBackbone": "featx.backbones", "LeNet5": "featx.backbones", "FPN": "featx.necks",
    "BackboneFPN": "featx.models", "create_model": "featx.models", "list_models": "featx.models",
    "extract": "featx.extraction", "ExtractSettings": "featx.extraction", "FeatureStore": "featx.store",
}
__all__ = ["__version__", *_PUBLIC]
_TIMM_REGISTRATION = "featx.integrations.timm"


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value  # looked up once
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"featx.{name}") is not None:
        return importlib.import_module(f"featx.{name}")  # a subpackage, as after `import featx.<name>`
    raise AttributeError(f"module 'featx' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


class _RegisterAfterTimm(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when ``timm`` is about to be imported, it wraps the real loader so that featx's timm
    registration runs right after timm's module has executed, then takes itself off ``sys.meta_path``."""

    _busy = False

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "timm" or self._busy:
            return None
        self._busy = True
        try:
            spec = importlib.util.find_spec("timm")
        finally:
            self._busy = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_timm = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run_timm(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            importlib.import_module(_TIMM_REGISTRATION)

        spec.loader.exec_module = exec_module
        return spec


if "timm" in sys.modules:
    importlib.import_module(_TIMM_REGISTRATION)
elif not any(isinstance(f, _RegisterAfterTimm) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterTimm())
