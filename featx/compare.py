"""One comparison of two outputs, used wherever featx checks itself against a reference
(check-weights against torchvision/timm, parity of ONNX Runtime against PyTorch)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

__all__ = ["Difference", "compare_arrays"]

ArrayLike = Union[np.ndarray, torch.Tensor]


@dataclass(frozen=True)
class Difference:
    """How far ``out`` is from ``ref``: ``max_abs = max|out - ref|``, ``rel = max_abs / max|ref|``
    (the design's equivalence and parity measure) and the cosine of the flattened maps. A shape
    mismatch gives ``inf``/``inf``/``0``."""

    shape: tuple[int, ...]
    max_abs: float
    rel: float
    cosine: float

    @property
    def same_shape(self) -> bool:
        return self.max_abs != float("inf")


def _numpy64(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def compare_arrays(out: ArrayLike, ref: ArrayLike) -> Difference:
    """Compare ``out`` with the reference ``ref`` in float64 (see :class:`Difference`)."""
    o, r = _numpy64(out), _numpy64(ref)
    if o.shape != r.shape:
        return Difference(tuple(o.shape), float("inf"), float("inf"), 0.0)
    max_abs = float(np.abs(o - r).max()) if o.size else 0.0
    rel = max_abs / max(float(np.abs(r).max()) if r.size else 0.0, 1e-12)
    of, rf = o.ravel(), r.ravel()
    cos = float(of @ rf / max(np.linalg.norm(of) * np.linalg.norm(rf), 1e-30))
    return Difference(tuple(o.shape), max_abs, rel, cos)
