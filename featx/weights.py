"""Resolving and loading checkpoints: strictly, safely, with one explicit key map.

``load_weights(model, weights)`` accepts ``None``, ``"DEFAULT"`` or a torchvision enum name
(``"IMAGENET1K_V2"``, or qualified: ``"FasterRCNN_ResNet50_FPN_Weights.COCO_V1"``), a torchvision
``WeightsEnum`` member, a local ``.pth``/``.pt``/``.safetensors`` file, or an http(s) URL.

- Torchvision names resolve through torchvision's weights API to the same URL and the same hub
  cache file (``$TORCH_HOME/hub/checkpoints/<torchvision's file name>``) a torchvision user gets,
  so a cached file loads offline exactly as it would for them.
- Files are read with ``torch.load(weights_only=True)`` or safetensors. A checkpoint that needs
  arbitrary unpickling is refused, never retried unsafely.
- Loading is strict. Only classifier / detector-head keys may be dropped, and the report says
  which; any other missing, unexpected or mis-shaped key is an error that lists them.
- Wrappers are understood: ``{"state_dict": ...}``, ``{"model": ...}``, a ``module.`` prefix,
  mmdet ``backbone.``/``neck.`` prefixes, and torchvision detection ``backbone.body.``/``backbone.fpn.``
  (mapped by ``TORCHVISION_FPN_KEY_MAP``, the one place where featx names differ from a source).
"""
from __future__ import annotations

import logging
import os
import pickle
import re
import socket
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import WeightsEnum, get_model_weights, get_weight

__all__ = [
    "WeightsError", "UnsafeCheckpointError", "CheckpointMismatchError", "WeightsUnavailableError",
    "LoadReport", "read_checkpoint", "resolve_weights", "load_weights", "adapt_state_dict",
    "hub_checkpoint_path", "DETECTION_PRESETS", "detection_composite",
]

logger = logging.getLogger("featx")

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
# Keys a loader may drop: classification heads and detector heads (torchvision and mmdet names).
HEAD_PREFIXES = ("fc.", "classifier.", "aux1.", "aux2.", "AuxLogits.", "head.", "rpn.", "roi_heads.", "rpn_head.", "roi_head.", "bbox_head.", "mask_head.")


class WeightsError(ValueError):
    """A weights argument or checkpoint that featx cannot use; the message says why and what to do."""


class UnsafeCheckpointError(WeightsError):
    """The file needs arbitrary unpickling (code execution) to load; featx refuses it."""


class CheckpointMismatchError(WeightsError):
    """The checkpoint's keys or shapes do not fit the model."""


class WeightsUnavailableError(WeightsError):
    """The file is neither cached nor downloadable."""


@dataclass
class LoadReport:
    """What a load did: tensors loaded, keys dropped (heads), parts left at their initialisation."""

    source: str
    model: str
    loaded: int
    dropped: list[str] = field(default_factory=list)
    not_in_checkpoint: list[str] = field(default_factory=list)
    key_map: str = "identity"

    def __str__(self) -> str:
        s = f"loaded {self.loaded} tensors into {self.model} from {self.source} (key map: {self.key_map})"
        if self.dropped:
            shown = ", ".join(self.dropped[:4]) + (" ..." if len(self.dropped) > 4 else "")
            s += f"; dropped {len(self.dropped)} head keys ({shown})"
        if self.not_in_checkpoint:
            s += f"; not in checkpoint, left at init: {', '.join(self.not_in_checkpoint)}"
        return s

    def to_dict(self) -> dict:
        return {"source": self.source, "model": self.model, "loaded": self.loaded, "dropped": self.dropped,
                "not_in_checkpoint": self.not_in_checkpoint, "key_map": self.key_map}


# -- reading files --------------------------------------------------------------------------
def read_checkpoint(path: Union[str, Path]) -> dict[str, torch.Tensor]:
    """Read a checkpoint file safely and return its (unwrapped) state dict on the CPU."""
    return unwrap_state_dict(load_checkpoint_file(path), str(path))


