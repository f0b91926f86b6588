"""featx backbones as timm models: ``timm.create_model("featx_resnet50", ...)`` behaves as timm's own.

Every backbone in the featx catalogue is registered in timm's registry as ``featx_<arch>``
(``featx_resnet50``, ``featx_vgg16_bn``, ``featx_seresnet50``; the full list is
``timm.list_models("featx_*")``). Built through timm's own ``build_model_with_cfg``, each is:

- a classifier by default: the featx backbone's modules at the top level, under the weight source's
  names (``conv1``, ``layer1`` ... for ResNets, as timm's ``resnet50`` names them), then global pooling and
  a linear ``fc``, with ``num_classes``, ``global_pool``, ``drop_rate``,
  ``in_chans``, ``get_classifier()``, ``reset_classifier()``, ``forward_features()`` (the C5 map),
  ``forward_head(pre_logits=)``, ``forward_intermediates()``, ``set_grad_checkpointing()``;
  ``num_classes=0`` gives pooled features;
- a feature extractor with ``features_only=True``: timm's ``FeatureGetterNet`` over
  ``forward_intermediates``, returning a list of maps, with timm's ``FeatureInfo``
  (``channels()``, ``reduction()``, ``module_name()``); ``out_indices`` and ``output_stride`` work.

**Feature levels follow timm's model of the same family.** timm lists the maps finer than C2 first:
the stride-2 stem activation for ResNets, SE-/SK-ResNe(X)ts, ResNeSts, DenseNets, Inception-v3 and
MobileNets, and for VGG also the stride-1 one. featx's timm models do the same (the backbone's
``stem_infos``, then its C2..C5), so ``out_indices=(1, 2, 3, 4)`` selects C2..C5 of
``featx_resnet50`` exactly as of timm's ``resnet50`` (``(2, 3, 4, 5)`` for VGG), and the default is
every level. GoogLeNet, which timm lacks, lists its stride-2 ``conv1`` like the other
torchvision families; AlexNet has no map finer than C2 (its first conv has stride 4) and LeNet-5 is
featx's own, so theirs start at index 0. Module names and state-dict keys are the weight source's
(torchvision's names for the torchvision families, timm's for the timm families): a timm ResNet,
ResNeXt, Wide-ResNet, SE-/SK-ResNet, ResNeSt or Inception-v3 state dict loads with ``load_state_dict``
as it is; DenseNet's ``classifier`` is featx's ``fc``, VGG's and MobileNet's heads and MobileNet's
blocks are named otherwise (``map_source_state`` converts; ``docs/clients.md`` lists each family).
Parameter-free activations keep the source's names too (``relu`` where timm's ResNet says ``act1``). featx's own API (``featx.create_model``,
mmengine configs) keeps ``out_indices`` 0..3 = C2..C5. ``docs/clients.md`` has the table.

**Weights.** Each model's ``pretrained_cfg`` names the weights of its source library: torchvision's
enum members as tags (``IMAGENET1K_V1`` -> ``tv_in1k``, ``IMAGENET1K_V2`` -> ``tv2_in1k``, others
``tv_<name>``; the first tag is torchvision's ``DEFAULT``), with torchvision's preprocessing
(input size, crop, interpolation, mean/std); timm's own tags for the timm families. ``pretrained=True``
and ``pretrained_cfg_overlay=dict(file=...)`` go through timm's path (its download into the torch
hub cache) and end in featx's strict, safe loader (``load_pretrained``): SHA-256 of torchvision's
files checked, every backbone key matched, the classifier loaded when the checkpoint's fits.

**Classifier.** ``fc`` sits on the globally pooled C5 map. Where the source's classifier is one
linear layer on that pooled map (ResNet, GoogLeNet, Inception-v3, DenseNet, MobileNetV2 and the
timm families), its weights load into ``fc`` and the model classifies as the source does; VGG,
AlexNet and MobileNetV3 have multi-layer heads, so their ``fc`` starts untrained.

featx composites (``ResNet50FPN``) are not timm models (their output is a pyramid, not logits);
build them with ``featx.create_model``, or put ``featx.FPN`` on a ``features_only`` model.
"""
from __future__ import annotations

import contextlib
import functools
import re
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from timm.layers import SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models import adapt_input_conv, get_pretrained_cfg, list_pretrained
from torch import nn

from featx.checkpoints import (cached_download, hf_weights_unreachable, load_checkpoint_file, unwrap_state_dict,
                               verify_hash_prefix)
