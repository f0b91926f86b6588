"""Any timm model as a featx extractor (``TimmBackbone``), and the timm-owned families
SE-ResNet/ResNeXt, SK-ResNet/ResNeXt and ResNeSt as presets of it.

timm's ``features_only`` net (``FeatureListNet``) is a chain of the model's own top-level
modules, under the model's own names, with some of them tapped. ``TimmBackbone`` keeps exactly
those modules and names (so timm checkpoints load strictly) and adds what mmpretrain's timm
wrapper lacks:

- levels named by stride: the taps at strides 4, 8, 16, 32 are C2..C5 whatever timm's index
  (timm counts the stride-2 stem tap as index 0), and ``out_indices`` counts C2..C5 as 0..3; the
  taps before C2 are ``stem_infos`` (featx's timm models list them, as timm does);
- ``frozen_stages``: the stem is every module up to the last tap before C2, stage k runs the
  modules after the previous tap up to tap k;
- ``norm_eval``.

Weights are loaded by the builder: ``featx.create_model("SEResNet50", weights="a1_in1k")`` reads
timm's pretrained tag through timm's own hub download and cache; a file or URL loads strictly.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from featx.errors import did_you_mean
from featx.features import FeatureInfo, SequenceExtractor, level_name

__all__ = ["TimmBackbone", "TIMM_ARCHS"]

# The timm-owned families in the catalogue: timm model name -> featx class name.
TIMM_ARCHS: dict[str, str] = {
    "seresnet50": "SEResNet50",
    "seresnet101": "SEResNet101",
    "seresnext50_32x4d": "SEResNeXt50_32x4d",
    "skresnet18": "SKResNet18",
    "skresnet34": "SKResNet34",
    "skresnext50_32x4d": "SKResNeXt50_32x4d",
    "resnest50d": "ResNeSt50d",
    "resnest101e": "ResNeSt101e",
}

_LEVEL_STRIDES = (4, 8, 16, 32)


class TimmBackbone(SequenceExtractor):
    """A timm model's ``features_only`` chain as C2..C5 (see the module docstring).

    Args:
        model_name: a timm model name (``timm.list_models()``), e.g. ``"seresnet50"``.
        out_indices: which of C2..C5 (0..3) to return.
        frozen_stages, norm_eval: as for every featx backbone.
        **timm_kwargs: passed to ``timm.create_model`` (``output_stride``, ``drop_path_rate``, ...).

    >>> TimmBackbone("resnest50d", out_indices=(1, 2, 3))(torch.rand(1, 3, 224, 224))  # C3, C4, C5
    """

    source_classifier = "fc"  # the timm ResNet-style nets featx wraps
    takes_output_stride = True  # passed to timm.create_model

    def __init__(self, model_name: str, out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1,
                 norm_eval: bool = False, **timm_kwargs: Any) -> None:
        super().__init__()
        # imported here: featx's model modules import no timm, so importing timm after featx registers featx's
        # models in it without a cycle (featx/__init__.py)
        import timm
        from timm.models import FeatureListNet

        if not timm.is_model(model_name) or str(model_name).startswith("featx_"):
            raise ValueError(f"unknown timm model {model_name!r}{did_you_mean(model_name, timm.list_models(), n=5)}")
        for fixed in ("features_only", "pretrained", "out_indices"):
            if fixed in timm_kwargs:
                raise TypeError(f"TimmBackbone sets {fixed} itself; use out_indices (C2..C5 = 0..3) and weights=")
        net = timm.create_model(model_name, pretrained=False, features_only=True, **timm_kwargs)
        self.arch = self.model_name = model_name
        reductions = net.feature_info.reduction()
        channels = net.feature_info.channels()
        # C2..C5 are the first taps at strides 4, 8, 16, 32, each capped at the output stride (a dilated net
        # repeats its last stride: 4, 8, 16, 16 at output_stride=16)
        cap = int(timm_kwargs.get("output_stride") or 32)
        wanted = [min(s, cap) for s in _LEVEL_STRIDES]
        taps: list[int] = []
        for stride in wanted:
            start = taps[-1] + 1 if taps else 0
            found = next((i for i in range(start, len(reductions)) if reductions[i] == stride), None)
            if found is None:
                raise ValueError(f"{model_name} has feature maps at strides {reductions}; featx needs {wanted} in that "
                                 "order (C2..C5); try another output_stride or a model with a stride-4 stage")
            taps.append(found)
        self.timm_feature_indices = tuple(taps)
        module_names = net.feature_info.module_name()
        infos = [FeatureInfo(f"C{i + 2}", channels[t], reductions[t], module_names[t]) for i, t in enumerate(taps)]
        self.checkpoint_key_map: dict[str, str] = {}  # featx key -> timm key, where they differ
        with torch.device("meta"):  # only its key names are needed: no memory, no init
            full_keys = list(timm.create_model(model_name, pretrained=False, **timm_kwargs).state_dict())
        if isinstance(net, FeatureListNet):
            self._init_chain(net, taps, full_keys)
        else:
            self._init_wrapped(net, taps)
        # the classifier side of timm's checkpoints (fc, conv_head, head.norm, ...): dropped and reported
        own = {self.checkpoint_key_map.get(k, k) for k in self.state_dict()}
        self.checkpoint_head_keys = frozenset(k for k in full_keys if k not in own)
        self._init_features(infos, out_indices, frozen_stages, norm_eval)

    def _init_chain(self, net: Any, taps: list[int], full_keys: list[str]) -> None:
        """A FeatureListNet: its children, in order, become the stem and the stages."""
        self.chain = True
        children = list(net.named_children())
        for name, module in children:
            self.add_module(name, module)
        tap_of_level = {int(index): name for name, index in net.return_layers.items()}
        order = [name for name, _ in children]
        ends = [order.index(tap_of_level[t]) for t in taps]
        first = next((order.index(tap_of_level[i]) + 1 for i in range(taps[0] - 1, -1, -1) if i in tap_of_level), 0)
        starts = [first] + [e + 1 for e in ends[:-1]]
        stem = order[:first]
        infos = net.feature_info.get_dicts()
        stem_infos = [FeatureInfo(level_name("C", infos[i]["reduction"]), infos[i]["num_chs"], infos[i]["reduction"],
                                  tap_of_level[i]) for i in range(taps[0]) if i in tap_of_level and tap_of_level[i] in stem]
        self._init_sequence(stem, [order[a:b + 1] for a, b in zip(starts, ends)], stem_infos)
        # timm flattens nested sequentials into "stages_0"; its checkpoints say "stages.0"
        for i, key in enumerate(self.state_dict()):
            if i < len(full_keys) and key != full_keys[i]:
                if key.replace("_", ".") != full_keys[i].replace("_", "."):
                    raise ValueError(f"cannot map {self.model_name}'s feature-net key {key!r} to its checkpoint keys")
                self.checkpoint_key_map[key] = full_keys[i]

    def _init_wrapped(self, net: Any, taps: list[int]) -> None:
        """A feature class of its own (EfficientNetFeatures, ...): timm's forward runs it. Its
        children are registered here under their own (timm's) names; freezing follows the order
        of its modules up to each level's tap."""
        self.chain = False
        for name, module in net.named_children():
            self.add_module(name, module)
        object.__setattr__(self, "_timm_net", net)  # not a child: its modules are registered above
        leaves = [n for n, m in self.named_modules() if n and (list(m.parameters(recurse=False))
                                                              or list(m.buffers(recurse=False)))]
        names = net.feature_info.module_name()

        def last_leaf(module: str) -> int:
            hits = [i for i, n in enumerate(leaves) if n == module or n.startswith(module + ".")]
            if not hits:
                raise ValueError(f"cannot find the modules of {self.model_name}'s tap {module!r}")
            return hits[-1]

        stem_end = last_leaf(names[taps[0] - 1]) + 1 if taps[0] > 0 else 0
        self._leaves = leaves
        self._stage_ends = [stem_end] + [last_leaf(names[t]) + 1 for t in taps]

    def stage_module_names(self, index: int) -> list[str]:
        if not self.chain:
            raise NotImplementedError(f"{self.model_name} runs as timm's own feature class; its stages have no "
                                      "separate modules")
        return super().stage_module_names(index)

    def sequential_view(self):
        if not self.chain:
            raise NotImplementedError(f"{self.model_name} runs as timm's own feature class; script timm's model instead")
        return super().sequential_view()

    def frozen_modules(self) -> list:
        if getattr(self, "chain", True):
            return super().frozen_modules()
        if self.frozen_stages < 0:
            return []
        return [self.get_submodule(n) for n in self._leaves[: self._stage_ends[self.frozen_stages]]]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.chain:
            return super().forward(x)
        x = self.check_input(x)
        outs = self._timm_net(x)
        return tuple(outs[self.timm_feature_indices[i]] for i in self.out_indices)
