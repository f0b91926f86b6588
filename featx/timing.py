"""One way to time a callable: warm-up runs, then wall-clock times of the timed runs, in ms."""
from __future__ import annotations

import statistics
import time
from typing import Callable

__all__ = ["time_ms", "median_ms"]


def time_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times; return each timed call's ms."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median of :func:`time_ms`."""
    return statistics.median(time_ms(fn, repeats, warmup))
