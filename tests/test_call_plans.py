"""Interventions belong to a call: per-row factors, plans that never leak, a tokenizer shared by threads."""

import copy
import threading

import pytest
import torch

from aura_core.base.batching import encode, pad_right, tokenize_texts
from aura_core.method.intervention import Intervention
from aura_core.model.architecture import discover_units, unit_width
from aura_core.runtime.hooks import CallPlan, call_plan, unwrap_output
from aura_core.runtime.plans import intervened, rows_intervened

TEXTS = ["hello there, friend", "Zap! you are a Z", "a", "another line of text"]


def _random_auroc(model, seed=0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    return {name: torch.rand(unit_width(modules[name]), generator=gen, dtype=torch.float64) for name in discover_units(model)}


def _batch(tok, texts):
    return pad_right(tokenize_texts(tok, texts, 32, drop_bos=False), tok.pad_token_id)


def _logits(model, input_ids, mask):
    with torch.inference_mode():
        return model(input_ids=input_ids, attention_mask=mask).logits.clone()


def _reference_logits(model, input_ids, mask, intervention):
    """The project's former way: permanent-for-the-block forward hooks that scale the whole model."""
    modules = dict(model.named_modules())
    handles = []
    for name, factor in intervention.factors().items():
        handles.append(
            modules[name].register_forward_hook(lambda m, i, out, f=factor: unwrap_output(out) * f.to(unwrap_output(out).dtype))
        )
    try:
        return _logits(model, input_ids, mask)
    finally:
        for handle in handles:
            handle.remove()


def test_per_row_factors_equal_whole_model_hooks_row_by_row(tiny):
    model, tok = tiny.model, tiny.tokenizer
    scores = _random_auroc(model)
    per_row = [None, Intervention(scores), Intervention(scores, strength=0.6), Intervention(scores, "det0", k=9)]
    input_ids, mask = _batch(tok, TEXTS)
    with rows_intervened(model, per_row):
        mixed = _logits(model, input_ids, mask)
    plain = _logits(model, input_ids, mask)
    for row, iv in enumerate(per_row):
        expected = plain if iv is None else _reference_logits(model, input_ids, mask, iv)
        assert torch.allclose(mixed[row], expected[row], atol=1e-6), row
    assert not torch.allclose(mixed[1], plain[1])


def test_untouched_and_strength_zero_rows_are_bit_identical_to_a_model_never_hooked(tiny):
    never_hooked = copy.deepcopy(tiny.model)
    model, tok = tiny.model, tiny.tokenizer
    scores = _random_auroc(model)
    input_ids, mask = _batch(tok, TEXTS)
    with rows_intervened(model, [None, Intervention(scores), Intervention(scores, strength=0.0), Intervention(scores)]):
        mixed = _logits(model, input_ids, mask)
    reference = _logits(never_hooked, input_ids, mask)
    assert any(m._forward_hooks for m in model.modules())  # the plan hooks are installed for good...
    assert torch.equal(mixed[0], reference[0]) and torch.equal(mixed[2], reference[2])
    assert torch.equal(_logits(model, input_ids, mask), reference)  # ...and do nothing outside a plan


def test_a_plan_belongs_to_its_thread_not_to_the_model(tiny_gpt2):
    """While one thread holds an AurA scope open, another thread's calls see the plain model."""
    model, tok = tiny_gpt2.model, tiny_gpt2.tokenizer
    input_ids, mask = _batch(tok, TEXTS)
    plain = _logits(model, input_ids, mask)
    inside, release = threading.Event(), threading.Event()

    def hold_scope() -> None:
        with intervened(model, Intervention(_random_auroc(model))):
            inside.set()
            release.wait(30)

    holder = threading.Thread(target=hold_scope)
    holder.start()
    assert inside.wait(30)
    try:
        assert torch.equal(_logits(model, input_ids, mask), plain)
    finally:
        release.set()
        holder.join()


def test_nested_scopes_compose_and_recorders_see_the_scaled_output(tiny_gpt2):
    model, tok = tiny_gpt2.model, tiny_gpt2.tokenizer
    name = "transformer.h.0.mlp.c_fc"
    input_ids, mask = _batch(tok, TEXTS[:1])
    seen = []
    record = CallPlan(record={name: lambda out: seen.append(out.detach().clone())})
    with call_plan(model, record):
        _logits(model, input_ids, mask)
    half = Intervention({name: torch.full((64,), 0.75)})  # α = 0.5 on every unit of one module
    raw = []
    before_scaling = CallPlan(record_raw={name: lambda out: raw.append(out.detach().clone())})
    with intervened(model, half), intervened(model, half), call_plan(model, record), call_plan(model, before_scaling):
        _logits(model, input_ids, mask)
    assert torch.allclose(seen[1], seen[0] * 0.25, atol=1e-6)
    assert torch.equal(raw[0], seen[0])  # the first layer's input is untouched, so its raw output is the plain one


def test_plans_naming_unknown_modules_are_refused(tiny_gpt2):
    from aura_core.errors import UnitPatternError

    with pytest.raises(UnitPatternError, match="no module"):
        with call_plan(tiny_gpt2.model, CallPlan(record={"transformer.h.9.mlp": print})):
            pass


def test_the_shared_tokenizer_survives_many_threads(tiny_gpt2):
    """A fast tokenizer asked to pad in one thread while another encodes used to fail
    ("Unable to create tensor"); the project never asks it to pad, and encodes one call at a time."""
    from aura_core.evaluation.generation import SamplingSettings, completion_rows, generate

    tok, model = tiny_gpt2.tokenizer, tiny_gpt2.model
    texts = [f"{'word ' * (i % 13)}number {i}" for i in range(40)]
    expected = [list(tok(t)["input_ids"]) for t in texts]
    errors: list[BaseException] = []

    def encoder() -> None:
        try:
            for _ in range(100):
                assert encode(tok, texts) == expected
        except BaseException as err:
            errors.append(err)

    def generation_rows() -> None:
        try:
            for _ in range(100):
                rows = completion_rows(tok, texts, settings=SamplingSettings(max_new_tokens=1))
                assert [row.prompt_ids for row in rows] == expected
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=encoder) for _ in range(2)] + [threading.Thread(target=generation_rows) for _ in range(2)]
    for thread in threads:
        thread.start()
    outs = generate(model, tok, texts[:6], settings=SamplingSettings(max_new_tokens=3), seed=1)
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    assert [g.completion for g in outs] == [
        g.completion for g in generate(model, tok, texts[:6], settings=SamplingSettings(max_new_tokens=3), seed=1)
    ]
