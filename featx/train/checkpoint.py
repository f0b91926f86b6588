"""Training checkpoints: safe loading of mmengine's format, atomic writes, finding the one to resume.

mmengine 0.10 saves the Runner's ``message_hub`` (``HistoryBuffer`` objects holding numpy arrays)
in every checkpoint, and torch >= 2.6 loads with ``weights_only=True`` by default, so resuming
fails. The fix is to allow-list exactly those types for the safe unpickler
(``torch.serialization.add_safe_globals``), never ``weights_only=False``.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from mmengine.fileio.backends import LocalBackend, register_backend
from mmengine.logging.history_buffer import HistoryBuffer

__all__ = ["MMENGINE_CHECKPOINT_TYPES", "allow_mmengine_checkpoints", "read_training_checkpoint",
           "find_resume_checkpoint", "ATOMIC_BACKEND", "AtomicLocalBackend"]


def _numpy_multiarray():
    # numpy 2 moved numpy.core to numpy._core; the pickles name whichever wrote them
    return (getattr(np, "_core", None) or np.core).multiarray


# HistoryBuffer's built-in statistics (its registry of them fills only when an instance exists)
_HISTORY_BUFFER_STATISTICS = frozenset({"min", "max", "mean", "current"})


def _history_buffer_getattr(owner: object, name: str) -> object:
    """The one ``getattr`` mmengine's pickles call: ``getattr(HistoryBuffer, "min"/"max"/"mean"/"current")``
    (its statistics methods). Anything else is refused: a general ``getattr`` would let a crafted
    checkpoint walk from an allowed class to arbitrary code."""
    if owner is HistoryBuffer and name in _HISTORY_BUFFER_STATISTICS:
        return getattr(owner, name)
    raise pickle.UnpicklingError(f"featx refuses getattr({owner!r}, {name!r}) in a checkpoint")


# Exactly what mmengine's message hub pickles (found by loading a real checkpoint with
# weights_only=True until it loaded): the history buffers, the numpy arrays/scalars inside,
# and a getattr restricted to HistoryBuffer's statistics methods.
MMENGINE_CHECKPOINT_TYPES = [
    HistoryBuffer,
    (_history_buffer_getattr, "builtins.getattr"),
    _numpy_multiarray()._reconstruct,  # numpy arrays
    _numpy_multiarray().scalar,  # numpy scalars
    np.ndarray,
    np.dtype,
    type(np.dtype(np.float64)),  # numpy.dtypes.Float64DType (the dtype of the logged scalars)
    type(np.dtype(np.int64)),
]


def allow_mmengine_checkpoints() -> None:
    """Allow-list the types mmengine's checkpoints hold for ``torch.load(weights_only=True)``."""
    torch.serialization.add_safe_globals(MMENGINE_CHECKPOINT_TYPES)


allow_mmengine_checkpoints()


def read_training_checkpoint(path: Union[str, Path]) -> dict:
    """Load a training checkpoint (``{"meta", "state_dict", "optimizer", "message_hub", ...}``)
    with ``weights_only=True`` and the allow-list above; anything else is refused."""
    from featx.weights import load_checkpoint_file

    return load_checkpoint_file(path)


def find_resume_checkpoint(work_dir: Union[str, Path]) -> Optional[Path]:
    """The checkpoint to resume from in ``work_dir``: the one ``last_checkpoint`` names if it
    exists, else the highest ``epoch_N.pth``/``iter_N.pth``; None when there is none."""
    work_dir = Path(work_dir)
    pointer = work_dir / "last_checkpoint"
    if pointer.is_file():
        named = Path(pointer.read_text().strip())
        if named.is_file():
            return named
        if (work_dir / named.name).is_file():  # the work dir was moved
            return work_dir / named.name
    candidates = []
    for p in work_dir.glob("*.pth"):
        stem = p.stem
        for prefix in ("epoch_", "iter_"):
            if stem.startswith(prefix) and stem[len(prefix):].isdigit():
                candidates.append((int(stem[len(prefix):]), p))
    return max(candidates)[1] if candidates else None


ATOMIC_BACKEND = "featx_atomic_local"


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend, but ``put`` writes a temporary file beside the target and
    renames it, so a kill during checkpointing never leaves a truncated ``epoch_N.pth``."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        filepath = Path(filepath)
        filepath.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{filepath.name}.", suffix=".tmp", dir=filepath.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(obj)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, filepath)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = "utf-8") -> None:
        self.put(obj.encode(encoding), filepath)


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)
