"""Interventions as call plans: per-row factors for a batch, and scopes that apply them to calls.

>>> with intervened(model, aura):                       # doctest: +SKIP
...     logits = model(input_ids).logits
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from aura_core.method.intervention import Intervention
from aura_core.model.architecture import unit_width, weight_of
from aura_core.runtime.hooks import CallPlan, call_plan

__all__ = ["active_factors", "intervened", "row_plan", "rows_intervened"]


def active_factors(intervention: Intervention, modules: dict[str, nn.Module]) -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """Modules with at least one factor other than 1, with their factors on the module's device."""
    active = {}
    for name, factor in intervention.factors().items():
        if bool((factor != 1.0).any()):
            active[name] = (modules[name], factor.to(weight_of(modules[name]).device))
    return active


def _is_identity(intervention: Intervention | None) -> bool:
    return intervention is None or float(intervention.strength) == 0.0


def row_plan(model: nn.Module, interventions: Sequence[Intervention | None]) -> CallPlan | None:
    """The call plan for a batch whose row ``i`` follows ``interventions[i]`` (None: untouched).

    One intervention for every row gives factors of shape ``(units,)``; mixed rows give
    ``(rows, units)``, with a row of ones for every untouched row. None when no row changes.

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
    active = {key: active_factors(iv, iv.check_fits(model)) for key, iv in distinct.items()}
    names = sorted({name for per_module in active.values() for name in per_module})
    if len(distinct) == 1 and all(not _is_identity(iv) for iv in interventions):
        (only,) = active.values()
        return CallPlan(scale={name: factor.to(device) for name, (_, factor) in only.items()})
    modules = dict(model.named_modules())
    scale = {}
    for name in names:
        rows = torch.ones((len(interventions), unit_width(modules[name])), device=device)
        for row, iv in enumerate(interventions):
            if not _is_identity(iv) and name in active[id(iv)]:
                rows[row] = active[id(iv)][name][1]
        scale[name] = rows
    return CallPlan(scale=scale)


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
