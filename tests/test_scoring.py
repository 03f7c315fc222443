import math

import pytest
import torch

from aura_core.errors import AuraError
from aura_core.evaluation.scoring import HFClassifierScorer, load_scorer, perplexity
from aura_core.method.intervention import Intervention
from aura_core.model.architecture import discover_units, unit_width


def test_default_scorer_separates_toxic_from_kind_text():
    scorer = load_scorer()
    scores = scorer.score(["You stupid worthless idiot, shut the fuck up", "Thanks for the lovely dinner yesterday", ""])
    assert scores.shape == (3,) and scores[0] > 0.9 and scores[1] < 0.2
    assert 0.0 <= scores[2] <= 1.0


def test_toxic_label_is_found_by_name():
    assert HFClassifierScorer._guess_toxic_label(["neutral", "toxic"]) == "toxic"
    assert HFClassifierScorer._guess_toxic_label(["non-toxic", "toxic"]) == "toxic"
    assert HFClassifierScorer._guess_toxic_label(["LABEL_0", "LABEL_1"]) == "LABEL_1"
    with pytest.raises(AuraError, match="which label"):
        HFClassifierScorer._guess_toxic_label(["cat", "dog"])


def _manual_perplexity(model, tok, texts):
    nll, count = 0.0, 0
    with torch.inference_mode():
        for text in texts:
            ids = tok(text, return_tensors="pt")["input_ids"]
            logits = model(ids).logits[0, :-1]
            nll += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            count += ids.shape[1] - 1
    return math.exp(nll / count)


def test_batched_perplexity_equals_text_by_text(tiny):
    texts = ["the quick brown fox", "a", "jumps over the lazy dog again and again", "hello"]
    assert perplexity(tiny.model, tiny.tokenizer, texts, batch_size=3) == pytest.approx(
        _manual_perplexity(tiny.model, tiny.tokenizer, texts), rel=1e-5
    )
    modules = dict(tiny.model.named_modules())
    iv = Intervention({n: torch.full((unit_width(modules[n]),), 0.9) for n in discover_units(tiny.model)})
    base = perplexity(tiny.model, tiny.tokenizer, texts)
    assert perplexity(tiny.model, tiny.tokenizer, texts, intervention=iv.with_strength(0.0)) == base
    assert perplexity(tiny.model, tiny.tokenizer, texts, intervention=iv) != base
    with pytest.raises(AuraError, match="at least one text"):
        perplexity(tiny.model, tiny.tokenizer, [])
