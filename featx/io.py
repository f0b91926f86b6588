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
import stat
import tempfile
from glob import escape as glob_escape
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Union

__all__ = ["atomic_path", "atomic_write_bytes", "write_json", "default_file_mode", "remove_stale_temporaries", "scratch_dir",
           "sweep_scratch", "is_featx_scratch", "cache_dir", "regular_file"]


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


SCRATCH_MARKER = ".featx-scratch"
_SCRATCH_SIGNATURE = "featx scratch folder"


def _marker_text(folder: Path, pid: int) -> str:
    return f"{_SCRATCH_SIGNATURE}\npid {pid}\nfolder {folder.name}\n"


def is_featx_scratch(folder: Path) -> Optional[int]:
    """The pid of the featx process that made ``folder`` as a scratch folder, or None when featx cannot prove it
    made it: a real folder (not a link) owned by this user, holding a regular marker file owned by this user whose
    text names this folder and a pid (what :func:`scratch_dir` writes first). A name alone proves nothing."""
    try:
        st = folder.lstat()
        marker = folder / SCRATCH_MARKER
        mst = marker.lstat()
        if not (stat.S_ISDIR(st.st_mode) and stat.S_ISREG(mst.st_mode) and st.st_uid == os.getuid() == mst.st_uid
                and mst.st_size < 256):
            return None
        lines = marker.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    if len(lines) != 3 or lines[0] != _SCRATCH_SIGNATURE or lines[2] != f"folder {folder.name}":
        return None
    pid = lines[1].removeprefix("pid ")
    return int(pid) if lines[1].startswith("pid ") and pid.isdigit() else None


def sweep_scratch(root: Union[str, Path]) -> list[Path]:
    """Remove the scratch folders under ``root`` that a featx process made (:func:`is_featx_scratch`) and that
    process no longer runs (SIGKILL skips every clean-up); returns them. Anything else is left alone."""
    removed = []
    try:
        candidates = list(Path(root).glob("featx-*"))
    except OSError:
        return removed
    for old in candidates:
        pid = is_featx_scratch(old)
        if pid is not None and pid != os.getpid() and not _alive(pid):
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
    return removed


@contextmanager
def scratch_dir(root: Union[str, Path, None] = None) -> Iterator[Path]:
    """A private temporary folder (``<root>/featx-<pid>-<random>``, ``root`` defaulting to ``$TMPDIR``) holding a
    marker that says featx made it, removed on exit. One left behind by a process that was killed is removed by
    the next featx process that makes one in the same root (scratch exports are large, and a temp folder is often
    a small RAM disk); a folder without featx's marker is never touched, whatever its name."""
    root = Path(root) if root is not None else Path(tempfile.gettempdir())
    sweep_scratch(root)
    with tempfile.TemporaryDirectory(prefix=f"featx-{os.getpid()}-", dir=root) as tmp:
        folder = Path(tmp)
        (folder / SCRATCH_MARKER).write_text(_marker_text(folder, os.getpid()), encoding="ascii")
        yield folder


def regular_file(path: Union[str, Path], what: str = "config", max_bytes: Optional[int] = None) -> Path:
    """``path`` as a ``Path`` when it is a regular file (of at most ``max_bytes``, when given); a FIFO, a device
    (``/dev/zero``), a folder or a larger file is refused before it is opened (reading one could hang or fill
    memory): ``FileNotFoundError`` when nothing is there, ``ValueError`` otherwise."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} file not found: {path}") from None
    except OSError as e:
        raise ValueError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{path} is a folder; expected a {what} file")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path} is not a regular file (a pipe, socket or device); featx reads {what}s from files only")
    if max_bytes is not None and st.st_size > max_bytes:
        raise ValueError(f"{path} is {st.st_size:,} bytes; a {what} file is at most {max_bytes:,}")
    return path


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
