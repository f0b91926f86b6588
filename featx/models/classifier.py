"""An image classifier: any featx backbone + global pooling, dropout and a linear layer (what ``featx train``
fine-tunes, and what its checkpoints and exports hold).

It is an mmengine ``BaseModel`` (``forward(inputs, labels, mode)`` with ``"loss"``, ``"predict"``
and ``"tensor"`` modes), so mmengine's Runner trains it; its ``"tensor"`` mode returns logits,
which is what ONNX export traces.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from torch import nn

from featx.checkpoints import load_checkpoint_file, unwrap_state_dict
from featx.errors import CheckpointMismatchError
from featx.features import Extractor, FeatureInfo
from featx.images import IMAGENET_MEAN, IMAGENET_STD
from featx.layers import build_activation
from featx.models import build_module
from featx.models.registry import MODELS

__all__ = ["ClassifierHead", "ImageClassifier", "image_classifier", "load_classifier_weights"]


class ClassifierHead(nn.Module):
    """``(N, C, h, w)`` map -> global average pool -> [linear -> activation: ``hidden_channels``] ->
    dropout -> linear -> ``(N, num_classes)`` logits. The hidden layer is LeNet-5's F6 (84, tanh)."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0, hidden_channels: int = 0,
                 hidden_act: str = "ReLU") -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not isinstance(hidden_channels, int) or hidden_channels < 0:
            raise ValueError(f"hidden_channels must be an int >= 0 (0: no hidden layer), got {hidden_channels!r}")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.hidden = (nn.Sequential(nn.Linear(in_channels, hidden_channels), build_activation(hidden_act))
                       if hidden_channels else nn.Identity())
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_channels or in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.hidden(torch.flatten(self.pool(x), 1))))


class ImageClassifier(BaseModel, Extractor):
    """A featx backbone with a classification head on its last (coarsest) output.

    Args:
        backbone: a featx backbone config (``dict(type="featx.ResNet", arch="resnet18",
            out_indices=(3,), weights="DEFAULT", frozen_stages=1)``) or module.
        num_classes: number of classes (``featx train`` fills it from the dataset when None).
        dropout: dropout before the linear layer.
        hidden_channels, hidden_act: a hidden linear layer and its activation before it (0: none;
            LeNet-5's F6 is 84 with tanh).
        label_smoothing: of the cross-entropy loss.
        mean, std: the input normalization the pipeline applies (0..1 scale); recorded in exports.

    Its one output level is ``"logits"``. Built by name (``dict(type="featx.ImageClassifier",
    ..., weights=CHECKPOINT)``), it loads a whole-classifier checkpoint (see ``image_classifier``).

    ``forward(inputs (N, 3, H, W) normalized float, labels (N,) int, mode)``: ``"tensor"`` ->
    ``(N, num_classes)`` logits; ``"loss"`` -> ``{"loss": cross-entropy}``; ``"predict"`` -> a list
    of ``{"scores": (num_classes,) probabilities, "label": int or None}``.
    """

    def __init__(self, backbone: Union[dict, nn.Module], num_classes: Optional[int] = None, dropout: float = 0.0,
                 hidden_channels: int = 0, hidden_act: str = "ReLU", label_smoothing: float = 0.0, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if num_classes is None:
            raise ValueError("ImageClassifier needs num_classes (featx train fills it from the dataset's classes)")
        self.backbone = build_module(backbone)
        infos = getattr(self.backbone, "feature_info", None)
        if not infos:
            raise TypeError(f"the backbone {type(self.backbone).__name__} has no feature_info; use a featx backbone")
        last = infos[-1]
        self.head = ClassifierHead(last.channels, int(num_classes), dropout, hidden_channels, hidden_act)
        self.num_classes = int(num_classes)
        self.label_smoothing = float(label_smoothing)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        # one output, named for what it is; its stride is that of the pooled map
        self.feature_info = [FeatureInfo("logits", self.num_classes, last.stride, "head")]

    def forward(self, inputs: torch.Tensor, labels: Optional[torch.Tensor] = None, mode: str = "tensor") -> Any:
        logits = self.head(self.backbone(inputs)[-1])
        if mode == "tensor":
            return logits
        if mode == "loss":
            if labels is None:
                raise ValueError("mode='loss' needs labels")
            return {"loss": F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)}
        if mode == "predict":
            scores = logits.float().softmax(dim=1).cpu()
            gts = labels.tolist() if labels is not None else [None] * len(scores)
            return [{"scores": s, "label": g} for s, g in zip(scores, gts)]
        raise ValueError(f"mode must be 'tensor', 'loss' or 'predict', got {mode!r}")


def load_classifier_weights(model: ImageClassifier, weights: str) -> str:
    """Load a whole-classifier checkpoint strictly; returns a one-line report."""
    ckpt = load_checkpoint_file(weights)  # a training checkpoint or a state dict, weights_only
    state = unwrap_state_dict(ckpt, str(weights))
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise CheckpointMismatchError(f"{weights} does not fit this classifier: {str(e)[:400]}") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointMismatchError(
            f"{weights} does not fit this classifier: missing {result.missing_keys[:6]}, "
            f"unexpected {result.unexpected_keys[:6]}")
    return f"loaded {len(state)} tensors from {weights}"


def image_classifier(weights: Optional[str] = None, allow_download: bool = True, **kwargs: Any) -> ImageClassifier:
    """Build an ``ImageClassifier`` (keyword arguments as for the class), then load ``weights``, a
    whole-classifier checkpoint file (a featx training checkpoint or a state dict), strictly.
    (``allow_download`` is accepted as every featx builder does; these weights are always a file.)"""
    model = ImageClassifier(**kwargs)
    model.load_report = load_classifier_weights(model, weights) if weights is not None else None
    return model


image_classifier.__name__ = image_classifier.__qualname__ = "ImageClassifier"
MODELS.register_module(name="ImageClassifier", module=image_classifier, force=True)
