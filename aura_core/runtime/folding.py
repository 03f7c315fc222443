"""Interventions folded into weights: exact, in place for a block, into copies, or exported as a checkpoint.

>>> export_model(model, tokenizer, aura, "runs/smollm2-aura")   # doctest: +SKIP
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from aura_core.base.batching import Tokenizer
from aura_core.base.files import atomic_folder, atomic_write
from aura_core.errors import InterventionError
from aura_core.method.intervention import Intervention
from aura_core.method.registry import method_label
from aura_core.model.architecture import unit_axis, weight_of
from aura_core.runtime.plans import active_edits

__all__ = ["export_model", "fold_into_weights", "folded_state_dict"]


_Fold = tuple[str, nn.Parameter, int, torch.Tensor, torch.Tensor, torch.Tensor | None]


def _fold_plan(model: nn.Module, intervention: Intervention) -> list[_Fold]:
    """(name, parameter, unit axis, unit indices, scales, shifts) for every weight and bias the intervention edits.

    y = x·s + t for a linear unit x = w·h + c is the unit (s·w)·h + (s·c + t): the weight row
    takes the scale, the bias the scale and the shift. A gated edit depends on each token's
    value, so no weight holds it: it is refused.
    """
    plan: list[_Fold] = []
    params = dict(model.named_parameters())
    for name, (module, edit) in active_edits(intervention, intervention.check_fits(model)).items():
        if edit.gated:
            raise InterventionError(
                f"{method_label(intervention.method)} edits a unit only at the tokens where it passes a threshold, "
                "which no weight can hold: it cannot be exported or folded (use AurA, Det0 or Damp)"
            )
        changed = edit.scale != 1.0
        if edit.shift is not None:
            changed = changed | (edit.shift != 0.0)
        index = torch.nonzero(changed).squeeze(1)
        dtype = weight_of(module).dtype
        scale = edit.scale[index].to(dtype)
        shift = None if edit.shift is None else edit.shift[index].to(dtype)
        if shift is not None and f"{name}.bias" not in params:
            raise InterventionError(f"module {name!r} has no bias to hold the shift: this intervention cannot be folded")
        for kind, axis in (("weight", unit_axis(module)), ("bias", 0)):
            param = params.get(f"{name}.{kind}")
            if param is None:
                continue
            if param.device.type == "meta":
                raise InterventionError("folding needs the weights in memory (this model is offloaded)")
            plan.append((f"{name}.{kind}", param, axis, index, scale, shift if kind == "bias" else None))
    return plan


def _scaled(values: torch.Tensor, axis: int, scale: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    shape = [1] * values.ndim
    shape[axis] = -1
    scaled = values * scale.view(shape)
    return scaled if shift is None else scaled + shift.view(shape)


def folded_state_dict(model: nn.Module, intervention: Intervention) -> dict[str, torch.Tensor]:
    """The model's state dict with the intervention folded into new copies of the touched tensors.

    The model itself is never changed, so this is safe on a model that serves other calls.
    """
    state = dict(model.state_dict())
    with torch.no_grad():
        for name, param, axis, index, scale, shift in _fold_plan(model, intervention):
            copy = param.detach().clone()
            copy.index_copy_(axis, index, _scaled(copy.index_select(axis, index), axis, scale, shift))
            state[name] = copy
    return state


_FOLDING: weakref.WeakSet[nn.Module] = weakref.WeakSet()


_FOLDING_GUARD = threading.Lock()


@contextmanager
def fold_into_weights(model: nn.Module, intervention: Intervention) -> Iterator[nn.Module]:
    """Scale (and shift) the weight rows and bias of each unit in place inside the block, exactly restored on exit.

    Output of a linear layer is linear in its weight row and bias, so this gives the same
    logits as the call plans at no runtime cost, but it changes the model itself: use it only
    on a model no other call is using (an export, a benchmark). Nested folds are an error.
    """
    with _FOLDING_GUARD:
        if model in _FOLDING:
            raise InterventionError("this model already has an intervention folded in: leave that block first")
        _FOLDING.add(model)
    saved: list[tuple[nn.Parameter, int, torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for _, param, axis, index, scale, shift in _fold_plan(model, intervention):
                rows = param.index_select(axis, index)
                saved.append((param, axis, index, rows))
                param.index_copy_(axis, index, _scaled(rows, axis, scale, shift))
        yield model
    finally:
        with torch.no_grad():
            for param, axis, index, original in reversed(saved):
                param.index_copy_(axis, index, original)
        with _FOLDING_GUARD:
            _FOLDING.discard(model)


def export_model(model: nn.Module, tokenizer: Tokenizer, intervention: Intervention, out_dir: str | Path) -> Path:
    """Save the intervened model as an ordinary checkpoint folder that plain ``transformers`` loads.

    The folded weights are new tensors: the model keeps serving other calls unchanged.
    """
    with atomic_folder(out_dir) as staging:
        model.save_pretrained(staging, state_dict=folded_state_dict(model, intervention))  # type: ignore[operator]
        tokenizer.save_pretrained(staging)
        card = {"aura_intervention": intervention.settings(), "fitted_on": intervention.meta}
        atomic_write(staging / "aura_intervention.json", json.dumps(card, indent=2, default=str))
    return Path(out_dir)
