"""Text tables for the tools' output: aligned plain text and markdown."""
from __future__ import annotations

from typing import Any, Sequence

TIME_RATIO_NOTE = ("time vs torchvision: the entry's median time over torchvision eager's at the same input, in the "
                   "same rounds (below 1x is faster)")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-align text, right-align numbers; one header rule."""
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) if rows else False for i in range(len(headers))]

    def line(r):
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)).rstrip()

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (tuple, list)):
        return "x".join(str(x) for x in v)
    return str(v)
