"""A prototype of per-request AurA inside vLLM, against our engine, on the serve benchmark's workload.

Sixteen sessions each ask for what Generate sends: baseline and AurA, 2 completions per side,
32 tokens each (demo sampling, no early stop). Our engine decodes them in its shared batch
with per-row plans. vLLM decodes them in one call from the plain weights, each request
carrying its row of AurA factors (``extra_args``) that module hooks apply per token of vLLM's
flattened batch (:func:`aura_core.runtime.vllm_worker._install_steering`). Hooks do not run
inside a compiled graph, so that engine is eager; the same eager engine without steering
gives the hooks' cost. The prefix cache is off: vLLM keys it by tokens alone, so a steered
request would reuse keys and values that an unsteered twin cached. Greedy completions of the steered rows are compared with vLLM's own
completions from the folded AurA checkpoint: the check that the steering is AurA.

>>> result = bench_steering("smollm2-135m", sessions=2, repeats=1)   # doctest: +SKIP
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.settings import DEFAULT_MODEL, BenchmarkError, Settings

__all__ = ["bench_steering", "run", "steering_tables"]


def steering_tables(model: torch.nn.Module, interventions: list[Any]) -> dict[str, torch.Tensor]:
    """Per vLLM module: a ``(1 + interventions, units)`` table of factors, row 0 all ones.

    vLLM merges a Llama MLP's gate and up projections into ``gate_up_proj`` (gate first), so
    their factors are concatenated; ``down_proj`` keeps its name.
    """
    names = [name for name, _ in model.named_modules() if name.endswith(("gate_proj", "up_proj", "down_proj"))]
    factors = [iv.factors() for iv in interventions]
    tables: dict[str, torch.Tensor] = {}
    layers = sorted({name.rsplit(".", 1)[0] for name in names})
    for layer in layers:
        for target, parts in ((f"{layer}.gate_up_proj", ("gate_proj", "up_proj")), (f"{layer}.down_proj", ("down_proj",))):
            rows = []
            for per_module in factors:
                rows.append(torch.cat([per_module[f"{layer}.{part}"].to(torch.float32) for part in parts]))
            tables[target] = torch.cat([torch.ones_like(rows[0])[None], torch.stack(rows)]).contiguous()
    return tables


def bench_steering(
    model_name: str = DEFAULT_MODEL, *, sessions: int = 16, samples: int = 2, new_tokens: int = 32, repeats: int = 3
) -> dict[str, object]:
    """Tokens/s of our engine and of eager vLLM with and without per-request steering, interleaved over rounds."""
    from safetensors.torch import save_file

    from aura_core.base.batching import encode
    from aura_core.base.data import load_prompts
    from aura_core.evaluation.generation import SAMPLING_PRESETS, side_by_side_rows
    from aura_core.method.fit import synthetic_intervention
    from aura_core.model.loading import load_model
    from aura_core.runtime.engine import Engine
    from aura_core.runtime.vllm_runner import VllmRunner, vllm_python

    if vllm_python() is None:
        raise BenchmarkError("vLLM is not installed: run `bash scripts/setup.sh --vllm` first")
    loaded = load_model(model_name, dtype="float32")
    model, tok = loaded.model, loaded.tokenizer
    hf_model: Any = model
    hf_model.generation_config.eos_token_id = None  # every row decodes all its tokens on every path
    aura = synthetic_intervention(model, torch.Generator().manual_seed(0), low=0.5)
    prompts = [p.text for p in load_prompts(n=sessions, seed=0)]
    settings = SAMPLING_PRESETS["demo"].with_(max_new_tokens=new_tokens, num_return_sequences=samples)
    folder = Path(tempfile.mkdtemp(prefix="aura-steering-"))
    save_file(steering_tables(model, [aura]), str(folder / "tables.safetensors"))
    # Eager (hooks do not run in a compiled graph); no prefix cache: an AurA request's prompt must not reuse
    # the keys and values its baseline twin cached, which the plain MLPs computed.
    runner = VllmRunner(dtype="float32", tokenizer=tok, engine_args={"enforce_eager": True, "enable_prefix_caching": False})
    ids = [encode(tok, [prompt])[0] for prompt in prompts]
    sampling = {"temperature": settings.temperature, "top_p": settings.top_p, "repetition_penalty": settings.repetition_penalty}
    sampling |= {"max_tokens": new_tokens, "ignore_eos": True}

    def ours() -> int:
        engine = Engine(model)
        done: list[int] = []

        def session(index: int) -> None:
            sides = side_by_side_rows(tok, prompts[index], {"baseline": None, "aura": aura}, settings=settings)
            rows = [row for side in sides.values() for row in side]
            done.append(sum(len(row.tokens) for row in engine.submit(rows).result(timeout=3600)))

        threads = [threading.Thread(target=session, args=(i,)) for i in range(sessions)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        engine.close()
        return sum(done)

    def on_vllm(steered: bool) -> Callable[[], int]:
        def once() -> int:
            request: dict[str, Any] = {"op": "generate", "prompts": ids + ids, "n": samples, "seed": 0, "sampling": sampling}
            if steered:
                request["slots"] = [0] * sessions + [1] * sessions  # baseline rows, then AurA rows
            answer = runner.ask(model, request)
            return sum(len(sample) for prompt in answer["tokens"] for sample in prompt)

        return once

    try:
        started = time.perf_counter()
        runner.ask(model, {"op": "steer", "path": str(folder / "tables.safetensors")})
        startup_s = time.perf_counter() - started
        # The steering is AurA: greedy steered rows against vLLM's own decode of the folded AurA checkpoint.
        greedy = {"temperature": 0.0, "max_tokens": 20, "ignore_eos": True}
        asked = {"op": "generate", "prompts": ids, "n": 1, "seed": 0, "sampling": greedy}
        steered = runner.ask(model, asked | {"slots": [1] * sessions})
        plain = runner.ask(model, asked)
        folded = runner.ask(model, asked, aura)
        same = sum(a == b for a, b in zip(steered["tokens"], folded["tokens"], strict=True))
        changed = sum(a != b for a, b in zip(steered["tokens"], plain["tokens"], strict=True))
        paths = {"ours": ours, "vllm_eager_steered": on_vllm(True), "vllm_eager_plain": on_vllm(False)}
        rates: dict[str, list[float]] = {name: [] for name in paths}
        for round_ in range(repeats + 1):  # the first round warms every path and is not counted
            for name, path in paths.items():
                began = time.perf_counter()
                tokens = path()
                if round_:
                    rates[name].append(tokens / (time.perf_counter() - began))
    finally:
        runner.close()
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return {
        "name": "steering",
        "model": model_name,
        "sessions": sessions,
        "completions_per_round": sessions * 2 * samples,
        "new_tokens_each": new_tokens,
        **{f"{name}_tokens_per_s": round(rate, 1) for name, rate in medians.items()},
        **{f"{name}_runs": [round(r, 1) for r in rates[name]] for name in rates},
        "steered_over_ours": round(medians["vllm_eager_steered"] / medians["ours"], 2),
        "steering_cost": round(medians["vllm_eager_plain"] / medians["vllm_eager_steered"] - 1.0, 3),
        "greedy_steered_equal_folded": f"{same}/{sessions}",
        "greedy_steered_differ_from_plain": f"{changed}/{sessions}",
        "vllm_startup_s": round(startup_s, 1),
        "goal": "report: propose vLLM as the app's engine only if steered > ours at 16 sessions and texts can be made batch-independent",
    }


def run(settings: Settings) -> dict[str, object]:
    """The prototype at 16 sessions, three interleaved rounds; skipped without vLLM."""
    from aura_core.runtime.vllm_runner import vllm_python

    if vllm_python() is None:
        return {"name": "steering", "skipped": "vLLM is not installed (bash scripts/setup.sh --vllm)"}
    return bench_steering(settings.model, repeats=settings.repeats_or(3))
