"""Computed features to shards: the pending shard, and the writer thread that stores it while the model goes on."""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from featx.extraction.clock import StageClock
from featx.extraction.store import write_shard


class PendingShard:
    """What has been computed since the last shard was written (``featx extract`` and ``featx.extraction.ray`` alike)."""

    def __init__(self, levels: list[str], dtype_name: str = "fp16") -> None:
        self.levels, self.dtype_name = levels, dtype_name
        self.arrays: dict[str, list[np.ndarray]] = {lv: [] for lv in levels}
        self.entries: list[dict] = []
        self.batches: list[int] = []
        self.skipped: list[dict] = []

    def tensors(self, maps: bool) -> dict[str, np.ndarray]:
        if maps:
            return {f"map.{lv}.{row}": a for lv in self.levels for row, a in enumerate(self.arrays[lv])}
        return {f"pooled.{lv}": np.stack(self.arrays[lv]) for lv in self.levels if self.arrays[lv]}

    def add_batch(self, batch_id: int, items: Sequence[Any], values: dict[str, list[np.ndarray]],
                  records: Sequence[dict], errors: Sequence[str]) -> tuple[int, int]:
        """One planned batch's results: each image's values per level (``items``: ``PlannedImage``), or the reason it
        could not be read; an image with non-finite values stops the run (:func:`refuse_non_finite`). Returns
        ``(stored, skipped)``."""
        stored = skipped = 0
        for j, item in enumerate(items):
            if errors[j]:
                seen = {k: records[j][k] for k in ("bytes", "mtime_ns") if k in (records[j] or {})}
                self.skipped.append({"path": item.id, "reason": errors[j], **seen})
                skipped += 1
                continue
            refuse_non_finite(item.id, {lv: values[lv][j] for lv in self.levels}, self.dtype_name)
            for lv in self.levels:
                self.arrays[lv].append(values[lv][j])
            self.entries.append({"path": item.id, "size": list(item.size), **records[j], "row": len(self.entries)})
            stored += 1
        self.batches.append(batch_id)
        return stored, skipped

    def clear(self) -> None:
        for arrays in self.arrays.values():
            arrays.clear()
        self.entries.clear()
        self.batches.clear()
        self.skipped.clear()


def refuse_non_finite(image_id: str, values: dict[str, np.ndarray], dtype: str) -> None:
    """Stop the extraction at an image whose features hold NaN or infinity (never stored: a silent NaN
    poisons every search). The shards written before stay, so a rerun after the fix resumes."""
    bad = [lv for lv, v in values.items() if not np.isfinite(v).all()]
    if bad:
        hint = (" fp16 holds at most 65504: store --dtype fp32, or" if dtype == "fp16" else "")
        raise FloatingPointError(f"{image_id}: the features at {', '.join(bad)} hold NaN or infinite values, so "
                                 f"nothing of it was stored;{hint} check the weights (a diverged or broken checkpoint)")


class ShardWriter:
    """Writes pending shards in a thread while the model goes on; at most one shard waits to be written, so a slow
    disk slows the loop instead of filling the memory. Use as a context manager: leaving it waits for the last."""

    def __init__(self, out: Path, pending: PendingShard, maps: bool, clock: StageClock) -> None:
        self.out, self.pending, self.maps, self.clock = out, pending, maps, clock
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="featx-shard-writer")
        self._writing: list[Future] = []

    def flush(self) -> None:
        """Hand the pending shard (if any) to the writer thread, once the previous one is on disk (or its error
        raised here)."""
        if not self.pending.batches:
            return
        self.wait()
        p = self.pending
        args = (self.out, f"b{p.batches[0]:07d}", p.tensors(self.maps), list(p.entries), list(p.batches), list(p.skipped))
        self._writing.append(self._thread.submit(self._write, *args))
        p.clear()

    def wait(self) -> None:
        """Until every handed shard is on disk (the time counts as the loop's ``write`` stage)."""
        t = time.perf_counter()
        for done in self._writing:
            done.result()
        self._writing.clear()
        self.clock.add("write", time.perf_counter() - t)

    def _write(self, *args: Any) -> None:
        t = time.perf_counter()
        write_shard(*args)
        self.clock.add("write (writer thread)", time.perf_counter() - t)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.shutdown(wait=True)
