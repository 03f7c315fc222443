"""The intervention methods, in one registry: name, label, what they act on, and their edit rule.

Every method turns per-unit statistics (the AUROC, and where it needs them the firing
threshold τ or the transport sums) into α, the factor a unit's output is multiplied by at full
strength, and into a :class:`UnitEdit` per module at a strength λ: a scale, an optional shift
and an optional gate. Pages, plots, reports, the command line and the evaluation read names
and labels from here; adding a method is one entry in :data:`METHODS` (and its test).

>>> import torch
>>> METHODS["aura"].alphas(AlphaInputs({"m": torch.tensor([0.4, 0.75, 1.0])}))["m"].tolist()
[1.0, 0.5, 0.0]
>>> method_label("none"), method_label("det0")
('Plain model', 'Det0')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from statistics import NormalDist

import torch

from aura_core.errors import InterventionError
from aura_core.method.stats import transport_map

__all__ = [
    "METHODS",
    "PLAIN",
    "TAU",
    "TRANSPORT",
    "AlphaInputs",
    "Method",
    "UnitEdit",
    "method_label",
    "method_names",
    "null_band",
]

TAU = "tau"  # per unit, the Youden threshold on its pooled responses (its firing threshold τ)
TRANSPORT = "transport"  # per unit, the sums a 1-D affine transport is fitted from (see method.stats.transport_sums)
_NEEDS = {TAU: "firing threshold τ", TRANSPORT: "transport statistics"}


@dataclass(frozen=True)
class AlphaInputs:
    """What an α rule may use: the AUROC per module, the method's settings, and the class sizes behind the AUROC."""

    auroc: Mapping[str, torch.Tensor]
    k: int | None = None
    damp_alpha: float = 0.5
    n_per_label: tuple[int, int] | None = None  # (non-toxic, toxic) texts
    stats: Mapping[str, Mapping[str, torch.Tensor]] = field(default_factory=dict)  # TAU, TRANSPORT: per module

    def stat(self, kind: str, method: str) -> Mapping[str, torch.Tensor]:
        """The per-module statistic ``kind`` a method needs; an error saying so when the fit did not store it."""
        found = self.stats.get(kind)
        if found is None or set(found) != set(self.auroc):
            raise InterventionError(
                f"{method} needs each unit's {_NEEDS[kind]}, which these experts were fitted without: fit them again"
            )
        return found


@dataclass(frozen=True)
class UnitEdit:
    """What one module's units become: y = x·scale + shift where low < x < high, else x (per unit).

    ``shift``, ``low`` and ``high`` are None where the method has none: a plain scale (AurA,
    Det0, Damp) folds into the weights; a gate (``low`` or ``high``) decides per token and cannot.

    >>> UnitEdit(torch.tensor([0.5])).gated, UnitEdit(torch.tensor([0.5]), low=torch.tensor([1.0])).gated
    (False, True)
    """

    scale: torch.Tensor
    shift: torch.Tensor | None = None
    low: torch.Tensor | None = None
    high: torch.Tensor | None = None

    @property
    def gated(self) -> bool:
        return self.low is not None or self.high is not None

    def is_identity(self) -> bool:
        """Whether no unit changes (every scale 1, every shift 0)."""
        return bool((self.scale == 1.0).all()) and (self.shift is None or not bool(self.shift.any()))


AlphaRule = Callable[[AlphaInputs], dict[str, torch.Tensor]]
EditRule = Callable[[AlphaInputs, float], dict[str, UnitEdit]]  # the inputs and the strength λ

PLAIN = "none"  # the plain model: the reference every method is compared with


