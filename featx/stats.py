"""Model facts without running real data: pyramid shapes, parameters, FLOPs, loadable weights.

Everything runs on PyTorch's ``meta`` device (shapes only, no arithmetic), so a ResNet-152 FPN at
800x1216 is measured in about a second. FLOPs are ``torch.utils.flop_counter`` counts
(2 x multiply-adds of convolutions and matmuls).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import get_model_weights

from featx.features import input_channels
from featx.io import cache_dir, write_json
from featx.models import CATALOG, DETECTION_PRESETS, ModelEntry, get_entry, list_models
from featx.version import __version__

__all__ = ["ModelStats", "model_stats", "model_table", "flops_and_shapes", "pyramid_table", "mmdet_config",
           "loadable_weights", "STAT_SIZES"]

STAT_SIZES: tuple[tuple[int, int], ...] = ((224, 224), (800, 1216))


@dataclass
class ModelStats:
    name: str
    timm_name: Optional[str]  # None for composites: timm registers featx's backbones only
    family: str
    kind: str
    levels: list[str]
    strides: list[int]
    channels: list[int]
    params_m: float
    gflops: dict[str, float] = field(default_factory=dict)
    weights: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def flops_and_shapes(module: nn.Module, inputs: Any) -> tuple[float, list[tuple[int, ...]]]:
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        outs = module(inputs)
    return counter.get_total_flops() / 1e9, [tuple(o.shape) for o in outs]


# (family, arch, size) -> GFLOPs and C2..C5 shapes of the architecture's default backbone, shared by its composites
_BACKBONE_COSTS: dict[tuple[str, str, tuple[int, int]], tuple[float, tuple[tuple[int, ...], ...]]] = {}


def _backbone_cost(entry: ModelEntry, size: tuple[int, int], built: Optional[nn.Module] = None
                   ) -> tuple[float, tuple[tuple[int, ...], ...]]:
    """GFLOPs and C2..C5 shapes of the default backbone of ``entry``'s architecture at ``size``, measured once per
    architecture and size; ``built``: that backbone, already built on the meta device (``entry`` is the backbone)."""
    key = (entry.family.name, entry.arch, tuple(size))
    if key not in _BACKBONE_COSTS:
        with torch.device("meta"):
            backbone = built if built is not None else next(
                e for e in CATALOG.values() if e.family is entry.family and e.arch == entry.arch and e.kind == "backbone"
            ).construct().eval()
            x = torch.empty(1, backbone.in_channels, *size)
        flops, shapes = flops_and_shapes(backbone, x)
        _BACKBONE_COSTS[key] = flops, tuple(shapes)
    return _BACKBONE_COSTS[key]


def _build_meta(entry: ModelEntry) -> nn.Module:
    with torch.device("meta"):
        return entry.construct().eval()


def loadable_weights(entry: ModelEntry) -> list[str]:
    """Weight names the model takes (torchvision enum names; timm pretrained tags for the timm
    families), plus the torchvision detectors it can hold."""
    if entry.family.source == "timm":  # timm's pretrained tags ("a1_in1k"), as weights= takes them
        return [m.split(".", 1)[1] for m in timm.list_pretrained(f"{entry.arch}.*")]
    try:
        names = [w.name for w in get_model_weights(entry.arch)]
    except (ValueError, KeyError):
        names = []
    if entry.kind == "composite":
        names += [d for d, p in DETECTION_PRESETS.items() if p["model"] == entry.name]
    return names


def model_stats(name: str, sizes: Sequence[tuple[int, int]] = STAT_SIZES) -> ModelStats:
    """Facts about a catalogue model with its default options."""
    entry = get_entry(name)
    model = _build_meta(entry)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    gflops = {}
    for size in sizes:
        flops, shapes = _backbone_cost(entry, tuple(size), model if entry.kind == "backbone" else None)
        if entry.kind == "composite":
            with torch.device("meta"):
                feats = [torch.empty(s) for s in shapes]
            neck_flops, _ = flops_and_shapes(model.neck, feats)
            flops += neck_flops
        gflops[f"{size[0]}x{size[1]}"] = round(flops, 2)
    infos = model.feature_info
    return ModelStats(entry.name, entry.timm_name if entry.kind == "backbone" else None, entry.family.name, entry.kind, [f.name for f in infos],
                      [f.stride for f in infos], [f.channels for f in infos], round(params, 2), gflops,
                      loadable_weights(entry))


def pyramid_table(name: str, size: tuple[int, int], batch: int = 1, **kwargs: Any) -> list[list]:
    """Rows of (level, stride, channels, output shape) of a catalogue model for ``(batch, 3, H, W)``."""
    with torch.device("meta"):
        model = get_entry(name).construct(**kwargs).eval()
        outs = model(torch.empty(batch, input_channels(model), *size))
    return [[f.name, f.stride, f.channels, tuple(o.shape)] for f, o in zip(model.feature_info, outs)]


def mmdet_config(entry: ModelEntry) -> str:
    """A child config of an mmdet config that puts this model in as the backbone (for a composite, the neck
    too): pasted below a ``_base_`` line naming one of mmdet's configs, it builds. ``_delete_=True`` drops the
    parent's backbone arguments (``depth``, ``num_stages``, ``init_cfg``), which this model fixes or does not take."""
    head = ('# below _base_ = "mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py" (or any mmdet config)\n'
            'custom_imports = dict(imports=["featx"], allow_failed_imports=False)\n')
    if entry.kind == "backbone":
        return head + (f'model = dict(backbone=dict(_delete_=True, type="featx.{entry.name}", out_indices=(0, 1, 2, 3), '
                       'frozen_stages=1, norm_eval=True))')
    with torch.device("meta"):
        model = entry.construct()
    return head + (f'# the composite is backbone and neck: out_channels={model.out_channels}, strides={model.strides}\n'
                   f'model = dict(backbone=dict(_delete_=True, type="featx.{entry.name}", frozen_stages=1, '
                   'norm_eval=True), neck=None)')


