"""What a ``weights=`` argument names, turned into a state dict: the builder's half of loading.

``weights`` may be:

- ``"DEFAULT"`` or a torchvision enum name (``"IMAGENET1K_V2"``) of the model's architecture, or a
  qualified one (``"FasterRCNN_ResNet50_FPN_Weights.COCO_V1"``), or a torchvision ``WeightsEnum``
  member: resolved through torchvision's weights API to the same URL and the same hub cache file
  (``$TORCH_HOME/hub/checkpoints/<torchvision's file name>``) a torchvision user gets, so a cached
  file loads offline exactly as it would for them; its SHA-256 prefix is checked on every use;
- for the timm families, ``"DEFAULT"`` or a timm pretrained tag (``"a1_in1k"``), read through timm's
  own hub download and cache;
- a local ``.pth``/``.pt``/``.safetensors`` file, or an http(s) URL (cached like torch.hub does).

``load_weights(model, weights)`` resolves, then loads strictly (``featx.weights.load_state``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from torchvision.models import WeightsEnum, get_model_weights, get_weight

from featx.backbones.timm_backbone import TimmBackbone
from featx.checkpoints import cached_download, hf_weights_unreachable, read_checkpoint
from featx.errors import WeightsError, WeightsUnavailableError, did_you_mean
from featx.features import Composite
from featx.weights import LoadReport, load_state

__all__ = ["CHECKPOINT_SUFFIXES", "torchvision_weights_enum", "resolve_weights", "load_weights"]

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")


def torchvision_weights_enum(arch: Optional[str]) -> Optional[type]:
    """torchvision's weights enum of architecture ``arch`` (``"resnet50"`` -> ``ResNet50_Weights``), or None."""
    if not arch:
        return None
    try:
        return get_model_weights(arch)
    except (ValueError, KeyError):
        return None


def _backbone_of(model: nn.Module) -> nn.Module:
    return model.backbone if isinstance(model, Composite) else model


def _timm_named_weights(model_name: str, tag: str, allow_download: bool) -> tuple[dict[str, torch.Tensor], str]:
    """``"DEFAULT"`` or a pretrained tag -> timm's pretrained state dict, through
    ``timm.create_model(..., pretrained=True)`` (its hub download and cache)."""
    import timm  # here, not at the top: featx's model modules import no timm (featx/__init__.py)

    full = model_name if tag == "DEFAULT" else f"{model_name}.{tag}"
    cfg = timm.models.get_pretrained_cfg(full)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        tags = [m.split(".", 1)[1] for m in timm.list_pretrained(f"{model_name}.*")]
        raise WeightsUnavailableError(
            f"timm has no pretrained weights {full!r}" + (f"; available tags: {', '.join(tags)}" if tags else
                                                            f"; timm lists none for {model_name}"))
    where = (f"the Hugging Face cache ($HF_HOME/hub/models--{cfg.hf_hub_id.replace('/', '--')})"
             if cfg.hf_hub_id else cfg.url or cfg.file)
    if not allow_download:
        raise WeightsUnavailableError(f"timm weights {full} would be fetched from {where}; not allowed here")
    unreachable = hf_weights_unreachable(cfg.hf_hub_id) if cfg.hf_hub_id else None
    if unreachable:  # at once, not after huggingface_hub's minute of retries
        raise WeightsUnavailableError(f"timm could not load pretrained {full}: not in {where}, and {unreachable}; "
                                      "copy the weights into that cache from a machine with internet, or pass "
                                      "weights=FILE")
    try:
        source = timm.create_model(full, pretrained=True)
    except Exception as e:  # hub errors come in many types; offline is the usual one
        raise WeightsUnavailableError(
            f"timm could not load pretrained {full} ({type(e).__name__}: {str(e)[:200]}); expected in {where}") from None
    return source.state_dict(), f"timm {full} ({cfg.hf_hub_id or cfg.url})"


def resolve_weights(model: nn.Module, weights: Any, progress: bool = True,
                    allow_download: bool = True) -> tuple[dict[str, torch.Tensor], str]:
    """Turn a ``weights=`` argument into ``(state_dict, source description)`` (see the module docstring)."""
    if isinstance(weights, WeightsEnum):
        path = cached_download(weights.url, check_hash=True, progress=progress, allow_download=allow_download)
        return read_checkpoint(path), f"torchvision {type(weights).__name__}.{weights.name} ({path})"
    if isinstance(weights, Path):
        return read_checkpoint(weights), str(weights)
    if not isinstance(weights, str) or not weights:
        raise TypeError(f"weights must be None, a name, a torchvision WeightsEnum, a path or a URL, got {weights!r}")
    if weights.startswith(("http://", "https://")):
        path = cached_download(weights, check_hash=True, progress=progress, allow_download=allow_download)
        return read_checkpoint(path), f"{weights} ({path})"
    if weights.endswith(CHECKPOINT_SUFFIXES) or os.sep in weights or Path(weights).exists():
        return read_checkpoint(weights), weights
    if "." in weights:  # "ResNet50_Weights.IMAGENET1K_V2"
        try:
            member = get_weight(weights)
        except (ValueError, KeyError, AttributeError):
            raise WeightsError(f"unknown torchvision weights {weights!r} (expected e.g. 'ResNet50_Weights.IMAGENET1K_V2')") from None
        return resolve_weights(model, member, progress, allow_download)
    backbone = _backbone_of(model)
    if isinstance(backbone, TimmBackbone):  # timm families: timm's own pretrained loading
        return _timm_named_weights(backbone.model_name, weights, allow_download)
    arch = getattr(backbone, "arch", None)
    enum = torchvision_weights_enum(arch)
    if enum is None:
        raise WeightsError(f"{type(model).__name__} has no torchvision weights named {weights!r}; "
                           "pass a file, a URL or a WeightsEnum")
    valid = ["DEFAULT"] + [m.name for m in enum]
    if weights not in valid:
        raise WeightsError(f"unknown weights {weights!r} for {arch}{did_you_mean(weights, valid)}; valid: {', '.join(valid)}")
    return resolve_weights(model, enum[weights] if weights != "DEFAULT" else enum.DEFAULT, progress, allow_download)


def load_weights(model: nn.Module, weights: Any, progress: bool = True, allow_download: bool = True) -> LoadReport:
    """Resolve ``weights`` for ``model`` and load them strictly; the model learns its weights are in
    (``weights_loaded``). Returns the load report."""
    state, source = resolve_weights(model, weights, progress, allow_download)
    report = load_state(model, state, source)
    if hasattr(model, "weights_loaded"):
        model.weights_loaded()
    return report
