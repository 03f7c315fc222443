"""Attention that computes each row as if it were alone: no row's numbers depend on its neighbours.

A batch pads its rows to one width, and a fused attention kernel then rounds a row's sums in
an order set by that width, so the same prompt gives other logits beside a longer one. Here
each row's attention runs on its own real keys and queries only (the padding sliced off on
either side: a generation pads prompts on the left, a collection its texts on the right), with
the mask it would have alone; rows with the same extent share one call. A decode step (one
query that sees all its row's keys) is a few plain operations on views of the cache; a prefill
runs torch's math kernel. A fused CPU kernel rounds a row differently by where in the batch it
sits and which thread takes it; these do not. Together with matrix
products whose kernel does not change with the row count (:mod:`aura_core.model.packed_linear`),
a completion's tokens are then the same alone and in any batch.

:func:`use_row_attention` switches a transformers model to it (registered as ``aura_rows``);
models whose attention is not ``sdpa`` or ``eager`` keep their own.

>>> from aura_core.model.tiny import load_tiny
>>> model = load_tiny("tiny-llama").model
>>> model.config._attn_implementation
'aura_rows'
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["ROW_ATTENTION", "row_extents", "row_invariant_attention", "use_row_attention"]

ROW_ATTENTION = "aura_rows"
_REPLACES = ("sdpa", "eager")


def row_extents(mask: torch.Tensor | None, batch: int, queries: int, keys: int) -> list[tuple[int, int, int, int, list[int]]]:
    """Rows grouped by their real extent: ``(first key, end of keys, first query, end of queries, rows)`` per group.

    ``mask`` is the boolean ``(batch, 1, queries, keys)`` mask a model builds (None: nothing masked).
    A row's real keys are the columns some query sees; the queries are the last ``queries``
    positions, and a query is real where its own position is a real key. So padding on either
    side is cut off: on the left for a generation's prompts, on the right for a collection's texts.

    >>> left = torch.tensor([[0, 1, 1], [1, 1, 1]], dtype=torch.bool)[:, None, None, :]
    >>> row_extents(left, 2, 1, 3)
    [(1, 3, 0, 1, [0]), (0, 3, 0, 1, [1])]
    >>> right = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    >>> causal = torch.ones(3, 3, dtype=torch.bool).tril()
    >>> row_extents((right[:, None, :] & causal[None])[:, None], 2, 3, 3)
    [(0, 2, 0, 2, [0]), (0, 3, 0, 3, [1])]
    """
    if mask is None:
        return [(0, keys, 0, queries, list(range(batch)))]
    seen = mask[:, 0].expand(batch, queries, keys)
    columns = seen.any(dim=1)
    # A query is real where its own column (the last `queries` columns) is a real key and it sees something.
    live_queries = seen.any(dim=2) & columns[:, keys - queries :]
    # First and last True along each row (argmax of a bool finds the first); a row with none is all padding.
    starts = columns.int().argmax(dim=1).tolist()
    ends = (keys - columns.flip(1).int().argmax(dim=1)).tolist()
    firsts = live_queries.int().argmax(dim=1).tolist()
    lasts = (queries - live_queries.flip(1).int().argmax(dim=1)).tolist()
    alive = live_queries.any(dim=1).tolist()
    groups: dict[tuple[int, int, int, int], list[int]] = {}
    for row, (start, end, first, last) in enumerate(zip(starts, ends, firsts, lasts, strict=True)):
        if alive[row]:
            groups.setdefault((int(start), int(end), int(first), int(last)), []).append(row)
    return [(*extent, rows) for extent, rows in groups.items()]


@dataclass(frozen=True)
class _Group:
    """Rows with one extent, as a forward pass uses them: which rows, and whether they need a mask."""

    start: int  # the real keys are start:end, the real queries first:last
    end: int
    first: int
    last: int
    rows: slice | torch.Tensor  # a slice where the rows are contiguous (a view, no copy)
    open: bool  # one query that sees every real key: nothing to mask


class _Extents(threading.local):
    """The last mask's groups, per thread: every layer of one forward pass gets the same mask."""

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None
        self.shape: tuple[int, int, int] = (0, 0, 0)
        self.groups: list[_Group] = []


_LAST = _Extents()


