"""Decoding speed: plain, AurA as a per-call plan (how the app serves it), AurA folded into the weights, and the other dtype.

Linear-AcT (an affine plan: a scale and a shift per unit) and conditional AurA (a gated plan:
AurA's scale only where the unit fires above τ) run as call plans too, beside AurA's plain
scale, so ``affine_ratio`` and ``gated_ratio`` are their costs over the plain model.

Folding is exact and free at run time but changes the model itself, so the app only folds
for an export; serving uses call plans, whose cost over the plain model this measures. The
plain model also decodes in the other of float32 and bfloat16, for the speed of bfloat16 and
how many greedy tokens the two dtypes share.

>>> result = bench_generate("tiny-llama", n_prompts=4, new_tokens=4, repeats=2)   # doctest: +SKIP
>>> result["hook_ratio"] <= 1.05, result["decode_speedup_bf16"] > 0                 # doctest: +SKIP
(True, True)
"""

from __future__ import annotations

from typing import cast

import torch

from benchmarks.settings import DEFAULT_MODEL, Settings
from benchmarks.timing import interleaved, timing_fields

__all__ = ["bench_generate", "greedy_agreement", "run"]


def greedy_agreement(reference: list[list[int]], other: list[list[int]]) -> dict[str, object]:
    """How many greedy tokens two runs over the same prompts share.

    ``greedy_tokens_agree``: the share of positions with the same token; ``greedy_prefix_agree``:
    the share before each row's first difference (after one, the texts go separate ways).

    >>> greedy_agreement([[1, 2, 3, 4]], [[1, 2, 5, 4]])
    {'greedy_tokens_agree': 0.75, 'greedy_prefix_agree': 0.5, 'greedy_same_completions': '0/1'}
    """
    total = sum(len(row) for row in reference)
    same = sum(a == b for ref, new in zip(reference, other, strict=True) for a, b in zip(ref, new, strict=False))
    prefix = 0
    for ref, new in zip(reference, other, strict=True):
        prefix += next((i for i, (a, b) in enumerate(zip(ref, new, strict=False)) if a != b), min(len(ref), len(new)))
    equal = sum(ref == new for ref, new in zip(reference, other, strict=True))
    return {
        "greedy_tokens_agree": round(same / max(total, 1), 4),
        "greedy_prefix_agree": round(prefix / max(total, 1), 4),
        "greedy_same_completions": f"{equal}/{len(reference)}",
    }


