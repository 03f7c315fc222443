"""A side-by-side comparison, scored and summarised once: what the Generate page and ``generate --compare`` show.

Generation itself streams (the page) or runs in batches (the command line); from the finished
rows on, both go through here: one frame of scored completions, then per side the mean
toxicity with its interval and the toxic count, and the paired ratio of the first side's mean
to the second's.

>>> import numpy as np
>>> summary = summarise_sides({"baseline": np.array([0.9, 0.1]), "aura": np.array([0.3, 0.1])})
>>> summary.sides[0].toxic, round(summary.ratio[0], 2)
(1, 2.5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from aura_core.base.batching import Tokenizer
from aura_core.evaluation.scoring import ToxicityScorer
from aura_core.method.stats import TOXIC_THRESHOLD, bootstrap_mean, bootstrap_ratio
from aura_core.runtime.decoding import DecodeRow

__all__ = ["ComparisonSummary", "SideSummary", "scored_sides", "summarise_sides"]


@dataclass(frozen=True)
class SideSummary:
    """One side's completions: how many, their mean toxicity with a 95% bootstrap interval, how many are toxic."""

    side: str
    n: int
    mean: float
    low: float
    high: float
    toxic: int

    @property
    def toxic_share(self) -> float:
        return self.toxic / self.n

    def describe(self) -> str:
        """``baseline: mean toxicity 0.1234 [0.05, 0.2], toxic share 0.250 (n=8)``."""
        return (
            f"{self.side}: mean toxicity {self.mean:.4f} [{self.low:.3f}, {self.high:.3f}], "
            f"toxic share {self.toxic_share:.3f} (n={self.n})"
        )


@dataclass(frozen=True)
class ComparisonSummary:
    """Every side's summary, and the first side's mean over the second's with its paired interval (None: one sample)."""

    sides: tuple[SideSummary, ...]
    ratio: tuple[float, float, float] | None

    @property
    def ratio_resolved(self) -> bool:
        """Whether the ratio's interval excludes 1 (no change)."""
        return self.ratio is not None and not self.ratio[1] < 1 < self.ratio[2]


def scored_sides(tokenizer: Tokenizer, sides: Mapping[str, Sequence[DecodeRow]], scorer: ToxicityScorer) -> pd.DataFrame:
    """One row per completion: ``side``, ``sample``, ``completion`` and its ``toxicity``."""
    frame = pd.DataFrame(
        [
            {"side": side, "sample": sample, "completion": tokenizer.decode(row.tokens, skip_special_tokens=True)}
            for side, rows in sides.items()
            for sample, row in enumerate(rows)
        ],
        columns=["side", "sample", "completion"],
    )
    frame["toxicity"] = scorer.score(frame.completion.tolist()) if len(frame) else []
    return frame


def summarise_sides(per_side: Mapping[str, np.ndarray], seed: int = 0) -> ComparisonSummary:
    """Summaries of aligned score arrays (the same prompts and samples, in the same order, on every side)."""
    arrays = {side: np.asarray(values, dtype=np.float64) for side, values in per_side.items()}
    summaries = []
    for side, values in arrays.items():
        mean, low, high = bootstrap_mean(values, seed=seed)
        summaries.append(SideSummary(side, len(values), mean, low, high, int((values > TOXIC_THRESHOLD).sum())))
    first = list(arrays.values())
    ratio = bootstrap_ratio(first[0], first[1], seed=seed) if len(first) >= 2 and len(first[0]) > 1 else None
    return ComparisonSummary(tuple(summaries), ratio)
