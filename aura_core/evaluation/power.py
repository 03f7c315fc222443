"""The power line: how many completions a condition needs to resolve a given reduction of the toxic share.

A two-sided two-proportion z-test (no continuity correction) between the plain model's toxic
share ``p₁`` and the reduced share ``p₂ = p₁ / factor``, each side with ``n`` completions:

    n = (z₁₋α/₂ · √(2 p̄ q̄) + z₁₋β · √(p₁ q₁ + p₂ q₂))² / (p₁ − p₂)²,   p̄ = (p₁ + p₂) / 2, q = 1 − p

Completions of one prompt are correlated, so this is a lower bound for a prompts × samples
design: a run with fewer completions than this cannot resolve the reduction.

>>> completions_needed(0.10)          # 10 % toxic → 5 %: the textbook 435 per side
435
>>> power_line(0.10, 200).underpowered
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from aura_core.errors import AuraError

__all__ = ["ALPHA", "FACTOR", "POWER", "PowerLine", "completions_needed", "power_line"]

ALPHA = 0.05
POWER = 0.8
FACTOR = 2.0  # the reduction a run should be able to resolve: half the plain model's toxic share


def completions_needed(base_rate: float, factor: float = FACTOR, *, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Completions per condition to tell ``base_rate`` from ``base_rate / factor`` (None when the base rate is 0).

    >>> completions_needed(0.008)         # the public prompts' 0.8 %: thousands per condition
    5851
    >>> completions_needed(0.0) is None
    True
    """
    if not 0.0 <= base_rate <= 1.0 or not math.isfinite(base_rate):
        raise AuraError(f"a base rate is a share in [0, 1], not {base_rate}")
    if not factor > 1.0 or not math.isfinite(factor):
        raise AuraError(f"the reduction to resolve must be a factor above 1, not {factor}")
    if not 0.0 < alpha < 1.0 or not 0.0 < power < 1.0:
        raise AuraError("alpha and power must lie strictly between 0 and 1")
    if base_rate == 0.0:
        return None
    p1, p2 = base_rate, base_rate / factor
    mean = (p1 + p2) / 2
    z_alpha, z_power = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    spread = z_alpha * math.sqrt(2 * mean * (1 - mean)) + z_power * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(spread**2 / (p1 - p2) ** 2)


@dataclass(frozen=True)
class PowerLine:
    """Completions needed to resolve a ``factor``× reduction at the measured ``base_rate``, against those ``used``."""

    base_rate: float
    used: int
    needed: int | None
    factor: float = FACTOR
    alpha: float = ALPHA
    power: float = POWER

    @property
    def underpowered(self) -> bool:
        return self.needed is None or self.used < self.needed

    def text(self) -> str:
        """One sentence for a report.

        >>> power_line(0.10, 500).text()
        "power: resolving 2× less toxic share at the plain model's 10.0% needs 435 completions per condition (α = 0.05, power 0.8); this run has 500"
        """
        where = f"at the plain model's {self.base_rate:.1%}"
        if self.needed is None:
            return (
                f"power: the plain model drew no toxic completion in {self.used:,}, so no reduction can be resolved; "
                "use prompts that draw toxicity, or more completions"
            )
        return (
            f"power: resolving {self.factor:g}× less toxic share {where} needs {self.needed:,} completions per condition "
            f"(α = {self.alpha:g}, power {self.power:g}); this run has {self.used:,}"
        )

    def warning(self) -> str | None:
        """The warning for an underpowered run, or None when it has enough completions.

        >>> power_line(0.10, 100).warning()
        'warning: underpowered: 100 completions per condition, 435 needed to resolve 2× less toxic share at 10.0%; add prompts or samples'
        """
        if not self.underpowered:
            return None
        if self.needed is None:
            return f"warning: underpowered: {self.text().removeprefix('power: ')}"
        return (
            f"warning: underpowered: {self.used:,} completions per condition, {self.needed:,} needed to resolve "
            f"{self.factor:g}× less toxic share at {self.base_rate:.1%}; add prompts or samples"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "base_rate": self.base_rate,
            "used": self.used,
            "needed": self.needed,
            "factor": self.factor,
            "alpha": self.alpha,
            "power": self.power,
            "underpowered": self.underpowered,
        }


def power_line(base_rate: float, used: int, factor: float = FACTOR, *, alpha: float = ALPHA, power: float = POWER) -> PowerLine:
    """The :class:`PowerLine` of a run with ``used`` completions per condition at a measured ``base_rate``."""
    if used < 0:
        raise AuraError(f"completions used must be at least 0, not {used}")
    needed = completions_needed(base_rate, factor, alpha=alpha, power=power)
    return PowerLine(base_rate, used, needed, factor, alpha, power)
