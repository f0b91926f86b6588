"""torchvision's detectors and the featx composite that holds each one's ``model.backbone``."""
from __future__ import annotations

import os
from typing import Any

from torch import nn
from torchvision.models import WeightsEnum, get_model_weights

from featx.errors import WeightsError, did_you_mean
from featx.models.catalog import build_model, get_entry

__all__ = ["DETECTION_PRESETS", "ZERO_EPS_WEIGHTS", "detection_composite"]

# detector -> the catalogue composite and options equal to its backbone (body + FPN)
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


# Weights whose torchvision builder sets every FrozenBatchNorm2d's eps to 0 after loading (torchvision's
# ``overwrite_eps``: the statistics of these legacy checkpoints were computed without eps, pytorch/vision#2933).
ZERO_EPS_WEIGHTS: frozenset[tuple[str, str]] = frozenset({
    ("fasterrcnn_resnet50_fpn", "COCO_V1"), ("maskrcnn_resnet50_fpn", "COCO_V1"),
    ("keypointrcnn_resnet50_fpn", "COCO_V1"), ("retinanet_resnet50_fpn", "COCO_V1"),
})


def detection_composite(detector: str, weights: Any = None, progress: bool = True, **kwargs: Any) -> nn.Module:
    """The featx composite equal to torchvision ``detector``'s ``model.backbone`` (body + FPN).

    ``weights`` may be that detector's enum name (``"COCO_V1"``, ``"DEFAULT"``), a member of its
    weights enum, a file or a URL; keyword arguments override the preset (e.g. ``frozen_stages``). For the
    legacy checkpoints in ``ZERO_EPS_WEIGHTS`` the FrozenBatchNorm eps is 0, as torchvision sets it.

    >>> m = detection_composite("retinanet_resnet50_fpn_v2", weights="COCO_V1")  # P3..P7
    """
    if detector not in DETECTION_PRESETS:
        raise WeightsError(f"unknown torchvision detector {detector!r}{did_you_mean(detector, DETECTION_PRESETS)}; "
                           f"known: {', '.join(DETECTION_PRESETS)}")
    preset = dict(DETECTION_PRESETS[detector])
    entry = get_entry(preset.pop("model"))
    neck = {**preset.pop("neck", {}), **kwargs.pop("neck", {})}
    if isinstance(weights, str) and "." not in weights and os.sep not in weights:
        enum = get_model_weights(detector)
        valid = ["DEFAULT"] + [m.name for m in enum]
        if weights not in valid:
            raise WeightsError(f"unknown weights {weights!r} for {detector}{did_you_mean(weights, valid)}; "
                               f"valid: {', '.join(valid)}")
        weights = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
    if isinstance(weights, WeightsEnum) and (detector, weights.name) in ZERO_EPS_WEIGHTS and "norm_cfg" not in kwargs:
        preset["norm_cfg"] = dict(type="FrozenBN", eps=0.0)  # as torchvision's builder does for these weights
    return build_model(entry.construct, weights=weights, progress=progress, name=entry.name, neck=neck,
                       **{**preset, **kwargs})
