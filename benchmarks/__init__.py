"""Benchmarks of AurA Studio: each times a fast path beside its reference on the same data.

Tooling, not part of the library: ``aura_core`` never imports it. Run them with
``python -m benchmarks auroc --json`` from the repository root (or ``python -m aura_core bench``).

>>> from benchmarks import interleaved
>>> times = interleaved({"engine": lambda: sorted(range(100)), "reference": lambda: sorted(range(100), key=str)})
>>> sorted(times)
['engine', 'reference']
"""

from __future__ import annotations

from benchmarks.registry import BENCHMARKS, Benchmark, resolve_names, run_benchmarks
from benchmarks.report import markdown_report
from benchmarks.settings import BenchmarkError, Settings, default_data
from benchmarks.timing import Conditions, Timing, interleaved, machine_description, recorded_conditions, timing_fields

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "BenchmarkError",
    "Conditions",
    "Settings",
    "Timing",
    "default_data",
    "interleaved",
    "machine_description",
    "markdown_report",
    "recorded_conditions",
    "resolve_names",
    "run_benchmarks",
    "timing_fields",
]
