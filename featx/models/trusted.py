"""What a model config read from someone else's file may name: featx's own types, and nothing that runs or opens.

A checkpoint's ``meta.cfg``, a store's manifest and an exported file's metadata each carry a model config. featx
reads those as data (:mod:`featx.config_text`, JSON), but data can still name code: mmengine's registry imports
``<scope>.registry`` for a scoped type it does not know and, failing a lookup, imports and calls any dotted name
(``dict(type="subprocess.run", args=...)``). So before anything is built, :func:`check_file_config` walks the whole
config and accepts a ``type`` only when it is

- a model featx registers (``"featx.ResNet50FPN"``, ``"ResNet50FPN"``, any spelling ``featx.create_model`` takes),
- under a ``norm_cfg`` key, one of featx's norm layers (``BN``, ``SyncBN``, ``GN``, ``FrozenBN`` and their
  ``torch.nn`` class names),
- under an ``act_cfg`` key, a ``torch.nn`` activation class (``"ReLU"``),
- under a ``data_preprocessor`` key, mmengine's ``BaseDataPreprocessor`` or ``ImgDataPreprocessor``, named exactly.

It also refuses keys that make a builder open or fetch a file the config names (``init_cfg``, timm's
``checkpoint_path``/``pretrained_cfg``/``pretrained_cfg_overlay``/``cache_dir``), and sizes beyond
:data:`MAX_CHANNELS` (a file saying ``num_classes=4000000000`` would otherwise ask the allocator for 16 TB).
``weights`` values are judged by :func:`featx.models.specs.build_described_model`. A user's own config file and
``--cfg-options`` are not checked here: they are the user's own code, read by mmengine as such.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from featx.errors import UnsafeConfigError
from featx.layers import NORM_TYPES
from featx.models.registry import MODELS

__all__ = ["check_file_config", "MAX_CHANNELS", "FILE_OPENING_KEYS", "DATA_PREPROCESSORS"]

MAX_CHANNELS = 1 << 16  # channels, classes and hidden widths a file may declare: 65,536 (ResNet-50's widest is 2,048)
MAX_DEPTH = 32  # nesting of a config read from a file
DATA_PREPROCESSORS = ("BaseDataPreprocessor", "ImgDataPreprocessor")  # mmengine's, found in its registry by name
# keys whose value makes a builder open, fetch or write a file named in the config
FILE_OPENING_KEYS = ("init_cfg", "checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")
_SIZE_KEYS = ("num_classes", "hidden_channels")


def _is_activation(name: str) -> bool:
    cls = getattr(nn, name, None) if name.isidentifier() else None
    return isinstance(cls, type) and issubclass(cls, nn.Module) and cls.__module__.startswith("torch.nn.modules.activation")


def _allowed_type(type_: str, key: str) -> bool:
    if key == "norm_cfg":
        return type_ in NORM_TYPES
    if key == "act_cfg":
        return _is_activation(type_)
    if key == "data_preprocessor":
        return type_ in DATA_PREPROCESSORS
    scope, _ = MODELS.split_scope_key(type_)
    return scope in (None, "featx") and MODELS.canonical_name(type_) is not None


def _is_size_key(key: str) -> bool:
    return key.endswith("channels") or key in _SIZE_KEYS


def _check_size(value: Any, where: str, origin: str) -> None:
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if not 0 <= v <= MAX_CHANNELS:
            raise UnsafeConfigError(f"{origin}: {where} = {v} is outside 0..{MAX_CHANNELS}, the sizes featx builds from a "
                                    "file's config")


def check_file_config(cfg: Any, origin: str, path: str = "model") -> None:
    """Refuse (``UnsafeConfigError`` naming ``origin`` and the key path) a config from a file that names a type
    outside the set in the module docstring, a file-opening key, a size beyond :data:`MAX_CHANNELS`, or is nested
    deeper than 32 levels; and one that is not a model config at all (a dict with a string ``type``). Returns None
    when every part is something featx builds safely."""
    if not isinstance(cfg, dict) or not isinstance(cfg.get("type"), str):
        raise UnsafeConfigError(f"{origin}'s model config is not a model config: {str(cfg)[:200]}")
    _walk(cfg, origin, path, "", 0)


def _walk(node: Any, origin: str, path: str, key: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise UnsafeConfigError(f"{origin}: {path} is nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, dict):
        if "type" in node:
            type_ = node["type"]
            if not isinstance(type_, str) or not _allowed_type(type_, key):
                raise UnsafeConfigError(
                    f"{origin}: {path}.type = {str(type_)[:80]!r} is not a type featx builds from a file's config "
                    "(featx models; BN/SyncBN/GN/FrozenBN under norm_cfg; torch.nn activations under act_cfg; "
                    f"{'/'.join(DATA_PREPROCESSORS)} under data_preprocessor). A file names no code; see docs/trust.md")
        for k, v in node.items():
            if not isinstance(k, str):
                raise UnsafeConfigError(f"{origin}: {path} has a key that is not a string ({str(k)[:40]!r})")
            where = f"{path}.{k}"
            if k in FILE_OPENING_KEYS and v not in (None, False, {}):
                raise UnsafeConfigError(f"{origin}: {where} would make the builder open or fetch what the file names; "
                                        "featx refuses it in a config read from a file (pass your own config instead)")
            if _is_size_key(k):
                _check_size(v, where, origin)
            _walk(v, origin, where, k, depth + 1)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            _walk(v, origin, f"{path}[{i}]", key, depth + 1)
