"""Collecting pooled responses of every unit: against the bare forward pass, and in float32 against bfloat16.

The same labelled texts are collected in both dtypes, interleaved, so the run gives both the
speed of bfloat16 and how far it moves each unit's AUROC (what AurA's factors come from).

>>> result = bench_collect("tiny-gpt2", n_texts=40, max_tokens=16, batch_size=8, repeats=2)   # doctest: +SKIP
>>> result["overhead"] <= 0.10, result["top1000_overlap"] >= 0.97                              # doctest: +SKIP
(True, True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from benchmarks.settings import DEFAULT_MODEL, Settings
from benchmarks.timing import interleaved, timing_fields

if TYPE_CHECKING:
    from aura_core.base.data import ConceptData
    from aura_core.method.responses import Responses
    from aura_core.model.loaded import LoadedModel

__all__ = ["auroc_agreement", "bench_collect", "dtype_pair", "run"]

TOP_UNITS = 1000


def dtype_pair(model_name: str) -> tuple[LoadedModel, LoadedModel]:
    """``model_name`` as ``dtype="auto"`` loads it on this CPU, and in the other of float32 and bfloat16.

    The first is what the project runs; the second is what it is compared with.
    """
    from aura_core.model.loading import load_model
    from aura_core.model.precision import precision_of

    auto = load_model(model_name, device="cpu")
    other = "float32" if precision_of(auto.model).dtype == torch.bfloat16 else "bfloat16"
    return auto, load_model(model_name, device="cpu", dtype=other)


def _labelled(n_texts: int, data: str) -> ConceptData:
    """``n_texts`` texts of ``data`` with their own labels, half of each, repeated if the source is small."""
    from aura_core.base.data import ConceptData, balanced_sample, load_concept_data

    concept = load_concept_data(data)
    sample = balanced_sample(concept, min(max(n_texts // 2, 1), min(concept.counts().values())), seed=0)
    texts, labels = list(sample.texts), list(sample.labels)
    while len(texts) < n_texts:
        texts, labels = texts + texts[: n_texts - len(texts)], labels + labels[: n_texts - len(labels)]
    return ConceptData(texts[:n_texts], labels[:n_texts], f"{data} (bench)")


def auroc_agreement(reference: Responses, other: Responses, top: int = TOP_UNITS) -> dict[str, object]:
    """How far ``other`` moves each unit's AUROC from ``reference`` (same texts, same units).

    ``top1000_overlap`` is the share of the ``top`` units by AUROC that both rank there;
    ``tail_modules`` names the modules with most units moved by more than 0.02.
    """
    from aura_core.method.auroc import auroc

    diffs, ranked_ref, ranked_other, moved = [], [], [], {}
    for name, values in reference.per_module.items():
        ref = auroc(values, reference.labels).numpy()
        new = auroc(other.per_module[name], other.labels).numpy()
        diff = np.abs(ref - new)
        diffs.append(diff)
        ranked_ref.append(ref)
        ranked_other.append(new)
        if int((diff > 0.02).sum()):
            moved[name] = int((diff > 0.02).sum())
    diff = np.concatenate(diffs)
    k = min(top, diff.size)
    best_ref = set(np.argsort(-np.concatenate(ranked_ref), kind="stable")[:k].tolist())
    best_other = set(np.argsort(-np.concatenate(ranked_other), kind="stable")[:k].tolist())
    tail = sorted(moved.items(), key=lambda item: -item[1])[:3]
    return {
        "auroc_mean_abs_diff": round(float(diff.mean()), 5),
        "auroc_p99_abs_diff": round(float(np.quantile(diff, 0.99)), 4),
        "auroc_p999_abs_diff": round(float(np.quantile(diff, 0.999)), 4),
        "auroc_max_abs_diff": round(float(diff.max()), 4),
        "units_moved_over_0_02": int((diff > 0.02).sum()),
        "top1000_overlap": round(len(best_ref & best_other) / k, 4),
        "tail_modules": ", ".join(f"{name} ({count})" for name, count in tail) or "none",
    }


def bench_collect(
    model_name: str = DEFAULT_MODEL,
    n_texts: int = 600,
    max_tokens: int = 64,
    batch_size: int = 32,
    repeats: int = 3,
    min_seconds: float = 0.0,
    data: str = "starter",
) -> dict[str, object]:
    """Forward pass, collection, and collection in the other dtype, interleaved.

    ``overhead`` compares collection with the bare forward pass in the dtype ``auto`` picks
    here (``dtype``); ``bf16_speedup`` is float32 collection time over bfloat16's; the AUROC
    fields compare the two collections unit by unit (:func:`auroc_agreement`).
    """
    from aura_core.analysis.collect import collect_responses
    from aura_core.base.batching import length_sorted_batches, pad_right, padding_fraction, tokenize_texts
    from aura_core.model.architecture import discover_units, unit_width
    from aura_core.model.precision import precision_of

    loaded, other = dtype_pair(model_name)
    dtype, other_dtype = precision_of(loaded.model).name, precision_of(other.model).name
    concept = _labelled(n_texts, data)
    texts = concept.texts
    units = discover_units(loaded.model)
    token_ids = tokenize_texts(loaded.tokenizer, texts, max_tokens)
    lengths = [len(ids) for ids in token_ids]
    batches = length_sorted_batches(lengths, batch_size)
    unsorted = [list(range(i, min(i + batch_size, len(texts)))) for i in range(0, len(texts), batch_size)]
    pad_id = loaded.tokenizer.pad_token_id

    def forward(model: torch.nn.Module) -> None:
        with torch.inference_mode():
            for batch in batches:
                input_ids, attention = pad_right([token_ids[i] for i in batch], pad_id)
                model(input_ids=input_ids, attention_mask=attention, use_cache=False)

    def collect(model: LoadedModel) -> Responses:
        return collect_responses(
            model.model, model.tokenizer, concept, units, max_tokens=max_tokens, batch_size=batch_size, use_cache=False
        )

    forward(loaded.model)  # warm-up: first-call allocations are not what we measure
    forward(other.model)
    times = interleaved(
        {
            "forward": lambda: forward(loaded.model),
            "collect": lambda: collect(loaded),
            f"collect_{other_dtype}": lambda: collect(other),
        },
        repeats=repeats,
        min_seconds=min_seconds,
        warmup=0,
    )
    t_forward, t_collect, t_other = (times[name].median for name in ("forward", "collect", f"collect_{other_dtype}"))
    collected = {
        dtype: (t_collect, cast("Responses", times["collect"].last)),
        other_dtype: (t_other, cast("Responses", times[f"collect_{other_dtype}"].last)),
    }
    (t32, fp32), (t16, bf16) = collected["float32"], collected["bfloat16"]
    return {
        "name": "collect",
        "model": model_name,
        "dtype": precision_of(loaded.model).label,
        "texts": len(texts),
        "units": sum(unit_width(dict(loaded.model.named_modules())[u]) for u in units),
        **timing_fields(times),
        "overhead": round(t_collect / t_forward - 1.0, 4),
        "tokens_per_s": round(sum(lengths) / t_collect),
        "padding_fraction": round(padding_fraction(lengths, batches), 4),
        "padding_fraction_unsorted": round(padding_fraction(lengths, unsorted), 4),
        "bf16_speedup": round(t32 / t16, 3),
        **auroc_agreement(fp32, bf16),
        "goal": "overhead <= 0.10; bf16_speedup >= 1.6, top1000_overlap >= 0.97, "
        "auroc_mean_abs_diff <= 0.002, auroc_p999_abs_diff <= 0.02",
    }


def run(settings: Settings) -> dict[str, object]:
    """600 labelled texts (300 + 300) of ``--data`` through ``--model`` in both dtypes, 64 tokens each; 3 rounds by default."""
    return bench_collect(settings.model, repeats=settings.repeats_or(3), min_seconds=settings.min_seconds, data=settings.data)
