"""Scratch folders: in a memory-backed folder where there is room and the user chose no TMPDIR, else the default."""
from __future__ import annotations

import tempfile
from pathlib import Path

import featx.accel.scratch as scratch


def test_scratch_goes_to_a_memory_root_with_room(tmp_path, monkeypatch):
    memory = tmp_path / "shm"
    memory.mkdir()
    monkeypatch.delenv("TMPDIR", raising=False)
    monkeypatch.setattr(scratch, "MEMORY_ROOTS", ("/no/such/folder", str(memory)))
    with scratch.memory_scratch_dir(needed=1) as tmp:
        assert Path(tmp).parent == memory and Path(tmp).name.startswith("featx-")
        (Path(tmp) / "model.onnx").write_bytes(b"x" * 10)
    assert not Path(tmp).exists() and list(memory.iterdir()) == []  # removed with its files


def test_scratch_falls_back_without_room_or_when_tmpdir_is_set(tmp_path, monkeypatch):
    memory = tmp_path / "shm"
    memory.mkdir()
    monkeypatch.setattr(scratch, "MEMORY_ROOTS", (str(memory),))
    monkeypatch.delenv("TMPDIR", raising=False)
    default = Path(tempfile.gettempdir())
    with scratch.memory_scratch_dir(needed=1 << 60) as tmp:  # more than any disk has
        assert Path(tmp).parent == default
    chosen = tmp_path / "mine"
    chosen.mkdir()
    monkeypatch.setenv("TMPDIR", str(chosen))
    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile reads TMPDIR once and caches it
    try:
        with scratch.memory_scratch_dir(needed=1) as tmp:
            assert Path(tmp).parent == chosen
    finally:
        tempfile.tempdir = None
