"""Last-word accuracy on a tiny model against a hand count, its items, and its interval."""

import numpy as np
import pytest
import torch

from aura_core.errors import AuraError
from aura_core.evaluation.zeroshot import LastWordItem, accuracy, accuracy_change, last_word_hits, last_word_items
from aura_core.method.intervention import Intervention
from aura_core.model.architecture import discover_units, unit_width
from aura_core.model.tiny import load_tiny
from aura_core.runtime.plans import intervened


def greedy_by_hand(model, tokenizer, item: LastWordItem, intervention=None) -> bool:
    """One item, one token at a time, unbatched: does greedy decoding spell the word?"""
    ids = tokenizer(item.context)["input_ids"]
    target = tokenizer(item.gap + item.word, add_special_tokens=False)["input_ids"]
    for token in target:
        with intervened(model, intervention), torch.inference_mode():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
        if int(logits.argmax()) != token:
            return False
        ids = [*ids, token]
    return True


def items_with_known_hits(model, tokenizer) -> list[LastWordItem]:
    """Items the random model gets right (its own greedy next two tokens as the word), each with a near miss."""
    rng = np.random.default_rng(0)
    contexts = ["".join(rng.choice(list("abcdefghij kl"), size=12)) for _ in range(64)]
    ids = torch.tensor([tokenizer(c)["input_ids"] for c in contexts])  # bytes: all of one length, no padding
    with torch.inference_mode():
        for _ in range(2):  # two greedy steps for all contexts at once
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    items: list[LastWordItem] = []
    for context, row in zip(contexts, ids.tolist(), strict=True):
        word = tokenizer.decode(row[12:])
        if len(word) != 2 or not word.isprintable() or tokenizer(word, add_special_tokens=False)["input_ids"] != row[12:]:
            continue
        items.append(LastWordItem(context, word, len(items), gap=""))
        items.append(LastWordItem(context, word[0] + ("q" if word[1] != "q" else "r"), len(items), gap=""))
        if len(items) >= 8:
            break
    return items


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_batched_hits_equal_a_hand_count(name: str):
    loaded = load_tiny(name)
    model, tokenizer = loaded.model, loaded.tokenizer
    items = items_with_known_hits(model, tokenizer)
    items += last_word_items(
        ["the cat sat on the mat with the dog and the rat. It was a hot day in the old town."], min_context_words=3
    )
    assert len(items) >= 6, "too few contexts with a printable greedy continuation"
    hand = [greedy_by_hand(model, tokenizer, item) for item in items]
    got = last_word_hits(model, tokenizer, items, batch_size=3)
    assert got.tolist() == hand
    assert 0 < sum(hand) < len(hand)  # some hits and some misses, so the comparison can fail
    assert accuracy(got, np.arange(len(items)))[0] == pytest.approx(sum(hand) / len(hand))


def test_an_intervention_applies_to_these_calls_as_by_hand():
    loaded = load_tiny("tiny-llama")
    model, tokenizer = loaded.model, loaded.tokenizer
    items = items_with_known_hits(model, tokenizer)
    modules = dict(model.named_modules())
    strong = Intervention({n: torch.full((unit_width(modules[n]),), 0.99) for n in discover_units(model)})  # α = 0.02
    hand = [greedy_by_hand(model, tokenizer, item, strong) for item in items]
    assert last_word_hits(model, tokenizer, items, intervention=strong).tolist() == hand
    assert last_word_hits(model, tokenizer, items).tolist() == [greedy_by_hand(model, tokenizer, item) for item in items]
    assert hand != [greedy_by_hand(model, tokenizer, item) for item in items]  # the intervention changes some answer


def test_items_are_sentence_final_words_with_enough_context():
    text = "One two three four five six seven eight nine. Ten eleven twelve 2019. Dr. Who is here now."
    items = last_word_items([text, "Too short."], min_context_words=8)
    assert [(i.word, i.text_index) for i in items] == [("nine", 0), ("now", 0)]
    assert items[0].context == "One two three four five six seven eight" and items[0].gap == " "
    assert len(last_word_items([text], per_text=1, min_context_words=8)) == 1


def test_context_is_cut_on_the_left_to_the_budget():
    loaded = load_tiny("tiny-gpt2")
    item = LastWordItem("x" * 500, "word", 0)
    hits = last_word_hits(loaded.model, loaded.tokenizer, [item], max_tokens=16)
    assert hits.shape == (1,)
    with pytest.raises(AuraError):
        last_word_hits(loaded.model, loaded.tokenizer, [])


def test_the_interval_resamples_passages_and_the_change_is_paired():
    hits = np.array([1, 1, 0, 0, 1, 0], bool)
    groups = np.array([0, 0, 1, 1, 2, 2])
    point, low, high = accuracy(hits, groups, n_boot=2000)
    assert point == pytest.approx(0.5) and low < point < high
    # Per passage the shares are 1, 0 and ½: no resample of whole passages can fall outside [0, 1].
    assert 0.0 <= low and high <= 1.0
    same = accuracy_change(hits, hits, groups)
    assert same == (0.0, 0.0, 0.0)
    worse = accuracy_change(hits, np.zeros(6, bool), groups)
    assert worse[0] == pytest.approx(-0.5) and worse[1] < -0.5 < worse[2] <= 0.0  # passage 1 lost nothing
    with pytest.raises(AuraError):
        accuracy(np.array([]), np.array([]))
