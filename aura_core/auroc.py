"""Exact Mann-Whitney AUROC for every unit at once.

Ties get average ranks, so the result equals ``sklearn.metrics.roc_auc_score`` to float64
precision. Work is one sort per chunk of units, on whatever device the scores live on.

>>> import torch
>>> scores = torch.tensor([[0.1, 5.0], [0.4, 5.0], [0.35, 5.0], [0.8, 5.0]])
>>> auroc(scores, torch.tensor([0, 0, 1, 1])).tolist()
[0.75, 0.5]
"""

from __future__ import annotations

import torch

from aura_core.errors import DataError

__all__ = ["auroc"]


def auroc(scores: torch.Tensor, labels: torch.Tensor, *, chunk_units: int | None = None) -> torch.Tensor:
    """AUROC of each column of ``scores`` (texts × units) against binary ``labels`` (texts,).

    Returns a float64 tensor (units,) on the scores' device. ``chunk_units`` bounds memory
    (by default about 2**26 ranked entries per chunk).
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
        chunk_units = max(1, (1 << 26) // max(n_texts, 1))
    result = torch.empty(n_units, dtype=torch.float64, device=scores.device)
    for start in range(0, n_units, chunk_units):
        block = scores[:, start : start + chunk_units]
        result[start : start + block.shape[1]] = _auroc_block(block, positive, n_pos, n_neg)
    return result


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
