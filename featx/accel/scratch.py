"""Scratch folders for intermediate files that are written, read back once and deleted.

The Winograd check writes ~1 GB of such files for ResNet50FPN (the whole networks it times, each exported). On a
network disk they cost seconds of an export; in a memory-backed tmpfs (``/dev/shm``) nothing. So a scratch
folder goes there when it exists, is writable and has room, and the user has not chosen a temporary folder
(``TMPDIR``); else to the default temporary folder.
"""
from __future__ import annotations

import os
import shutil
import tempfile

__all__ = ["scratch_dir", "MEMORY_ROOTS"]

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


def scratch_dir(prefix: str = "featx-", needed: int = NEEDED_BYTES) -> tempfile.TemporaryDirectory:
    """A temporary folder (use as a context manager, like :class:`tempfile.TemporaryDirectory`) in memory
    where there is room for ``needed`` bytes, else in the default temporary folder."""
    return tempfile.TemporaryDirectory(prefix=prefix, dir=_memory_root(needed))
