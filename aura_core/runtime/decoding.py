"""A lean decode loop: one batch of rows, each with its own intervention, settings and random stream.

Rows join the running batch at any step (their prompts are prefilled, then their key/value
cache is merged in, padded on the left) and leave it when they finish, continuous-batching
style. Interventions are per row (a row of factors per sequence), so a baseline and its
intervened twin decode side by side in one forward pass.

>>> from aura_core.model.tiny import load_tiny
>>> tiny = load_tiny("tiny-llama")
>>> row = DecodeRow([72, 105], SamplingSettings(max_new_tokens=3, do_sample=False))
>>> decode_all(tiny.model, [row])[0].tokens.__len__()
3
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from aura_core.base.batching import pad_left
from aura_core.errors import AuraError
from aura_core.method.intervention import Intervention
from aura_core.model.architecture import context_length, sliding_window
from aura_core.runtime.hooks import CallPlan, call_plan
from aura_core.runtime.plans import row_plan
from aura_core.runtime.sampling import SamplingSettings, next_tokens, row_generator
from aura_core.runtime.scheduler import Limits, Waiting, schedule

__all__ = ["DecodeBatch", "DecodeRow", "decode_all", "stop_ids"]


@dataclass(eq=False)
class DecodeRow:
    """One sequence to generate: its prompt ids, sampling settings, random stream and intervention.

    ``on_token(row)`` is called after each new token (and once more when the row finishes);
    if it raises, the row stops and keeps the error in ``error``, and the other rows go on.
    """

    prompt_ids: list[int]
    settings: SamplingSettings
    seed: int = 0
    intervention: Intervention | None = None
    on_token: Callable[[DecodeRow], None] | None = None
    tokens: list[int] = field(default_factory=list)
    done: bool = False
    cancelled: bool = False
    generator: torch.Generator | None = None
    error: BaseException | None = None

    def __post_init__(self) -> None:
        if not self.prompt_ids:
            raise AuraError("a prompt needs at least one token")


_PLANS_KEPT = 4
_MISSING = object()


def stop_ids(model: nn.Module) -> set[int]:
    """The end-of-sequence ids the model's generation config names (none: run to the token limit)."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        return set()
    return {int(eos)} if isinstance(eos, int) else {int(i) for i in eos}


def _cache_layers(cache: object) -> list[Any]:
    layers = getattr(cache, "layers", None)
    if not isinstance(layers, list):
        raise AuraError(f"cannot join rows into a cache of type {type(cache).__name__}")
    return layers