from featx.errors import WeightsError, WeightsUnavailableError
from featx.features import FeatureExtractor, resolve_forward_annotations
from featx.models import CATALOG, ModelEntry, torchvision_weights_enum
from featx.weights import LoadReport, adapt_state_dict, check_state_values

__all__ = ["FeatxTimmModel", "ScriptableClassifier", "TIMM_MODELS", "default_cfgs", "timm_name", "pretrained_tag"]

def timm_name(entry: ModelEntry) -> str:
    """The timm registry name of a catalogue backbone: ``featx_<arch>``."""
    return f"featx_{entry.arch}"


def pretrained_tag(weights_name: str) -> str:
    """timm tag of a torchvision weights enum member name: ``IMAGENET1K_V1`` -> ``tv_in1k``."""
    return {"IMAGENET1K_V1": "tv_in1k", "IMAGENET1K_V2": "tv2_in1k"}.get(weights_name, "tv_" + weights_name.lower())


def _source_classifier(entry: ModelEntry) -> Optional[str]:
    """The source model's classifier whose weights ``fc`` takes (the backbone family says which)."""
    return entry.family.base.source_classifier_of(entry.arch)


@resolve_forward_annotations
class FeatxTimmModel(nn.Module):
    """A featx catalogue backbone as a timm classification model (see the module docstring).

    Args:
        entry: the catalogue name of the backbone (``"ResNet50"``).
        num_classes: classifier outputs; 0 for pooled features.
        in_chans: input channels (the first convolution is rebuilt for other than 3).
        global_pool: timm's pooling type (``"avg"``, ``"max"``, ``"avgmax"``, ``""`` for none).
        drop_rate: dropout before the classifier.
        output_stride: 32, 16 or 8 (ResNet and timm families: dilation in the last stages).
        device, dtype: where and in which dtype the parameters are created (timm's factory arguments;
            ``device="meta"`` builds without memory).
        **kwargs: the featx backbone's options (``frozen_stages``, ``norm_cfg``, ...).

    Shapes: ``(N, in_chans, H, W)`` -> ``(N, num_classes)``; ``forward_features`` -> the C5 map
    ``(N, num_features, ~H/32, ~W/32)``.
    """

    def __init__(self, entry: str, num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg",
                 drop_rate: float = 0.0, output_stride: Optional[int] = None,
                 device: Optional[Union[str, torch.device]] = None, dtype: Optional[torch.dtype] = None,
                 **kwargs: Any) -> None:
        super().__init__()
        with torch.device(device) if device is not None else contextlib.nullcontext():
            self._build(entry, num_classes, in_chans, global_pool, drop_rate, output_stride, **kwargs)
        if dtype is not None:
            self.to(dtype=dtype)

    def _build(self, entry: str, num_classes: int, in_chans: int, global_pool: str, drop_rate: float,
               output_stride: Optional[int], **kwargs: Any) -> None:
        self.entry = CATALOG[entry]
        if output_stride not in (None, 32):
            if not self.entry.family.base.takes_output_stride:
                raise ValueError(f"{entry} has no output_stride option (only 32); ResNet-family and timm-family "
                                 f"models take 8 or 16")
            kwargs["output_stride"] = output_stride
        kwargs.pop("out_indices", None)  # a timm model computes every level; features_only selects
        # The backbone runs the forward pass, but is not a submodule: its children are this model's, at the top
        # level, so module names and state-dict keys are the source's (``layer2``, not ``backbone.layer2``).
        self.backbone: FeatureExtractor
        object.__setattr__(self, "backbone", self.entry.construct(**kwargs))
        self._backbone_children: list[str] = []
        self._adopt_backbone_children()
        if in_chans != self.backbone.in_channels:
            self._rebuild_first_conv(in_chans)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.num_features = self.head_hidden_size = self.backbone.stage_infos[-1].channels
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        self.fc = self._make_fc(num_classes, global_pool)
        self.grad_checkpointing = False
        # timm's feature description: one dict per level, the stem's levels, then C2..C5
        self.levels = tuple(self.backbone.stem_infos) + tuple(self.backbone.stage_infos)
        self.feature_info = [dict(num_chs=f.channels, reduction=f.stride, module=f.module or f"stage{i}", name=f.name)
                             for i, f in enumerate(self.levels)]

    def _adopt_backbone_children(self) -> None:
        """Register the backbone's children as this model's (again after a child is replaced)."""
        for name in self._backbone_children:
            delattr(self, name)
        self._backbone_children = [name for name, _ in self.backbone.named_children()]
        for name, child in self.backbone.named_children():
            if name in ("fc", "global_pool"):
                raise ValueError(f"{self.entry.name}: a backbone module named {name!r} would clash with the head")
            self.add_module(name, child)

    def train(self, mode: bool = True) -> "FeatxTimmModel":
        super().train(mode)
        self.backbone.train(mode)  # the backbone's own rules (frozen stages, norm_eval) after its children's
        return self

    def _make_fc(self, num_classes: int, global_pool: str) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        pooled = self.num_features * self.global_pool.feat_mult() if global_pool else self.num_features
        like = next(self.backbone.parameters())  # a new head goes where the model is, in its dtype
        return nn.Linear(pooled, num_classes, device=like.device, dtype=like.dtype).train(self.training)

    def _rebuild_first_conv(self, in_chans: int) -> None:
        name, conv = next((n, m) for n, m in self.backbone.named_modules() if isinstance(m, nn.Conv2d))
        new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                        conv.groups, conv.bias is not None, conv.padding_mode)
        self.backbone.set_submodule(name, new)
        self.backbone.in_channels = in_chans
        self._adopt_backbone_children()

    # -- timm's model interface ------------------------------------------------------------------
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool)).train(self.training)
        self.fc = self._make_fc(num_classes, self.global_pool.pool_type)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        self.backbone.set_grad_checkpointing(enable)

    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for timm's layer-wise LR decay: the stem, then one group per stage."""
        stem = [n for n, _ in self.backbone.named_parameters() if not any(
            n.startswith(m + ".") for i in range(len(self.backbone.stage_infos)) for m in self.backbone.stage_module_names(i))]
        # non-capturing groups: timm reads a pattern's captured groups as block numbers
        stages = [rf"^(?:{'|'.join(map(re.escape, self.backbone.stage_module_names(i)))})\."
                  for i in range(len(self.backbone.stage_infos))]
        return dict(stem=rf"^(?:{'|'.join(map(re.escape, stem))})$" if stem else r"^$",
                    blocks=[(pattern, (i,)) for i, pattern in enumerate(stages)])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> the C5 map, unpooled."""
        x = self.backbone.check_input(x)
        return self.backbone.forward_stages(x, len(self.backbone.stage_infos) - 1)[-1]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def __prepare_scriptable__(self) -> nn.Module:
        """``torch.jit.script(model)`` compiles :class:`ScriptableClassifier`: the same modules and
        parameters, run in order (featx dispatches stages by name, which TorchScript cannot)."""
        return ScriptableClassifier(self)

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, list[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """timm's intermediate-feature API: the maps of ``self.levels`` at ``indices`` (all by default;
        an int takes the last n), and unless ``intermediates_only`` the final C5 map as well."""
        if output_fmt != "NCHW":
            raise ValueError(f"featx models give NCHW maps, got output_fmt={output_fmt!r}")
        num = len(self.levels)
        take, last = feature_take_indices(num, indices)
        x = self.backbone.check_input(x)
        outs = self.backbone.forward_levels(x, last if (intermediates_only or stop_early) else num - 1)
        intermediates = [outs[i] for i in take]
        if intermediates_only:
            return intermediates
        return outs[-1], intermediates

    def prune_intermediate_layers(self, indices: Union[int, list[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages after the last of ``indices`` (and the head); returns the indices, absolute."""
        take, last = feature_take_indices(len(self.levels), indices)
        stem_levels = len(self.backbone.stem_infos)
        self.backbone.prune_stages_after(max(last - stem_levels, -1))
        if last < stem_levels:  # a stem level: the stem ends at it (its pooling goes), as timm prunes
            self.backbone.prune_stem_after(last)
        self._adopt_backbone_children()
        if prune_head:
            self.reset_classifier(0, "")
        return take

    # -- weights ---------------------------------------------------------------------------------
    def load_pretrained(self, path: str) -> LoadReport:
        """timm's ``custom_load`` hook (torchvision's files, downloaded by timm into the torch hub
        cache): featx's safe reader (SHA-256 prefix of the file name checked), then strict mapping."""
        verify_hash_prefix(Path(path))
        state = unwrap_state_dict(load_checkpoint_file(path), str(path))
        self.load_state_dict(self.map_source_state(state, str(path)), strict=True)
        return self.load_report

    def map_source_state(self, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
        """A state dict of the source library's classification model (torchvision's or timm's), as
        this model's full state dict: the backbone matched strictly by featx (unknown, missing or
        mis-shaped keys are a ``CheckpointMismatchError``), the source classifier into ``fc`` when it
        is one linear layer of the same shape (else ``fc`` keeps its initialisation), the input conv
        adapted to ``in_chans``. Records ``self.load_report``."""
        head = _source_classifier(self.entry)
        in_head = (lambda k: k.startswith(head + ".")) if head else (lambda k: False)
        head_state = {k[len(head) + 1:]: v for k, v in state.items() if in_head(k)}
        body = {k: v for k, v in state.items() if not in_head(k)}
        conv_name = next(n for n, m in self.backbone.named_modules() if isinstance(m, nn.Conv2d))
        w = body.get(conv_name + ".weight")
        if w is not None and w.shape[1] != self.backbone.in_channels:
            body[conv_name + ".weight"] = adapt_input_conv(self.backbone.in_channels, w)
        mapped, dropped, _, key_map = adapt_state_dict(self.backbone, body)
        cast = check_state_values(self.backbone, mapped)
        own_fc = {k: v for k, v in self.fc.state_dict().items()}
        fits = bool(own_fc) and all(k in head_state and head_state[k].shape == v.shape for k, v in own_fc.items())
        fc_state = {k: head_state[k] for k in own_fc} if fits else own_fc
        report = LoadReport(source, type(self).__name__, len(mapped) + (len(fc_state) if fits else 0),
                            dropped + ([] if fits else [f"{head}.{k}" for k in head_state]),
                            [] if fits or not own_fc else ["fc"], key_map, cast)
        self.load_report = report
        return {**mapped, **{f"fc.{k}": v for k, v in fc_state.items()}}


class ScriptableClassifier(nn.Module):
    """A :class:`FeatxTimmModel`'s classifier path as TorchScript compiles it: stem, stages, pooling,
    dropout, ``fc``, each the model's own module (parameters shared, not copied); the input checks of
    the eager model are left out. Its state-dict keys are those of this grouping (``stem.*``,
    ``stages.*``), not the eager model's."""

    def __init__(self, model: FeatxTimmModel) -> None:
        super().__init__()
        stem, stages = model.backbone.sequential_view()
        self.stem = stem
        self.stages = nn.Sequential(*stages)
        self.global_pool = model.global_pool
        self.fc = model.fc
        self.drop_rate = float(model.drop_rate)
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.global_pool(self.stages(self.stem(x)))
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return self.fc(x)


def _filter_source_state(state: dict[str, torch.Tensor], model: FeatxTimmModel) -> dict[str, torch.Tensor]:
    """timm's ``pretrained_filter_fn``: weights timm read itself (a ``pretrained_cfg_overlay`` file, the
    Hugging Face hub for the timm families) mapped by featx (``map_source_state``)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    source = cfg.get("file") or (f"hf-hub:{cfg['hf_hub_id']}" if cfg.get("hf_hub_id") else cfg.get("url")) or "timm"
    return model.map_source_state(state, str(source))


# -- pretrained configs and registration --------------------------------------------------------------
def _torchvision_cfgs(entry: ModelEntry) -> dict[str, dict]:
    enum = torchvision_weights_enum(entry.arch)
    members = [enum.DEFAULT] + [m for m in enum if m != enum.DEFAULT] if enum is not None else []
    first_conv = entry.family.base.first_conv
    head = _source_classifier(entry)
    cfgs = {}
    for member in members:
        t = member.transforms()
        crop, resize = t.crop_size[0], t.resize_size[0]
        side = entry.family.base.coarsest_side(crop)
        cfgs[f"{timm_name(entry)}.{pretrained_tag(member.name)}"] = dict(
            url=member.url, custom_load=True, num_classes=len(member.meta.get("categories") or []) or 1000,
            input_size=(3, crop, crop), pool_size=(side, side), crop_pct=round(crop / resize, 4),
            interpolation=t.interpolation.value, mean=tuple(t.mean), std=tuple(t.std), first_conv=first_conv,
            classifier="fc", license="bsd-3-clause (torchvision)", origin_url="https://pytorch.org/vision/stable/models.html",
            notes=(f"torchvision {type(member).__name__}.{member.name}",
                   "classifier loaded" if head else "classifier not in the source's form: fc starts untrained"),
        )
    return cfgs


def _featx_family_cfgs(entry: ModelEntry) -> dict[str, dict]:
    """A family only featx has (LeNet-5): no published weights; 32x32 grayscale, 10 classes (digits)."""
    return {timm_name(entry): dict(num_classes=10, input_size=(1, 32, 32), min_input_size=(1, 32, 32), pool_size=(1, 1),
                                   crop_pct=1.0, interpolation="bilinear", mean=(0.5,), std=(0.5,),
                                   first_conv=entry.family.base.first_conv, classifier="fc")}



def _timm_family_cfgs(entry: ModelEntry) -> dict[str, dict]:
    cfgs = {}
    for full in list_pretrained(f"{entry.arch}.*") or [entry.arch]:
        src = get_pretrained_cfg(full)
        tag = full.split(".", 1)[1] if "." in full else ""
        cfg = {k: v for k, v in src.to_dict().items() if k not in ("architecture", "tag") and v is not None}
        cfg["first_conv"] = src.first_conv if isinstance(src.first_conv, str) else src.first_conv[0]
        cfg["classifier"] = "fc"
        cfgs[f"{timm_name(entry)}.{tag}" if tag else timm_name(entry)] = cfg
    return cfgs


# a family's pretrained cfgs come from where its weights come from
_CFGS_BY_SOURCE = {"torchvision": _torchvision_cfgs, "timm": _timm_family_cfgs, "featx": _featx_family_cfgs}

TIMM_MODELS: dict[str, ModelEntry] = {timm_name(e): e for e in CATALOG.values() if e.kind == "backbone"}

default_cfgs = generate_default_cfgs({
    name: cfg
    for entry in TIMM_MODELS.values()
    for name, cfg in _CFGS_BY_SOURCE[entry.family.source](entry).items()
})


def _fetch_or_explain(variant: str, pretrained_cfg: Any, overlay: Any) -> Optional[str]:
    """Before timm's own pretrained loading: a torchvision URL is fetched (or found) by featx's
    ``cached_download``, whose offline error names the file, the folder and the URL, and whose hash check
    timm would skip; for a Hugging Face source, the place to name if timm's download fails."""
    from timm.models._builder import resolve_pretrained_cfg

    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=overlay)
    if cfg.file:
        return None
    if cfg.url and cfg.custom_load:
        cached_download(cfg.url, check_hash=True)
        return None
    if cfg.hf_hub_id:
        where = f"hf-hub:{cfg.hf_hub_id} (the Hugging Face cache, $HF_HOME/hub/models--{cfg.hf_hub_id.replace('/', '--')})"
        unreachable = hf_weights_unreachable(cfg.hf_hub_id)
        if unreachable:  # huggingface_hub would retry for about a minute before failing the same way
            raise WeightsUnavailableError(
                f"{variant}: its pretrained weights are not in {where}, and {unreachable}; copy them into that "
                "cache from a machine with internet, or pass pretrained_cfg_overlay=dict(file=PATH)")
        return where
    return cfg.url or None