@dataclass(frozen=True)
class Method:
    """One way to turn per-unit statistics into edits; ``uses_k`` methods act on the k best units.

    ``alphas`` gives the full-strength scale per unit; ``edits`` the whole edit at a strength
    (by default the scale 1 − λ + λ·α and nothing else). ``paper`` names where the method is from.
    """

    name: str
    label: str
    summary: str
    alphas: AlphaRule
    uses_k: bool = False
    uses_damp_alpha: bool = False
    edits: EditRule | None = None
    paper: str = ""
    needs: tuple[str, ...] = ()  # the statistics beside the AUROC it reads (TAU, TRANSPORT)

    def edits_at(self, inputs: AlphaInputs, strength: float) -> dict[str, UnitEdit]:
        """Each module's :class:`UnitEdit` at strength λ.

        >>> METHODS["aura"].edits_at(AlphaInputs({"m": torch.tensor([0.75])}), 0.5)["m"].scale.tolist()
        [0.75]
        """
        if self.edits is not None:
            return self.edits(inputs, strength)
        return {name: UnitEdit(_blend(alpha, strength)) for name, alpha in self.alphas(inputs).items()}


def _blend(alpha: torch.Tensor, strength: float) -> torch.Tensor:
    """1 − λ + λ·α: the identity at λ = 0, α at λ = 1."""
    return (1.0 - strength) + strength * alpha


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


def _conditional_aura(inputs: AlphaInputs, strength: float) -> dict[str, UnitEdit]:
    """AurA's scale, applied at a token only where the unit's output is above its firing threshold τ."""
    tau = inputs.stat(TAU, "conditional AurA")
    return {name: UnitEdit(_blend(alpha, strength), low=tau[name].to(torch.float32)) for name, alpha in _aura(inputs).items()}


def _transport_slopes(inputs: AlphaInputs) -> dict[str, torch.Tensor]:
    """a per unit: the slope of the toxic-onto-non-toxic transport (its full-strength scale)."""
    sums = inputs.stat(TRANSPORT, "Linear-AcT")
    return {name: transport_map(sums[name])[0].to(torch.float32) for name in inputs.auroc}


def _linear_act(inputs: AlphaInputs, strength: float) -> dict[str, UnitEdit]:
    """y = x + λ·((a − 1)·x + b) where the source (toxic) responses reach, lowest < x < highest; else x.

    The support gate is ml-act's ``quantiles_src: q_0_100``: outside what the map was fitted on, a
    unit keeps its output (the lowest and highest toxic response themselves are inside).

    Pooling: the map is fitted on the responses the experts were found with, pooled as they
    were (max over tokens by default, the very responses AurA ranks), so one collection serves
    every method and a comparison with AurA differs in the method alone. ml-act fits on mean
    pooling, nearer a typical token than a text's peak: find the experts with mean pooling for
    its recipe. On max-pooled responses the support gate keeps the map to the range of the toxic
    texts' peaks, so it acts where the unit runs high, as conditional AurA does.
    """
    sums = inputs.stat(TRANSPORT, "Linear-AcT")
    edits = {}
    for name in inputs.auroc:
        a, b = transport_map(sums[name])
        # The gate is strict: one step past the extremes keeps the fitted support's own ends inside it.
        low, high = sums[name][:, 5].to(torch.float32), sums[name][:, 6].to(torch.float32)
        edits[name] = UnitEdit(
            _blend(a, strength).to(torch.float32),
            (strength * b).to(torch.float32),
            low=torch.nextafter(low, torch.full_like(low, -math.inf)),
            high=torch.nextafter(high, torch.full_like(high, math.inf)),
        )
    return edits


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
    "aura-cond": Method(
        "aura-cond",
        "Conditional AurA",
        "AurA's α, applied only at the tokens where the unit fires above its threshold τ",
        _aura,
        edits=_conditional_aura,
        paper="conditional steering as in Apple's DSAS (2025), on AurA's α",
        needs=(TAU,),
    ),
    "linear-act": Method(
        "linear-act",
        "Linear-AcT",
        "map each unit's toxic responses onto its non-toxic ones: y = a·x + b, by sorted samples",
        _transport_slopes,
        edits=_linear_act,
        paper="Rodriguez et al., Controlling Language and Diffusion Models by Transporting Activations (ICLR 2025)",
        needs=(TRANSPORT,),
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
