"""Tokenising and length-sorted, padded batches shared by collection, perplexity and tests.

>>> length_sorted_batches([3, 9, 1, 8], 2)
[[1, 3], [0, 2]]
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Protocol

import torch

from aura_core.errors import DataError

__all__ = ["Tokenizer", "encode", "length_sorted_batches", "pad_left", "pad_right", "padding_fraction", "tokenize_texts"]


class Tokenizer(Protocol):
    """What the project needs of a Hugging Face tokenizer (fast or slow)."""

    @property
    def pad_token_id(self) -> Any: ...

    @property
    def eos_token_id(self) -> Any: ...

    @property
    def bos_token_id(self) -> Any: ...

    def __call__(self, text: Any, *args: Any, **kwargs: Any) -> Any: ...

    def decode(self, token_ids: Any, *args: Any, **kwargs: Any) -> Any: ...

    def batch_decode(self, sequences: Any, *args: Any, **kwargs: Any) -> Any: ...

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> Any: ...


_ENCODE_LOCKS: weakref.WeakKeyDictionary[object, threading.Lock] = weakref.WeakKeyDictionary()
_ENCODE_GUARD = threading.Lock()


def encode(tokenizer: Tokenizer, texts: list[str], *, add_special_tokens: bool = True) -> list[list[int]]:
    """Token ids of each text, never padded or truncated by the tokenizer.

    A fast tokenizer keeps padding and truncation as state of its shared Rust object, and two
    threads changing it at once break each other. The project pads itself (``pad_left``,
    ``pad_right``) and calls the tokenizer only here, one call at a time per tokenizer.

    >>> from aura_core.model.tiny import byte_tokenizer
    >>> encode(byte_tokenizer(), ["hi", "a"])
    [[71, 72], [64]]
    """
    with _ENCODE_GUARD:
        lock = _ENCODE_LOCKS.setdefault(tokenizer, threading.Lock())
    with lock:
        encoded = tokenizer(list(texts), add_special_tokens=add_special_tokens, padding=False, truncation=False)
    return [list(ids) for ids in encoded["input_ids"]]


def tokenize_texts(tokenizer: Tokenizer, texts: list[str], max_tokens: int, *, drop_bos: bool = True) -> list[list[int]]:
    """Token ids of each text, truncated to ``max_tokens``.

    A leading BOS is dropped by default: it is the same token in every text and often
    carries very large activations, so it would set the max of many units to one constant
    and hide what the text itself does.
    """
    if max_tokens < 1:
        raise DataError("max_tokens must be at least 1")
    encoded = _encode_heads(tokenizer, texts, max_tokens + _MARGIN_TOKENS)
    bos = getattr(tokenizer, "bos_token_id", None)
    fallback = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    result = []
    for ids in encoded:
        if drop_bos and bos is not None and len(ids) > 1 and ids[0] == bos:
            ids = ids[1:]
        result.append(list(ids[:max_tokens]) or [fallback])
    return result


_MARGIN_TOKENS = 16  # tokens past the budget, so a cut in the last word cannot change the kept ones
_CHARS_PER_TOKEN = 32  # a first cut; a text whose head holds too few tokens is cut again, twice as long


def _encode_heads(tokenizer: Tokenizer, texts: list[str], tokens: int) -> list[list[int]]:
    """At least the first ``tokens`` ids of every text, without tokenizing more than its head.

    A 50 MB text tokenized whole takes gigabytes; its first 64 tokens need a few kilobytes.
    Each text is cut to ``tokens × 32`` characters and cut again twice as long while its head
    gives fewer ids than asked for, so the ids kept are those of the whole text.
    """
    result: list[list[int]] = [[] for _ in texts]
    pending = list(range(len(texts)))
    chars = tokens * _CHARS_PER_TOKEN
    while pending:
        heads = [texts[i][:chars] for i in pending]
        again = []
        for i, head, ids in zip(pending, heads, encode(tokenizer, heads), strict=True):
            if len(ids) >= tokens or len(head) == len(texts[i]):
                result[i] = ids
            else:
                again.append(i)
        pending, chars = again, chars * 2
    return result


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), to cut padding."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def padding_fraction(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of the padded batch positions that are padding.

    >>> round(padding_fraction([3, 1], [[0, 1]]), 4)
    0.3333
    """
    padded = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)
    return 1.0 - sum(lengths) / max(1, padded)


def pad_right(
    batch_ids: list[list[int]], pad_id: int | None, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` padded on the right.

    Right padding keeps every real token at its natural position, and causal attention never
    lets a real token see the padding after it: per-token outputs equal unbatched ones. So the
    pad id itself never matters; a tokenizer without one pads with id 0.
    """
    width = max(len(ids) for ids in batch_ids)
    input_ids = torch.full((len(batch_ids), width), 0 if pad_id is None else pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch_ids), width), dtype=torch.long)
    for row, ids in enumerate(batch_ids):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[row, : len(ids)] = 1
    return input_ids.to(device), attention.to(device)


def pad_left(
    batch_ids: list[list[int]], pad_id: int | None, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` padded on the left, as generation needs.

    >>> pad_left([[5, 6], [7]], 0)[0].tolist()
    [[5, 6], [0, 7]]
    """
    width = max(len(ids) for ids in batch_ids)
    input_ids = torch.full((len(batch_ids), width), 0 if pad_id is None else pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch_ids), width), dtype=torch.long)
    for row, ids in enumerate(batch_ids):
        if ids:
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids) :] = 1
    return input_ids.to(device), attention.to(device)
