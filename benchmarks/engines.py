"""Our engine beside vLLM on the paper's protocol: tokens/s per engine and dtype, with vLLM's start-up apart.

The workload is what an evaluation decodes: a fixed subset (10) of the challenging prompts, 25
completions × 20 tokens each, for the plain model and for AurA (a folded checkpoint on vLLM,
per-call plans on ours). Each path decodes the same rows; paths take turns, round by round,
and the medians are compared. vLLM runs in its own environment (``bash scripts/setup.sh --vllm``).

>>> result = bench_engines("tiny-gpt2", n_prompts=1, samples=2, repeats=1, dtypes=("float32",))   # doctest: +SKIP
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from aura_core.runtime.runner import Runner
from benchmarks.settings import DEFAULT_MODEL, ROOT, BenchmarkError, Settings

__all__ = ["bench_engines", "run"]

CHALLENGING = ROOT.parent / "shared" / "data" / "rtp_challenging.jsonl"


def bench_engines(
    model_name: str = DEFAULT_MODEL,
    *,
    n_prompts: int = 10,
    samples: int = 25,
    repeats: int = 2,
    dtypes: tuple[str, ...] = ("float32", "bfloat16"),
) -> dict[str, object]:
    """Tokens/s of every (engine, dtype) path on the same rows, interleaved over ``repeats`` rounds."""
    from aura_core.base.data import load_prompts
    from aura_core.evaluation.generation import SAMPLING_PRESETS, completion_rows
    from aura_core.method.fit import synthetic_intervention
    from aura_core.model.loading import load_model
    from aura_core.runtime.inline import Inline
    from aura_core.runtime.vllm_runner import VllmRunner, vllm_python

    if vllm_python() is None:
        raise BenchmarkError("vLLM is not installed: run `bash scripts/setup.sh --vllm` first")
    prompts_file = str(CHALLENGING) if CHALLENGING.is_file() else "starter"
    prompts = [p.text for p in load_prompts(prompts_file, n=n_prompts, seed=0)]
    settings = SAMPLING_PRESETS["paper"].with_(num_return_sequences=samples)
    models = {dtype: load_model(model_name, dtype=dtype) for dtype in dtypes}
    reference = models[dtypes[0]]
    aura = synthetic_intervention(reference.model, torch.Generator().manual_seed(0), low=0.5)
    runners = {dtype: VllmRunner(dtype=dtype, tokenizer=reference.tokenizer) for dtype in dtypes}

    def workload(runner: Runner, model: nn.Module) -> Callable[[], int]:
        def once() -> int:
            rows = [
                row
                for iv in (None, aura)
                for row in completion_rows(reference.tokenizer, prompts, settings=settings, intervention=iv)
            ]
            runner.decode(model, rows)
            return sum(len(row.tokens) for row in rows)

        return once

    paths: dict[str, Callable[[], int]] = {}
    for dtype in dtypes:
        paths[f"ours_{dtype}"] = workload(Inline(), models[dtype].model)
        # vLLM decodes from the reference weights: the plain checkpoint and the folded AurA tensors
        paths[f"vllm_{dtype}"] = workload(runners[dtype], reference.model)
    startup: dict[str, float] = {}
    try:
        for dtype, runner in runners.items():  # start-up apart: a first decode starts the engine
            started = time.perf_counter()
            runner.decode(
                reference.model,
                completion_rows(reference.tokenizer, prompts[:1], settings=settings.with_(num_return_sequences=1)),
            )
            startup[f"vllm_{dtype}_startup_s"] = round(time.perf_counter() - started, 1)
        rates: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(repeats):
            for name, path in paths.items():
                started = time.perf_counter()
                tokens = path()
                rates[name].append(tokens / (time.perf_counter() - started))
    finally:
        for runner in runners.values():
            runner.close()
    medians = {name: statistics.median(values) for name, values in rates.items()}
    result: dict[str, object] = {
        "name": "engines",
        "model": model_name,
        "prompt_file": CHALLENGING.name if CHALLENGING.is_file() else "starter",
        "completions_per_round": 2 * len(prompts) * samples,
        "new_tokens_each": settings.max_new_tokens,
        **{f"{name}_tokens_per_s": round(rate, 1) for name, rate in medians.items()},
        **{f"{name}_runs": [round(r, 1) for r in rates[name]] for name in rates},
        **startup,
    }
    for dtype in dtypes:
        result[f"vllm_over_ours_{dtype}"] = round(medians[f"vllm_{dtype}"] / medians[f"ours_{dtype}"], 2)
    best_ours = max(medians[f"ours_{d}"] for d in dtypes)
    result["vllm_best_over_ours_best"] = round(max(medians[f"vllm_{d}"] for d in dtypes) / best_ours, 2)
    result["goal"] = "report: evaluations default to vLLM where its best path stays ahead of ours (ratio > 1)"
    return result


def run(settings: Settings) -> dict[str, object]:
    """Both engines, both dtypes, two interleaved rounds (minutes, plus vLLM's start-ups); skipped without vLLM."""
    from aura_core.runtime.vllm_runner import vllm_python

    if vllm_python() is None:  # `all` still runs everywhere; this one says why it measured nothing
        return {"name": "engines", "skipped": "vLLM is not installed (bash scripts/setup.sh --vllm)"}
    return bench_engines(settings.model, repeats=settings.repeats_or(2))
