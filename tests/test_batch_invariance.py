"""A row's numbers do not depend on the rows beside it: same factors, same logits, alone or in any batch.

The watch below sees every forward pass of the decode loop: which rows it holds (in order),
the factors each row's unit outputs actually got, and each row's next-token logits. Rows join
and leave mid-decode; each one's record must equal what it got alone, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import torch

from aura_core.base.batching import encode
from aura_core.method.fit import synthetic_intervention
from aura_core.method.intervention import Intervention
from aura_core.model.architecture import discover_units
from aura_core.model.loading import load_model
from aura_core.model.row_attention import ROW_ATTENTION, row_extents
from aura_core.runtime.decoding import DecodeBatch, DecodeRow
from aura_core.runtime.hooks import ensure_hooks
from aura_core.runtime.sampling import SamplingSettings

PROMPTS = ["You are such a", "The weather today is", "I can't stand people who", "My favourite food is, in the end, what I"]


@dataclass
class _Watch:
    """Per row: the factors its unit outputs got and its logits, at every forward pass."""

    unit: str
    rows: list[DecodeRow] = field(default_factory=list)
    outputs: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)
    logits: dict[int, list[torch.Tensor]] = field(default_factory=dict)


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[_Watch]]:
    """Wrap join and step so that the watch knows which row each batch row is."""
    holder: list[_Watch] = []
    join, step = DecodeBatch.join, DecodeBatch.step

    def watched_join(self: DecodeBatch, rows: list[DecodeRow]) -> None:
        holder[0].rows = list(rows)  # the tests give every row its own prompt: one prefill row each
        join(self, rows)

    def watched_step(self: DecodeBatch) -> None:
        holder[0].rows = list(self.rows)
        step(self)

    monkeypatch.setattr(DecodeBatch, "join", watched_join)
    monkeypatch.setattr(DecodeBatch, "step", watched_step)
    yield holder  # the test puts its watch in


def _install(holder: list[_Watch], model: torch.nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
    watch = holder[0]
    modules = dict(model.named_modules())
    unit = modules[watch.unit]
    ensure_hooks(model, [watch.unit])  # the plan's hook first: the watch sees what the model goes on with

    def on_unit(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        raw = module.forward(*inputs)  # forward, not __call__: the output before any hook
        for row, got, plain in zip(watch.rows, output[:, -1], raw[:, -1], strict=True):
            watch.outputs.setdefault(id(row), []).append((got.clone(), plain.clone()))

    def on_logits(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        for row, logits in zip(watch.rows, output[:, -1], strict=True):
            watch.logits.setdefault(id(row), []).append(logits.clone())

    head = model.get_output_embeddings()
    assert head is not None
    return [unit.register_forward_hook(on_unit), head.register_forward_hook(on_logits)]


def _interventions(model: torch.nn.Module, count: int) -> list[Intervention | None]:
    """None, then interventions whose factors are unlike one another's."""
    gen = torch.Generator().manual_seed(0)
    return [None, *(synthetic_intervention(model, gen, low=0.25) for _ in range(count - 1))]


def _decode_staggered(model: torch.nn.Module, rows: list[DecodeRow]) -> None:
    """One row joins per step; rows leave as they finish (their token limits differ)."""
    batch = DecodeBatch(model, stops=set())
    waiting = list(rows)
    while waiting or batch.rows:
        if waiting:
            batch.join([waiting.pop(0)])
            batch.drop_finished()
        if batch.rows:
            batch.step()
            batch.drop_finished()


