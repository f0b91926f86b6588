"""One way to time a callable: warm-up runs, then wall-clock times of the timed runs, in ms; and a heartbeat
for long steps."""
from __future__ import annotations

import contextlib
import statistics
import threading
import time
from typing import Callable, Iterator, Mapping, Sequence

__all__ = ["heartbeat", "time_ms", "median_ms", "wall_ms", "cuda_event_ms", "interleaved_times", "interleaved_medians", "round_orders", "paired_ratio"]


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


def wall_ms(fn: Callable[[], object]) -> float:
    """One call of ``fn``, timed by the wall clock, in ms."""
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def cuda_event_ms(fn: Callable[[], object]) -> float:
    """One call of ``fn`` timed by CUDA events on the current stream (the GPU's time, not the launch's), in ms."""
    import torch  # only when timing on a GPU: this module stays torch-free otherwise

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def interleaved_times(fns: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1,
                      measure: Callable[[Callable[[], object]], float] = wall_ms) -> dict[str, list[float]]:
    """Each callable's timed runs in ms, in round order, taken round-robin (in the balanced orders of
    :func:`round_orders`) after ``warmup`` untimed calls of each: a comparison of alternatives. Timed one
    after the other, a slow phase of a shared machine (other tenants, clock changes; 2x swings were seen
    on 2-CPU cloud machines) lands on one side only and flips the verdict; interleaved, it weighs on all
    alike. ``measure`` times one call in ms (the wall clock; CUDA events for work on a GPU)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for order in round_orders(list(fns), repeats):
        for name in order:
            times[name].append(measure(fns[name]))
    return times


def interleaved_medians(fns: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median ms of each callable of :func:`interleaved_times`."""
    return {name: statistics.median(t) for name, t in interleaved_times(fns, repeats, warmup).items()}


def round_orders(names: Sequence[str], repeats: int) -> Iterator[list[str]]:
    """The order of each timed round: a Williams design (a carry-over-balanced Latin square), repeated.
    Over every ``n`` rounds (``2n`` for an odd number ``n`` of names) each name runs in every position
    equally often and right after every other name equally often. Position alone is not enough: a
    rotation keeps each name's predecessor fixed, and what a predecessor leaves behind lands on the same
    name every round (ONNX Runtime's threads spinning on after a run took a core from the OpenVINO entry
    that always followed it: 8-13% slower, every round)."""
    names = list(names)
    n = len(names)
    # 0, 1, n-1, 2, n-2, ...: its consecutive differences cover every nonzero residue mod n once
    base = [0] + [(k + 1) // 2 if k % 2 else n - k // 2 for k in range(1, n)]
    rows = [[names[(b + r) % n] for b in base] for r in range(n)]
    if n % 2:  # odd n: the mirrored square balances the pairs the first one repeats
        rows += [row[::-1] for row in rows]
    for r in range(repeats):
        yield list(rows[r % len(rows)]) if rows else []


def paired_ratio(times: Sequence[float], base: Sequence[float]) -> float:
    """Median over rounds of ``times[r] / base[r]``: the ratio of two entries timed in the same rounds.
    Each round's two runs are seconds apart, so a drift of the machine between rounds cancels out of
    the ratio, where the ratio of the two medians keeps it (on a shared 2-CPU machine two identical
    models differed by 11% in their medians)."""
    if len(times) != len(base) or not times:
        raise ValueError(f"paired_ratio needs two equally long, non-empty series, got {len(times)} and {len(base)}")
    return statistics.median(t / b for t, b in zip(times, base))


@contextlib.contextmanager
def heartbeat(log: Callable[[str], None], what: str, every: float = 15.0) -> Iterator[None]:
    """Run the block; every ``every`` seconds it lasts, ``log("  ... still <what> (N s)")`` from a helper thread,
    so a long step that prints nothing of its own (a torch export, a compile) shows it is alive."""
    done = threading.Event()
    start = time.perf_counter()

    def beat() -> None:
        while not done.wait(every):
            log(f"  ... still {what} ({time.perf_counter() - start:.0f} s)")

    thread = threading.Thread(target=beat, name="featx-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
