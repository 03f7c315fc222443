"""Exact Mann-Whitney AUROC for every unit at once.

Ties count one half, so the result equals ``sklearn.metrics.roc_auc_score`` to float64
precision. On CPU the work is one SIMD sort of 64-bit keys per chunk of units (numpy): each
key holds a float32 score in its high word and the text's label in its low word. On a GPU it
is one torch sort with average ranks.

>>> import torch
>>> scores = torch.tensor([[0.1, 5.0], [0.4, 5.0], [0.35, 5.0], [0.8, 5.0]])
>>> auroc(scores, torch.tensor([0, 0, 1, 1])).tolist()
[0.75, 0.5]
"""

from __future__ import annotations

import numpy as np
import torch

from aura_core.errors import DataError

__all__ = ["auroc", "auroc_reference_torch"]

_CHUNK_ENTRIES = 1 << 17  # 1 MiB of keys per chunk: the chunk and its temporaries stay in L2
_EXACT_FLOAT32_TEXTS = 5000  # rank sums Σ positions < 2**24 stay exact in float32 up to here
_INT64_MAGNITUDE = np.int64(0x7FFF_FFFF_FFFF_FFFF)


def auroc(
    scores: torch.Tensor, labels: torch.Tensor, *, chunk_units: int | None = None, force_torch: bool = False
) -> torch.Tensor:
    """AUROC of each column of ``scores`` (texts × units) against binary ``labels`` (texts,).

    Returns a float64 tensor (units,) on the scores' device. ``chunk_units`` bounds memory
    (by default about 2**17 entries per chunk). Scores that float32 cannot hold exactly
    (float64 with more precision, integers) take the torch path, which is exact for any dtype.

    >>> auroc(torch.tensor([[1.0], [2.0], [2.0]]), torch.tensor([0, 1, 0])).tolist()
    [0.75]
    """
    if scores.ndim == 1:
        scores = scores[:, None]
    if scores.ndim != 2 or labels.ndim != 1 or scores.shape[0] != labels.shape[0]:
        raise DataError(f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)} do not line up")
    positive = labels.to(scores.device).bool()
    n_pos = int(positive.sum())
    n_texts = int(labels.shape[0])
    n_neg = n_texts - n_pos
    if n_pos == 0 or n_neg == 0:
        raise DataError("AUROC needs both classes: the labels hold only one")
    n_units = scores.shape[1]
    if chunk_units is None:
        chunk_units = max(1, _CHUNK_ENTRIES // max(n_texts, 1))
    exact32 = _as_float32(scores) if scores.device.type == "cpu" and not force_torch else None
    if exact32 is not None:
        values = _auroc_numpy(exact32.detach().numpy(), positive.numpy(), n_pos, n_neg, chunk_units)
        return torch.from_numpy(values)
    result = torch.empty(n_units, dtype=torch.float64, device=scores.device)
    for start in range(0, n_units, chunk_units):
        block = scores[:, start : start + chunk_units]
        result[start : start + block.shape[1]] = _auroc_block(block, positive, n_pos, n_neg)
    return result


def auroc_reference_torch(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The torch path (average ranks via cummax/cummin), as used on GPUs; kept equal to the CPU path.

    >>> auroc_reference_torch(torch.tensor([[1.0], [2.0], [2.0]]), torch.tensor([0, 1, 0])).tolist()
    [0.75]
    """
    return auroc(scores, labels, force_torch=True)


def _as_float32(scores: torch.Tensor) -> torch.Tensor | None:
    """``scores`` as float32 when that keeps every value exactly, else None."""
    if scores.dtype == torch.float32:
        return scores
    if scores.dtype in (torch.float16, torch.bfloat16):
        return scores.float()
    if scores.dtype == torch.float64:
        narrowed = scores.float()
        return narrowed if torch.equal(narrowed.double(), scores) else None
    return None


def _denormals_are_zero() -> bool:
    """Whether this thread compares denormal floats as zero (``torch.set_flush_denormal(True)``)."""
    return bool(np.float64(5e-324) == 0.0)


def _auroc_numpy(texts_by_units: np.ndarray, positive: np.ndarray, n_pos: int, n_neg: int, chunk_units: int) -> np.ndarray:
    """AUROC of each column of a float32 (texts, units) array.

    Each entry becomes a 64-bit key: the float32 bits (``-0.0`` made ``+0.0``) in the high word,
    the label in the low word (0.0 or 1.0 as float32 bits). Read as float64, the keys sort by
    score, and within a group of equal scores by label: negatives first for scores >= 0,
    positives first for scores < 0 (a larger low word is a larger magnitude). So Σ over
    positives of their sorted position counts tied pairs as one above zero and as none below
    it; the tied rows are then corrected to count each tied pair one half.
    """
    n_texts, n_units = texts_by_units.shape
    exact = np.float32 if n_texts <= _EXACT_FLOAT32_TEXTS else np.float64
    positions = np.arange(n_texts, dtype=exact)
    low_words = np.where(positive, np.float32(1.0), np.float32(0.0))
    rows = min(chunk_units, n_units)
    keys = np.empty((rows, n_texts), dtype=np.float64)
    words = keys.view(np.float32)  # (rows, 2 * texts): low word, high word, low word, ...
    sorted_labels = np.empty((rows, n_texts), dtype=exact)
    equal_next = np.empty((rows, max(n_texts - 1, 0)), dtype=bool)
    daz = _denormals_are_zero()
    result = np.empty(n_units, dtype=np.float64)
    for start in range(0, n_units, rows):
        block = texts_by_units[:, start : start + rows].T
        width = block.shape[0]
        key, value, label = keys[:width], words[:width, 1::2], words[:width, 0::2]
        np.add(block, np.float32(0.0), out=value)  # the transposed copy; + 0.0 turns -0.0 into +0.0
        np.copyto(label, low_words[None, :])
        _sort_rows(key, daz)
        lab = sorted_labels[:width]
        np.copyto(lab, label)
        # Σ over positives of their position = Σ of (negatives sorted before each) + n_pos (n_pos - 1) / 2.
        u_statistic = (lab @ positions).astype(np.float64) - n_pos * (n_pos - 1) / 2.0
        tie = equal_next[:width]
        bits = value.view(np.uint32)  # bit patterns compare exactly even where denormals count as zero
        np.equal(bits[:, 1:], bits[:, :-1], out=tie)
        tied_rows = np.flatnonzero(tie.any(axis=1))
        if tied_rows.size:
            u_statistic[tied_rows] -= 0.5 * _signed_tied_pairs(tie[tied_rows], value[tied_rows], lab[tied_rows])
        result[start : start + width] = u_statistic / (n_pos * n_neg)
    return result


def _sort_rows(keys: np.ndarray, daz: bool) -> None:
    """Sort each row of float64 ``keys`` in place by value, as bit patterns.

    Keys of zero scores are denormal floats: where the thread treats denormals as zero the
    float sort would tie them, so it sorts the equivalent signed integers instead (slower).
    """
    if not daz:
        keys.sort(axis=1)
        return
    as_int = keys.view(np.int64)
    as_int ^= (as_int >> 63) & _INT64_MAGNITUDE  # negative floats: flip the magnitude, so integer order = float order
    as_int.sort(axis=1)
    as_int ^= (as_int >> 63) & _INT64_MAGNITUDE


def _signed_tied_pairs(equal_next: np.ndarray, value: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Per row: Σ over groups of equal values of ±(positives × negatives), − for groups below zero.

    ``equal_next[r, j]`` says sorted entries j and j + 1 of row r are equal; ``value`` holds
    the sorted values and ``label`` the sorted labels (0 or 1).

    >>> eq = np.array([[True, False, False]])
    >>> _signed_tied_pairs(eq, np.array([[1.0, 1.0, 2.0, 3.0]]), np.array([[0.0, 1.0, 1.0, 0.0]])).tolist()
    [1.0]
    """
    n_rows, n_texts = label.shape
    edges = np.zeros((n_rows, n_texts + 1), dtype=np.int8)
    edges[:, 1:n_texts] = equal_next
    # Along a row the steps alternate: +1 at a group's first member, -1 at its last member.
    group_rows, bounds = np.nonzero(np.diff(edges, axis=1))
    group_rows, first, last = group_rows[0::2], bounds[0::2], bounds[1::2]
    seen = np.cumsum(label, axis=1, dtype=np.float64)
    positives = seen[group_rows, last] - np.where(first > 0, seen[group_rows, np.maximum(first - 1, 0)], 0.0)
    negatives = (last - first + 1) - positives
    sign = np.where(np.signbit(value[group_rows, first]), -1.0, 1.0)
    return np.bincount(group_rows, weights=sign * positives * negatives, minlength=n_rows)


def _auroc_block(block: torch.Tensor, positive: torch.Tensor, n_pos: int, n_neg: int) -> torch.Tensor:
    n_texts, width = block.shape
    values, order = torch.sort(block, dim=0)
    # A tie group spans [first, last]; its members share the average rank (first + last) / 2 + 1.
    rows = torch.arange(n_texts, device=block.device).unsqueeze(1).expand(n_texts, width)
    starts_group = torch.ones_like(values, dtype=torch.bool)
    starts_group[1:] = values[1:] != values[:-1]
    ends_group = torch.ones_like(values, dtype=torch.bool)
    ends_group[:-1] = starts_group[1:]
    first = torch.where(starts_group, rows, 0).cummax(dim=0).values
    last_rev = torch.where(ends_group, rows, n_texts).flip(0).cummin(dim=0).values.flip(0)
    ranks = (first + last_rev).to(torch.float64) / 2.0 + 1.0
    positive_sorted = positive[order]
    rank_sum = (ranks * positive_sorted).sum(dim=0)
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
