"""Scratch folders for intermediate files that are written, read back once and deleted.

The Winograd check writes ~1 GB of such files for ResNet50FPN (the whole networks it times, each exported). On a
network disk they cost seconds of an export; in a memory-backed tmpfs (``/dev/shm``) nothing. So a scratch
folder goes there when it exists, is writable and has room, and the user has not chosen a temporary folder
(``TMPDIR``); else to the default temporary folder. Either way it is :func:`featx.io.scratch_dir`'s folder, with
its marker: a folder in ``/dev/shm`` left by a killed featx process is removed by the next one, and nothing else.
"""
from __future__ import annotations

import os
import shutil
from contextlib import AbstractContextManager
from pathlib import Path

from featx.io import scratch_dir as _marked_scratch_dir

__all__ = ["memory_scratch_dir", "MEMORY_ROOTS"]

MEMORY_ROOTS = ("/dev/shm",)
NEEDED_BYTES = 4 << 30  # a margin over the ~1 GB ResNet50FPN needs; a small tmpfs (Docker's 64 MB) is passed over


def _memory_root(needed: int) -> str | None:
    if os.environ.get("TMPDIR"):
        return None  # the user's choice of temporary folder wins
    for root in MEMORY_ROOTS:
        try:
            if os.path.isdir(root) and os.access(root, os.W_OK) and shutil.disk_usage(root).free >= needed:
                return root
        except OSError:
            continue
    return None


def memory_scratch_dir(needed: int = NEEDED_BYTES) -> AbstractContextManager[Path]:
    """A featx scratch folder (a context manager yielding its path) in memory where there is room for ``needed``
    bytes, else in the default temporary folder."""
    return _marked_scratch_dir(_memory_root(needed))
