"""The device a command or function was asked to run on, checked before any work: a clear one-line error with
a way out where it cannot run (CUDA asked for, none usable), instead of torch's own from deep inside a call."""
from __future__ import annotations

from typing import Union

import torch

__all__ = ["checked_device"]


def checked_device(device: Union[str, torch.device]) -> torch.device:
    """``device`` as a ``torch.device`` ("cpu", "cuda", "cuda:1", ...), refused with a ``ValueError`` that says
    what to do when it names CUDA and no CUDA device is usable, names a GPU index this machine lacks, or names
    another kind of device torch cannot use here (``mps`` off a Mac, ``meta``)."""
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
    elif found.type != "cpu":
        if not _available(found.type):
            raise ValueError(f"--device {device}: no {found.type} device is usable here (torch {torch.__version__}); "
                             "featx runs on cpu, cuda, and other torch accelerators where torch finds one")
    return found


def _available(kind: str) -> bool:
    """Whether torch has a usable ``kind`` accelerator (``mps``, ``xpu``, ...); ``meta`` and unknown kinds never."""
    if kind == "mps":
        return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    module = getattr(torch, kind, None)
    check = getattr(module, "is_available", None)
    try:
        return bool(check()) if callable(check) else False
    except Exception:  # a backend that cannot even answer is not usable
        return False
