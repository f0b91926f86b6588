"""Config text read as data: Python-style config files (mmengine's format) parsed without running them.

A training checkpoint carries its run's config as Python text (``meta.cfg``). Handing that text to a Python
interpreter (``mmengine.Config.fromstring``) runs whatever it says, so a checkpoint from someone else could
run code. ``parse_config_text`` reads the same text as data: every statement must be ``name = value`` where
the value is a literal (numbers, strings, ``True``/``False``/``None``), a list, tuple, set or dict display, a
``dict(key=value, ...)`` call, or a nesting of those. Anything else (an import, a call to another function, an
attribute, a name that is not a literal, a loop) is refused with :class:`UnsafeConfigError`, naming the line.
"""
from __future__ import annotations

import ast
from typing import Any

from featx.errors import UnsafeConfigError
from featx.io import regular_file

__all__ = ["parse_config_text", "read_config_file", "read_config_data", "MAX_CONFIG_BYTES"]

MAX_CONFIG_BYTES = 1 << 20  # a config or profile file larger than 1 MiB is not a config (mmdet's largest is ~10 kB)


def read_config_data(path: Any, what: str = "config") -> dict[str, Any]:
    """A config-style file read as data (:func:`parse_config_text`): a regular file of at most 1 MiB whose lines
    are ``name = literal`` entries; nothing in it is run."""
    path = regular_file(path, what, MAX_CONFIG_BYTES)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UnsafeConfigError(f"{path} is not UTF-8 text") from None
    return parse_config_text(text, str(path))


def _value(node: ast.AST, where: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_value(n, where) for n in node.elts]
        return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise UnsafeConfigError(f"{where}: '**' unpacking is not plain data")
        return {_value(k, where): _value(v, where) for k, v in zip(node.keys, node.values)}
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args
            and all(k.arg is not None for k in node.keywords)):
        return {k.arg: _value(k.value, where) for k in node.keywords}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) and isinstance(node.operand, ast.Constant) \
            and isinstance(node.operand.value, (int, float)):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    raise UnsafeConfigError(f"{where}: {ast.unparse(node)[:80]!r} is not plain data (only literals, lists, tuples, "
                            "dicts and dict(...) are read; nothing is run)")


def parse_config_text(text: str, source: str = "config") -> dict[str, Any]:
    """The top-level ``name = value`` entries of config ``text`` as a dict, read without running anything (see
    the module docstring); ``source`` names the text in errors."""
    try:
        tree = ast.parse(text)
    except SyntaxError as e:
        raise UnsafeConfigError(f"{source} is not a config (line {e.lineno}: {e.msg})") from None
    out: dict[str, Any] = {}
    for stmt in tree.body:
        where = f"{source}, line {stmt.lineno}"
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            raise UnsafeConfigError(f"{where}: {ast.unparse(stmt).splitlines()[0][:80]!r} is not a `name = value` "
                                    "entry (a config is read as data; nothing in it is run)")
        out[stmt.targets[0].id] = _value(stmt.value, where)
    return out


_CONFIG_SUFFIXES = (".py", ".json", ".yml", ".yaml")


def read_config_file(path: Any) -> Any:
    """A config file the user names (their own code: mmengine runs it), read by ``mmengine.Config.fromfile``
    once it and every local ``_base_`` it names are regular files of at most 1 MiB (a FIFO would hang the reader,
    ``/dev/zero`` fill memory), with one clear error for what mmengine reports tersely: a missing file or ``_base_``, a ``_base_`` of another
    type, an error without a message (what mmengine's lazy-import mode raises for a config with ``import``
    lines), a syntax error. Returns the ``mmengine.Config``."""
    from pathlib import Path

    from mmengine.config import Config

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; expected a config file ({', '.join(_CONFIG_SUFFIXES)})")
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    if path.suffix not in _CONFIG_SUFFIXES:
        raise ValueError(f"{path}: a config file must be {', '.join(_CONFIG_SUFFIXES)}")
    _check_config_files(path, set())
    try:
        return Config.fromfile(str(path))
    except SyntaxError as e:
        raise ValueError(f"{path} is not valid Python (line {e.lineno}: {e.msg})") from None
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{path}: a file its _base_ names is missing ({e.filename or e})") from None
    except Exception as e:
        text = " ".join(str(e).split())
        if "Only py/yml/yaml/json" in text:
            text = f"its _base_ names a file that is not {', '.join(_CONFIG_SUFFIXES)}"
        elif not text:
            text = (f"mmengine could not read it ({type(e).__name__} without a message); a config with `import` "
                    "lines is read in mmengine's lazy-import mode, which allows imports only at the top and values "
                    "built from them only where mmengine can defer them; write plain values instead")
        raise ValueError(f"cannot read config {path}: {text[:400]}") from None


def _base_files(path: Any) -> list[str]:
    """The ``_base_`` entries of a ``.py`` config, read as data (mmengine reads them with ``eval``)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []  # mmengine's own reading reports it
    for stmt in tree.body:
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                and stmt.targets[0].id == "_base_"):
            try:
                value = ast.literal_eval(stmt.value)
            except ValueError:
                return []
            values = [value] if isinstance(value, str) else value if isinstance(value, (list, tuple)) else []
            return [v for v in values if isinstance(v, str)]
    return []


def _check_config_files(path: Any, seen: set) -> None:
    """``path`` and every local ``_base_`` it names, recursively, are regular files of bounded size."""
    path = regular_file(path, "config", MAX_CONFIG_BYTES)
    key = path.resolve()
    if key in seen:
        return
    seen.add(key)
    if path.suffix != ".py":
        return
    for base in _base_files(path):
        if "::" in base:  # a package's own config (mmdet::...): found by mmengine inside that package
            continue
        target = path.parent / base
        if not target.exists():
            continue  # mmengine's reading says which _base_ is missing
        _check_config_files(target, seen)
