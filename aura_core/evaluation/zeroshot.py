"""Zero-shot last-word prediction on neutral passages (LAMBADA-style): utility beyond perplexity.

Each item is a passage cut just before the last word of one of its sentences; the model gets
it right when greedy decoding gives exactly that word's tokens (every target token is the
argmax after the context and the target tokens before it, as LAMBADA is scored by
``lm-eval``). One forward pass per batch scores all its items; an intervention applies to
those calls only, as in :func:`aura_core.evaluation.scoring.text_nll`. Items of one passage
are correlated, so the interval resamples passages, not items.

>>> items = last_word_items(["The Danube flows east through ten countries to the Black Sea. It rises in Germany."])
>>> [(item.word, item.context[-9:]) for item in items]
[('Sea', 'the Black'), ('Germany', ' rises in')]
>>> accuracy(np.array([True, False, True, True]), np.array([0, 0, 1, 2]))[0]
0.75
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn

from aura_core.base.batching import Tokenizer, encode, length_sorted_batches, pad_right
from aura_core.errors import AuraError
from aura_core.evaluation.scoring import float32_logits
from aura_core.method.intervention import Intervention
from aura_core.method.stats import interval, resample
from aura_core.runtime.inline import INLINE
from aura_core.runtime.plans import intervened
from aura_core.runtime.runner import Runner

__all__ = ["LastWordItem", "accuracy", "accuracy_change", "last_word_hits", "last_word_items"]

# A sentence's last word: letters only, at least 3 of them, after whitespace and before a full stop.
_LAST_WORD = re.compile(r"(?<!\S)([^\W\d_]{3,})\.(?=\s|$)")
MIN_CONTEXT_WORDS = 8
PER_TEXT = 5


@dataclass(frozen=True)
class LastWordItem:
    """A context and the word that follows it (``gap``: the whitespace between them, as in the text)."""

    context: str
    word: str
    text_index: int
    gap: str = " "


def last_word_items(
    texts: list[str], *, per_text: int = PER_TEXT, min_context_words: int = MIN_CONTEXT_WORDS
) -> list[LastWordItem]:
    """Up to ``per_text`` items per text: each sentence-final word with at least ``min_context_words`` words before it.

    >>> [i.word for i in last_word_items(["One two three four five six seven eight nine. Ten eleven."], min_context_words=3)]
    ['nine', 'eleven']
    """
    if per_text < 1 or min_context_words < 1:
        raise AuraError("last-word items need per_text ≥ 1 and min_context_words ≥ 1")
    items = []
    for index, text in enumerate(texts):
        found = 0
        for match in _LAST_WORD.finditer(text):
            if found == per_text:
                break
            context = text[: match.start(1)].rstrip()
            if len(context.split()) < min_context_words:
                continue
            gap = text[len(context) : match.start(1)]
            items.append(LastWordItem(context, match.group(1), index, gap))
            found += 1
    return items


def _item_ids(tokenizer: Tokenizer, items: list[LastWordItem], max_tokens: int) -> list[tuple[list[int], list[int]]]:
    """(context ids, target ids) per item, the context cut on the left to fit ``max_tokens`` in all (a BOS kept)."""
    contexts = encode(tokenizer, [item.context for item in items])
    wholes = encode(tokenizer, [item.context + item.gap + item.word for item in items])
    alone = encode(tokenizer, [item.gap + item.word for item in items], add_special_tokens=False)
    bos = getattr(tokenizer, "bos_token_id", None)
    pairs = []
    for context, whole, fallback in zip(contexts, wholes, alone, strict=True):
        # The target is what the whole text adds to the context's tokens, as lm-eval splits it.
        target = whole[len(context) :] if whole[: len(context)] == context and len(whole) > len(context) else fallback
        target = target[: max_tokens - 1]
        room = max_tokens - len(target)
        head = [context[0]] if bos is not None and context and context[0] == bos else []
        tail = context[len(head) :]
        context = head + tail[max(0, len(tail) - (room - len(head))) :]
        if not context or not target:
            raise AuraError("a last-word item needs a context and a word that tokenize to something")
        pairs.append((context, target))
    return pairs


def last_word_hits(
    model: nn.Module,
    tokenizer: Tokenizer,
    items: list[LastWordItem],
    *,
    max_tokens: int = 128,
    batch_size: int = 8,
    intervention: Intervention | None = None,
    runner: Runner = INLINE,
) -> np.ndarray:
    """Per item: does greedy decoding after its context give exactly its word's tokens?

    Each batch is one unit of work on ``runner``, under ``intervention`` if given.
    """
    if not items:
        raise AuraError("last-word accuracy needs at least one item (passages with sentences of 8 words or more)")
    if max_tokens < 2:
        raise AuraError("last-word prediction needs max_tokens of at least 2")
    pairs = _item_ids(tokenizer, items, max_tokens)
    batches = length_sorted_batches([len(c) + len(t) for c, t in pairs], batch_size)
    device = next(model.parameters()).device
    hits = np.zeros(len(items), dtype=bool)

    def forward(batch: list[int]) -> None:
        input_ids, attention = pad_right([pairs[i][0] + pairs[i][1] for i in batch], tokenizer.pad_token_id, device)
        with intervened(model, intervention), torch.inference_mode():
            guesses = float32_logits(model, input_ids, attention).argmax(dim=-1).cpu()
        for row, i in enumerate(batch):
            context, target = pairs[i]
            # Position p predicts token p + 1: the target's tokens are predicted from len(context) - 1 on.
            predicted = guesses[row, len(context) - 1 : len(context) - 1 + len(target)].tolist()
            hits[i] = predicted == target

    for batch in batches:
        runner.run(partial(forward, batch), priority="bulk")
    return hits


def accuracy(
    hits: np.ndarray, groups: np.ndarray, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Share of hits with a bootstrap interval that resamples groups (passages) with their items.

    >>> accuracy(np.ones(4, bool), np.array([0, 0, 1, 1]))
    (1.0, 1.0, 1.0)
    """
    return accuracy_change(None, hits, groups, n_boot=n_boot, seed=seed, level=level)


def accuracy_change(
    baseline: np.ndarray | None,
    hits: np.ndarray,
    groups: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Accuracy of ``hits`` minus that of ``baseline`` on the same items (paired, passages resampled); no baseline: the accuracy.

    >>> accuracy_change(np.array([True, True]), np.array([True, False]), np.array([0, 1]))[0]
    -0.5
    """
    hits = np.asarray(hits, dtype=np.float64)
    groups = np.asarray(groups)
    base = np.zeros_like(hits) if baseline is None else np.asarray(baseline, dtype=np.float64)
    if hits.ndim != 1 or hits.size == 0 or hits.shape != groups.shape or base.shape != hits.shape:
        raise AuraError("accuracy needs one hit and one group per item, for at least one item")
    labels, index = np.unique(groups, return_inverse=True)
    per_group = np.bincount(index, weights=hits - base, minlength=len(labels))
    sizes = np.bincount(index, minlength=len(labels)).astype(np.float64)
    draws = resample(len(labels), n_boot, seed)
    low, high = interval(per_group[draws].sum(axis=1) / sizes[draws].sum(axis=1), level)
    return float((hits - base).mean()), low, high
