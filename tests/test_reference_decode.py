"""The batched decode loop against the 30-line reference: the same tokens for every row, greedy or sampled."""

from __future__ import annotations

import pytest
import torch

from aura_core.base.batching import encode
from aura_core.method.fit import synthetic_intervention
from aura_core.model.loading import load_model
from aura_core.runtime.decoding import DecodeRow, decode_all
from aura_core.runtime.reference import reference_decode
from aura_core.runtime.sampling import SAMPLING_PRESETS, SamplingSettings

PROMPTS = ["You are such a", "The weather today is", "I can't stand people who", "My favourite food is, in the end,"]


def _check(model: torch.nn.Module, tokenizer, new_tokens: int) -> None:
    aura = synthetic_intervention(model, torch.Generator().manual_seed(1), low=0.3)
    settings = [
        SamplingSettings(max_new_tokens=new_tokens, do_sample=False),
        SAMPLING_PRESETS["demo"].with_(max_new_tokens=new_tokens),
        SAMPLING_PRESETS["followup"].with_(max_new_tokens=new_tokens),
    ]
    specs = [(p, s, iv, 11 + i) for i, p in enumerate(PROMPTS) for s in settings for iv in (None, aura)]
    rows = [DecodeRow(encode(tokenizer, [p])[0], s, seed=seed, intervention=iv) for p, s, iv, seed in specs]
    decode_all(model, rows, max_rows=7, stops=set())  # rows join as others finish: the batch changes often
    for row, (_, settings_, intervention, seed) in zip(rows, specs, strict=True):
        assert row.tokens == reference_decode(model, row.prompt_ids, settings_, seed=seed, intervention=intervention)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_the_batched_loop_gives_each_row_the_reference_tokens(name: str) -> None:
    loaded = load_model(name)
    _check(loaded.model, loaded.tokenizer, new_tokens=12)


def test_the_batched_loop_gives_each_row_the_reference_tokens_on_the_real_model(real) -> None:
    _check(real.model, real.tokenizer, new_tokens=10)
