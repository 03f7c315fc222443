import threading

import pytest
import torch

from aura_core.errors import AuraError
from aura_core.evaluation.generation import SamplingSettings, compose_prompt, generate
from aura_core.method.intervention import Intervention
from aura_core.model.architecture import discover_units, unit_width
from aura_core.runtime.folding import fold_into_weights
from aura_core.runtime.inline import Inline

SETTINGS = SamplingSettings(max_new_tokens=6, num_return_sequences=3)
PROMPTS = ["The cat", "Once upon a time there", "Z"]


def _aura(model) -> Intervention:
    modules = dict(model.named_modules())
    gen = torch.Generator().manual_seed(1)
    return Intervention({n: torch.rand(unit_width(modules[n]), generator=gen) for n in discover_units(model)})


def _texts(outs):
    return [g.completion for g in outs]


def test_same_seed_same_stream_and_order(tiny):
    first = generate(tiny.model, tiny.tokenizer, PROMPTS, settings=SETTINGS, seed=5, runner=Inline(max_rows=4))
    again = generate(tiny.model, tiny.tokenizer, PROMPTS, settings=SETTINGS, seed=5, runner=Inline(max_rows=4))
    other = generate(tiny.model, tiny.tokenizer, PROMPTS, settings=SETTINGS, seed=6, runner=Inline(max_rows=4))
    assert _texts(first) == _texts(again) and _texts(first) != _texts(other)
    assert [(g.prompt_index, g.sample) for g in first] == [(i, s) for i in range(3) for s in range(3)]


def test_strength_zero_matches_baseline_and_full_strength_differs(tiny):
    base = generate(tiny.model, tiny.tokenizer, PROMPTS, settings=SETTINGS, seed=1)
    iv = _aura(tiny.model)
    zero = generate(tiny.model, tiny.tokenizer, PROMPTS, settings=SETTINGS, seed=1, intervention=iv.with_strength(0.0))
    full = generate(tiny.model, tiny.tokenizer, PROMPTS, settings=SETTINGS, seed=1, intervention=iv)
    assert _texts(zero) == _texts(base) and _texts(full) != _texts(base)


def test_call_plans_and_folding_generate_alike_greedy(tiny):
    greedy = SamplingSettings(max_new_tokens=8, do_sample=False)
    iv = _aura(tiny.model)
    hooked = generate(tiny.model, tiny.tokenizer, PROMPTS, settings=greedy, intervention=iv)
    with fold_into_weights(tiny.model, iv):
        folded = generate(tiny.model, tiny.tokenizer, PROMPTS, settings=greedy)
    assert _texts(hooked) == _texts(folded)


def test_pre_prompt_goes_before_and_never_into_the_output(tiny_gpt2):
    assert compose_prompt("You are", "Be nice.") == "Be nice.\nYou are"
    outs = generate(tiny_gpt2.model, tiny_gpt2.tokenizer, ["You are"], pre_prompt="Be nice.", settings=SETTINGS)
    assert all(g.pre_prompt == "Be nice." and "Be nice." not in g.completion for g in outs)
    plain = generate(tiny_gpt2.model, tiny_gpt2.tokenizer, ["You are"], settings=SETTINGS)
    assert _texts(plain) != _texts(outs)


def test_concurrent_sessions_never_see_each_others_intervention(tiny_gpt2):
    """One thread generates under AurA while another generates plain on the same shared model."""
    model, tok = tiny_gpt2.model, tiny_gpt2.tokenizer
    iv = _aura(model)
    expected_plain = _texts(generate(model, tok, PROMPTS, settings=SETTINGS, seed=3))
    expected_aura = _texts(generate(model, tok, PROMPTS, settings=SETTINGS, seed=3, intervention=iv))
    results: dict[str, list[list[str]]] = {"plain": [], "aura": []}

    def run(kind: str) -> None:
        for _ in range(6):
            outs = generate(model, tok, PROMPTS, settings=SETTINGS, seed=3, intervention=iv if kind == "aura" else None)
            results[kind].append(_texts(outs))

    threads = [threading.Thread(target=run, args=(kind,)) for kind in ("plain", "aura")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r == expected_plain for r in results["plain"])
    assert all(r == expected_aura for r in results["aura"])


def test_streamed_tokens_equal_the_batched_completion(tiny):
    """The page streams a row's tokens as they come; the streamed text is the batched completion."""
    from aura_core.evaluation.generation import completion_rows
    from aura_core.runtime.engine import Engine

    settings = SamplingSettings(max_new_tokens=8)
    seen: list[list[int]] = []
    rows = completion_rows(tiny.tokenizer, ["Hello there"], settings=settings, seed=3)
    rows[0].on_token = lambda row: seen.append(list(row.tokens))
    engine = Engine(tiny.model)
    try:
        engine.submit(rows).result(60)
    finally:
        engine.close()
    assert [len(s) for s in seen] == list(range(1, len(rows[0].tokens) + 1))
    batched = generate(tiny.model, tiny.tokenizer, ["Hello there"], settings=settings, seed=3)[0].completion
    assert tiny.tokenizer.decode(seen[-1], skip_special_tokens=True) == batched


def test_an_empty_prompt_is_a_clear_error(tiny_gpt2):
    with pytest.raises(AuraError, match="prompt 2 is empty"):
        generate(tiny_gpt2.model, tiny_gpt2.tokenizer, ["fine", "  "])
