"""Prove a featx model computes what the reference library computes on the same checkpoint.

The reference is torchvision's own model: ``IntermediateLayerGetter`` over the classification
network for a backbone, ``BackboneWithFPN`` for a composite, and the detector's ``model.backbone``
for a torchvision detection preset. Both sides load the checkpoint through their own code path
(torchvision's hub loading for enum names), run the same inputs at several sizes, and every level
must agree to ``max|featx - ref| <= tol * max|ref|`` (fp32, tol 1e-5 by default).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import timm
import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from featx.checkpoints import read_checkpoint, unwrap_state_dict
from featx.compare import compare_arrays
from featx.io import scratch_dir
from featx.models import CATALOG, DETECTION_PRESETS, detection_composite, get_entry

__all__ = ["LevelResult", "CheckReport", "check_weights", "checkable_models", "randomize_norm_stats", "DEFAULT_SIZES"]

DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((224, 224), (333, 517))
RANDOM = "random"


@dataclass
class LevelResult:
    level: str
    size: tuple[int, int]
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float  # max_abs / max|ref|
    passed: bool


@dataclass
class CheckReport:
    model: str
    weights: str
    reference: str
    tol: float
    levels: list[LevelResult] = field(default_factory=list)
    load: dict = field(default_factory=dict)
    not_compared: list[str] = field(default_factory=list)
    error: Optional[str] = None

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.levels) and all(r.passed for r in self.levels)

    @property
    def failing_levels(self) -> list[str]:
        return sorted({r.level for r in self.levels if not r.passed})

    def to_dict(self) -> dict:
        return {"model": self.model, "weights": self.weights, "reference": self.reference, "tol": self.tol,
                "passed": self.passed, "failing_levels": self.failing_levels, "error": self.error,
                "load": self.load, "not_compared": self.not_compared,
                "levels": [vars(r) | {"size": list(r.size), "shape": list(r.shape)} for r in self.levels]}


def checkable_models() -> list[str]:
    """Every catalogue model of the families checked whole (ResNet: composites against torchvision's
    BackboneWithFPN), every backbone of the others (their composites add only a neck, which classification
    checkpoints do not hold), then the detection presets."""
    whole = [n for n, e in CATALOG.items() if e.family.base.has_torchvision_fpn]
    return (whole + [n for n, e in CATALOG.items() if n not in whole and e.kind == "backbone"
                     and e.family.source != "featx"]  # LeNet-5: no library has it to compare with
            + list(DETECTION_PRESETS))


def randomize_norm_stats(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm statistics and affine values (in place), so a mis-mapped norm cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                n = m.weight.shape[0]
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def _load_reference(ref: nn.Module, weights: Any, builder: Any) -> nn.Module:
    """Load ``weights`` into the torchvision reference through torchvision's own path where it has one."""
    if isinstance(weights, str) and not Path(weights).suffix and not weights.startswith(("http://", "https://")):
        if builder is None:
            raise ValueError(f"{weights!r}: torchvision names give classification weights; pass a detector name "
                             "(e.g. fasterrcnn_resnet50_fpn) for detection weights")
        return builder(weights=weights)  # torchvision resolves the enum name and reads its hub cache
    if isinstance(weights, str) and weights.startswith(("http://", "https://")):
        state = torch.hub.load_state_dict_from_url(weights, map_location="cpu", weights_only=True)
        state = unwrap_state_dict(state, weights)
    else:
        state = read_checkpoint(weights)
    ref.load_state_dict(state, strict=True)
    return ref


def _composite_reference(model: nn.Module, body: nn.Module) -> BackboneWithFPN:
    """torchvision ``BackboneWithFPN`` with the featx composite's levels and extra blocks."""
    neck = model.neck
    used = list(range(neck.start_level, neck.backbone_end_level))
    stages = [model.backbone.out_indices[i] for i in used]
    return_layers = {f"layer{s + 1}": str(j) for j, s in enumerate(stages)}
    if neck.num_outs - len(used) == 0:
        extra = None
    elif not neck.add_extra_convs:
        extra = LastLevelMaxPool()
    else:
        cin = neck.in_channels[neck.backbone_end_level - 1] if neck.add_extra_convs == "on_input" else neck.out_channels
        extra = LastLevelP6P7(cin, neck.out_channels)
    norm = nn.BatchNorm2d if neck.fpn_convs[0].norm_name == "bn" else None
    ref = BackboneWithFPN(body, return_layers, [neck.in_channels[i] for i in used], neck.out_channels,
                          extra_blocks=extra, norm_layer=norm)
    if extra is None:  # BackboneWithFPN defaults to a max-pool level; featx has none here
        ref.fpn.extra_blocks = None
    return ref