def _groups(mask: torch.Tensor | None, batch: int, queries: int, keys: int, device: torch.device) -> list[_Group]:
    if mask is None or _LAST.mask is not mask or _LAST.shape != (batch, queries, keys):
        groups = []
        for start, end, first, last, rows in row_extents(mask, batch, queries, keys):
            contiguous = rows == list(range(rows[0], rows[0] + len(rows)))
            chosen: slice | torch.Tensor = (
                slice(rows[0], rows[-1] + 1) if contiguous else torch.tensor(rows, device=device, dtype=torch.long)
            )
            open_ = last - first == 1 and (mask is None or bool(mask[rows, :, first:last, start:end].all()))
            groups.append(_Group(start, end, first, last, chosen, open_))
        _LAST.mask, _LAST.shape, _LAST.groups = mask, (batch, queries, keys), groups
    return _LAST.groups


def _rows(values: torch.Tensor, rows: slice | torch.Tensor) -> torch.Tensor:
    return values[rows] if isinstance(rows, slice) else values.index_select(0, rows)


def _one_query(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention of one query per row over all its keys, key/value heads shared without copies.

    The same few operations whatever the batch: a row's numbers are those it gets alone.
    """
    batch, heads, _, dim = q.shape
    shared = k.shape[1]
    grouped = (q * scale).reshape(batch, shared, heads // shared, dim)
    weights = torch.matmul(grouped, k.transpose(-1, -2)).softmax(dim=-1)
    return torch.matmul(weights, v).reshape(batch, heads, 1, v.shape[-1])


def row_invariant_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Scaled dot-product attention, one call per group of rows with the same real extent.

    Takes and returns what transformers' ``sdpa`` attention does: ``(batch, heads, queries,
    head_dim)`` in, ``(batch, queries, heads, head_dim)`` out. Padded queries get zeros.
    """
    batch, heads, queries, dim = query.shape
    keys = key.shape[2]
    if attention_mask is not None and attention_mask.dtype != torch.bool:
        attention_mask = attention_mask > torch.finfo(attention_mask.dtype).min / 2  # an additive mask
    repeat = heads // key.shape[1]
    scale = dim**-0.5 if scaling is None else scaling
    out = query.new_zeros((batch, heads, queries, value.shape[-1]))
    for group in _groups(attention_mask, batch, queries, keys, query.device):
        start, end, first, last = group.start, group.end, group.first, group.last
        q = _rows(query, group.rows)[:, :, first:last]
        k, v = _rows(key, group.rows)[:, :, start:end], _rows(value, group.rows)[:, :, start:end]
        if group.open and not module.training:  # every decode step: the quick path
            result = _one_query(q, k, v, scale)
        else:
            if repeat > 1:
                k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
            mask: torch.Tensor | None
            if attention_mask is None:
                count = last - first
                mask = torch.ones(count, end - start, dtype=torch.bool, device=query.device).tril(end - start - count)
            else:
                mask = _rows(attention_mask, group.rows)[:, :, first:last, start:end]
            with sdpa_kernel(SDPBackend.MATH):
                result = F.scaled_dot_product_attention(
                    q, k, v, attn_mask=mask, dropout_p=dropout if module.training else 0.0, scale=scale
                )
        out[group.rows, :, first:last] = result
    return out.transpose(1, 2).contiguous(), None


def _row_mask(*args: Any, **kwargs: Any) -> torch.Tensor | None:
    """``sdpa``'s boolean mask, always built: a row that alone would skip it must get the same one."""
    from transformers.masking_utils import sdpa_mask

    kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(*args, **kwargs)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ROW_ATTENTION, row_invariant_attention)
    AttentionMaskInterface.register(ROW_ATTENTION, _row_mask)


def use_row_attention(model: nn.Module) -> bool:
    """Switch ``model``'s attention to :func:`row_invariant_attention` in place; whether it did.

    Leaves a model alone whose attention is neither ``sdpa`` nor ``eager`` (flash kernels, a
    model's own code), and one without transformers' attention switch.
    """
    config: Any = getattr(model, "config", None)
    switch = getattr(model, "set_attn_implementation", None)
    if config is None or switch is None:
        return False
    current = getattr(config, "_attn_implementation", None)
    if current == ROW_ATTENTION:
        return True
    if current not in _REPLACES:
        return False
    _register()
    try:
        switch(ROW_ATTENTION)
    except (ValueError, ImportError, AttributeError):
        return False
    return getattr(config, "_attn_implementation", None) == ROW_ATTENTION
