"""Call-scoped plans: one permanent hook per unit module, acting only on the calls that carry a plan.

A plan belongs to a call, never to the model: it lives in a :class:`contextvars.ContextVar`
of the thread that runs the forward pass, so two threads (or two rows of one batch) can run
the same shared model with different interventions at once, and a model without a plan in
scope runs untouched. A plan edits unit outputs (per-row scales, shifts and gates) and records them.

>>> import torch
>>> unwrap_output((torch.ones(2), "cache")).shape
torch.Size([2])
>>> from aura_core.model.tiny import load_tiny
>>> model = load_tiny("tiny-gpt2").model
>>> seen = {}
>>> plan = CallPlan(record={"transformer.h.0.mlp.c_fc": lambda out: seen.update(shape=tuple(out.shape))})
>>> with call_plan(model, plan):
...     _ = model(torch.tensor([[1, 2, 3]]))
>>> seen["shape"]
(1, 3, 64)
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import nn

from aura_core.errors import InterventionError, UnitPatternError

__all__ = ["CallPlan", "Recorder", "call_plan", "ensure_hooks", "forward_until_recorded", "rewrap_output", "unwrap_output"]

Recorder = Callable[[torch.Tensor], None]


def unwrap_output(output: object) -> torch.Tensor:
    """The hidden-state tensor of a module's output, whether a tensor or a tuple led by one."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find a tensor in a module output of type {type(output).__name__}")


def rewrap_output(output: object, tensor: torch.Tensor) -> object:
    """``output`` with its hidden-state tensor replaced by ``tensor``, in the same shape of container."""
    if isinstance(output, torch.Tensor):
        return tensor
    assert isinstance(output, (tuple, list))
    return type(output)((tensor, *output[1:]))