def load_checkpoint_file(path: Union[str, Path]) -> Any:
    """The object in a checkpoint file, on the CPU: safetensors, or ``torch.load(weights_only=True)``
    (plus the types registered with ``torch.serialization.add_safe_globals``). Missing, corrupt and
    unsafe files raise ``WeightsError`` subclasses with a clear message."""
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error type for bad headers
            raise WeightsError(f"{path} is not a readable safetensors file (corrupt or truncated?): {e}") from None
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            detail = next((ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln or "global" in ln), first)
            raise UnsafeCheckpointError(
                f"refusing to load {path}: it needs arbitrary unpickling, which can run code "
                f"(torch.load(weights_only=True) said: {detail}). featx never retries with weights_only=False. "
                "If you trust the file, re-save its tensors with torch.save(model.state_dict(), ...) "
                "or safetensors and load that."
            ) from None
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
            raise WeightsError(f"cannot read {path}: corrupt or truncated checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
    return obj


def unwrap_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """``{"state_dict": sd}`` / ``{"model": sd}`` / DDP ``module.`` prefixes -> a flat tensor dict."""
    for _ in range(3):
        if isinstance(obj, dict) and not _is_tensor_dict(obj):
            for key in ("state_dict", "model", "model_state_dict", "module"):
                if isinstance(obj.get(key), dict):
                    obj = obj[key]
                    break
            else:
                break
    if not isinstance(obj, dict) or not obj or not _is_tensor_dict(obj):
        kind = type(obj).__name__ if not isinstance(obj, dict) else f"dict with keys {list(obj)[:6]}"
        raise WeightsError(f"{source} holds no state dict (a {kind}); expected name -> tensor, optionally under 'state_dict' or 'model'")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def _is_tensor_dict(d: dict) -> bool:
    return bool(d) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())


