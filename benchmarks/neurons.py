"""Expert neurons on the real model: a unit's detail, and which experts fire on a 64-token text.

A unit's detail (AUROC, α, its gated partner, top texts of both classes read token by token,
density on the neutral corpus, vocabulary) reads the corpus from an activation profile that
the server builds once per experts and corpus (``profile_build_s``). Beside it, the same
detail measured without that profile (the unit's module run over the corpus on demand) is
the reference. Units: the best by AUROC and the best of the last layer (the deepest forward
pass). Interleaved rounds; medians.

>>> result = bench_neurons("tiny-llama", data="starter", n_per_class=10, max_tokens=16, repeats=1)   # doctest: +SKIP
>>> result["t_unit_detail_s"] < 2 and result["t_firing_64_s"] < 1                                  # doctest: +SKIP
True
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from benchmarks.settings import DEFAULT_MODEL, Settings
from benchmarks.timing import interleaved, significant, timing_fields

__all__ = ["bench_neurons", "run"]


def _text_of_tokens(tokenizer: object, texts: list[str], n_tokens: int) -> str:
    """A text that tokenises (as collection does) to exactly ``n_tokens`` tokens, made of ``texts``."""
    from aura_core.base.batching import tokenize_texts

    joined = " ".join(texts)
    ids = tokenize_texts(tokenizer, [joined], n_tokens)[0]  # type: ignore[arg-type]
    for cut in range(len(ids), 0, -1):
        text = tokenizer.decode(ids[:cut])  # type: ignore[attr-defined]
        if len(tokenize_texts(tokenizer, [text], 10 * n_tokens)[0]) == n_tokens:  # type: ignore[arg-type]
            return str(text)
    raise ValueError(f"no prefix of the texts tokenises to {n_tokens} tokens")


def bench_neurons(
    model_name: str = DEFAULT_MODEL,
    data: str = "starter",
    n_per_class: int = 50,
    max_tokens: int = 64,
    per_class: int = 5,
    repeats: int = 5,
    min_seconds: float = 0.0,
) -> dict[str, object]:
    """Time the unit detail (two units), the same without the profile, and the firing view on 64 tokens."""
    from aura_core.analysis.collect import collect_responses
    from aura_core.analysis.firing import experts_firing, unit_baselines
    from aura_core.analysis.neurons import gated_partner, unit_detail
    from aura_core.analysis.unit_profile import activation_profile
    from aura_core.base.batching import tokenize_texts
    from aura_core.base.data import balanced_sample, load_concept_data, load_neutral_texts
    from aura_core.method.fit import fit_intervention
    from aura_core.method.intervention import unit_table
    from aura_core.method.responses import Responses
    from aura_core.model.architecture import discover_units, layer_of
    from aura_core.model.loading import load_model
    from aura_core.model.precision import precision_of

    loaded = load_model(model_name, device="cpu")  # as the app serves it (dtype auto)
    model, tok = loaded.model, loaded.tokenizer
    concept = balanced_sample(load_concept_data(data), n_per_class, seed=0)
    responses = collect_responses(model, tok, concept, discover_units(model), max_tokens=max_tokens)
    aura = fit_intervention(responses)

    started = time.perf_counter()
    baselines = unit_baselines(responses)
    baselines_s = time.perf_counter() - started
    neutral = load_neutral_texts()
    started = time.perf_counter()
    profile = activation_profile(model, tok, neutral, baselines.thresholds, corpus="data/neutral.txt", max_tokens=max_tokens)
    profile_s = time.perf_counter() - started

    table = unit_table(aura)
    last_layer = max(layer_of(name) for name in aura.auroc)
    best = table.iloc[0]
    deepest = table[table.layer == last_layer].iloc[0]
    units = {
        "unit_detail": (str(best.module), int(best.unit)),
        "unit_detail_last_layer": (str(deepest.module), int(deepest.unit)),
    }

    def detail(module: str, unit: int, with_profile: bool = True) -> object:
        used = profile
        if not with_profile:  # the reference: the unit's module (and partner) measured on the corpus for this call alone
            modules = [module, *([p] if (p := gated_partner(model, module)) else [])]
            wanted = unit_baselines(Responses({m: responses.per_module[m] for m in modules}, responses.labels)).thresholds
            used = activation_profile(model, tok, neutral, wanted, corpus="data/neutral.txt", max_tokens=max_tokens)
        return unit_detail(
            model, tok, aura, module, unit, responses=responses, texts=concept.texts, profile=used, per_class=per_class
        )

    text = _text_of_tokens(tok, concept.texts, 64)
    assert len(tokenize_texts(tok, [text], 256)[0]) == 64

    def fire() -> object:
        return experts_firing(model, tok, aura, text, baselines=baselines, max_tokens=256)

    paths: dict[str, Callable[[], object]] = {name: partial(detail, module, unit) for name, (module, unit) in units.items()}
    paths["unit_detail_without_profile"] = partial(detail, *units["unit_detail_last_layer"], with_profile=False)
    paths["firing_64"] = fire
    times = interleaved(paths, repeats=repeats, min_seconds=min_seconds, warmup=1)
    worst = max(times["unit_detail"].median, times["unit_detail_last_layer"].median)
    return {
        "name": "neurons",
        "model": model_name,
        "dtype": precision_of(model).label,
        "texts": len(concept),
        "max_tokens": max_tokens,
        "neutral_tokens": profile.n_tokens,
        "unit_best": "{}:{}".format(*units["unit_detail"]),
        "unit_last_layer": "{}:{}".format(*units["unit_detail_last_layer"]),
        "baselines_s": significant(baselines_s),
        "profile_build_s": significant(profile_s),
        **timing_fields(times),
        "profile_speedup": round(times["unit_detail_without_profile"].median / times["unit_detail_last_layer"].median, 2),
        "goal": "t_unit_detail_s and t_unit_detail_last_layer_s < 2; t_firing_64_s < 1",
        "met": bool(worst < 2.0 and times["firing_64"].median < 1.0),
    }


def run(settings: Settings) -> dict[str, object]:
    """``--model`` (default the app's), 50 + 50 texts of ``--data`` at 64 tokens, the neutral corpus; 5 rounds by default."""
    return bench_neurons(settings.model, data=settings.data, repeats=settings.repeats_or(5), min_seconds=settings.min_seconds)
