"""Fit an intervention: every unit's AUROC, firing threshold and transport sums from collected responses.

>>> iv = fit_intervention(responses, "aura")          # doctest: +SKIP
"""

from __future__ import annotations

import torch
from torch import nn

from aura_core.method.auroc import auroc
from aura_core.method.intervention import Intervention
from aura_core.method.registry import TAU, TRANSPORT
from aura_core.method.responses import Responses
from aura_core.method.stats import transport_sums, youden_thresholds
from aura_core.model.architecture import discover_units, unit_width

__all__ = ["fit_intervention", "synthetic_intervention"]


def fit_intervention(
    responses: Responses, method: str = "aura", *, device: str | None = None, **settings: object
) -> Intervention:
    """AUROC of every unit in ``responses`` against its labels, wrapped as an intervention.

    Beside the AUROC it stores what the other methods derive their edits from, so one fit
    serves every method: each unit's firing threshold τ (conditional AurA) and its transport
    sums (Linear-AcT), both on the responses' own pooling.

    ``device="cuda"`` ranks on the GPU; by default on the GPU when there is one, else on the
    CPU's SIMD sort.

    >>> iv = fit_intervention(responses, "det0", k=20)          # doctest: +SKIP
    """
    target = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    scores = {name: auroc(values.to(target), responses.labels).cpu() for name, values in responses.per_module.items()}
    meta: dict[str, object] = {
        key: responses.meta.get(key)
        for key in ("model", "fingerprint", "data_source", "data_hash", "n_texts", "pooling", "max_tokens")
    }
    meta["n_per_label"] = [int((responses.labels == 0).sum()), int((responses.labels == 1).sum())]
    stats = {
        TAU: {name: youden_thresholds(values, responses.labels) for name, values in responses.per_module.items()},
        TRANSPORT: {name: transport_sums(values, responses.labels) for name, values in responses.per_module.items()},
    }
    return Intervention(scores, method=method, meta=meta, stats=stats, **settings)  # type: ignore[arg-type]


def synthetic_intervention(model: nn.Module, generator: torch.Generator, *, low: float = 0.0) -> Intervention:
    """AurA on every unit of ``model`` with AUROCs drawn uniformly from ``[low, 1)``: no collection needed.

    For benchmarks and tests, whose speed or logic does not depend on which units are dampened;
    ``low = 0.5`` dampens about half the units, as fitted AUROCs do.

    >>> from aura_core.model.tiny import load_tiny
    >>> iv = synthetic_intervention(load_tiny("tiny-gpt2").model, torch.Generator().manual_seed(0), low=0.5)
    >>> iv.n_units, bool(iv.auroc_max() < 1)
    (160, True)
    """
    modules = dict(model.named_modules())
    names = discover_units(model)
    auroc = {n: low + (1 - low) * torch.rand(unit_width(modules[n]), generator=generator).double() for n in names}
    # Responses of a few made-up texts give every unit a τ and transport sums, so each method applies.
    labels = torch.arange(16) % 2
    responses = {n: torch.randn(16, unit_width(modules[n]), generator=generator) for n in names}
    stats = {
        TAU: {n: youden_thresholds(values, labels) for n, values in responses.items()},
        TRANSPORT: {n: transport_sums(values, labels, 8) for n, values in responses.items()},
    }
    return Intervention(auroc, stats=stats)
