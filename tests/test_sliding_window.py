"""The sliding-window decode path (Gemma's local layers) against a plain forward pass over the whole text."""

from __future__ import annotations

import pytest
import torch

from aura_core.model.row_attention import ROW_ATTENTION, use_row_attention
from aura_core.runtime.decoding import DecodeBatch, DecodeRow, decode_all
from aura_core.runtime.sampling import SamplingSettings

WINDOW = 6


@pytest.fixture(scope="module")
def gemma() -> torch.nn.Module:
    """A 2-layer Gemma-3-style model, one sliding layer of ``WINDOW`` positions and one full one."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=WINDOW,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=128,
        initializer_range=0.4,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
    model.eval()
    assert use_row_attention(model) and model.config._attn_implementation == ROW_ATTENTION
    return model


def _reference(model: torch.nn.Module, prompt: list[int], new_tokens: int) -> list[int]:
    """Greedy decoding by a full forward pass over the whole text at every step: no cache, no window bookkeeping."""
    ids = list(prompt)
    with torch.inference_mode():
        for _ in range(new_tokens):
            logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]
            ids.append(int(logits.argmax()))
    return ids[len(prompt) :]


def test_a_row_decodes_past_its_window_as_a_plain_forward_does(gemma: torch.nn.Module) -> None:
    prompt = [5, 9, 17, 3, 22]
    settings = SamplingSettings(max_new_tokens=3 * WINDOW, do_sample=False)
    batch = DecodeBatch(gemma, stops=set())
    assert batch.window == WINDOW
    (row,) = decode_all(gemma, [DecodeRow(prompt, settings)], stops=set())
    assert len(prompt) + len(row.tokens) > 2 * WINDOW, "the text outgrows the window"
    assert row.tokens == _reference(gemma, prompt, 3 * WINDOW)


def test_rows_of_different_lengths_decode_together_within_the_window(gemma: torch.nn.Module) -> None:
    prompts = [[5, 9], [11, 4, 30], [7]]
    settings = SamplingSettings(max_new_tokens=WINDOW - 4, do_sample=False)
    rows = decode_all(gemma, [DecodeRow(p, settings) for p in prompts], stops=set())
    for prompt, row in zip(prompts, rows, strict=True):
        assert row.tokens == _reference(gemma, prompt, WINDOW - 4)


def test_a_sliding_window_batch_takes_rows_only_while_all_fit(gemma: torch.nn.Module) -> None:
    batch = DecodeBatch(gemma, stops=set())
    settings = SamplingSettings(max_new_tokens=2, do_sample=False)
    first = DecodeRow([5, 9], settings)
    assert batch.can_join([first])
    batch.join([first])
    assert batch.can_join([DecodeRow([3], settings)])
    assert not batch.can_join([DecodeRow([3], settings.with_(max_new_tokens=WINDOW))])
