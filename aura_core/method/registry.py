"""The intervention methods, in one registry: name, label, what they act on, and their α rule.

Every method turns per-unit AUROC into α, the factor a unit's output is multiplied by at full
strength. Pages, plots, reports, the command line and the evaluation read names and labels
from here; adding a method is one entry in :data:`METHODS` (and its test).

>>> import torch
>>> METHODS["aura"].alphas(AlphaInputs({"m": torch.tensor([0.4, 0.75, 1.0])}))["m"].tolist()
[1.0, 0.5, 0.0]
>>> method_label("none"), method_label("det0")
('Plain model', 'Det0')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from statistics import NormalDist

import torch

from aura_core.errors import InterventionError

__all__ = ["METHODS", "PLAIN", "AlphaInputs", "Method", "method_label", "method_names", "null_band"]


@dataclass(frozen=True)
class AlphaInputs:
    """What an α rule may use: the AUROC per module, the method's settings, and the class sizes behind the AUROC."""

    auroc: Mapping[str, torch.Tensor]
    k: int | None = None
    damp_alpha: float = 0.5
    n_per_label: tuple[int, int] | None = None  # (non-toxic, toxic) texts


AlphaRule = Callable[[AlphaInputs], dict[str, torch.Tensor]]

PLAIN = "none"  # the plain model: the reference every method is compared with


@dataclass(frozen=True)
class Method:
    """One way to turn AUROC into per-unit factors; ``uses_k`` methods act on the k best units."""

    name: str
    label: str
    summary: str
    alphas: AlphaRule
    uses_k: bool = False
    uses_damp_alpha: bool = False


def _dampen_above(auroc: Mapping[str, torch.Tensor], floor: float) -> dict[str, torch.Tensor]:
    """α = 1 − 2·(AUROC − floor) above ``floor``, else 1."""
    return {
        name: torch.where(a > floor, 1.0 - 2.0 * (a - floor), torch.ones_like(a)).clamp(min=0.0).to(torch.float32)
        for name, a in auroc.items()
    }


def _aura(inputs: AlphaInputs) -> dict[str, torch.Tensor]:
    """α = 1 − 2·(AUROC − 0.5) above 0.5, else 1 (that is 1 − Gini): no top-k, nothing to tune."""
    return _dampen_above(inputs.auroc, 0.5)


def null_band(n_negative: int, n_positive: int, n_units: int, level: float = 0.05) -> float:
    """How far above 0.5 a unit with no signal can reach by chance: the family-wise one-sided bound.

    A unit's AUROC under no signal is about normal with mean 0.5 and variance
    (n₁ + n₂ + 1) / (12·n₁·n₂); over ``n_units`` units, a Bonferroni bound at ``level`` keeps
    the chance that any of them passes it below ``level``.

    >>> round(null_band(1000, 1000, 1), 4)     # one unit: 1.645 standard deviations
    0.0212
    """
    sigma = math.sqrt((n_negative + n_positive + 1) / (12.0 * n_negative * n_positive))
    return NormalDist().inv_cdf(1.0 - level / max(n_units, 1)) * sigma


def _aura_null(inputs: AlphaInputs) -> dict[str, torch.Tensor]:
    """AurA on the AUROC's excess over the no-signal band: units that chance alone explains are left alone."""
    if inputs.n_per_label is None:
        raise InterventionError("aura-null needs the number of texts per label behind the AUROC: fit the experts again")
    n_units = sum(int(a.numel()) for a in inputs.auroc.values())
    return _dampen_above(inputs.auroc, 0.5 + null_band(*inputs.n_per_label, n_units))


def _top_k(value: Callable[[float], float]) -> AlphaRule:
    """α = ``value(damp_alpha)`` for the k units of highest AUROC across the whole model, else 1."""

    def rule(inputs: AlphaInputs) -> dict[str, torch.Tensor]:
        names = list(inputs.auroc)
        flat = torch.cat([inputs.auroc[name].to(torch.float64).reshape(-1) for name in names])
        chosen = torch.zeros_like(flat, dtype=torch.bool)
        chosen[torch.topk(flat, int(inputs.k or 0)).indices] = True
        factors = torch.where(chosen, torch.full_like(flat, value(inputs.damp_alpha)), torch.ones_like(flat)).to(torch.float32)
        result, start = {}, 0
        for name in names:
            width = inputs.auroc[name].numel()
            result[name] = factors[start : start + width]
            start += width
        return result

    return rule


METHODS: dict[str, Method] = {
    "aura": Method("aura", "AurA", "dampen every unit in proportion to its AUROC (the paper)", _aura),
    "aura-null": Method(
        "aura-null",
        "AurA beyond chance",
        "AurA on each unit's AUROC excess over what chance gives with this many texts (family-wise 5 %)",
        _aura_null,
    ),
    "det0": Method("det0", "Det0", "set the k units of highest AUROC to zero", _top_k(lambda _: 0.0), uses_k=True),
    "damp": Method(
        "damp",
        "Damp",
        "multiply the k units of highest AUROC by one constant α",
        _top_k(lambda alpha: alpha),
        uses_k=True,
        uses_damp_alpha=True,
    ),
}


def method_names(*, with_plain: bool = False) -> list[str]:
    """The method names, optionally led by ``none`` (the plain model)."""
    return ([PLAIN] if with_plain else []) + list(METHODS)


def method_label(name: str) -> str:
    """How a method is named to people: ``AurA``, ``Det0``, ``Damp``, or ``Plain model`` for ``none``."""
    if name == PLAIN:
        return "Plain model"
    method = METHODS.get(name)
    return method.label if method else name