@functools.lru_cache(maxsize=None)
def _level_count(entry_name: str) -> int:
    """How many levels a featx timm model lists: the backbone's stem levels and its stages (built once on
    the meta device: only the description is needed)."""
    with torch.device("meta"):
        backbone = CATALOG[entry_name].construct()
    return len(backbone.stem_infos) + len(backbone.stage_infos)


def _entrypoint(entry: ModelEntry):
    def create(pretrained: bool = False, **kwargs: Any) -> FeatxTimmModel:
        where = (_fetch_or_explain(timm_name(entry), kwargs.get("pretrained_cfg"), kwargs.get("pretrained_cfg_overlay"))
                 if pretrained else None)
        try:
            return build_model_with_cfg(FeatxTimmModel, timm_name(entry), pretrained, entry=entry.name,
                                        feature_cfg=dict(feature_cls="getter", out_indices=tuple(range(_level_count(entry.name)))),
                                        pretrained_filter_fn=_filter_source_state, **kwargs)
        except (OSError, ValueError) as e:  # hub errors (offline: URLError, LocalEntryNotFoundError) are OSErrors
            if where is None or isinstance(e, WeightsError):
                raise
            raise WeightsUnavailableError(
                f"{timm_name(entry)}: timm could not fetch its pretrained weights from {where} "
                f"({type(e).__name__}: {' '.join(str(e).split())[:160]}); offline, copy them into that cache from a "
                "machine with internet, or pass pretrained_cfg_overlay=dict(file=PATH)") from None

    create.__name__ = create.__qualname__ = timm_name(entry)
    create.__module__ = __name__
    create.__doc__ = (f"featx {entry.name} ({entry.arch}) as a timm model: a classifier, or with features_only=True "
                      "its levels as timm's model of the family lists them (the stem's, then C2..C5; see feature_info).")
    return create


for _entry in TIMM_MODELS.values():
    register_model(_entrypoint(_entry))
