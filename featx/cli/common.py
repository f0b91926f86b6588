"""What every ``featx`` command module shares: argument types that turn bad values into usage errors before
any work, the sub-parser factory, and stderr logging. Imports nothing heavy."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Optional

__all__ = ["log", "hxw", "int_at_least", "non_negative_float", "positive_float", "CfgOptions", "writable_file", "add_command"]


def log(message: str) -> None:
    """A progress or status line on stderr (stdout carries the command's result)."""
    print(message, file=sys.stderr, flush=True)


def hxw(text: str) -> tuple[int, int]:
    """``"HxW"`` -> ``(H, W)``, each 1..16384."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 224x224 (HxW), got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    if h > 16384 or w > 16384:
        raise argparse.ArgumentTypeError(f"size must be at most 16384 on each side, got {text!r}")
    return h, w


def int_at_least(low: int, high: Optional[int] = None) -> Callable[[str], int]:
    """An integer type in ``low..high`` (no upper bound without ``high``)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected an integer in {low}..{high}, got {value}" if high is not None
                                             else f"expected an integer >= {low}, got {value}")
        return value

    return parse


def cosine(text: str) -> float:
    """A cosine similarity threshold: a number in -1..1 (a usage error otherwise, before any work)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not -1 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a cosine in -1..1, got {text}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = non_negative_float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


class CfgOptions(argparse.Action):
    """mmengine's ``key=value`` options (``DictAction``: values parsed as Python literals, lists, tuples), with a
    usage error (not a traceback) for a malformed item. mmengine is imported only when the option is given."""

    def __call__(self, parser, namespace, values, option_string=None):
        from mmengine.config import DictAction

        bad = [v for v in values if "=" not in v or not v.split("=", 1)[0]]
        if bad:
            parser.error(f"{option_string} takes key=value items, got {' '.join(map(repr, bad))}")
        try:
            DictAction(self.option_strings, self.dest)(parser, namespace, values, option_string)
        except (ValueError, SyntaxError, AssertionError, RecursionError, IndexError) as e:
            # mmengine's parser asserts on unbalanced brackets and recurses on nested calls (dict(type=...))
            detail = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
            parser.error(f"{option_string}: cannot parse {' '.join(values)!r} ({detail}); values are numbers, "
                         "strings, True/False/None, and [..]/(..) lists of those; set a nested key as a.b=value")


def writable_file(text: str) -> str:
    """A path whose folder exists and is writable (checked before the work, not after)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; expected a file path")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise argparse.ArgumentTypeError(f"folder {parent} is not writable")
    return text


def add_command(sub, name: str, verbose_help: str = "", **kwargs) -> argparse.ArgumentParser:
    """A sub-command's parser, with ``--debug`` and ``--verbose`` accepted after the sub-command too."""
    p = sub.add_parser(name, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback on errors")
    p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                   help=verbose_help or "also show the libraries' own log lines (torch's export and compiler "
                   "diagnostics), which featx keeps off the console")
    return p


# Loggers of the libraries featx calls whose warnings are diagnostics for their developers, not for a featx
# user: torch's shape solver prints a traceback per inequality it cannot simplify during an export that
# succeeds (~200 lines for DenseNet121FPN).
NOISY_LOGGERS = ("torch.fx.experimental.symbolic_shapes", "torch.fx.experimental.recording", "torch._dynamo",
                 "torch._export", "torch.export", "torch.onnx", "torch._inductor")


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def quiet_dependency_logs() -> None:
    """Keep only errors of :data:`NOISY_LOGGERS` (a filter on each logger: torch resets their levels when its
    logging starts, not their filters)."""
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if _errors_only not in logger.filters:
            logger.addFilter(_errors_only)
