"""Exact Mann-Whitney AUROC for every unit at once.

Ties count one half, so the result equals ``sklearn.metrics.roc_auc_score`` to float64
precision. On CPU the work is one SIMD value sort per chunk of units (numpy) with each label
hidden in the lowest mantissa bit of the float64 copy; on a GPU it is one torch sort.

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


def auroc(
    scores: torch.Tensor, labels: torch.Tensor, *, chunk_units: int | None = None, force_torch: bool = False
) -> torch.Tensor:
    """AUROC of each column of ``scores`` (texts × units) against binary ``labels`` (texts,).

    Returns a float64 tensor (units,) on the scores' device. ``chunk_units`` bounds memory
    (by default about 2**19 entries per chunk, which stay in cache).
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
        chunk_units = max(1, (1 << 19) // max(n_texts, 1))
    on_cpu = scores.device.type == "cpu" and not force_torch
    result = torch.empty(n_units, dtype=torch.float64, device=scores.device)
    labels_np = positive.cpu().numpy() if on_cpu else None
    for start in range(0, n_units, chunk_units):
        block = scores[:, start : start + chunk_units]
        if on_cpu:
            values = _auroc_numpy(block.T.numpy(), labels_np, n_pos, n_neg)
            result[start : start + block.shape[1]] = torch.from_numpy(values)
        else:
            result[start : start + block.shape[1]] = _auroc_block(block, positive, n_pos, n_neg)
    return result


def auroc_reference_torch(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The torch path (average ranks via cummax/cummin), as used on GPUs; kept equal to the CPU path."""
    return auroc(scores, labels, force_torch=True)


def _auroc_numpy(units_by_texts: np.ndarray, positive: np.ndarray, n_pos: int, n_neg: int) -> np.ndarray:
    """AUROC of each row of a (units, texts) array.

    The float32 scores are widened to float64, whose 29 extra mantissa bits are zero, and the
    label goes into the lowest bit: distinct values keep their order, and within a group of
    equal values every negative sorts before every positive (the bit is flipped for negative
    numbers, whose magnitude grows the other way). A value-only sort then carries the labels.
    """
    width = units_by_texts.shape[1]
    widened = units_by_texts.astype(np.float64, order="C")
    widened += 0.0  # turns -0.0 into +0.0, so zeros of both signs tie
    bits = widened.view(np.uint64)
    np.bitwise_or(bits, positive[None, :] != np.signbit(widened), out=bits, casting="unsafe")
    widened.sort(axis=1)
    as_bytes = bits.view(np.uint8)  # little-endian: byte 0 holds the label bit, byte 7 the sign
    label = (as_bytes[:, 0::8] & 1) ^ (as_bytes[:, 7::8] >> 7)
    # Σ over positives of the negatives at or below it = Σ positions of positives − Σ positives before each.
    exact = np.float32 if width <= 5000 else np.float64  # float32 sums stay exact below 2**24
    positions = label.astype(exact) @ np.arange(width, dtype=exact)
    u_statistic = positions.astype(np.float64) - n_pos * (n_pos - 1) / 2.0
    same = (bits[:, 1:] ^ bits[:, :-1]) <= 1  # equal up to the label bit: a tie
    tied_rows = np.nonzero(same.any(axis=1))[0]
    if tied_rows.size:
        # Tied pairs count one half, not one: subtract half of Σ_groups positives·negatives.
        value = bits[tied_rows] & ~np.uint64(1)
        u_statistic[tied_rows] -= 0.5 * _tied_pairs(value, label[tied_rows])
    return u_statistic / (n_pos * n_neg)


def _tied_pairs(value: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Per row: Σ over groups of equal values of (positives in group) × (negatives in group)."""
    rows = value.shape[0]
    starts = np.ones_like(value, dtype=bool)
    starts[:, 1:] = value[:, 1:] != value[:, :-1]
    group = np.cumsum(starts.ravel()) - 1  # groups never span rows: each row starts a group
    n_groups = int(group[-1]) + 1
    positives = np.bincount(group, weights=label.ravel().astype(np.float64), minlength=n_groups)
    sizes = np.bincount(group, minlength=n_groups).astype(np.float64)
    row_of_group = np.repeat(np.arange(rows), starts.sum(axis=1))
    return np.bincount(row_of_group, weights=positives * (sizes - positives), minlength=rows)


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
