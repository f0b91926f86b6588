"""The ``featx`` command: argument parsing only, one module per command group.

Each module lists its sub-commands (``COMMANDS``: functions that add one to the parser) and imports the library it calls only when its
command runs, so ``featx --help`` and a typo answer without loading torch. Every sub-command checks its
arguments before any heavy work, calls featx's library (the functions Python users call; the rules that tie
options together live there) and prints the result. Errors print as one line that says what was expected
(``--debug``, before or after the sub-command, shows the traceback).
"""
from __future__ import annotations

import _thread
import argparse
import errno
import os
import re
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Optional, Sequence

from featx.cli import bench, demo, deploy, extract, models, training
from featx.cli.common import log, quiet_dependency_logs
from featx.errors import FeatxError

__all__ = ["main", "build_parser"]

# the order `featx --help` lists the groups in
_GROUPS = (models, demo, deploy, training, extract, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="featx", description="featx: detection-ready feature extractors.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in _GROUPS:
        for add in group.COMMANDS:
            add(sub)
    return parser


_DISK_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is used up",
                errno.EROFS: "the file system is read-only"}


def _disk_problem(e: BaseException) -> Optional[str]:
    """One line for a write that the disk refused (``OSError`` ENOSPC / EDQUOT / EROFS, or the same error as a
    Rust library words it: safetensors' "os error 28"), naming the folder; None for anything else."""
    code = getattr(e, "errno", None)
    text = str(e)
    if code is None:
        found = re.search(r"os error (\d+)", text)
        code = int(found.group(1)) if found else None
    if code not in _DISK_ERRORS:
        return None
    where = getattr(e, "filename", None)
    folder = f" writing in {Path(where).parent}" if where else ""
    return (f"{_DISK_ERRORS[code]}{folder}; free some space or write elsewhere (featx writes files whole or not at "
            "all, so nothing half-written is left under a final name)")


def _error_line(e: BaseException) -> str:
    """featx's own messages whole (they are written to be read); others' first line."""
    disk = _disk_problem(e)
    if disk:
        return disk
    text = str(e).strip()
    if isinstance(e, KeyError) and not isinstance(e, FeatxError) and text.startswith(("'", '"')):
        text = text[1:-1]
    if not isinstance(e, FeatxError):
        text = text.splitlines()[0] if text else ""
    return " ".join(text.split())


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``featx`` command; returns its exit status. A second Ctrl-C or SIGTERM that lands while the first is
    being handled (or while the signal handlers are put back) is one line too, never a traceback."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        log("featx: interrupted")
        return 130


def _main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:  # Ctrl-C before the command started: nothing was done
        log("featx: interrupted")
        return 130
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if not (getattr(args, "debug", False) or getattr(args, "verbose", False)):
        quiet_dependency_logs()
    # SIGTERM ends the command as Ctrl-C does: files being written are removed, not left half-written
    previous = previous_int = None
    if threading.current_thread() is threading.main_thread():
        _reset_sigterm_in_children()
        previous = signal.signal(signal.SIGTERM, _terminate)
        previous_int = signal.signal(signal.SIGINT, _interrupt)
        if threading.excepthook is not _thread_excepthook:
            global _previous_excepthook
            _previous_excepthook, threading.excepthook = threading.excepthook, _thread_excepthook
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as e:
        terminated = str(e).startswith("terminated")
        hint = getattr(args, "on_interrupt", "")
        log(f"featx {args.command}: {'terminated' if terminated else 'interrupted'}; nothing half-written is left"
            + (f"; {hint}" if hint else ""))
        return 143 if terminated else 130
    except BrokenPipeError:  # `featx ... | head`: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as e:  # one clear line; the trace only with --debug
        if getattr(args, "debug", False):
            raise
        log(f"featx {args.command}: error: {type(e).__name__}: {_error_line(e)}")
        log("  (run with --debug for the full traceback)")
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)


_stopping = threading.Event()  # set once Ctrl-C or SIGTERM ends the command
_previous_excepthook = threading.excepthook


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    """After an interrupt, a helper thread that loses its peer (multiprocessing's resource sharer, handing a
    DataLoader worker's tensors over, sees the worker die: ConnectionResetError) ends quietly: the command's
    one line says what happened. Any other thread error is printed as always."""
    if _stopping.is_set() and issubclass(args.exc_type, (ConnectionError, EOFError, OSError)):
        return
    _previous_excepthook(args)


def _inside_import(frame: Optional[FrameType]) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _stop(message: str, signum: int, frame: Optional[FrameType]) -> None:
    """Raise ``KeyboardInterrupt`` in the main thread, but never inside an import: a module interrupted half-way
    stays broken in ``sys.modules`` (numpy's then recursed without end, and a C extension's init aborted the
    process). There the signal is raised again shortly after, until the import is done."""
    if _inside_import(frame):
        again = threading.Timer(0.05, _thread.interrupt_main, args=(signum,))
        again.daemon = True
        again.start()
        return
    _stopping.set()
    raise KeyboardInterrupt(message)


def _interrupt(signum: int, frame: Optional[FrameType]) -> None:
    _stop("", signum, frame)


def _terminate(signum: int, frame: Optional[FrameType]) -> None:
    _stop(f"terminated by signal {signum}", signum, frame)


def _default_sigterm_in_child() -> None:
    # a process forked while a command runs (OpenVINO's telemetry sends from a forked child, which hangs in
    # getaddrinfo on a machine without internet) must die on SIGTERM, not inherit _terminate: a Python
    # handler runs only when the blocking C call returns, so the parent's exit waited for the child
    if signal.getsignal(signal.SIGTERM) is _terminate:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


_fork_hook_installed = False


def _reset_sigterm_in_children() -> None:
    """Install :func:`_default_sigterm_in_child` for forks, once per process (when a command first runs)."""
    global _fork_hook_installed
    if not _fork_hook_installed:
        os.register_at_fork(after_in_child=_default_sigterm_in_child)
        _fork_hook_installed = True


if __name__ == "__main__":
    raise SystemExit(main())