class DecodeBatch:
    """Rows being decoded together, with their key/value cache and attention mask."""

    def __init__(self, model: nn.Module, *, stops: set[int] | None = None) -> None:
        # Held weakly: a batch (and the engine that owns one) must not keep an evicted model alive.
        self._model = weakref.ref(model)
        self.device = next(model.parameters()).device
        self.stops = stop_ids(model) if stops is None else stops
        self.rows: list[DecodeRow] = []
        self.cache: object | None = None
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)
        self.positions = torch.zeros(0, dtype=torch.long, device=self.device)
        self.last = torch.zeros(0, dtype=torch.long, device=self.device)
        self._plan: CallPlan | None = None
        self._plan_stale = True
        self._plans: dict[tuple[Intervention | None, ...], CallPlan | object | None] = {}
        self.window = sliding_window(model)
        self.context = context_length(model)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def model(self) -> nn.Module:
        model = self._model()
        if model is None:
            raise AuraError("the model of this batch is gone")
        return model

    @property
    def width(self) -> int:
        """Positions held in the cache per row (padding included)."""
        return int(self.mask.shape[1])

    def tokens_held(self) -> int:
        return len(self.rows) * self.width

    def can_join(self, rows: Sequence[DecodeRow]) -> bool:
        """Whether rows may join now: a sliding-window cache takes rows only while everything fits its window."""
        if self.window is None or not self.rows:
            return True
        every = [*self.rows, *rows]
        remaining = max(r.settings.max_new_tokens - len(r.tokens) for r in every)
        peak = max(self.width, *(len(r.prompt_ids) for r in rows)) + remaining
        return peak < self.window

    def plan(self) -> CallPlan | None:
        if self._plan_stale:
            self._plan = self._plan_for([row.intervention for row in self.rows])
            self._plan_stale = False
        return self._plan

    def _plan_for(self, interventions: list[Intervention | None]) -> CallPlan | None:
        """The plan of rows with these interventions, built once per set of rows while it recurs.

        Keyed by the interventions themselves (held, so no id is reused while a plan lives): a
        set of rows that comes back (a row leaves, the next joins with the same intervention)
        finds its plan. A few plans are kept; each holds a row of factors per row and unit.
        """
        key = tuple(interventions)
        plan = self._plans.pop(key, _MISSING)
        if plan is _MISSING:
            plan = row_plan(self.model, interventions)
            while len(self._plans) >= _PLANS_KEPT:
                self._plans.pop(next(iter(self._plans)))
        self._plans[key] = plan  # most recent last
        return plan  # type: ignore[return-value]

    def join(self, rows: Sequence[DecodeRow]) -> None:
        """Prefill ``rows`` (one forward pass), pick their first tokens, and merge them into the batch."""
        if not rows:
            return
        rows = list(rows)
        for row in rows:
            needed = len(row.prompt_ids) + row.settings.max_new_tokens
            if self.context is not None and needed > self.context:
                raise AuraError(
                    f"a prompt of {len(row.prompt_ids)} tokens with {row.settings.max_new_tokens} new tokens passes "
                    f"this model's context of {self.context} tokens: shorten the prompt or ask for fewer tokens"
                )
            if row.generator is None and row.settings.do_sample:
                row.generator = row_generator(row.seed, self.device)
        # Rows with the same prompt and intervention (the samples of one side) share one prefill.
        slot_of: dict[tuple[tuple[int, ...], int], int] = {}
        distinct: list[DecodeRow] = []
        slots: list[int] = []
        for row in rows:
            key = (tuple(row.prompt_ids), id(row.intervention))
            if key not in slot_of:
                slot_of[key] = len(distinct)
                distinct.append(row)
            slots.append(slot_of[key])
        pad_id = getattr(getattr(self.model, "generation_config", None), "pad_token_id", None)
        input_ids, mask = pad_left([row.prompt_ids for row in distinct], pad_id, self.device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        plan = self._plan_for([row.intervention for row in distinct])
        logits, cache = _forward(self.model, input_ids, mask, positions, None, plan)
        if len(distinct) < len(rows):
            copies = torch.tensor(slots, device=self.device)
            logits, mask = logits[copies], mask[copies]
            for layer in _cache_layers(cache):
                layer.keys, layer.values = layer.keys[copies], layer.values[copies]
        chosen = next_tokens(
            logits, [row.settings for row in rows], [row.generator for row in rows], [row.prompt_ids for row in rows]
        )
        self._merge(rows, cache, mask, mask.sum(dim=1), chosen)
        self._record(rows, chosen)

    def _merge(
        self, rows: list[DecodeRow], cache: object, mask: torch.Tensor, positions: torch.Tensor, last: torch.Tensor
    ) -> None:
        self._plan_stale = True
        if not self.rows:
            self.rows, self.cache, self.mask, self.positions, self.last = rows, cache, mask, positions, last
            return
        width = max(self.width, int(mask.shape[1]))
        for layer, extra in zip(_cache_layers(self.cache), _cache_layers(cache), strict=True):
            layer.keys = torch.cat([_pad_time(layer.keys, width), _pad_time(extra.keys, width)])
            layer.values = torch.cat([_pad_time(layer.values, width), _pad_time(extra.values, width)])
            if hasattr(layer, "cumulative_length"):
                layer.cumulative_length = width
        self.mask = torch.cat([_pad_time(self.mask, width), _pad_time(mask, width)])
        self.positions = torch.cat([self.positions, positions])
        self.last = torch.cat([self.last, last])
        self.rows = self.rows + rows

    def step(self) -> None:
        """One token for every row."""
        if not self.rows:
            return
        ones = torch.ones((len(self.rows), 1), dtype=torch.long, device=self.device)
        mask = torch.cat([self.mask, ones], dim=1)
        logits, self.cache = _forward(self.model, self.last[:, None], mask, self.positions[:, None], self.cache, self.plan())
        self.mask = mask
        self.positions = self.positions + 1
        chosen = next_tokens(
            logits,
            [row.settings for row in self.rows],
            [row.generator for row in self.rows],
            [row.prompt_ids + row.tokens if row.settings.repetition_penalty != 1.0 else [] for row in self.rows],
        )
        self.last = chosen
        self._record(self.rows, chosen)

    def _record(self, rows: list[DecodeRow], chosen: torch.Tensor) -> None:
        for row, token in zip(rows, chosen.tolist(), strict=True):
            row.tokens.append(int(token))
            if int(token) in self.stops or len(row.tokens) >= row.settings.max_new_tokens:
                row.done = True
            if row.on_token is not None:
                try:
                    row.on_token(row)
                except Exception as err:  # the caller's callback: its fault ends its own row only
                    row.error, row.cancelled = err, True

    def drop_finished(self) -> list[DecodeRow]:
        """Take finished and cancelled rows out of the batch; returns them."""
        keep = [i for i, row in enumerate(self.rows) if not (row.done or row.cancelled)]
        if len(keep) == len(self.rows):
            return []
        gone = [row for row in self.rows if row.done or row.cancelled]
        if not keep:
            self.rows, self.cache = [], None
            self.mask = self.mask[:0, :0]
            self.positions, self.last = self.positions[:0], self.last[:0]
            self._plan_stale = True
            return gone
        index = torch.tensor(keep, device=self.device)
        self.rows = [self.rows[i] for i in keep]
        self.mask, self.positions, self.last = self.mask[index], self.positions[index], self.last[index]
        # Columns that are padding for every remaining row are dropped from the cache too.
        used = self.mask.any(dim=0).nonzero()
        start = int(used[0]) if used.numel() else self.width
        if self.window is not None and self.width >= self.window - 1:
            start = 0  # a full sliding window has dropped its oldest columns: keep the layout as it is
        for layer in _cache_layers(self.cache):
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]
            if hasattr(layer, "cumulative_length"):
                layer.cumulative_length = self.width - start
        self.mask = self.mask[:, start:]
        self._plan_stale = True
        return gone