def _catalogue_key() -> str:
    """What the catalogue's figures depend on: featx's model code and the versions of the libraries whose
    weights and layers it lists."""
    import torchvision

    digest = hashlib.sha256(f"featx {__version__}|torch {torch.__version__}|torchvision {torchvision.__version__}|"
                            f"timm {timm.__version__}".encode())
    package = Path(__file__).resolve().parent
    for path in sorted([package / "stats.py", *(package / "models").glob("*.py"), *(package / "backbones").glob("*.py"),
                        *(package / "necks").glob("*.py")]):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def _catalogue_cache() -> Path:
    return cache_dir() / "catalogue.json"


def model_table(pattern: Optional[str] = None, progress: Optional[Callable[[int, int, str], None]] = None,
                use_cache: bool = True) -> tuple[list[str], list[list], list[ModelStats]]:
    """``(headers, rows, stats)`` of ``featx list``: one row per catalogue model matching ``pattern``.
    ``progress(i, n, name)`` is called before each model is measured. The figures are computed on the meta
    device once and kept in featx's cache folder (``catalogue.json``), keyed by featx's model code and the
    library versions, so a later call reads them."""
    names = list_models(pattern)
    if not names:
        raise ValueError(f"no model matches {pattern!r}; featx list shows them all")
    key = _catalogue_key()
    cached: dict[str, Any] = {}
    if use_cache:
        try:
            data = json.loads(_catalogue_cache().read_text())
            cached = data["models"] if data.get("key") == key else {}
        except (OSError, ValueError, KeyError, TypeError):  # missing or unreadable: computed again
            cached = {}
    stats, fresh = [], False
    for i, n in enumerate(names, 1):
        if n in cached:
            stats.append(ModelStats(**cached[n]))
            continue
        if progress:
            progress(i, len(names), n)
        stats.append(model_stats(n))
        cached[n], fresh = stats[-1].to_dict(), True
    if use_cache and fresh:
        try:
            _catalogue_cache().parent.mkdir(parents=True, exist_ok=True)
            write_json(_catalogue_cache(), {"key": key, "models": cached})
        except OSError:  # a read-only home: computed again next time
            pass
    headers = ["model", "timm name", "family", "levels", "strides", "channels", "params (M)", "GFLOPs 224",
               "GFLOPs 800x1216", "weights"]
    rows = []
    for st in stats:
        rows.append([st.name, st.timm_name if st.kind == "backbone" else "-", st.family, f"{st.levels[0]}-{st.levels[-1]}",
                     "/".join(map(str, st.strides)),
                     "/".join(map(str, st.channels)) if len(set(st.channels)) > 1 else str(st.channels[0]),
                     f"{st.params_m:.1f}", f"{st.gflops['224x224']:.1f}", f"{st.gflops['800x1216']:.1f}",
                     ", ".join(st.weights) or "-"])
    return headers, rows, stats