# -- resolving the weights argument -----------------------------------------------------------
def hub_checkpoint_path(url: str) -> Path:
    """Where torch.hub (and so torchvision) caches ``url``: ``$TORCH_HOME/hub/checkpoints/<file name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def cached_download(url: str, check_hash: bool = True, progress: bool = True, timeout_s: float = 30.0) -> Path:
    """Return the hub-cache file for ``url``, downloading it first when missing (torch.hub's logic)."""
    path = hub_checkpoint_path(url)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    match = re.search(r"-([a-f0-9]*)\.", path.name) if check_hash else None
    logger.info("downloading %s to %s", url, path)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        # writes to a temporary file and renames it only when complete (and the hash matches)
        torch.hub.download_url_to_file(url, str(path), match.group(1) if match else None, progress=progress)
    except (OSError, RuntimeError) as e:
        raise WeightsUnavailableError(
            f"{path.name} is not cached and could not be downloaded ({type(e).__name__}: {e}).\n"
            f"  expected at: {path}\n"
            f"  to use it offline, download {url} on a machine with internet and copy it there "
            f"(the cache folder follows $TORCH_HOME, now {torch.hub.get_dir()})."
        ) from None
    finally:
        socket.setdefaulttimeout(previous)
    return path


def _weights_enum_for(model: nn.Module) -> Optional[type]:
    arch = getattr(_backbone_of(model), "arch", None)
    if arch is None:
        return None
    try:
        return get_model_weights(arch)
    except (ValueError, KeyError):
        return None


def _backbone_of(model: nn.Module) -> nn.Module:
    return model.backbone if hasattr(model, "neck") and hasattr(model, "backbone") else model


def resolve_weights(model: nn.Module, weights: Any, progress: bool = True) -> tuple[dict[str, torch.Tensor], str]:
    """Turn a ``weights=`` argument into ``(state_dict, source description)``."""
    if isinstance(weights, WeightsEnum):
        path = cached_download(weights.url, check_hash=True, progress=progress)
        return read_checkpoint(path), f"torchvision {type(weights).__name__}.{weights.name} ({path})"
    if isinstance(weights, Path):
        return read_checkpoint(weights), str(weights)
    if not isinstance(weights, str):
        raise TypeError(f"weights must be None, a name, a torchvision WeightsEnum, a path or a URL, got {type(weights).__name__}")
    if weights.startswith(("http://", "https://")):
        path = cached_download(weights, check_hash=False, progress=progress)
        return read_checkpoint(path), f"{weights} ({path})"
    if weights.endswith(CHECKPOINT_SUFFIXES) or os.sep in weights or Path(weights).is_file():
        return read_checkpoint(weights), weights
    if "." in weights:  # "ResNet50_Weights.IMAGENET1K_V2"
        try:
            member = get_weight(weights)
        except (ValueError, KeyError, AttributeError):
            raise WeightsError(f"unknown torchvision weights {weights!r} (expected e.g. 'ResNet50_Weights.IMAGENET1K_V2')") from None
        return resolve_weights(model, member, progress)
    backbone = _backbone_of(model)
    if hasattr(backbone, "resolve_named_weights"):  # timm families: timm's own pretrained loading
        return backbone.resolve_named_weights(weights)
    enum = _weights_enum_for(model)
    if enum is None:
        raise WeightsError(f"{type(model).__name__} has no torchvision weights named {weights!r}; pass a file, URL or WeightsEnum")
    valid = ["DEFAULT"] + [m.name for m in enum]
    if weights not in valid:
        raise WeightsError(f"unknown weights {weights!r} for {_backbone_of(model).arch}; valid: {', '.join(valid)}")
    return resolve_weights(model, enum[weights] if weights != "DEFAULT" else enum.DEFAULT, progress)


# -- mapping keys -----------------------------------------------------------------------------
# torchvision BackboneWithFPN -> featx BackboneFPN. The FPN's extra P6/P7 convs follow the used
# levels in featx's fpn_convs list; ``{n}`` is the number of used levels.
TORCHVISION_FPN_KEY_MAP: list[tuple[str, str]] = [
    (r"^backbone\.body\.(.*)$", r"backbone.\1"),
    (r"^backbone\.fpn\.inner_blocks\.(\d+)\.0\.(weight|bias)$", r"neck.lateral_convs.\1.conv.\2"),
    (r"^backbone\.fpn\.inner_blocks\.(\d+)\.1\.(.*)$", r"neck.lateral_convs.\1.{norm}.\2"),
    (r"^backbone\.fpn\.inner_blocks\.(\d+)\.(weight|bias)$", r"neck.lateral_convs.\1.conv.\2"),  # torchvision < 0.13
    (r"^backbone\.fpn\.layer_blocks\.(\d+)\.0\.(weight|bias)$", r"neck.fpn_convs.\1.conv.\2"),
    (r"^backbone\.fpn\.layer_blocks\.(\d+)\.1\.(.*)$", r"neck.fpn_convs.\1.{norm}.\2"),
    (r"^backbone\.fpn\.layer_blocks\.(\d+)\.(weight|bias)$", r"neck.fpn_convs.\1.conv.\2"),  # torchvision < 0.13
    (r"^backbone\.fpn\.extra_blocks\.p6\.(weight|bias)$", r"neck.fpn_convs.{n}.conv.\1"),
    (r"^backbone\.fpn\.extra_blocks\.p7\.(weight|bias)$", r"neck.fpn_convs.{n1}.conv.\1"),
]


def _map_torchvision_detection(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    neck = model.neck
    used = len(getattr(neck, "lateral_convs", []))
    norm = neck.fpn_convs[0].norm_name or "bn"
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for pattern, target in TORCHVISION_FPN_KEY_MAP:
            if re.match(pattern, key):
                target = target.replace("{norm}", norm).replace("{n}", str(used)).replace("{n1}", str(used + 1))
                out[re.sub(pattern, target, key)] = value
                break
        else:
            out[key] = value  # detector heads and anything unmapped: judged below
    return out


def adapt_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], list[str], str]:
    """Map a checkpoint onto ``model``'s keys.

    Returns ``(state, dropped_head_keys, parts_not_in_checkpoint, key_map_name)``; raises
    ``CheckpointMismatchError`` for anything that does not fit.
    """
    key_map = "identity"
    is_composite = hasattr(model, "neck") and hasattr(model, "backbone")
    renames = getattr(_backbone_of(model), "checkpoint_key_map", None)
    if renames:  # a timm feature net that flattened nested names ("stages.0" -> "stages_0")
        inverse = {timm_key: own_key for own_key, timm_key in renames.items()}
        if any(k in inverse for k in state):
            state = {inverse.get(k, k): v for k, v in state.items()}
            key_map = "timm checkpoint -> flattened feature net"
    outside: list[str] = []  # keys of a whole detector that a bare backbone does not take
    if any(k.startswith("backbone.body.") for k in state):
        if is_composite:
            state, key_map = _map_torchvision_detection(state, model), "torchvision detection -> featx"
        else:  # a detector checkpoint into a bare backbone: take the body
            outside = sorted(k for k in state if not k.startswith("backbone.body."))
            state = {k[len("backbone.body."):]: v for k, v in state.items() if k.startswith("backbone.body.")}
            key_map = "torchvision detection body -> backbone"
    elif not is_composite and any(k.startswith("backbone.") for k in state):
        outside = sorted(k for k in state if not k.startswith("backbone."))
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        key_map = "mmdet backbone.* -> backbone"
    not_in_checkpoint: list[str] = []
    if is_composite and not any(k.startswith(("backbone.", "neck.")) for k in state):
        # a classification checkpoint: it fills the backbone, the neck keeps its initialisation
        state = {f"backbone.{k}": v for k, v in state.items()}
        not_in_checkpoint.append("neck")
        key_map = "classification -> backbone" if key_map == "identity" else key_map

    own = model.state_dict()
    head_keys = getattr(_backbone_of(model), "checkpoint_head_keys", frozenset())  # timm: beyond the last tap
    prefix = "backbone." if is_composite else ""
    dropped = outside + sorted(k for k in state if k not in own and (
        _is_head_key(k, is_composite) or k.removeprefix(prefix) in head_keys))
    state = {k: v for k, v in state.items() if k not in dropped}
    # BatchNorm's step counter is optional both ways (FrozenBatchNorm2d has none).
    state = {k: v for k, v in state.items() if not (k.endswith("num_batches_tracked") and k not in own)}
    expected = {k for k in own if not (k.endswith("num_batches_tracked") and k not in state)}
    if "neck" in not_in_checkpoint:
        expected = {k for k in expected if not k.startswith("neck.")}
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in sorted(set(state) & set(own))
                  if state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(_mismatch_message(type(model).__name__, missing, unexpected, mismatched, key_map))
    return state, dropped, not_in_checkpoint, key_map


