"""The benchmarks by name, and running a selection of them with their conditions recorded.

Adding a benchmark is one module with ``run(settings) -> dict`` and one entry in
:data:`BENCHMARKS`. The module times its fast path beside its reference with
:func:`benchmarks.timing.interleaved` and returns a flat dict with ``name``, the timing fields
and, by convention, a ``goal``::

    def run(settings: Settings) -> dict[str, object]:
        times = interleaved({"engine": batched, "reference": one_by_one}, repeats=settings.repeats_or(5))
        ratio = times["reference"].median / times["engine"].median
        return {"name": "serve", **timing_fields(times), "speedup": round(ratio, 2), "goal": "speedup >= 2"}

>>> sorted(BENCHMARKS)
['app', 'auroc', 'collect', 'engines', 'generate', 'invariance', 'memory', 'neurons', 'protocol', 'queue', 'rows', 'serve', 'soak', 'steering']
"""

from __future__ import annotations

import time
from collections.abc import Callable

from benchmarks import (
    app,
    auroc,
    collect,
    engines,
    generate,
    invariance,
    memory,
    neurons,
    protocol,
    queue,
    rows,
    serve,
    soak,
    steering,
)
from benchmarks.settings import BenchmarkError, Settings
from benchmarks.timing import recorded_conditions

__all__ = ["BENCHMARKS", "Benchmark", "resolve_names", "run_benchmarks"]

Benchmark = Callable[[Settings], dict[str, object]]

BENCHMARKS: dict[str, Benchmark] = {
    "auroc": auroc.run,
    "collect": collect.run,
    "generate": generate.run,
    "memory": memory.run,
    "serve": serve.run,
    "invariance": invariance.run,
    "app": app.run,
    "soak": soak.run,
    "neurons": neurons.run,
    "protocol": protocol.run,
    "engines": engines.run,
    "queue": queue.run,
    "steering": steering.run,
    "rows": rows.run,
}


def resolve_names(names: list[str], registry: dict[str, Benchmark] | None = None) -> list[str]:
    """The names to run: ``all`` is every benchmark; an unknown name is a :class:`BenchmarkError`.

    >>> resolve_names(["auroc", "all"])[:2]
    ['auroc', 'collect']
    """
    registry = BENCHMARKS if registry is None else registry
    if "all" in names:
        return list(registry)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise BenchmarkError(f"unknown benchmark {', '.join(unknown)}: one of {', '.join(registry)} or all")
    return list(dict.fromkeys(names))


def run_benchmarks(
    names: list[str],
    settings: Settings | None = None,
    progress: Callable[[str], None] | None = None,
    registry: dict[str, Benchmark] | None = None,
) -> list[dict[str, object]]:
    """Run the named benchmarks one after another; each result gains its run's conditions.

    Added fields: ``bench_seconds``, ``torch_threads``, ``under_load`` (see
    :class:`benchmarks.timing.Conditions`) and ``conditions``.

    >>> run_benchmarks(["auroc"])[0]["speedup_vs_sklearn"] >= 50     # doctest: +SKIP
    True
    """
    registry = BENCHMARKS if registry is None else registry
    settings = settings or Settings()
    results = []
    for name in resolve_names(names, registry):
        if progress:
            progress(name)
        with recorded_conditions() as conditions:
            started = time.perf_counter()
            result = registry[name](settings)
            seconds = time.perf_counter() - started
        result["bench_seconds"] = round(seconds, 1)
        result["torch_threads"] = conditions.torch_threads
        result["under_load"] = conditions.under_load
        result["conditions"] = conditions.as_dict()
        results.append(result)
    return results