def bench_generate(
    model_name: str = DEFAULT_MODEL, n_prompts: int = 16, new_tokens: int = 32, repeats: int = 5, min_seconds: float = 0.0
) -> dict[str, object]:
    """The four paths interleaved over the same prompts and seeds, after one untimed round.

    ``base``, ``hooks`` and ``folded`` run in the dtype ``auto`` picks here (``dtype``);
    ``base_<other dtype>`` is the plain model in the other of float32 and bfloat16.
    """
    from aura_core.base.data import load_prompts
    from aura_core.evaluation.generation import SamplingSettings, completion_rows
    from aura_core.method.fit import synthetic_intervention
    from aura_core.method.intervention import Intervention
    from aura_core.model.precision import precision_of
    from aura_core.runtime.folding import fold_into_weights
    from aura_core.runtime.inline import Inline
    from benchmarks.collect import dtype_pair

    loaded, other = dtype_pair(model_name)
    dtype, other_dtype = precision_of(loaded.model).name, precision_of(other.model).name
    gen = torch.Generator().manual_seed(0)
    # A realistic AurA: about half the units dampened, as fitted AUROCs give.
    aura = synthetic_intervention(loaded.model, gen, low=0.5)
    linear_act, conditional = aura.with_settings(method="linear-act"), aura.with_settings(method="aura-cond")
    prompts = [p.text for p in load_prompts(n=n_prompts, seed=0)]
    # Greedy decoding and no stop token keep the token count equal on every path.
    settings = SamplingSettings(max_new_tokens=new_tokens, do_sample=False)
    for config in (loaded.model.generation_config, other.model.generation_config):
        config.eos_token_id = None  # type: ignore[union-attr]
    runner = Inline(max_rows=n_prompts)

    def run_once(model: torch.nn.Module, intervention: Intervention | None) -> list[list[int]]:
        rows = completion_rows(loaded.tokenizer, prompts, settings=settings, intervention=intervention)
        runner.decode(model, rows)
        return [list(row.tokens) for row in rows]

    def folded() -> list[list[int]]:
        with fold_into_weights(loaded.model, aura):  # this benchmark's own model: nobody else is using it
            return run_once(loaded.model, None)

    other_path = f"base_{other_dtype}"
    times = interleaved(
        {
            "base": lambda: run_once(loaded.model, None),
            "hooks": lambda: run_once(loaded.model, aura),
            "affine": lambda: run_once(loaded.model, linear_act),
            "gated": lambda: run_once(loaded.model, conditional),
            "folded": folded,
            other_path: lambda: run_once(other.model, None),
        },
        repeats=repeats,
        min_seconds=min_seconds,
        warmup=1,
    )
    med = {name: timing.median for name, timing in times.items()}
    last = {name: cast("list[list[int]]", timing.last) for name, timing in times.items()}
    agree = sum(a == b for a, b in zip(last["hooks"], last["folded"], strict=True))
    by_dtype = {dtype: "base", other_dtype: other_path}
    alone = Inline(max_rows=1)

    def same_alone(model: torch.nn.Module, together: list[list[int]]) -> str:
        """How many greedy completions decoded one at a time equal those decoded all together."""
        rows = completion_rows(loaded.tokenizer, prompts, settings=settings)
        alone.decode(model, rows)
        return f"{sum(list(row.tokens) == tokens for row, tokens in zip(rows, together, strict=True))}/{n_prompts}"

    invariance = {
        f"greedy_same_alone_and_batched_{name}": same_alone(model, last[by_dtype[name]])
        for name, model in ((dtype, loaded.model), (other_dtype, other.model))
    }
    tokens = n_prompts * new_tokens
    return {
        "name": "generate",
        "model": model_name,
        "dtype": precision_of(loaded.model).label,
        "prompts": n_prompts,
        "new_tokens": new_tokens,
        "units_dampened": int(sum(int((f != 1).sum()) for f in aura.factors().values())),
        **timing_fields(times),
        "tokens_per_s_base": round(tokens / med["base"], 1),
        "tokens_per_s_hooks": round(tokens / med["hooks"], 1),
        "tokens_per_s_folded": round(tokens / med["folded"], 1),
        f"tokens_per_s_base_{other_dtype}": round(tokens / med[other_path], 1),
        "hook_ratio": round(med["hooks"] / med["base"], 4),
        "affine_ratio": round(med["affine"] / med["base"], 4),
        "gated_ratio": round(med["gated"] / med["base"], 4),
        "folded_ratio": round(med["folded"] / med["base"], 4),
        "hooks_folded_same_text": f"{agree}/{n_prompts}",
        "decode_speedup_bf16": round(med[by_dtype["float32"]] / med[by_dtype["bfloat16"]], 3),
        **greedy_agreement(last[by_dtype["float32"]], last[by_dtype["bfloat16"]]),
        **invariance,
        "goal": "hook_ratio <= 1.05 (per-call plans cost at most 5 % over the plain model), affine_ratio and "
        "gated_ratio <= 1.10; decode_speedup_bf16 >= 1.5",
    }


def run(settings: Settings) -> dict[str, object]:
    """16 starter prompts, 32 greedy tokens each, through ``--model``; 5 rounds by default."""
    return bench_generate(settings.model, repeats=settings.repeats_or(5), min_seconds=settings.min_seconds)
