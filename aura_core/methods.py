"""The intervention methods, in one registry: name, label, what they act on, and their α rule.

Every method turns per-unit AUROC into α, the factor a unit's output is multiplied by at full
strength. Pages, plots, reports, the command line and the evaluation read names and labels
from here; adding a method is one entry in :data:`METHODS` (and its test).

>>> import torch
>>> METHODS["aura"].alphas({"m": torch.tensor([0.4, 0.75, 1.0])}, None, 0.5)["m"].tolist()
[1.0, 0.5, 0.0]
>>> method_label("none"), method_label("det0")
('Plain model', 'Det0')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

__all__ = ["METHODS", "PLAIN", "Method", "method_label", "method_names"]

AlphaRule = Callable[[Mapping[str, torch.Tensor], "int | None", float], dict[str, torch.Tensor]]

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


def _aura(auroc: Mapping[str, torch.Tensor], k: int | None, damp_alpha: float) -> dict[str, torch.Tensor]:
    """α = 1 − 2·(AUROC − 0.5) above 0.5, else 1 (that is 1 − Gini): no top-k, nothing to tune."""
    return {name: torch.where(a > 0.5, 1.0 - 2.0 * (a - 0.5), torch.ones_like(a)).to(torch.float32) for name, a in auroc.items()}


def _top_k(value: Callable[[float], float]) -> AlphaRule:
    """α = ``value(damp_alpha)`` for the k units of highest AUROC across the whole model, else 1."""

    def rule(auroc: Mapping[str, torch.Tensor], k: int | None, damp_alpha: float) -> dict[str, torch.Tensor]:
        names = list(auroc)
        flat = torch.cat([auroc[name].to(torch.float64).reshape(-1) for name in names])
        chosen = torch.zeros_like(flat, dtype=torch.bool)
        chosen[torch.topk(flat, int(k or 0)).indices] = True
        factors = torch.where(chosen, torch.full_like(flat, value(damp_alpha)), torch.ones_like(flat)).to(torch.float32)
        result, start = {}, 0
        for name in names:
            width = auroc[name].numel()
            result[name] = factors[start : start + width]
            start += width
        return result

    return rule


METHODS: dict[str, Method] = {
    "aura": Method("aura", "AurA", "dampen every unit in proportion to its AUROC (the paper)", _aura),
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
