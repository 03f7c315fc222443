"""How many rows our engine should decode at once: the paper's protocol at several row counts.

The workload is the engines benchmark's (a fixed subset of the challenging prompts, 25
completions × 20 tokens each, the plain model in float32); only the rows decoding at once
change. A row's tokens do not depend on that number, so the fastest count can be the default
(:data:`aura_core.runtime.runner.DECODE_ROWS`) without moving any result.

>>> result = bench_rows("tiny-gpt2", n_prompts=1, samples=2, counts=(1, 2), repeats=1)     # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from benchmarks.engines import CHALLENGING
from benchmarks.settings import DEFAULT_MODEL, Settings
from benchmarks.timing import interleaved, timing_fields

__all__ = ["bench_rows", "run"]


def bench_rows(
    model_name: str = DEFAULT_MODEL,
    *,
    n_prompts: int = 10,
    samples: int = 25,
    counts: tuple[int, ...] = (32, 64, 128, 256),
    repeats: int = 2,
) -> dict[str, object]:
    """Tokens/s at each row count, interleaved over ``repeats`` rounds, and each count's ratio to the first."""
    from aura_core.base.data import load_prompts
    from aura_core.evaluation.generation import SAMPLING_PRESETS, completion_rows
    from aura_core.model.loading import load_model
    from aura_core.runtime.inline import Inline
    from aura_core.runtime.runner import DECODE_ROWS

    prompt_file = str(CHALLENGING) if CHALLENGING.is_file() else "starter"
    prompts = [p.text for p in load_prompts(prompt_file, n=n_prompts, seed=0)]
    settings = SAMPLING_PRESETS["paper"].with_(num_return_sequences=samples)
    loaded = load_model(model_name, dtype="float32")

    def decode_at(count: int) -> Callable[[], int]:
        def once() -> int:
            rows = completion_rows(loaded.tokenizer, prompts, settings=settings)
            Inline(max_rows=count).decode(loaded.model, rows)
            return sum(len(row.tokens) for row in rows)

        return once

    times = interleaved({f"rows_{n}": decode_at(n) for n in counts}, repeats=repeats)
    first = times[f"rows_{counts[0]}"].median
    return {
        "name": "rows",
        "model": model_name,
        "prompt_file": CHALLENGING.name if CHALLENGING.is_file() else "starter",
        "completions": len(prompts) * samples,
        "new_tokens_each": settings.max_new_tokens,
        **timing_fields(times),
        **{f"rows_{n}_tokens_per_s": round(cast(int, times[f"rows_{n}"].last) / times[f"rows_{n}"].median, 1) for n in counts},
        **{f"rows_{n}_over_rows_{counts[0]}": round(first / times[f"rows_{n}"].median, 2) for n in counts[1:]},
        "default_rows": DECODE_ROWS,
        "goal": "report: the default row count is near the fastest",
    }


def run(settings: Settings) -> dict[str, object]:
    """Four row counts, two interleaved rounds (about 5 minutes on 2 cores)."""
    return bench_rows(settings.model, repeats=settings.repeats_or(2))
