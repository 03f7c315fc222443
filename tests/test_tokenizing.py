"""Texts are tokenized by their heads: a huge text costs what its budget needs, and the ids are the whole text's."""

from __future__ import annotations

import csv

from aura_core.base.batching import encode, tokenize_texts


def _whole(tokenizer, texts: list[str], budget: int) -> list[list[int]]:
    bos = tokenizer.bos_token_id
    out = []
    for ids in encode(tokenizer, texts):
        if bos is not None and len(ids) > 1 and ids[0] == bos:
            ids = ids[1:]
        out.append(ids[:budget] or [tokenizer.eos_token_id])
    return out


def test_heads_give_the_whole_texts_ids_on_real_and_hostile_texts(real, shared_data) -> None:
    with (shared_data / "jigsaw_balanced.csv").open(newline="", encoding="utf-8") as handle:
        texts = [row[0] for _, row in zip(range(400), csv.reader(handle), strict=False)]
    texts += ["a" * 5000, "word " * 3000, "🙂" * 2000, " " * 4000 + "x", "", "x"]
    for budget in (8, 64, 128):
        assert tokenize_texts(real.tokenizer, texts, budget) == _whole(real.tokenizer, texts, budget)


def test_a_text_of_tens_of_megabytes_is_cut_before_it_is_tokenized(real) -> None:
    huge = "you are such a " * 4_000_000  # 60 MB: tokenized whole, it took gigabytes
    (ids,) = tokenize_texts(real.tokenizer, [huge], 64)
    assert ids == _whole(real.tokenizer, [huge[:10_000]], 64)[0]
