"""Decoding speed: plain, AurA as a per-call plan (how the app serves it), and AurA folded into the weights.

Folding is exact and free at run time but changes the model itself, so the app only folds
for an export; serving uses call plans, whose cost over the plain model this measures.

>>> result = bench_generate("tiny-llama", n_prompts=4, new_tokens=4, repeats=2)   # doctest: +SKIP
>>> result["hook_ratio"] <= 1.05                                                   # doctest: +SKIP
True
"""

from __future__ import annotations

import torch

from benchmarks.settings import DEFAULT_MODEL, Settings
from benchmarks.timing import interleaved, timing_fields

__all__ = ["bench_generate", "run"]


def bench_generate(
    model_name: str = DEFAULT_MODEL, n_prompts: int = 16, new_tokens: int = 32, repeats: int = 5, min_seconds: float = 0.0
) -> dict[str, object]:
    """The three paths interleaved over the same prompts and seeds, after one untimed round."""
    from aura_core.architecture import discover_units, unit_width
    from aura_core.data import load_prompts
    from aura_core.generation import SamplingSettings, generate
    from aura_core.interventions import Intervention, fold_into_weights
    from aura_core.models import load_model
    from aura_core.runner import Inline

    loaded = load_model(model_name, device="cpu")
    modules = dict(loaded.model.named_modules())
    gen = torch.Generator().manual_seed(0)
    # A realistic AurA: about half the units dampened, as fitted AUROCs give.
    aura = Intervention(
        {n: 0.5 + 0.5 * torch.rand(unit_width(modules[n]), generator=gen).double() for n in discover_units(loaded.model)}
    )
    prompts = [p.text for p in load_prompts(n=n_prompts, seed=0)]
    # Greedy decoding and no stop token keep the token count equal on all three paths.
    settings = SamplingSettings(max_new_tokens=new_tokens, do_sample=False)
    loaded.model.generation_config.eos_token_id = None
    runner = Inline(max_rows=n_prompts)

    def run_once(intervention: Intervention | None) -> list[str]:
        outs = generate(loaded.model, loaded.tokenizer, prompts, settings=settings, intervention=intervention, runner=runner)
        return [g.completion for g in outs]

    def folded() -> list[str]:
        with fold_into_weights(loaded.model, aura):  # this benchmark's own model: nobody else is using it
            return run_once(None)

    times = interleaved(
        {"base": lambda: run_once(None), "hooks": lambda: run_once(aura), "folded": folded},
        repeats=repeats,
        min_seconds=min_seconds,
        warmup=1,
    )
    med = {name: timing.median for name, timing in times.items()}
    agree = sum(a == b for a, b in zip(times["hooks"].last, times["folded"].last, strict=True))  # type: ignore[arg-type]
    tokens = n_prompts * new_tokens
    return {
        "name": "generate",
        "model": model_name,
        "prompts": n_prompts,
        "new_tokens": new_tokens,
        "units_dampened": int(sum(int((f != 1).sum()) for f in aura.factors().values())),
        **timing_fields(times),
        "tokens_per_s_base": round(tokens / med["base"], 1),
        "tokens_per_s_hooks": round(tokens / med["hooks"], 1),
        "tokens_per_s_folded": round(tokens / med["folded"], 1),
        "hook_ratio": round(med["hooks"] / med["base"], 4),
        "folded_ratio": round(med["folded"] / med["base"], 4),
        "hooks_folded_same_text": f"{agree}/{n_prompts}",
        "goal": "hook_ratio <= 1.05 (per-call plans cost at most 5 % over the plain model)",
    }


def run(settings: Settings) -> dict[str, object]:
    """16 starter prompts, 32 greedy tokens each, through ``--model``; 5 rounds by default."""
    return bench_generate(settings.model, repeats=settings.repeats_or(5), min_seconds=settings.min_seconds)
