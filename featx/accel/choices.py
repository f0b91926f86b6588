"""A small cache of choices featx.accel made by measuring on the machine at hand (Winograd or direct convolution,
ONNX Runtime or OpenVINO for int8), so each is measured once per CPU and software versions.

Entries live in ``$FEATX_CACHE_DIR/choices.json`` (default ``~/.cache/featx``), keyed by strings that
name the CPU (``featx.cpu.cpu_info().key``), the versions and the workload; the file is written
atomically. Delete it (or set ``FEATX_CACHE_DIR`` elsewhere) to measure again.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from featx.io import cache_dir, write_json

__all__ = ["cache_path", "cached_choice", "store_choice"]


def cache_path() -> Path:
    return cache_dir() / "choices.json"


def _load() -> dict[str, Any]:
    path = cache_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # missing or unreadable: measure again
        return {}
    return data if isinstance(data, dict) else {}


def cached_choice(key: str) -> Optional[Any]:
    """The stored value for ``key``, or None."""
    return _load().get(key)


def store_choice(key: str, value: Any) -> None:
    """Store ``value`` (JSON) under ``key``."""
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _load()
    data[key] = value
    write_json(path, data)
