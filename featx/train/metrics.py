"""Classification metrics for mmengine's evaluator: top-1, top-5, per-class accuracy, confusion matrix.

mmengine gathers the per-sample results of every rank before ``compute_metrics`` runs, so the
numbers are over the whole validation set in distributed runs too.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric

from featx.registry import METRICS

__all__ = ["ClassificationMetric", "classification_metrics"]


def classification_metrics(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, Any]:
    """``scores (N, K)``, ``labels (N,)`` -> top1/top5 (percent), per-class accuracy (percent,
    NaN for a class without samples), mean per-class accuracy and the ``K x K`` confusion matrix
    (rows: true class, columns: predicted)."""
    pred = scores.argmax(axis=1)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1) * 100.0, np.nan)
    out: dict[str, Any] = {"top1": float((pred == labels).mean() * 100.0), "per_class": per_class,
                           "mean_class": float(np.nanmean(per_class)), "confusion": confusion}
    if num_classes >= 5:
        top5 = np.argsort(-scores, axis=1)[:, :5]
        out["top5"] = float((top5 == labels[:, None]).any(axis=1).mean() * 100.0)
    return out


@METRICS.register_module()
class ClassificationMetric(BaseMetric):
    """Logs ``accuracy/top1``, ``accuracy/top5`` (>= 5 classes) and ``accuracy/mean_class``;
    keeps the per-class accuracy and confusion matrix of the last evaluation in ``self.last``
    (on the main process) for reports."""

    default_prefix = "accuracy"

    def __init__(self, collect_device: str = "cpu", prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.last: Optional[dict[str, Any]] = None

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            if sample["label"] is None:
                raise ValueError("ClassificationMetric needs labelled samples")
            self.results.append((sample["scores"].numpy().astype(np.float32), int(sample["label"])))

    def compute_metrics(self, results: list) -> dict[str, float]:
        scores = np.stack([r[0] for r in results])
        labels = np.asarray([r[1] for r in results], dtype=np.int64)
        classes = (self.dataset_meta or {}).get("classes")
        num_classes = len(classes) if classes else scores.shape[1]
        m = classification_metrics(scores, labels, num_classes)
        self.last = {**m, "classes": list(classes) if classes else [str(i) for i in range(num_classes)],
                     "count": int(len(labels))}
        return {k: m[k] for k in ("top1", "top5", "mean_class") if k in m}

