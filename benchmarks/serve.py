"""Many sessions, one model: N people ask for a side-by-side comparison at the same moment.

Each session asks for what the Generate page sends: baseline and AurA, ``samples`` completions
per side, ``new_tokens`` tokens each. The engine serves them from one shared batch; the
reference is the project's former path, one request at a time under the model's lock, each
side one ``model.generate`` call. Both paths run interleaved, round after round, in one run.

>>> result = bench_serve("tiny-llama", sessions=(1, 4), repeats=1)      # doctest: +SKIP
>>> sorted(k for k in result if k.startswith("tokens_per_s_engine"))    # doctest: +SKIP
['tokens_per_s_engine_1', 'tokens_per_s_engine_4']
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from benchmarks.settings import DEFAULT_MODEL, Settings
from benchmarks.timing import interleaved, significant

__all__ = ["bench_serve", "run"]


def _p95(values: list[float]) -> float:
    return float(np.percentile(np.asarray(values), 95))


def _together(count: int, request: Callable[[int], None]) -> list[float]:
    """Start ``count`` sessions at the same moment; the seconds each waited for its whole answer."""
    latencies = [0.0] * count
    start = threading.Barrier(count + 1)

    def session(index: int) -> None:
        start.wait()
        began = time.perf_counter()
        request(index)
        latencies[index] = time.perf_counter() - began

    threads = [threading.Thread(target=session, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    start.wait()
    for thread in threads:
        thread.join()
    return latencies


def bench_serve(
    model_name: str = DEFAULT_MODEL,
    sessions: tuple[int, ...] = (1, 4, 16),
    new_tokens: int = 32,
    samples: int = 2,
    repeats: int = 3,
    device: str = "cpu",
) -> dict[str, object]:
    """Engine against one-at-a-time under a lock, for each number of simultaneous sessions (on ``device``)."""
    from aura_core.base.batching import encode
    from aura_core.base.data import load_prompts
    from aura_core.evaluation.generation import SAMPLING_PRESETS, row_seed, side_by_side_rows
    from aura_core.method.fit import synthetic_intervention
    from aura_core.model.loading import load_model
    from aura_core.runtime.engine import Engine
    from aura_core.runtime.plans import intervened

    loaded = load_model(model_name, device=device)  # loads in a thread of its own, as on the server
    model, tok = loaded.model, loaded.tokenizer
    hf_model: Any = model  # transformers' generate, untyped
    hf_model.generation_config.eos_token_id = None  # every request decodes all its tokens on both paths
    gen = torch.Generator().manual_seed(0)
    # A realistic AurA: about half the units dampened, as fitted AUROCs give.
    aura = synthetic_intervention(model, gen, low=0.5)
    prompts = [p.text for p in load_prompts(n=max(sessions), seed=0)]
    settings = SAMPLING_PRESETS["demo"].with_(max_new_tokens=new_tokens, num_return_sequences=samples)
    # Each engine round has an engine of its own, closed after it, so its worker thread never
    # idles beside the reference's threads (see aura_core.model.threads).
    engines: list[Engine] = []
    lock = threading.Lock()

    def engine_request(index: int) -> None:
        sides = side_by_side_rows(tok, prompts[index % len(prompts)], {"baseline": None, "aura": aura}, settings=settings)
        engines[-1].submit([row for rows in sides.values() for row in rows]).result(timeout=3600)

    def engine_sides_one_after_the_other(index: int) -> None:
        sides = side_by_side_rows(tok, prompts[index % len(prompts)], {"baseline": None, "aura": aura}, settings=settings)
        for rows in sides.values():
            engines[-1].submit(rows).result(timeout=3600)

    def reference_request(index: int) -> None:
        prompt = prompts[index % len(prompts)]
        input_ids = torch.tensor([encode(tok, [prompt])[0]], device=loaded.device)
        with lock:  # the former path: the whole request holds the model
            for intervention in (None, aura):
                with intervened(model, intervention), torch.inference_mode():
                    torch.manual_seed(row_seed(0, prompt, 0) % 2**63)
                    hf_model.generate(
                        input_ids=input_ids,
                        attention_mask=torch.ones_like(input_ids),
                        do_sample=True,
                        max_new_tokens=new_tokens,
                        temperature=settings.temperature,
                        top_p=settings.top_p,
                        repetition_penalty=settings.repetition_penalty,
                        num_return_sequences=samples,
                        pad_token_id=tok.pad_token_id,
                    )

    latencies: dict[tuple[str, int], list[float]] = {}
    walls: dict[tuple[str, int], list[float]] = {}

    def measured(path: str, count: int, request: Callable[[int], None]) -> Callable[[], None]:
        def once() -> None:
            if path != "reference":
                engines.append(Engine(model))
            began = time.perf_counter()
            latencies.setdefault((path, count), []).extend(_together(count, request))
            walls.setdefault((path, count), []).append(time.perf_counter() - began)
            if path != "reference":
                engines.pop().close()

        return once

    paths: dict[str, Callable[[], None]] = {"pair_in_one_batch": measured("pair", 1, engine_request)}
    paths["pair_sides_in_turn"] = measured("sides", 1, engine_sides_one_after_the_other)
    for count in sessions:
        paths[f"engine_{count}"] = measured("engine", count, engine_request)
        paths[f"reference_{count}"] = measured("reference", count, reference_request)
    warm_engine = measured("warmup", 1, engine_request)
    interleaved({"warmup": lambda: (warm_engine(), _together(1, reference_request))}, repeats=1, warmup=0)
    interleaved(paths, repeats=repeats, warmup=0)

    rows_per_request = 2 * samples
    result: dict[str, object] = {
        "name": "serve",
        "model": model_name,
        "sessions": list(sessions),
        "new_tokens": new_tokens,
        "samples_per_side": samples,
        "repeats": repeats,
    }
    for count in sessions:
        tokens = count * rows_per_request * new_tokens
        for path in ("engine", "reference"):
            result[f"tokens_per_s_{path}_{count}"] = round(tokens / statistics.median(walls[(path, count)]), 1)
            result[f"p95_{path}_{count}_s"] = significant(_p95(latencies[(path, count)]))
            result[f"median_latency_{path}_{count}_s"] = significant(statistics.median(latencies[(path, count)]))
        result[f"speedup_{count}"] = round(
            result[f"tokens_per_s_engine_{count}"] / result[f"tokens_per_s_reference_{count}"],  # type: ignore[operator]
            2,
        )
        result[f"p95_ratio_{count}"] = round(_p95(latencies[("engine", count)]) / _p95(latencies[("reference", count)]), 3)
    result["pair_speedup"] = round(statistics.median(latencies[("sides", 1)]) / statistics.median(latencies[("pair", 1)]), 2)
    if 1 in sessions:
        result["single_ratio"] = round(
            statistics.median(latencies[("engine", 1)]) / statistics.median(latencies[("reference", 1)]), 3
        )
    result["goal"] = "speedup_16 >= 6, p95_ratio_16 <= 0.25, pair_speedup >= 1.5, single_ratio <= 1.05"
    return result


def run(settings: Settings) -> dict[str, object]:
    """1, 4 and 16 simultaneous sessions on ``--model``; 3 rounds by default."""
    return bench_serve(settings.model, repeats=settings.repeats_or(3), device=settings.device)
