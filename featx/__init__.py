"""featx: detection-ready multi-stage CNN feature extractors with a configurable FPN neck.

``import featx`` is cheap: the public names below are imported on first use (PEP 562), so the ``featx``
command starts without loading torch. What importing featx promises still holds, as soon as the library it
concerns is imported too, in either order (at once when it already is, else right after its own import
finishes, by an import hook that takes itself away once it has run):

- timm: featx's models are registered in timm's registry (``featx_<arch>``);
- torch: mmengine's checkpoint types are allow-listed for ``torch.load(weights_only=True)``
  (``featx.checkpoints``).

featx's model modules import timm only inside functions, so the registration never meets a half-imported
featx module. mmengine needs no import at all: it imports ``featx.registry`` on seeing a ``"featx."`` type,
and the registry's locations import the models.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

from featx.version import __version__

# public name -> the module that defines it
_PUBLIC = {
    "MODELS": "featx.models.registry", "FeatxError": "featx.errors", "FeatureInfo": "featx.features",
    "Extractor": "featx.features", "FeatureExtractor": "featx.features", "Composite": "featx.features",
    "ResNet": "featx.backbones", "VGG": "featx.backbones", "AlexNet": "featx.backbones", "GoogLeNet": "featx.backbones",
    "InceptionV3": "featx.backbones", "DenseNet": "featx.backbones", "MobileNet": "featx.backbones",
    "TimmBackbone": "featx.backbones", "LeNet5": "featx.backbones", "FPN": "featx.necks",
    "BackboneFPN": "featx.models", "create_model": "featx.models", "list_models": "featx.models",
    "extract": "featx.extraction", "ExtractSettings": "featx.extraction", "FeatureStore": "featx.extraction",
}
__all__ = ["__version__", *_PUBLIC]
# library -> the featx module that must be imported once that library is
_AFTER_IMPORT = {"timm": "featx.integrations.timm", "torch": "featx.checkpoints"}


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


class _ImportAfter:
    """A ``sys.meta_path`` finder (``find_spec`` is the whole protocol; ``importlib.abc`` is not imported for it: it
    is most of ``import featx``'s time, and a Ctrl-C that lands there is a traceback featx cannot catch). It finds
    nothing itself: when a library of ``_AFTER_IMPORT`` is about to be imported, it wraps the real loader
    so that featx's module for it is imported right after the library's module has executed."""

    def __init__(self, pending: dict[str, str]) -> None:
        self.pending = dict(pending)
        self._busy: set[str] = set()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in self.pending or fullname in self._busy:
            return None
        self._busy.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_library = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run_library(module)
            follow = self.pending.pop(fullname, None)
            if not self.pending and self in sys.meta_path:
                sys.meta_path.remove(self)
            if follow:
                importlib.import_module(follow)

        spec.loader.exec_module = exec_module
        return spec


def _install_import_hooks() -> None:
    pending = {}
    for library, follow in _AFTER_IMPORT.items():
        if library in sys.modules:
            importlib.import_module(follow)
        else:
            pending[library] = follow
    if pending and not any(isinstance(f, _ImportAfter) for f in sys.meta_path):
        sys.meta_path.insert(0, _ImportAfter(pending))


_install_import_hooks()
