"""Old import paths kept as deprecation aliases: a module that moved forwards its public names to the new one and
says where they live now (a ``DeprecationWarning`` on each use)."""
from __future__ import annotations

import importlib
import warnings
from typing import Any, Callable, Union


def forwarding(old: str, new: Union[str, dict[str, str]]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module's ``__getattr__`` and ``__dir__`` that serve names from where they live now, each access with a
    ``DeprecationWarning`` naming the new path. ``new``: the module that took every public name (its ``__all__``),
    or ``{name: module}``."""

    def names() -> dict[str, str]:
        if isinstance(new, dict):
            return new
        return {name: new for name in importlib.import_module(new).__all__}

    def __getattr__(name: str) -> Any:
        where = names().get(name)
        if where is None:
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        warnings.warn(f"{old}.{name} is {where}.{name} now; the old path will be removed", DeprecationWarning,
                      stacklevel=2)
        return getattr(importlib.import_module(where), name)

    def __dir__() -> list[str]:
        return sorted(names())

    return __getattr__, __dir__