def _is_head_key(key: str, is_composite: bool) -> bool:
    if is_composite and key.startswith("backbone."):
        key = key[len("backbone."):]
    return key.startswith(HEAD_PREFIXES)


def _mismatch_message(name: str, missing: list, unexpected: list, mismatched: list, key_map: str, show: int = 8) -> str:
    lines = [f"checkpoint does not fit {name} (key map: {key_map}):"]
    if mismatched:
        lines.append(f"  {len(mismatched)} shape mismatches, first: " + "; ".join(
            f"{k}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in mismatched[:show]))
    if missing:
        lines.append(f"  {len(missing)} keys missing from the checkpoint, first: {', '.join(missing[:show])}")
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected keys in the checkpoint, first: {', '.join(unexpected[:show])}")
    lines.append("  (is it for another architecture or pyramid? torchvision detection checkpoints need the "
                 "matching composite: featx.weights.DETECTION_PRESETS)")
    return "\n".join(lines)


def load_weights(model: nn.Module, weights: Any, progress: bool = True) -> Optional[LoadReport]:
    """Load ``weights`` (see module docstring) into ``model`` strictly; return and log the report."""
    if weights is None:
        return None
    state, source = resolve_weights(model, weights, progress)
    state, dropped, not_in_checkpoint, key_map = adapt_state_dict(model, state)
    if not_in_checkpoint:
        model.backbone.load_state_dict({k[len("backbone."):]: v for k, v in state.items()}, strict=True)
    else:
        model.load_state_dict(state, strict=True)
    report = LoadReport(source, type(model).__name__, len(state), dropped, not_in_checkpoint, key_map)
    logger.info("%s", report)
    model.load_report = report
    return report


# -- torchvision detectors and the featx composite that holds their backbone + FPN ------------
DETECTION_PRESETS: dict[str, dict] = {
    "fasterrcnn_resnet50_fpn": dict(model="ResNet50FPN", norm_cfg="FrozenBN"),
    "fasterrcnn_resnet50_fpn_v2": dict(model="ResNet50FPN", neck=dict(norm_cfg="BN")),
    "maskrcnn_resnet50_fpn": dict(model="ResNet50FPN", norm_cfg="FrozenBN"),
    "maskrcnn_resnet50_fpn_v2": dict(model="ResNet50FPN", neck=dict(norm_cfg="BN")),
    "keypointrcnn_resnet50_fpn": dict(model="ResNet50FPN", norm_cfg="FrozenBN"),
    "retinanet_resnet50_fpn": dict(model="ResNet50RetinaFPN", norm_cfg="FrozenBN", neck=dict(add_extra_convs="on_output")),
    "retinanet_resnet50_fpn_v2": dict(model="ResNet50RetinaFPN"),
    "fcos_resnet50_fpn": dict(model="ResNet50RetinaFPN", norm_cfg="FrozenBN", neck=dict(add_extra_convs="on_output")),
}


def detection_composite(detector: str, weights: Any = None, progress: bool = True, **kwargs: Any) -> nn.Module:
    """The featx composite equal to torchvision ``detector``'s ``model.backbone`` (body + FPN).

    ``weights`` may be that detector's enum name (``"COCO_V1"``, ``"DEFAULT"``), a member of its
    weights enum, a file or a URL; keyword arguments override the preset (e.g. ``frozen_stages``).

    >>> m = detection_composite("retinanet_resnet50_fpn_v2", weights="COCO_V1")  # P3..P7
    """
    if detector not in DETECTION_PRESETS:
        import difflib

        close = difflib.get_close_matches(detector, DETECTION_PRESETS, n=3)
        raise WeightsError(f"unknown torchvision detector {detector!r}; known: {', '.join(DETECTION_PRESETS)}"
                           + (f" (did you mean {', '.join(close)}?)" if close else ""))
    preset = dict(DETECTION_PRESETS[detector])
    model_name = preset.pop("model")
    neck = {**preset.pop("neck", {}), **kwargs.pop("neck", {})}
    if isinstance(weights, str) and "." not in weights and os.sep not in weights:
        enum = get_model_weights(detector)
        valid = ["DEFAULT"] + [m.name for m in enum]
        if weights not in valid:
            raise WeightsError(f"unknown weights {weights!r} for {detector}; valid: {', '.join(valid)}")
        weights = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
    from featx.models import create_model

    model = create_model(model_name, neck=neck, **{**preset, **kwargs})
    load_weights(model, weights, progress)
    return model
