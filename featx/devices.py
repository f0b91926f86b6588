"""The device a command or function was asked to run on, checked before any work: a clear one-line error with
a way out where it cannot run (CUDA asked for, none usable), instead of torch's own from deep inside a call."""
from __future__ import annotations

from typing import Union

import torch

__all__ = ["checked_device"]


def checked_device(device: Union[str, torch.device]) -> torch.device:
    """``device`` as a ``torch.device`` ("cpu", "cuda", "cuda:1", ...), refused with a ``ValueError`` that says
    what to do when it names CUDA and no CUDA device is usable, or names a GPU index this machine lacks."""
    try:
        found = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {device!r}") from None
    if found.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA device is usable here (torch {torch.__version__}, "
                             "torch.cuda.is_available() is False); use --device cpu, or run on a machine with an "
                             "NVIDIA GPU and a CUDA build of torch")
        if found.index is not None and found.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"numbered 0..{torch.cuda.device_count() - 1}")
    return found
