"""Training checkpoints: reading mmengine's format safely, atomic writes, finding the one to resume.

mmengine 0.10 saves the Runner's ``message_hub`` (``HistoryBuffer`` objects holding numpy arrays)
in every checkpoint; ``featx.checkpoints`` allow-lists exactly those types for
``torch.load(weights_only=True)``, so resuming works under torch >= 2.6 without unsafe loading.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from mmengine.fileio.backends import LocalBackend, register_backend

from featx.checkpoints import load_checkpoint_file
from featx.io import atomic_write_bytes

__all__ = ["read_training_checkpoint", "find_resume_checkpoint", "ATOMIC_BACKEND", "AtomicLocalBackend"]


def read_training_checkpoint(path: Union[str, Path]) -> dict:
    """Load a training checkpoint (``{"meta", "state_dict", "optimizer", "message_hub", ...}``)
    with ``weights_only=True`` and the mmengine allow-list; anything else is refused."""
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
    """mmengine's local file backend whose ``put`` writes atomically (``featx.io``), so a kill
    during checkpointing never leaves a truncated ``epoch_N.pth``."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        filepath = Path(filepath)
        filepath.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(filepath, obj)

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = "utf-8") -> None:
        self.put(obj.encode(encoding), filepath)


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)
