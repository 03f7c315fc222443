"""Interleaved repeat timing, and the conditions a benchmark ran under.

A benchmark compares a fast path with its reference. Timing each once lets one noisy moment
decide the ratio; :func:`interleaved` instead runs them in rounds (A, B, A, B, ...), so load
that drifts during the run hits every path alike, and reports the median and minimum of each.

>>> times = interleaved({"engine": lambda: sum(range(1000)), "reference": lambda: sum(list(range(1000)))}, repeats=5)
>>> ratio = times["reference"].median / times["engine"].median
>>> times["engine"].min <= times["engine"].median
True
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

__all__ = [
    "Conditions",
    "Timing",
    "interleaved",
    "machine_description",
    "recorded_conditions",
    "significant",
    "timing_fields",
]

Clock = Callable[[], float]
LoadAverage = Callable[[], tuple[float, float, float]]


@dataclass(frozen=True)
class Timing:
    """The seconds of every timed call of one path, and what its last call returned.

    >>> t = Timing((0.3, 0.1, 0.2))
    >>> t.median, t.min, t.max, round(t.spread, 3)
    (0.2, 0.1, 0.3, 1.0)
    """

    seconds: tuple[float, ...]
    last: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.seconds:
            raise ValueError("a timing needs at least one measured call")

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def max(self) -> float:
        return max(self.seconds)

    @property
    def spread(self) -> float:
        """(max − min) / median: 0.05 means the slowest call took 5 % of the median longer than the fastest."""
        return (self.max - self.min) / self.median if self.median > 0 else 0.0

    @property
    def repeats(self) -> int:
        return len(self.seconds)


def interleaved(
    paths: Mapping[str, Callable[[], object]],
    *,
    repeats: int = 5,
    min_seconds: float = 0.0,
    warmup: int = 1,
    number: int | Mapping[str, int] = 1,
    clock: Clock = time.perf_counter,
) -> dict[str, Timing]:
    """Time every path once per round, in the given order, for at least ``repeats`` rounds.

    Rounds go on until ``repeats`` are done and ``min_seconds`` have passed since the first
    timed round began. ``warmup`` untimed rounds come first (first-call allocations and lazy
    loading are not what we measure). ``number`` (one count, or one per path name) calls a path
    that many times back to back in each round and records their mean: a fast path beside a
    slow reference then samples the machine over a comparable stretch of time, not a moment.
    Returns one :class:`Timing` per path, in the same order.

    >>> ticks = iter(range(100))
    >>> times = interleaved({"a": lambda: "A", "b": lambda: "B"}, repeats=3, warmup=0, clock=lambda: next(ticks))
    >>> times["a"].seconds, times["b"].last
    ((1.0, 1.0, 1.0), 'B')
    """
    if not paths:
        raise ValueError("give at least one path to time")
    calls = {name: number.get(name, 1) if isinstance(number, Mapping) else number for name in paths}
    if repeats < 1 or warmup < 0 or min_seconds < 0 or min(calls.values()) < 1:
        raise ValueError("repeats and number must be at least 1; warmup and min_seconds at least 0")
    for _ in range(warmup):
        for fn in paths.values():
            fn()
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    last: dict[str, object] = {}
    began = clock()
    rounds = 0
    while rounds < repeats or clock() - began < min_seconds:
        for name, fn in paths.items():
            started = clock()
            for _ in range(calls[name]):
                last[name] = fn()
            seconds[name].append((clock() - started) / calls[name])
        rounds += 1
    return {name: Timing(tuple(seconds[name]), last[name]) for name in paths}


def timing_fields(timings: Mapping[str, Timing]) -> dict[str, float | int]:
    """The result fields of some timings: ``t_<name>_s`` (median), ``t_<name>_min_s``, ``spread_<name>``, ``repeats``.

    Seconds keep 4 significant digits, whatever their size.

    >>> timing_fields({"ours": Timing((0.3, 0.1, 0.2))})
    {'t_ours_s': 0.2, 't_ours_min_s': 0.1, 'spread_ours': 1.0, 'repeats': 3}
    """
    fields: dict[str, float | int] = {}
    for name, timing in timings.items():
        fields[f"t_{name}_s"] = significant(timing.median)
        fields[f"t_{name}_min_s"] = significant(timing.min)
        fields[f"spread_{name}"] = round(timing.spread, 3)
    fields["repeats"] = min(t.repeats for t in timings.values())
    return fields


def significant(seconds: float, digits: int = 4) -> float:
    return float(f"{seconds:.{digits}g}")


@dataclass
class Conditions:
    """Load and threads around one benchmark: the figures it measured depend on them.

    ``under_load`` is true when the 1-minute load average at the start or the end exceeded
    the core count, that is when runnable threads had to wait for a core. The end figure
    includes the benchmark's own threads.

    >>> Conditions(load_start=(2.5, 1.0, 0.5), load_end=(1.0, 1.0, 0.5), cores=2).under_load
    True
    """

    load_start: tuple[float, float, float]
    load_end: tuple[float, float, float] | None = None
    cores: int = 1
    torch_threads: int | None = None
    thread_pools: list[dict[str, object]] = field(default_factory=list)

    @property
    def under_load(self) -> bool:
        peak = max(self.load_start[0], self.load_end[0] if self.load_end else 0.0)
        return peak > self.cores

    def as_dict(self) -> dict[str, object]:
        return {
            "load_avg_start": [round(v, 2) for v in self.load_start],
            "load_avg_end": [round(v, 2) for v in self.load_end] if self.load_end else None,
            "cores": self.cores,
            "under_load": self.under_load,
            "torch_threads": self.torch_threads,
            "thread_pools": self.thread_pools,
        }


def _load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:  # not every platform has one
        return (0.0, 0.0, 0.0)


def _thread_pools() -> list[dict[str, object]]:
    """The BLAS and OpenMP libraries loaded in this process, their kernels and thread counts."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = ("user_api", "internal_api", "version", "architecture", "threading_layer", "num_threads")
    # Two packages may each ship a copy of one library: the file name tells which is which.
    return [
        {"file": Path(pool["filepath"]).name, **{key: pool[key] for key in keys if pool.get(key) is not None}}
        for pool in threadpool_info()
    ]


@contextmanager
def recorded_conditions(load_average: LoadAverage = _load_average) -> Iterator[Conditions]:
    """The load average before and after the block, with the thread pools in use.

    >>> with recorded_conditions() as conditions:
    ...     pass
    >>> conditions.load_end is not None
    True
    """
    import torch

    conditions = Conditions(
        load_start=load_average(),
        cores=os.cpu_count() or 1,
        torch_threads=torch.get_num_threads(),
        thread_pools=_thread_pools(),
    )
    try:
        yield conditions
    finally:
        conditions.load_end = load_average()
        # Libraries loaded by the benchmark itself (scikit-learn's, say) show up only now.
        conditions.thread_pools = _thread_pools()


def machine_description() -> dict[str, object]:
    """The machine and library versions, for the report's header.

    >>> sorted(machine_description())[:3]
    ['cores', 'cpu', 'date']
    """
    import numpy as np
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "os": platform.platform(),
    }