@dataclass(frozen=True)
class CallPlan:
    """What one forward call does to unit outputs: y = x·scale + shift where low < x < high, else x.

    ``scale[name]`` multiplies the module's output by factors of shape ``(units,)`` (every
    row alike) or ``(rows, units)`` (one row of factors per batch row; a row of ones leaves
    that row untouched). ``shift[name]``, of the same shapes, is added after (a row of zeros
    leaves it untouched). ``low[name]`` and ``high[name]`` gate the edit per token and unit:
    it applies only where the output is above ``low`` and below ``high`` (rows without a gate
    hold −inf and +inf). A module named in ``shift``, ``low`` or ``high`` is named in ``scale``.
    ``record_raw[name]`` is called with the output before the edit and ``record[name]`` with
    the output the model goes on with (edited, if ``scale`` names it).

    >>> plan = CallPlan(scale={"m": torch.tensor([2.0])}, shift={"m": torch.tensor([1.0])}, low={"m": torch.tensor([0.0])})
    >>> plan.apply("m", torch.tensor([[[-1.0], [3.0]]])).tolist()
    [[[-1.0], [7.0]]]
    """

    scale: Mapping[str, torch.Tensor] = field(default_factory=dict)
    record: Mapping[str, Recorder] = field(default_factory=dict)
    record_raw: Mapping[str, Recorder] = field(default_factory=dict)
    shift: Mapping[str, torch.Tensor] = field(default_factory=dict)
    low: Mapping[str, torch.Tensor] = field(default_factory=dict)
    high: Mapping[str, torch.Tensor] = field(default_factory=dict)
    # Each module's edit in the form its pass runs, per dtype and shape: built on a plan's first
    # call and reused on every decode step after (a plan lives as long as its set of rows).
    _edits: dict[tuple[str, torch.dtype, bool], _Edit] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        stray = (set(self.shift) | set(self.low) | set(self.high)) - set(self.scale)
        if stray:
            raise InterventionError(f"a plan shifts or gates {min(stray)!r} without a scale for it")

    @cached_property
    def modules(self) -> frozenset[str]:
        # Read by every hooked module on every forward pass: built once per plan.
        return frozenset(self.scale) | frozenset(self.record) | frozenset(self.record_raw)

    @cached_property
    def gated(self) -> frozenset[str]:
        return frozenset(self.low) | frozenset(self.high)

    def apply(self, name: str, output: object) -> object | None:
        hidden = unwrap_output(output)
        raw = self.record_raw.get(name)
        if raw is not None:
            raw(hidden)
        factor = self.scale.get(name)
        changed = None
        if factor is not None:
            hidden = self._edit(name, hidden, factor)
            changed = rewrap_output(output, hidden)
        recorder = self.record.get(name)
        if recorder is not None:
            recorder(hidden)
        return changed

    def _edit(self, name: str, hidden: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        """One elementwise pass over the whole (rows, tokens, units) output."""
        rowwise = factor.ndim == 2 and hidden.ndim == 3  # (rows, 1, units): one row of edits per sequence
        key = (name, hidden.dtype, rowwise)
        edit = self._edits.get(key)
        if edit is None:
            edit = self._edits[key] = _Edit.build(self, name, factor, hidden.dtype, rowwise)
        return edit(hidden)


@dataclass(frozen=True)
class _Edit:
    """One module's edit, shaped and typed for its outputs, in as few elementwise ops as it takes.

    A decode step's outputs are small, so an op's cost is mostly its dispatch: a plain scale
    is one op; a shift adds none (``addcmul``); a one-sided gate adds a compare and a select;
    a two-sided gate tests ``low < x < high`` as ``clamp(x, next above low, next below high) == x``,
    one op fewer than two compares and an ``and``. A side whose bounds are all infinite is no gate.

    >>> plan = CallPlan(scale={"m": torch.tensor([2.0])}, low={"m": torch.tensor([0.0])}, high={"m": torch.tensor([5.0])})
    >>> plan.apply("m", torch.tensor([[[0.0], [1.0], [5.0], [float("nan")]]])).flatten().tolist()
    [0.0, 2.0, 5.0, nan]
    """

    scale: torch.Tensor
    shift: torch.Tensor | None
    low: torch.Tensor | None  # strict bounds for a one-sided gate, closed ones for clamp
    high: torch.Tensor | None
    closed: bool

    @staticmethod
    def build(plan: CallPlan, name: str, factor: torch.Tensor, dtype: torch.dtype, rowwise: bool) -> _Edit:
        def shaped(values: torch.Tensor | None) -> torch.Tensor | None:
            if values is None:
                return None
            return (values.unsqueeze(1) if rowwise else values).to(dtype).contiguous()

        low, high = shaped(plan.low.get(name)), shaped(plan.high.get(name))
        if low is not None and bool(torch.isneginf(low).all()):
            low = None  # every unit's gate is open below
        if high is not None and bool(torch.isposinf(high).all()):
            high = None
        closed = False
        if low is not None and high is not None:
            # In floating point, x > low is exactly x >= nextafter(low, +inf), and alike for high.
            above = torch.nextafter(low, torch.full_like(low, float("inf")))
            below = torch.nextafter(high, torch.full_like(high, -float("inf")))
            if bool((above <= below).all()):  # an empty support keeps the two compares
                low, high, closed = above, below, True
        scale = shaped(factor)
        assert scale is not None
        return _Edit(scale, shaped(plan.shift.get(name)), low, high, closed)

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        shift = self.shift
        edited = torch.addcmul(shift, hidden, self.scale) if shift is not None else hidden * self.scale
        low, high = self.low, self.high
        if low is None and high is None:
            return edited
        if self.closed:
            inside = torch.clamp(hidden, low, high) == hidden
        elif high is None:
            assert low is not None
            inside = hidden > low
        elif low is None:
            inside = hidden < high
        else:
            inside = (hidden > low).logical_and_(hidden < high)
        return torch.where(inside, edited, hidden)


def _combine(outer: CallPlan, inner: CallPlan) -> CallPlan:
    """Nested scopes on one model compose: factors multiply, recorders of both run.

    Shifted or gated edits do not commute, so two scopes may not both edit a module one of them shifts or gates.
    """
    scale = dict(outer.scale)
    for name, factor in inner.scale.items():
        if name in scale:
            if any(name in part for plan in (outer, inner) for part in (plan.shift, plan.gated)):
                raise InterventionError(f"two nested interventions edit {name!r} and one shifts or gates it: apply one at a time")
            scale[name] = scale[name] * factor
        else:
            scale[name] = factor
    return CallPlan(
        scale,
        _merged(outer.record, inner.record),
        _merged(outer.record_raw, inner.record_raw),
        {**outer.shift, **inner.shift},
        {**outer.low, **inner.low},
        {**outer.high, **inner.high},
    )


def _merged(first: Mapping[str, Recorder], second: Mapping[str, Recorder]) -> dict[str, Recorder]:
    merged = dict(first)
    for name, recorder in second.items():
        merged[name] = _both(merged[name], recorder) if name in merged else recorder
    return merged


def _both(first: Recorder, second: Recorder) -> Recorder:
    def record(output: torch.Tensor) -> None:
        first(output)
        second(output)

    return record


class _Token:
    """A model's identity for plans: kept on the model and on each hooked module.

    A deep copy of the model copies the token with it (one new token for the copy's model and
    modules alike), so the copy's hooks read the copy's plans, never the original's.
    """

    __slots__ = ("__weakref__",)


# The plans in scope for this thread, keyed by the model's token (one dict, replaced on every
# scope change, so it is never mutated while a forward pass reads it).
_PLANS: contextvars.ContextVar[Mapping[_Token, CallPlan] | None] = contextvars.ContextVar("aura_plans", default=None)
_HOOKED_ATTR = "_aura_hooked_modules"
_TOKEN_ATTR = "_aura_plan_token"
_INSTALL_LOCK = threading.Lock()


def _token(model: nn.Module) -> _Token:
    token = model.__dict__.get(_TOKEN_ATTR)
    if token is None:
        with _INSTALL_LOCK:
            token = model.__dict__.setdefault(_TOKEN_ATTR, _Token())
    return token  # type: ignore[no-any-return]


def ensure_hooks(model: nn.Module, names: Collection[str]) -> None:
    """Install the permanent plan-reading hook on each named module (once per module).

    A hook with no plan in scope returns at once, so a hooked model runs exactly as before.
    """
    hooked: set[str] = model.__dict__.get(_HOOKED_ATTR) or set()
    missing = [name for name in names if name not in hooked]
    if not missing:
        return
    token = _token(model)
    with _INSTALL_LOCK:
        hooked = set(model.__dict__.get(_HOOKED_ATTR) or set())
        modules = dict(model.named_modules())
        unknown = [name for name in missing if name not in modules]
        if unknown:
            raise UnitPatternError(f"no module {unknown[0]!r} in this model")
        for name in missing:
            if name in hooked:
                continue
            # The hook finds its model's token on its module at call time: a copied module
            # carries the copy's token, and the same hook function then serves the copy.
            modules[name].__dict__[_TOKEN_ATTR] = token
            modules[name].register_forward_hook(_plan_hook(name))
            hooked.add(name)
        # A new set, swapped in whole: readers never see one being filled.
        model.__dict__[_HOOKED_ATTR] = hooked


def _plan_hook(name: str) -> Callable[[nn.Module, object, object], object | None]:
    def hook(module: nn.Module, inputs: object, output: object) -> object | None:
        plans = _PLANS.get()
        if not plans:
            return None
        plan = plans.get(module.__dict__.get(_TOKEN_ATTR))  # type: ignore[arg-type]
        if plan is None or name not in plan.modules:
            return None
        return plan.apply(name, output)

    return hook


@contextmanager
def call_plan(model: nn.Module, plan: CallPlan | None) -> Iterator[nn.Module]:
    """Forward calls of ``model`` made by this thread inside the block follow ``plan``.

    Nothing about the model changes: other threads, and calls after the block, see the
    plain model. Scopes nest (factors multiply).
    """
    if plan is None or not plan.modules:
        yield model
        return
    ensure_hooks(model, plan.modules)
    current = _PLANS.get() or {}
    token = _token(model)
    combined = _combine(current[token], plan) if token in current else plan
    reset = _PLANS.set({**current, token: combined})
    try:
        yield model
    finally:
        _PLANS.reset(reset)


class _Recorded(Exception):
    """Raised inside a forward pass once every recorder has run: later layers are not needed."""


def forward_until_recorded(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    record: Mapping[str, Recorder],
    *,
    record_raw: Mapping[str, Recorder] | None = None,
    scale: Mapping[str, torch.Tensor] | None = None,
    edits: CallPlan | None = None,
) -> None:
    """Run ``model`` on a batch with these recorders (and factors, or the edits of a plan), stopping after the last recorded module.

    A unit in layer 3 needs layers 0 to 3 only: the rest of the model, and the unembedding,
    are skipped. Call it from the work a runner runs.
    """
    if edits is not None and scale is not None:
        raise InterventionError("give factors or a plan's edits, not both")
    pending = set(record)

    def finishing(name: str, recorder: Recorder) -> Recorder:
        def wrapped(hidden: torch.Tensor) -> None:
            recorder(hidden)
            pending.discard(name)
            if not pending:
                raise _Recorded

        return wrapped

    plan = CallPlan(
        scale=dict(edits.scale if edits is not None else scale or {}),
        record={name: finishing(name, recorder) for name, recorder in record.items()},
        record_raw=dict(record_raw or {}),
        shift=dict(edits.shift) if edits is not None else {},
        low=dict(edits.low) if edits is not None else {},
        high=dict(edits.high) if edits is not None else {},
    )
    try:
        with call_plan(model, plan), torch.inference_mode():
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _Recorded:
        pass
