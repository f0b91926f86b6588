"""Fitting a checkpoint's state dict onto a featx model: key maps, strict matching, the load report.

This module knows checkpoint layouts, not model names (resolving ``"DEFAULT"`` or a torchvision enum
name to a file is the builder's job, ``featx.models``):

- Loading is strict. Only classifier / detector-head keys may be dropped, and the report says
  which; any other missing, unexpected or mis-shaped key is an error that lists them.
- Tensors must be finite, and floating point where the model's are; another float precision
  (float64, float16) is cast and the report says so.
- Layouts understood: a plain state dict (DDP ``module.`` prefixes and ``{"state_dict": ...}``
  wrappers are unwrapped on reading), mmdet ``backbone.``/``neck.`` prefixes, torchvision detection
  ``backbone.body.``/``backbone.fpn.`` (mapped by ``TORCHVISION_FPN_KEY_MAP``, the one place where
  featx names differ from a source), and timm feature nets' flattened names.
"""
from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from featx.errors import CheckpointMismatchError
from featx.features import Composite

__all__ = ["LoadReport", "adapt_state_dict", "check_state_values", "load_state", "TORCHVISION_FPN_KEY_MAP", "HEAD_PREFIXES"]

logger = logging.getLogger("featx")

# Keys a loader may drop: classification heads and detector heads (torchvision and mmdet names).
HEAD_PREFIXES = ("fc.", "classifier.", "aux1.", "aux2.", "AuxLogits.", "head.", "rpn.", "roi_heads.", "rpn_head.",
                 "roi_head.", "bbox_head.", "mask_head.")


@dataclass
class LoadReport:
    """What a load did: tensors loaded, keys dropped (heads), parts left at their initialisation,
    tensors cast from another float precision."""

    source: str
    model: str
    loaded: int
    dropped: list[str] = field(default_factory=list)
    not_in_checkpoint: list[str] = field(default_factory=list)
    key_map: str = "identity"
    cast: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        s = f"loaded {self.loaded} tensors into {self.model} from {self.source} (key map: {self.key_map})"
        if self.dropped:
            shown = ", ".join(self.dropped[:4]) + (" ..." if len(self.dropped) > 4 else "")
            s += f"; dropped {len(self.dropped)} head keys ({shown})"
        if self.not_in_checkpoint:
            s += f"; not in checkpoint, left at init: {', '.join(self.not_in_checkpoint)}"
        if self.cast:
            s += "; cast to the model's precision: " + ", ".join(f"{n} {d} tensors" for d, n in self.cast.items())
        return s

    def to_dict(self) -> dict:
        return asdict(self)


# -- key maps ---------------------------------------------------------------------------------
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


def _map_torchvision_detection(state: dict[str, torch.Tensor], model: Composite) -> dict[str, torch.Tensor]:
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


# (key map name, pattern, replacement): applied when the renamed keys are the model's
_MMDET_RENAMES = (
    # a GroupNorm is gnN in mmdet's ResNet blocks and stem (ConvModule's ".gn." has no digit and matches already)
    ("mmdet GroupNorm gnN -> bnN", re.compile(r"(^|\.)gn(\d)\."), r"\1bn\2."),
    # mmdet's deep stem is one Sequential with its last norm inside (stem.7); featx's (timm's layout) is conv1.* + bn1
    ("mmdet deep stem stem.* -> conv1.*/bn1", re.compile(r"^(backbone\.)?stem\.([013467])\."),
     lambda m: (m.group(1) or "") + ("bn1." if m.group(2) == "7" else f"conv1.{m.group(2)}.")),
)


def _backbone_of(model: nn.Module) -> nn.Module:
    return model.backbone if isinstance(model, Composite) else model