def _run_pair(model: nn.Module, ref: nn.Module, names: Sequence[str], sizes, batch: int, seed: int,
              tol: float) -> list[LevelResult]:
    results = []
    g = torch.Generator().manual_seed(seed)
    for h, w in sizes:
        x = torch.randn(batch, 3, h, w, generator=g)
        with torch.no_grad():
            out = list(model(x))
            r = ref(x)
            r = list(r.values()) if isinstance(r, dict) else list(r)
        if len(out) != len(r):
            raise RuntimeError(f"featx gives {len(out)} levels, the reference {len(r)}")
        for name, o, rr in zip(names, out, r):
            d = compare_arrays(o, rr)
            results.append(LevelResult(name, (h, w), d.shape, d.max_abs, d.rel, d.rel <= tol))
    return results


def check_weights(
    model_name: str,
    weights: Any = RANDOM,
    reference_weights: Any = None,
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    batch: int = 2,
    tol: float = 1e-5,
    seed: int = 0,
    **model_kwargs: Any,
) -> CheckReport:
    """Build ``model_name`` with ``weights`` and its torchvision reference with ``reference_weights``
    (default: the same), run both, and compare every level.

    ``model_name`` is a catalogue name (``"ResNet50"``, ``"ResNet50FPN"``) or a torchvision detector
    (``"fasterrcnn_resnet50_fpn_v2"``, see ``featx.weights.DETECTION_PRESETS``). ``weights="random"``
    draws a random reference (BatchNorm statistics randomized), saves it as a torchvision-format file
    and loads that into featx: an offline check of the key map and the architecture.
    """
    reference_weights = weights if reference_weights is None else reference_weights
    report = CheckReport(model_name, str(weights), "", tol)
    try:
        with scratch_dir() as tmp:
            _check(report, model_name, weights, reference_weights, sizes, batch, tol, seed, Path(tmp), model_kwargs)
    except Exception as e:  # reported, not raised: --all goes on with the next model
        report.error = f"{type(e).__name__}: {e}"
    return report


class _DetectionLayout(nn.Module):
    """Holds a ``BackboneWithFPN`` as ``backbone`` so its keys read like a torchvision detector's."""

    def __init__(self, backbone: BackboneWithFPN) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor):
        return self.backbone(x)


def _is_detection_file(weights: Any) -> bool:
    if isinstance(weights, (str, Path)) and Path(weights).is_file():
        return any(k.startswith("backbone.body.") for k in read_checkpoint(weights))
    return False


def _check(report, model_name, weights, reference_weights, sizes, batch, tol, seed, tmp: Path, model_kwargs) -> None:
    if model_name in DETECTION_PRESETS:
        builder = lambda **kw: torchvision.models.get_model(model_name, weights_backbone=None, **kw)  # noqa: E731
        full_ref = builder(weights=None)
        report.reference = f"torchvision {model_name}(...).backbone"
        make = lambda w: detection_composite(model_name, weights=w, progress=False, **model_kwargs)  # noqa: E731
        kind = "detector"
    elif not get_entry(model_name).family.base.has_torchvision_fpn:
        _check_zoo(report, get_entry(model_name), weights, reference_weights, sizes, batch, tol, seed, tmp, model_kwargs)
        return
    else:
        entry = get_entry(model_name)
        probe = entry.build(**model_kwargs)
        backbone = probe.backbone if entry.kind == "composite" else probe
        reference_kwargs = backbone.torchvision_kwargs()
        builder = lambda **kw: torchvision.models.get_model(entry.arch, **reference_kwargs, **kw)  # noqa: E731
        make = lambda w: entry.build(weights=w, **model_kwargs)  # noqa: E731
        kind = entry.kind
        if kind == "composite" and (weights == RANDOM or _is_detection_file(reference_weights)):
            # the whole pyramid: torchvision BackboneWithFPN, checkpoint in detector layout
            full_ref = _DetectionLayout(_composite_reference(probe, builder(weights=None)))
            builder = None
            report.reference = f"torchvision {entry.arch} + FeaturePyramidNetwork"
            kind = "composite-full"
        else:
            full_ref = builder(weights=None)
            report.reference = f"torchvision {entry.arch}"

    if weights == RANDOM or reference_weights == RANDOM:
        randomize_norm_stats(full_ref, seed)
        with torch.no_grad():  # non-zero FPN biases, so a swapped bias shows
            for name, p in full_ref.named_parameters():
                if ".fpn." in f".{name}" and name.endswith("bias"):
                    p.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed))
        ckpt = tmp / "random_reference.pth"
        torch.save(full_ref.state_dict(), ckpt)
        weights = ckpt if weights == RANDOM else weights
        reference_weights = ckpt if reference_weights == RANDOM else reference_weights
    full_ref = _load_reference(full_ref, str(reference_weights), builder).eval()
    model = make(str(weights)).eval()
    report.load = model.load_report.to_dict() if model.load_report else {}

    if kind == "detector":
        ref = full_ref.backbone
    elif kind == "composite-full":
        ref = full_ref
    elif kind == "backbone":
        ref = IntermediateLayerGetter(full_ref, {f"layer{i + 1}": str(i) for i in model.out_indices})
    else:  # a classification checkpoint in a composite: it defines the backbone only
        ref = IntermediateLayerGetter(full_ref, {f"layer{i + 1}": str(i) for i in model.backbone.out_indices})
        report.not_compared.append("neck (not in the checkpoint; randomly initialised)")
        model = model.backbone
    names = [f.name for f in model.feature_info]
    report.reference += f" ({type(ref).__name__})"
    report.levels = _run_pair(model, ref.eval(), names, sizes, batch, seed, tol)


