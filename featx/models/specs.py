"""Model specs: what a user names on the command line or in a file, turned into a model config dict,
and a config dict built into a model.

A model is named by a catalogue name (any spelling, ``"ResNet50FPN"``), a config file with
``model = dict(type=...)``, or a training checkpoint written by ``featx train`` (which brings the
classifier's config and weights). ``target_config`` turns each into one config dict;
``build_from_config`` builds it deterministically. Export, parity, extraction and the CLI all name
models through these functions.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import torch
from mmengine.config import Config
from torch import nn

from featx.checkpoints import load_checkpoint_file
from featx.shipped import config_path
from featx.config_text import parse_config_text, read_config_file
from featx.errors import WeightsError, WeightsUnavailableError
from featx.models.resolve import build_module, resolve_name
from featx.models.sources import CHECKPOINT_SUFFIXES
from featx.models.trusted import check_file_config

__all__ = ["model_config", "target_config", "build_from_config", "build_described_model", "named_weights",
           "random_weights_notice",
           "classifier_config_from_checkpoint", "checkpoint_run_config", "strip_weights"]


def model_config(model: Union[str, dict]) -> dict:
    """A model config dict from a registered name (any spelling) or a config dict with ``type``."""
    if isinstance(model, str):
        return {"type": f"featx.{resolve_name(model)}"}
    if not isinstance(model, dict) or "type" not in model:
        raise TypeError(f"model must be a catalogue name or a config dict with 'type', got {model!r}")
    return dict(model)


def build_from_config(cfg: dict, seed: int = 0, allow_download: bool = True) -> nn.Module:
    """Build a model config deterministically (the same seed gives the same random init), in eval mode."""
    cfg = dict(cfg)
    if cfg.get("weights") is not None:
        cfg["allow_download"] = allow_download
    torch.manual_seed(seed)
    return build_module(cfg).eval()


def named_weights(cfg: Any) -> list[Any]:
    """Every ``weights`` value a config names, nested configs included (in order)."""
    if isinstance(cfg, dict):
        own = [cfg["weights"]] if cfg.get("weights") is not None else []
        return own + [w for k, v in cfg.items() if k != "weights" for w in named_weights(v)]
    if isinstance(cfg, (list, tuple)):
        return [w for v in cfg for w in named_weights(v)]
    return []


def random_weights_notice(cfg: Any, what: str = "the model") -> str:
    """One console line when ``cfg`` loads no weights (a random init), saying what to pass instead; "" when it
    loads some. Features of a random network look plausible and are useless: featx never runs one silently."""
    if named_weights(cfg):
        return ""
    name = cfg.get("type", "the model") if isinstance(cfg, dict) else "the model"
    return (f"note: {name} has no weights loaded, so {what} comes from a random init; pass --weights DEFAULT "
            "(torchvision/timm, cached or downloaded) or --weights FILE for real features")


def _refuse_named_weights(weights: Any, origin: str, way_out: str) -> None:
    """The rule for weights that a file (not the user) names; see :func:`build_described_model`."""
    if not isinstance(weights, str):
        raise WeightsError(f"{origin} names weights of type {type(weights).__name__} ({str(weights)[:80]}); "
                           f"expected a name or a path. {way_out}")
    if weights.startswith(("http://", "https://", "ftp://", "file://")) or "://" in weights:
        raise WeightsError(f"{origin} names weights at {weights}; featx does not fetch what a file names. Download "
                           f"them yourself if you trust the source, then {way_out}")
    looks_like_path = weights.endswith(CHECKPOINT_SUFFIXES) or "/" in weights or "\\" in weights
    if looks_like_path:
        path = Path(weights)
        if not path.is_file():  # a folder, a device (/dev/zero), a pipe or nothing: never opened
            raise WeightsUnavailableError(f"{origin} names weights {weights}, which is not a regular file on this "
                                          f"machine. {way_out}")
        if not weights.endswith(CHECKPOINT_SUFFIXES):
            raise WeightsError(f"{origin} names weights {weights}, which is not a checkpoint file "
                               f"({', '.join(CHECKPOINT_SUFFIXES)}). {way_out}")


def build_described_model(cfg: Any, origin: str, way_out: str, seed: int = 0) -> nn.Module:
    """The model a file describes (an export's metadata, a store's manifest), built offline.

    Such a file is untrusted input, so what it names is used only when it is already on this machine and
    nothing is fetched or written: weights at a URL are refused; a torchvision/timm name (``DEFAULT``, a tag)
    is used only when its file is already in the torch/timm cache (hash-checked as always); a local path only
    when it is a regular checkpoint file, read by the same safe loader as a user's own (weights_only /
    safetensors). ``origin`` names the file in the errors, ``way_out`` says what the user can pass instead.
    Config values the model does not take are a ``ValueError`` naming them."""
    check_file_config(cfg, origin)  # a model config naming only what featx builds from a file
    for weights in named_weights(cfg):
        _refuse_named_weights(weights, origin, way_out)
    try:
        return build_from_config(cfg, seed, allow_download=False)
    except WeightsUnavailableError as e:
        raise WeightsUnavailableError(f"the weights {origin} names ({cfg.get('weights')}) are not on this machine "
                                      f"({e}). {way_out}") from None
    except TypeError as e:  # keys the builder does not take
        raise ValueError(f"{origin}'s model config does not fit {cfg['type']} ({e}). {way_out}") from None


def strip_weights(cfg: Any) -> Any:
    """``cfg`` without nested ``weights`` keys: a checkpoint's state dict replaces any pretrained source
    (and a download must not happen just to be overwritten)."""
    if isinstance(cfg, dict):
        return {k: strip_weights(v) for k, v in cfg.items() if k != "weights"}
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(strip_weights(v) for v in cfg)
    return cfg


def checkpoint_run_config(checkpoint: dict, path: Union[str, Path]) -> Config:
    """The run config a training checkpoint carries (``meta.cfg``, mmengine's Python text), read as data: a
    checkpoint is untrusted input, so its config is parsed, never run (:func:`featx.config_text.parse_config_text`;
    anything but plain data is refused)."""
    meta = checkpoint.get("meta") or {}
    text = meta.get("cfg")
    if not isinstance(text, str):
        raise ValueError(f"{path} is not a featx training checkpoint (no meta.cfg); "
                         "expected a file written by featx train (epoch_N.pth / best_*.pth)")
    cfg = parse_config_text(text, f"{path}'s meta.cfg")
    if not isinstance(cfg.get("model"), dict):
        raise ValueError(f"{path}'s meta.cfg defines no `model = dict(type=...)`")
    check_file_config(cfg["model"], f"{path}'s meta.cfg")
    return Config(cfg)


def classifier_config_from_checkpoint(path: Union[str, Path]) -> dict:
    """The model config of a training checkpoint, set to load that checkpoint's weights
    (``weights=path``); what ``featx export CHECKPOINT.pth`` builds."""
    cfg = checkpoint_run_config(load_checkpoint_file(path), path)
    model = strip_weights(cfg.model.to_dict())
    model["weights"] = str(Path(path).resolve())  # the ONNX metadata must find it from any folder
    return model


def target_config(target: str, cfg_options: Optional[dict] = None, weights: Optional[str] = None) -> dict:
    """A model config from what a user names: a catalogue name (plus ``cfg_options`` as model keyword
    arguments), a config ``.py`` with ``model = dict(...)`` (plus ``cfg_options`` merged into it), or a
    training checkpoint ``.pth`` of the fine-tuned classifier (which brings its own config and weights)."""
    path = Path(target)
    if target.endswith((".pth", ".pt")):
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {target}")
        if cfg_options or weights is not None:
            raise ValueError("a training checkpoint brings its own config and weights; drop --cfg-options/--weights")
        return classifier_config_from_checkpoint(target)
    if target.endswith(".py"):
        cfg = read_config_file(config_path(target))
        if cfg_options:
            cfg.merge_from_dict(cfg_options)
        if "model" not in cfg:
            raise ValueError(f"{target} defines no `model = dict(type=...)`")
        model = cfg.model.to_dict()
    else:
        model = {"type": f"featx.{resolve_name(target)}", **(cfg_options or {})}
    if weights is not None:
        model["weights"] = weights
    return model
