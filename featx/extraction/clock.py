"""Seconds per stage of the extraction loop."""
from __future__ import annotations

import time
from typing import Any

import torch



class StageClock:
    """Seconds per stage of the extraction loop. Host stages by the wall clock; on CUDA the device stages
    (upload, model, pool) by CUDA events recorded between them, read once the batch's download has waited
    for the device anyway, so timing adds no synchronization."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.seconds: dict[str, float] = {}
        self._events: list[tuple[str, Any, Any]] = []
        self._last: Any = None

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def start(self) -> None:
        self._last = self._now()

    def mark(self, stage: str) -> None:
        now = self._now()
        if self.cuda:
            self._events.append((stage, self._last, now))
        else:
            self.add(stage, now - self._last)
        self._last = now

    def settle(self) -> None:
        """Fold the recorded CUDA events into the totals (call after the device has finished them)."""
        for stage, start, end in self._events:
            self.add(stage, start.elapsed_time(end) / 1000)
        self._events.clear()

    def _now(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()