def _zoo_reference(entry, named: Optional[str] = None) -> nn.Module:
    """The reference library's classification model for a zoo family: timm's for the timm
    families, torchvision's otherwise (with the auxiliary heads its checkpoints carry)."""
    if entry.family.source == "timm":
        if named is None:
            return timm.create_model(entry.arch, pretrained=False)
        return timm.create_model(entry.arch if named == "DEFAULT" else f"{entry.arch}.{named}", pretrained=True)
    aux = {"aux_logits": True, "init_weights": True} if entry.arch in ("googlenet", "inception_v3") else {}
    if named is None:
        return torchvision.models.get_model(entry.arch, weights=None, **aux)
    return torchvision.models.get_model(entry.arch, weights=named)


def _check_zoo(report, entry, weights, reference_weights, sizes, batch, tol, seed, tmp: Path, model_kwargs) -> None:
    """VGG ... MobileNet against torchvision's ``create_feature_extractor`` on the classification
    model; the timm families against timm's ``features_only`` net. Backbone levels only."""
    full_ref = _zoo_reference(entry)
    if weights == RANDOM or reference_weights == RANDOM:
        randomize_norm_stats(full_ref, seed)
        ckpt = tmp / "random_reference.pth"
        torch.save(full_ref.state_dict(), ckpt)
        weights = ckpt if weights == RANDOM else weights
        reference_weights = ckpt if reference_weights == RANDOM else reference_weights
    named = isinstance(reference_weights, str) and not Path(reference_weights).suffix and "://" not in reference_weights
    if named:
        full_ref = _zoo_reference(entry, reference_weights)
    else:
        _load_reference(full_ref, str(reference_weights), None)
    full_ref.eval()
    model = entry.build(weights=str(weights), **model_kwargs).eval()
    report.load = model.load_report.to_dict() if model.load_report else {}
    backbone = model.backbone if entry.kind == "composite" else model
    if entry.kind == "composite":
        report.not_compared.append("neck (not in the checkpoint; randomly initialised)")
    if entry.family.source == "timm":
        ref = timm.create_model(entry.arch, pretrained=False, features_only=True,
                                out_indices=[backbone.timm_feature_indices[i] for i in backbone.out_indices])
        own = ref.state_dict()
        ref.load_state_dict({k: v for k, v in full_ref.state_dict().items() if k in own}, strict=True)
        report.reference = f"timm {entry.arch} (features_only)"
    else:
        if hasattr(full_ref, "transform_input"):
            full_ref.transform_input = backbone.transform_input
        nodes = [backbone.spec.reference_nodes[i] for i in backbone.out_indices]
        with warnings.catch_warnings():  # its note about train/eval node lists does not apply to these models
            warnings.simplefilter("ignore", UserWarning)
            ref = create_feature_extractor(full_ref, {n: str(j) for j, n in enumerate(nodes)})
        report.reference = f"torchvision {entry.arch} (create_feature_extractor: {', '.join(nodes)})"
    report.levels = _run_pair(backbone, ref.eval(), [f.name for f in backbone.feature_info], sizes, batch, seed, tol)
