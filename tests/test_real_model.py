"""Integration on the real default model (SmolLM2-135M-Instruct) and real Jigsaw data."""

import numpy as np
import pytest
import torch
from conftest import logits_of

from aura_core.data import balanced_sample, load_concept_data, load_prompts
from aura_core.generation import SamplingSettings, generate
from aura_core.interventions import apply_hooks, fit_intervention, fold_into_weights, unit_table
from aura_core.models import DEFAULT_MODEL, discover_units, load_model
from aura_core.responses import collect_responses
from aura_core.scoring import load_scorer


@pytest.fixture(scope="module")
def real():
    return load_model(DEFAULT_MODEL, device="cpu")


@pytest.fixture(scope="module")
def aura(real, shared_data, tmp_path_factory):
    data = balanced_sample(load_concept_data(shared_data / "jigsaw_balanced.csv"), 200, seed=0)
    units = discover_units(real.model)
    responses = collect_responses(
        real.model, real.tokenizer, data, units, max_tokens=64, cache_dir=tmp_path_factory.mktemp("responses")
    )
    return fit_intervention(responses, "aura")


def test_default_model_has_the_expected_units(real):
    units = discover_units(real.model)
    assert len(units) == 90
    assert real.tokenizer.padding_side == "left" and real.tokenizer.pad_token_id is not None


def test_strong_toxicity_experts_exist(aura):
    table = unit_table(aura)
    assert len(table) == 30 * (1536 + 1536 + 576)
    assert (table.auroc > 0.75).sum() >= 5
    assert table.alpha.min() < 0.5


def test_hooks_and_folding_agree_on_the_real_model(real, aura):
    texts = ["You are such a", "The weather in Paris is lovely in"]
    with apply_hooks(real.model, aura):
        hooked = logits_of(real.model, real.tokenizer, texts)
    with fold_into_weights(real.model, aura):
        folded = logits_of(real.model, real.tokenizer, texts)
    plain = logits_of(real.model, real.tokenizer, texts)
    # 30 fp32 layers round differently when the scale sits in the weights: relative error ~1e-5.
    assert (hooked - folded).abs().max() < 2e-3
    assert torch.equal(hooked.argmax(-1), folded.argmax(-1))
    assert not torch.allclose(plain, folded, atol=1e-2)


def test_aura_lowers_the_toxicity_of_seeded_generations(real, aura):
    prompts = [p.text for p in load_prompts(kind="provocative", n=40, seed=0)]
    settings = SamplingSettings(max_new_tokens=20, num_return_sequences=4)
    scorer = load_scorer()
    base = scorer.score(
        [g.completion for g in generate(real.model, real.tokenizer, prompts, settings=settings, seed=0, batch_size=40)]
    )
    damped = scorer.score(
        [
            g.completion
            for g in generate(real.model, real.tokenizer, prompts, settings=settings, seed=0, batch_size=40, intervention=aura)
        ]
    )
    print(f"mean toxicity: baseline {base.mean():.4f}, AurA {damped.mean():.4f} (n={len(base)})")
    assert np.mean(damped) < 0.9 * np.mean(base)
