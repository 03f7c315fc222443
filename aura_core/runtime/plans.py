"""Interventions as call plans: per-row edits (scale, shift, gate) for a batch, and scopes that apply them to calls.

>>> with intervened(model, aura):                       # doctest: +SKIP
...     logits = model(input_ids).logits
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from aura_core.method.intervention import Intervention
from aura_core.method.registry import UnitEdit
from aura_core.model.architecture import weight_of
from aura_core.runtime.hooks import CallPlan, call_plan

__all__ = ["active_edits", "intervened", "row_plan", "rows_intervened"]


def active_edits(intervention: Intervention, modules: dict[str, nn.Module]) -> dict[str, tuple[nn.Module, UnitEdit]]:
    """Modules on which the intervention changes at least one unit, with their edits on the module's device."""
    active = {}
    for name, edit in intervention.edits().items():
        if not edit.is_identity():
            device = weight_of(modules[name]).device
            moved = [None if part is None else part.to(device) for part in (edit.shift, edit.low, edit.high)]
            active[name] = (modules[name], UnitEdit(edit.scale.to(device), *moved))
    return active


def _edits_on(intervention: Intervention, model: nn.Module) -> dict[str, UnitEdit]:
    """The intervention's non-identity edits on the model's devices, worked out once per (intervention, model).

    Kept on the intervention, with the model held weakly: plans are rebuilt whenever rows join or
    leave a batch, and checking the fit and moving the edits each time cost more than the plan itself.
    """
    device = next(model.parameters()).device  # a model moved to another device needs its edits there
    cached = intervention.__dict__.get("_edits_on")
    if cached is not None and cached[0]() is model and cached[1] == device:
        return cached[2]  # type: ignore[no-any-return]
    edits = {name: edit for name, (_, edit) in active_edits(intervention, intervention.check_fits(model)).items()}
    object.__setattr__(intervention, "_edits_on", (weakref.ref(model), device, edits))  # a cache on a frozen value
    return edits


def _is_identity(intervention: Intervention | None) -> bool:
    return intervention is None or float(intervention.strength) == 0.0


# What a row without an edit holds in each part of a plan: leaves its output as it is.
_NEUTRAL = {"scale": 1.0, "shift": 0.0, "low": -math.inf, "high": math.inf}


def row_plan(model: nn.Module, interventions: Sequence[Intervention | None]) -> CallPlan | None:
    """The call plan for a batch whose row ``i`` follows ``interventions[i]`` (None: untouched).

    One intervention for every row gives edits of shape ``(units,)``; mixed rows give
    ``(rows, units)``, with a neutral row (scale 1, shift 0, no gate) for every untouched row.
    A shift or gate is in the plan only for modules where some row has one. None when no row changes.

    >>> from aura_core.model.tiny import load_tiny
    >>> model = load_tiny("tiny-gpt2").model
    >>> iv = Intervention({"transformer.h.0.mlp.c_fc": torch.full((64,), 0.75)})
    >>> row_plan(model, [None, iv]).scale["transformer.h.0.mlp.c_fc"][:, 0].tolist()
    [1.0, 0.5]
    """
    distinct: dict[int, Intervention] = {}
    for iv in interventions:
        if not _is_identity(iv):
            assert iv is not None
            distinct.setdefault(id(iv), iv)
    if not distinct:
        return None
    device = next(model.parameters()).device
    active = {key: _edits_on(iv, model) for key, iv in distinct.items()}
    if len(distinct) == 1 and all(not _is_identity(iv) for iv in interventions):
        (only,) = active.values()
        parts: dict[str, dict[str, torch.Tensor]] = {part: {} for part in _NEUTRAL}
        for name, edit in only.items():
            for part in _NEUTRAL:
                values = getattr(edit, part)
                if values is not None:
                    parts[part][name] = values.to(device)
        return _plan(parts)
    # Each row's place in a palette per module: 0 is the neutral row, k the k-th distinct intervention.
    order = list(distinct)
    choice = torch.tensor([0 if _is_identity(iv) else 1 + order.index(id(iv)) for iv in interventions], device=device)
    names = sorted({name for per_module in active.values() for name in per_module})
    rows: dict[str, dict[str, torch.Tensor]] = {part: {} for part in _NEUTRAL}
    for name in names:
        edits = [active[key].get(name) for key in order]
        width = next(edit.scale.numel() for edit in edits if edit is not None)
        for part, neutral in _NEUTRAL.items():
            if all(edit is None or getattr(edit, part) is None for edit in edits):
                continue
            blank = torch.full((width,), neutral, device=device)
            palette = torch.stack(
                [blank, *(blank if e is None or getattr(e, part) is None else getattr(e, part).to(blank) for e in edits)]
            )
            rows[part][name] = palette.index_select(0, choice)  # one copy per module, whatever the row count
    return _plan(rows)


def _plan(parts: dict[str, dict[str, torch.Tensor]]) -> CallPlan:
    return CallPlan(scale=parts["scale"], shift=parts["shift"], low=parts["low"], high=parts["high"])


@contextmanager
def intervened(model: nn.Module, intervention: Intervention | None) -> Iterator[nn.Module]:
    """Forward calls of ``model`` made inside the block (by this thread) follow ``intervention``.

    The scope belongs to the call, not the model: nothing about the model changes, so other
    sessions using the same model at the same time see the plain model. None, or strength
    0, leaves every call untouched.

    >>> with intervened(model, aura):                       # doctest: +SKIP
    ...     logits = model(input_ids).logits
    """
    with call_plan(model, row_plan(model, [intervention])):
        yield model


@contextmanager
def rows_intervened(model: nn.Module, interventions: Sequence[Intervention | None]) -> Iterator[nn.Module]:
    """Like :func:`intervened`, with one intervention per batch row (None: that row is plain).

    >>> with rows_intervened(model, [None, aura.with_strength(0.6)]):   # doctest: +SKIP
    ...     logits = model(two_rows).logits   # row 0 baseline, row 1 AurA at λ = 0.6
    """
    with call_plan(model, row_plan(model, interventions)):
        yield model