def _check_rows_alone_and_together(model: torch.nn.Module, tokenizer, holder: list[_Watch], new_tokens: int) -> None:
    units = discover_units(model)
    holder.append(_Watch(unit=units[len(units) // 2]))
    handles = _install(holder, model)
    try:
        interventions = _interventions(model, 3)
        specs = [(prompt, interventions[i % 3], new_tokens - i) for i, prompt in enumerate(PROMPTS + PROMPTS[::-1])]
        specs = [(p + " " * i, iv, n) for i, (p, iv, n) in enumerate(specs)]  # every prompt its own

        def rows() -> list[DecodeRow]:
            settings = SamplingSettings(do_sample=True, temperature=1.0, top_p=0.9)
            return [
                DecodeRow(encode(tokenizer, [p])[0], settings.with_(max_new_tokens=n), seed=7, intervention=iv)
                for p, iv, n in specs
            ]

        alone = rows()
        for row in alone:
            _decode_staggered(model, [row])
        together = rows()
        _decode_staggered(model, together)
        watch = holder[0]
        for (_, intervention, _), solo, joint in zip(specs, alone, together, strict=True):
            assert joint.tokens == solo.tokens
            factors = torch.ones(1) if intervention is None else intervention.factors()[watch.unit].float()
            assert watch.outputs[id(joint)], "the watch saw the row"
            for got, plain in watch.outputs[id(joint)]:
                torch.testing.assert_close(got, plain * factors, rtol=1e-5, atol=1e-6)
            assert len(watch.logits[id(joint)]) == len(watch.logits[id(solo)])
            for a, b in zip(watch.logits[id(solo)], watch.logits[id(joint)], strict=True):
                assert torch.equal(a, b), "a row's logits changed with the rows beside it"
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_rows_get_their_own_factors_and_logits_while_others_join_and_leave(watch, name: str) -> None:
    loaded = load_model(name)  # as the app loads it: products packed, attention per row
    _check_rows_alone_and_together(loaded.model, loaded.tokenizer, watch, new_tokens=10)


def test_the_real_model_gives_a_row_the_same_logits_alone_and_in_a_changing_batch(watch, real) -> None:
    assert real.model.config._attn_implementation == ROW_ATTENTION
    _check_rows_alone_and_together(real.model, real.tokenizer, watch, new_tokens=12)


def test_row_extents_group_rows_by_their_real_keys_and_queries() -> None:
    left_padded = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    mask = (left_padded[:, None, :] & causal[None])[:, None]
    assert row_extents(mask, 3, 4, 4) == [(2, 4, 2, 4, [0, 2]), (0, 4, 0, 4, [1])]
    assert row_extents(None, 2, 1, 5) == [(0, 5, 0, 1, [0, 1])]
    right_padded = left_padded.flip(1)  # a collection's texts: the padding (and its queries) on the right
    mask = (right_padded[:, None, :] & causal[None])[:, None]
    assert row_extents(mask, 3, 4, 4) == [(0, 2, 0, 2, [0, 2]), (0, 4, 0, 4, [1])]


def test_row_attention_matches_plain_attention_on_the_real_rows(tiny) -> None:
    model = tiny.model
    ids = [encode(tiny.tokenizer, [p])[0] for p in PROMPTS]
    from aura_core.base.batching import pad_left

    input_ids, mask = pad_left(ids, tiny.tokenizer.pad_token_id, torch.device("cpu"))
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    with torch.inference_mode():
        ours = model(input_ids=input_ids, attention_mask=mask, position_ids=positions).logits
        model.set_attn_implementation("sdpa")
        try:
            plain = model(input_ids=input_ids, attention_mask=mask, position_ids=positions).logits
        finally:
            model.set_attn_implementation(ROW_ATTENTION)
    real = mask.bool()
    torch.testing.assert_close(ours[real], plain[real], rtol=1e-4, atol=1e-4)


def test_a_model_with_its_own_attention_is_left_alone() -> None:
    from aura_core.model.row_attention import use_row_attention

    assert use_row_attention(torch.nn.Linear(2, 2)) is False


def test_a_set_of_rows_that_comes_back_finds_its_plan_and_a_new_set_gets_its_own() -> None:
    loaded = load_model("tiny-llama")
    (aura,) = [iv for iv in _interventions(loaded.model, 2) if iv is not None]
    batch = DecodeBatch(loaded.model, stops=set())
    short, long = SamplingSettings(max_new_tokens=2, do_sample=False), SamplingSettings(max_new_tokens=9, do_sample=False)
    batch.join([DecodeRow([65, 66], long, intervention=aura), DecodeRow([67], short)])
    first = batch.plan()
    assert first is not None
    while len(batch) == 2:
        batch.step()
        batch.drop_finished()
    alone = batch.plan()
    assert alone is not first and alone is not None and alone.scale[next(iter(alone.scale))].ndim == 1
    batch.join([DecodeRow([68], short)])  # the same interventions, row for row, as before
    assert batch.plan() is first
    other = aura.with_strength(0.5)
    batch.join([DecodeRow([69], short, intervention=other)])
    assert batch.plan() is not first