def adapt_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], list[str], str]:
    """Map a checkpoint onto ``model``'s keys.

    Returns ``(state, dropped_head_keys, parts_not_in_checkpoint, key_map_name)``; raises
    ``CheckpointMismatchError`` for anything that does not fit.
    """
    key_map = "identity"
    is_composite = isinstance(model, Composite)
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
    own = model.state_dict()
    for name, pattern, replace in _MMDET_RENAMES:  # mmdet's names where featx keeps torchvision's (or timm's)
        renamed = {pattern.sub(replace, k): k for k in state}
        if any(new != old and new in own for new, old in renamed.items()):
            state = {new: state[old] for new, old in renamed.items()}
            key_map = name + ("" if key_map == "identity" else f", {key_map}")
    not_in_checkpoint: list[str] = []
    if is_composite and not any(k.startswith(("backbone.", "neck.")) for k in state):
        # a classification checkpoint: it fills the backbone, the neck keeps its initialisation
        state = {f"backbone.{k}": v for k, v in state.items()}
        not_in_checkpoint.append("neck")
        key_map = "classification -> backbone" if key_map == "identity" else key_map

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


def _mismatch_message(name: str, missing: list, unexpected: list, mismatched: list, key_map: str, show: int = 6) -> str:
    parts = []
    if mismatched:
        parts.append(f"{len(mismatched)} shape mismatches (" + "; ".join(
            f"{k}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in mismatched[:show]) + ")")
    if missing:
        parts.append(f"{len(missing)} keys missing from the checkpoint ({', '.join(missing[:show])}"
                     + (" ..." if len(missing) > show else "") + ")")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys in the checkpoint ({', '.join(unexpected[:show])}"
                     + (" ..." if len(unexpected) > show else "") + ")")
    return (f"checkpoint does not fit {name} (key map: {key_map}): " + "; ".join(parts)
            + ". Is it for another architecture or pyramid? torchvision detection checkpoints need the matching "
              "composite (featx.models.DETECTION_PRESETS).")


def check_state_values(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Refuse tensors without data (meta device), non-float tensors for float parameters, non-finite values and
    negative normalization variances (each would make every output NaN); count float casts."""
    own = model.state_dict()
    wrong_kind, not_finite, negative, cast = [], [], [], {}
    no_data = [k for k, v in state.items() if v.is_meta]
    if no_data:
        raise CheckpointMismatchError(f"checkpoint holds {len(no_data)} tensors without data (meta device): "
                                      f"{', '.join(no_data[:4])}; save the model after its weights are materialized")
    for k, v in state.items():
        target = own[k]
        if target.is_floating_point():
            if not v.is_floating_point():
                wrong_kind.append(f"{k} ({str(v.dtype).removeprefix('torch.')})")
                continue
            if not torch.isfinite(v).all():
                not_finite.append(k)
            elif k.endswith("running_var") and bool((v < 0).any()):
                negative.append(f"{k} (min {v.min().item():.3g})")
            if v.dtype != target.dtype:
                name = str(v.dtype).removeprefix("torch.")
                cast[name] = cast.get(name, 0) + 1
    if wrong_kind:
        raise CheckpointMismatchError(f"checkpoint holds {len(wrong_kind)} non-floating-point tensors where "
                                      f"{type(model).__name__} has float weights: {', '.join(wrong_kind[:4])}")
    if not_finite:
        raise CheckpointMismatchError(f"checkpoint holds NaN or infinite values in {len(not_finite)} tensors "
                                      f"({', '.join(not_finite[:4])}): it is broken (diverged training?)")
    if negative:
        raise CheckpointMismatchError(f"checkpoint holds negative normalization variances in {len(negative)} tensors "
                                      f"({', '.join(negative[:4])}): every output would be NaN; the file is broken")
    return cast


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> LoadReport:
    """Load ``state`` into ``model`` strictly (after :func:`adapt_state_dict`); return and log the report."""
    state, dropped, not_in_checkpoint, key_map = adapt_state_dict(model, state)
    cast = check_state_values(model, state)
    if not_in_checkpoint:
        model.backbone.load_state_dict({k[len("backbone."):]: v for k, v in state.items()}, strict=True)
    else:
        model.load_state_dict(state, strict=True)
    report = LoadReport(source, type(model).__name__, len(state), dropped, not_in_checkpoint, key_map, cast)
    if cast:
        logger.warning("%s: cast %s to the model's precision", source, cast)
    logger.info("%s", report)
    return report
