"""Peak resident memory to load the model, and to collect responses for many texts.

Each figure comes from a fresh process, so one measurement cannot inherit another's peak.

>>> result = bench_memory("tiny-gpt2", n_texts=30, max_tokens=8)   # doctest: +SKIP
>>> result["stored_within_budget"]                                 # doctest: +SKIP
True
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

from benchmarks.settings import DEFAULT_MODEL, ROOT, Settings
from benchmarks.timing import interleaved, timing_fields

__all__ = ["bench_memory", "run"]

# The peak comes from VmHWM, this process image's own high-water mark: ru_maxrss would keep the
# peak of the benchmark process it was started from (Linux carries it across exec).
_PROBE = """
import json, sys, time
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
from aura_core.model.architecture import discover_units
from aura_core.model.loading import load_model
stage = sys.argv[1]
loaded = load_model(sys.argv[2], device="cpu")
result = {"after_load_mb": peak_mb()}
if stage == "collect":
    from aura_core.base.data import ConceptData
    from aura_core.analysis.collect import collect_responses
    from benchmarks.settings import bench_texts
    texts = bench_texts(int(sys.argv[3]), sys.argv[5])
    data = ConceptData(texts, [i % 2 for i in range(len(texts))], "bench")
    units = discover_units(loaded.model)
    started = time.perf_counter()
    responses = collect_responses(loaded.model, loaded.tokenizer, data, units, max_tokens=int(sys.argv[4]), use_cache=False)
    result["collect_s"] = time.perf_counter() - started
    result["stored_bytes"] = sum(t.numel() * t.element_size() for t in responses.per_module.values())
    result["tensors"] = len(responses.per_module)
    result["modules"] = len(units)
    result["units"] = responses.n_units
    result["texts"] = len(texts)
    result["after_collect_mb"] = peak_mb()
print(json.dumps(result))
"""


def _probe(*args: str) -> dict[str, float]:
    output = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, cwd=ROOT, check=True)
    measured: dict[str, float] = json.loads(output.stdout.strip().splitlines()[-1])
    return measured


def bench_memory(
    model_name: str = DEFAULT_MODEL, n_texts: int = 2000, max_tokens: int = 32, repeats: int = 1, data: str = "starter"
) -> dict[str, object]:
    """Peak RSS after loading, and after collecting ``n_texts`` texts; medians over ``repeats`` process pairs."""
    loads: list[dict[str, float]] = []
    collects: list[dict[str, float]] = []
    times = interleaved(
        {
            "load_process": lambda: loads.append(_probe("load", model_name)),
            "collect_process": lambda: collects.append(_probe("collect", model_name, str(n_texts), str(max_tokens), data)),
        },
        repeats=repeats,
        warmup=0,
    )

    def median(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(row[key] for row in rows)

    collected = collects[-1]
    after_load, after_collect = median(loads, "after_load_mb"), median(collects, "after_collect_mb")
    budget = collected["units"] * collected["texts"] * 4
    return {
        "name": "memory",
        "model": model_name,
        "peak_rss_load_mb": round(after_load, 1),
        "peak_rss_collect_mb": round(after_collect, 1),
        "collect_extra_mb": round(after_collect - median(collects, "after_load_mb"), 1),
        "texts": collected["texts"],
        "units": collected["units"],
        "stored_mb": round(collected["stored_bytes"] / 2**20, 1),
        "budget_mb": round(budget / 2**20, 1),
        "stored_within_budget": collected["stored_bytes"] <= budget,
        "tensors_per_module": collected["tensors"] / collected["modules"],
        "collect_s": round(median(collects, "collect_s"), 1),
        **timing_fields(times),
        "goal": "stored bytes <= units x texts x 4, one tensor per module",
    }


def run(settings: Settings) -> dict[str, object]:
    """2000 texts of ``--data`` through ``--model``, 32 tokens each; one pair of processes by default."""
    return bench_memory(settings.model, repeats=settings.repeats_or(1), data=settings.data)
