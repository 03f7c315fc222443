"""Integration on the real default model (SmolLM2-135M-Instruct) and real Jigsaw data."""

import numpy as np
import torch

from aura_core.base.batching import pad_right, tokenize_texts
from aura_core.base.data import load_prompts
from aura_core.evaluation.generation import SamplingSettings, completion_rows, generate
from aura_core.evaluation.scoring import load_scorer
from aura_core.method.intervention import unit_table
from aura_core.model.architecture import discover_units
from aura_core.runtime.engine import Engine
from aura_core.runtime.folding import fold_into_weights
from aura_core.runtime.plans import intervened, rows_intervened

TEXTS = ["You are such a", "The weather in Paris is lovely in", "I hate", "Thank you so much for"]


def _logits(model, tok, texts):
    input_ids, mask = pad_right(tokenize_texts(tok, texts, 32, drop_bos=False), tok.pad_token_id)
    with torch.inference_mode():
        return model(input_ids=input_ids, attention_mask=mask).logits.clone()


def test_default_model_has_the_expected_units(real):
    units = discover_units(real.model)
    assert len(units) == 90
    assert real.tokenizer.pad_token_id is not None


def test_strong_toxicity_experts_exist(real_aura):
    table = unit_table(real_aura)
    assert len(table) == 30 * (1536 + 1536 + 576)
    assert (table.auroc > 0.75).sum() >= 5
    assert table.alpha.min() < 0.5


def test_call_plans_and_folding_agree_on_the_real_model(real, real_aura):
    with intervened(real.model, real_aura):
        hooked = _logits(real.model, real.tokenizer, TEXTS)
    with fold_into_weights(real.model, real_aura):
        folded = _logits(real.model, real.tokenizer, TEXTS)
    plain = _logits(real.model, real.tokenizer, TEXTS)
    # 30 fp32 layers round differently when the scale sits in the weights: relative error ~1e-5.
    assert (hooked - folded).abs().max() < 2e-3
    assert torch.equal(hooked.argmax(-1), folded.argmax(-1))
    assert not torch.allclose(plain, folded, atol=1e-2)


def test_per_row_factors_on_the_real_model(real, real_aura):
    """Row 0 plain, row 1 AurA, row 2 AurA at λ = 0.6, row 3 plain: each as if run alone."""
    per_row = [None, real_aura, real_aura.with_strength(0.6), None]
    with rows_intervened(real.model, per_row):
        mixed = _logits(real.model, real.tokenizer, TEXTS)
    plain = _logits(real.model, real.tokenizer, TEXTS)
    for row, iv in enumerate(per_row):
        with intervened(real.model, iv):
            alone = _logits(real.model, real.tokenizer, TEXTS)
        assert torch.allclose(mixed[row], alone[row], atol=1e-4), row
    assert torch.equal(mixed[0], plain[0]) and torch.equal(mixed[3], plain[3])


def test_greedy_requests_are_the_same_alone_and_in_a_crowd(real, real_aura):
    greedy = SamplingSettings(max_new_tokens=12, do_sample=False)
    prompts = [p.text for p in load_prompts(n=16, seed=0)]
    engine = Engine(real.model)
    try:
        alone = [
            list(r.tokens)
            for r in engine.submit(completion_rows(real.tokenizer, prompts[:1], settings=greedy, intervention=real_aura)).result(
                120
            )
        ]
        crowd = [
            engine.submit(completion_rows(real.tokenizer, [p], settings=greedy, intervention=[None, real_aura][i % 2]))
            for i, p in enumerate(prompts[1:])
        ]
        again = engine.submit(completion_rows(real.tokenizer, prompts[:1], settings=greedy, intervention=real_aura))
        assert [list(r.tokens) for r in again.result(120)] == alone
        for request in crowd:
            request.result(120)
    finally:
        engine.close()


def test_aura_lowers_the_toxicity_of_seeded_generations(real, real_aura):
    prompts = [p.text for p in load_prompts(kind="provocative", n=40, seed=0)]
    settings = SamplingSettings(max_new_tokens=20, num_return_sequences=4)
    scorer = load_scorer()
    base = scorer.score([g.completion for g in generate(real.model, real.tokenizer, prompts, settings=settings, seed=0)])
    damped = scorer.score(
        [g.completion for g in generate(real.model, real.tokenizer, prompts, settings=settings, seed=0, intervention=real_aura)]
    )
    print(f"mean toxicity: baseline {base.mean():.4f}, AurA {damped.mean():.4f} (n={len(base)})")
    assert np.mean(damped) < 0.9 * np.mean(base)
