import threading

import torch

from aura_core.generation import SamplingSettings, compose_prompt, generate
from aura_core.interventions import Intervention
from aura_core.models import discover_units, unit_width

SETTINGS = SamplingSettings(max_new_tokens=6, num_return_sequences=3)
PROMPTS = ["The cat", "Once upon a time there", "Z"]


def _aura(model) -> Intervention:
    modules = dict(model.named_modules())
    gen = torch.Generator().manual_seed(1)
    return Intervention({n: torch.rand(unit_width(modules[n]), generator=gen) for n in discover_units(model)})


def _texts(outs):
    return [g.completion for g in outs]


def test_same_seed_same_stream_and_order(tiny):
    first = generate(tiny.model, tiny.tokenizer, PROMPTS, settings=SETTINGS, seed=5, batch_size=4)
    again = generate(tiny.model, tiny.tokenizer, PROMPTS, settings=SETTINGS, seed=5, batch_size=4)
    other = generate(tiny.model, tiny.tokenizer, PROMPTS, settings=SETTINGS, seed=6, batch_size=4)
    assert _texts(first) == _texts(again) and _texts(first) != _texts(other)
    assert [(g.prompt_index, g.sample) for g in first] == [(i, s) for i in range(3) for s in range(3)]


def test_strength_zero_matches_baseline_and_full_strength_differs(tiny):
    base = generate(tiny.model, tiny.tokenizer, PROMPTS, settings=SETTINGS, seed=1)
    iv = _aura(tiny.model)
    zero = generate(tiny.model, tiny.tokenizer, PROMPTS, settings=SETTINGS, seed=1, intervention=iv.with_strength(0.0))
    full = generate(tiny.model, tiny.tokenizer, PROMPTS, settings=SETTINGS, seed=1, intervention=iv)
    assert _texts(zero) == _texts(base) and _texts(full) != _texts(base)


def test_hooks_and_fold_generate_alike_greedy(tiny):
    greedy = SamplingSettings(max_new_tokens=8, do_sample=False)
    iv = _aura(tiny.model)
    hooked = generate(tiny.model, tiny.tokenizer, PROMPTS, settings=greedy, intervention=iv, mode="hooks")
    folded = generate(tiny.model, tiny.tokenizer, PROMPTS, settings=greedy, intervention=iv, mode="fold")
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


def test_a_streamed_completion_equals_the_first_batched_sample(tiny):
    from aura_core.generation import stream_completion

    settings = SamplingSettings(max_new_tokens=8)
    streamed = "".join(stream_completion(tiny.model, tiny.tokenizer, "Hello there", settings=settings, seed=3))
    batched = generate(tiny.model, tiny.tokenizer, ["Hello there"], settings=settings, seed=3)[0].completion
    assert streamed == batched
