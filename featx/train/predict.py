"""Prediction with a fine-tuned classifier: the checkpoint carries everything needed.

An mmengine training checkpoint holds the run's config (``meta.cfg``: model and validation
pipeline) and the class names (``meta.dataset_meta.classes``), so ``Predictor(path)`` rebuilds
the classifier, loads its weights strictly, and preprocesses images exactly as validation did.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from PIL import Image

from featx.checkpoints import unwrap_state_dict
from featx.devices import checked_device
from featx.images import pipeline_size_problem, to_rgb
from featx.io import regular_file
from featx.models import build_module
from featx.models.specs import checkpoint_run_config, strip_weights
from featx.train.checkpoint import read_training_checkpoint
from featx.train.data import build_pipeline, default_pipeline

__all__ = ["Prediction", "Predictor"]


@dataclass
class Prediction:
    """Top-k classes of one image: ``(class name, class index, probability)``, best first."""

    image: str
    top: list[tuple[str, int, float]] = field(default_factory=list)
    error: Optional[str] = None

    def to_dict(self) -> dict:
        return {"image": self.image, "error": self.error,
                "predictions": [{"class": c, "index": i, "probability": p} for c, i, p in self.top]}


def _class_names(classes: Any, num_classes: int, checkpoint: Union[str, Path]) -> list[str]:
    """The checkpoint's class names when they are a list of ``num_classes`` strings; its class indices as names when
    it has none. Anything else (a string, which would label classes by its letters, or a list of another length)
    is refused: the labels would name the wrong classes."""
    if classes is None or (isinstance(classes, (list, tuple)) and not classes):
        return [str(i) for i in range(num_classes)]
    if not (isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes)):
        raise ValueError(f"{checkpoint}: dataset_meta.classes is not a list of class names ({str(classes)[:80]!r})")
    if len(classes) != num_classes:
        raise ValueError(f"{checkpoint}: dataset_meta.classes names {len(classes)} classes, but the classifier has "
                         f"{num_classes} outputs")
    return list(classes)


class Predictor:
    """A fine-tuned classifier from a training checkpoint, ready to classify image files.

    >>> p = Predictor("work_dirs/resnet18_digits/best.pth")
    >>> p.predict(["digit.png"], topk=3)[0].top   # [("7", 7, 0.98), ("1", 1, 0.01), ...]
    """

    def __init__(self, checkpoint: Union[str, Path], device: str = "cpu") -> None:
        device = checked_device(device)  # before reading anything
        ckpt = read_training_checkpoint(checkpoint)
        cfg = checkpoint_run_config(ckpt, checkpoint)
        classes = (ckpt["meta"].get("dataset_meta") or {}).get("classes")
        self.model = build_module(strip_weights(cfg.model.to_dict()))
        self.model.load_state_dict(unwrap_state_dict(ckpt, str(checkpoint)), strict=True)
        self.model.eval().to(device)
        self.device = torch.device(device)
        self.classes: list[str] = _class_names(classes, self.model.num_classes, checkpoint)
        val = cfg.get("val_dataloader") or {}
        steps = (val.get("dataset") or {}).get("pipeline")
        self.transform = build_pipeline(steps if steps is not None else default_pipeline("val"))
        self.epoch = ckpt["meta"].get("epoch")

    @torch.no_grad()
    def predict(self, images: Sequence[Union[str, Path]], topk: int = 5, batch_size: int = 32) -> list[Prediction]:
        """Classify image files; an unreadable file gets a ``Prediction`` with ``error`` set."""
        k = max(1, min(topk, len(self.classes)))
        results: list[Prediction] = []
        batch: list[tuple[Prediction, torch.Tensor]] = []

        def flush() -> None:
            if not batch:
                return
            by_shape: dict[tuple, list[tuple[Prediction, torch.Tensor]]] = {}
            for pred, t in batch:  # a pipeline without a crop keeps each image's aspect ratio
                by_shape.setdefault(tuple(t.shape), []).append((pred, t))
            for group in by_shape.values():
                x = torch.stack([t for _, t in group]).to(self.device)
                probs = self.model(x, mode="tensor").float().softmax(dim=1).cpu()
                values, indices = probs.topk(k, dim=1)
                for (pred, _), vs, ids in zip(group, values.tolist(), indices.tolist()):
                    pred.top = [(self.classes[i], i, v) for v, i in zip(vs, ids)]
            batch.clear()

        for path in images:
            pred = Prediction(str(path))
            results.append(pred)
            try:
                with Image.open(regular_file(path, "image")) as im:
                    problem = pipeline_size_problem(self.transform, (im.height, im.width))
                    if problem:
                        pred.error = problem
                        continue
                    image = to_rgb(im)
                    image.load()
            except FileNotFoundError:
                pred.error = "file not found"
                continue
            except Exception as e:  # PIL raises many types for broken files
                pred.error = f"cannot read as an image ({type(e).__name__})"
                continue
            batch.append((pred, self.transform(image)))
            if len(batch) >= batch_size:
                flush()
        flush()
        return results

