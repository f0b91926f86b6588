"""Atomic writes: nothing half-written under the final name, and the mode a plain open() gives."""
from __future__ import annotations

import os
import stat

import pytest

from featx.io import atomic_path, atomic_write_bytes, default_file_mode, write_json


def test_written_file_gets_the_umask_mode_not_the_temp_files(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "r.json", {"a": 1})
        atomic_write_bytes(tmp_path / "b.bin", b"x")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    for name in ("r.json", "b.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644
    os.umask(0o077)
    try:
        assert default_file_mode() == 0o600
    finally:
        os.umask(old)


def test_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "x.onnx") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="output folder does not exist"):
        atomic_write_bytes(tmp_path / "missing" / "x", b"")