def _forward(
    model: nn.Module,
    input_ids: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor,
    cache: object | None,
    plan: CallPlan | None,
) -> tuple[torch.Tensor, object]:
    """Last-position logits and the grown cache of one forward pass under ``plan``."""
    with call_plan(model, plan), torch.inference_mode():
        out = model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    return out.logits[:, -1], out.past_key_values


def _pad_time(values: torch.Tensor, width: int) -> torch.Tensor:
    """Left-pad the time axis (the second to last for caches, the last for masks) with zeros."""
    axis = values.ndim - 2 if values.ndim == 4 else values.ndim - 1
    missing = width - values.shape[axis]
    if missing <= 0:
        return values
    shape = list(values.shape)
    shape[axis] = missing
    return torch.cat([values.new_zeros(shape), values], dim=axis)


def _admitted(batch: DecodeBatch, candidates: list[DecodeRow], limits: Limits) -> list[DecodeRow]:
    """The first of ``candidates`` that join ``batch`` now, as the scheduler decides (one row an entry, in order)."""
    entries = [Waiting(i, "bulk", i, (len(r.prompt_ids) + r.settings.max_new_tokens,)) for i, r in enumerate(candidates)]
    admitted = schedule(
        entries,
        running=len(batch),
        held=batch.tokens_held(),
        limits=limits,
        fits=lambda chosen: batch.can_join(candidates[: len(chosen)]),
    )
    return candidates[: len(admitted)]


def decode_all(
    model: nn.Module,
    rows: Sequence[DecodeRow],
    *,
    max_rows: int = 32,
    token_budget: int = 8192,
    stops: set[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[DecodeRow]:
    """Decode every row to its end in the caller's thread, keeping up to ``max_rows`` in flight.

    Rows are taken longest prompt first (less padding), and a finished row's place is given
    to the next waiting row at once.
    """
    waiting = sorted(rows, key=lambda r: -len(r.prompt_ids))
    batch = DecodeBatch(model, stops=stops)
    limits = Limits(max_rows, token_budget)
    finished = 0
    while waiting or batch.rows:
        joining = _admitted(batch, waiting[: max(max_rows - len(batch), 0)], limits)
        waiting = waiting[len(joining) :]
        batch.join(joining)
        finished += len(batch.drop_finished())
        if batch.rows:
            batch.step()
            finished += len(batch.drop_finished())
        if progress:
            progress(finished, len(rows))
    return list(rows)
