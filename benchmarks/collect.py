"""Collecting pooled responses of every unit against the bare forward pass over the same batches.

>>> result = bench_collect("tiny-gpt2", n_texts=40, max_tokens=16, batch_size=8, repeats=2)   # doctest: +SKIP
>>> result["overhead"] <= 0.10                                                                 # doctest: +SKIP
True
"""

from __future__ import annotations

import torch

from benchmarks.settings import DEFAULT_MODEL, Settings
from benchmarks.timing import interleaved, timing_fields

__all__ = ["bench_collect", "run"]


def bench_collect(
    model_name: str = DEFAULT_MODEL,
    n_texts: int = 256,
    max_tokens: int = 64,
    batch_size: int = 32,
    repeats: int = 5,
    min_seconds: float = 0.0,
    data: str = "starter",
) -> dict[str, object]:
    """Forward passes and collection interleaved; ``overhead`` compares their medians."""
    from aura_core.architecture import discover_units, unit_width
    from aura_core.batching import length_sorted_batches, pad_right, padding_fraction, tokenize_texts
    from aura_core.data import ConceptData
    from aura_core.models import load_model
    from aura_core.responses import collect_responses
    from benchmarks.settings import bench_texts

    loaded = load_model(model_name, device="cpu")
    texts = bench_texts(n_texts, data)
    concept = ConceptData(texts, [i % 2 for i in range(len(texts))], "bench")
    units = discover_units(loaded.model)
    token_ids = tokenize_texts(loaded.tokenizer, texts, max_tokens)
    lengths = [len(ids) for ids in token_ids]
    batches = length_sorted_batches(lengths, batch_size)
    unsorted = [list(range(i, min(i + batch_size, len(texts)))) for i in range(0, len(texts), batch_size)]
    pad_id = loaded.tokenizer.pad_token_id

    def forward() -> None:
        with torch.inference_mode():
            for batch in batches:
                input_ids, attention = pad_right([token_ids[i] for i in batch], pad_id)
                loaded.model(input_ids=input_ids, attention_mask=attention, use_cache=False)

    def collect() -> None:
        collect_responses(
            loaded.model, loaded.tokenizer, concept, units, max_tokens=max_tokens, batch_size=batch_size, use_cache=False
        )

    forward()  # warm-up: first-call allocations are not what we measure
    times = interleaved({"forward": forward, "collect": collect}, repeats=repeats, min_seconds=min_seconds, warmup=0)
    t_forward, t_collect = times["forward"].median, times["collect"].median
    return {
        "name": "collect",
        "model": model_name,
        "texts": len(texts),
        "units": sum(unit_width(dict(loaded.model.named_modules())[u]) for u in units),
        **timing_fields(times),
        "overhead": round(t_collect / t_forward - 1.0, 4),
        "tokens_per_s": round(sum(lengths) / t_collect),
        "padding_fraction": round(padding_fraction(lengths, batches), 4),
        "padding_fraction_unsorted": round(padding_fraction(lengths, unsorted), 4),
        "goal": "overhead <= 0.10",
    }


def run(settings: Settings) -> dict[str, object]:
    """256 texts of ``--data`` through ``--model``, 64 tokens each; 5 rounds by default."""
    return bench_collect(settings.model, repeats=settings.repeats_or(5), min_seconds=settings.min_seconds, data=settings.data)
