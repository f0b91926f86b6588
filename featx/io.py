"""Atomic file writes: a temporary file in the same folder, flushed to disk, then renamed.

A crash or an exception never leaves a half-written file under the final name, and the file ends
up with the permissions a plain ``open(path, "w")`` would give it (``0o666`` less the umask), not
the private ``0o600`` of a temporary file. The temporary file's name carries its writer's process
id (``.<name>.<pid>.<random>.tmp``), so one left by a killed writer (SIGKILL cannot be caught) is
removed by the next write of the same file.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from glob import escape as glob_escape
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Union

__all__ = ["atomic_path", "atomic_write_bytes", "write_json", "default_file_mode", "remove_stale_temporaries", "scratch_dir", "cache_dir"]


def default_file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@contextmanager
def atomic_path(path: Union[str, Path]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success it is synced and renamed to
    ``path``, on any error (or interrupt) deleted."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {path.parent}")
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(f"output folder is not writable: {path.parent}")
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, default_file_mode())
        _fsync(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(path: Union[str, Path]) -> list[Path]:
    """Delete the temporary files of ``path`` left by writers that no longer run; returns them."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        parts = tmp.name[len(path.name) + 2:].split(".")
        if len(parts) >= 3 and parts[0].isdigit() and not _alive(int(parts[0])):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A private temporary folder (``$TMPDIR/featx-<pid>-<random>``), removed on exit. One left behind by a
    process that was killed (SIGKILL skips every clean-up) is removed by the next featx process that makes
    one: scratch exports are large, and a temp folder is often a small RAM disk."""
    root = Path(tempfile.gettempdir())
    for old in root.glob("featx-*-*"):
        pid = old.name.split("-")[1]
        if old.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f"featx-{os.getpid()}-", dir=root) as tmp:
        yield Path(tmp)


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: Union[str, Path], data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    atomic_write_bytes(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def cache_dir() -> Path:
    """featx's cache folder: ``$FEATX_CACHE_DIR``, else ``$XDG_CACHE_HOME/featx`` (default ``~/.cache/featx``)."""
    root = os.environ.get("FEATX_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "featx"
    return Path(root)
