"""When a unit fires, and how often on ordinary text: its threshold τ, density and quantiles.

>>> import torch
>>> youden_thresholds(torch.tensor([[0.1], [0.9], [0.2], [0.8]]), torch.tensor([0, 1, 0, 1])).tolist()  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial

import torch
from torch import nn

from aura_core.analysis.collect import MAX_TOKENS
from aura_core.base.batching import Tokenizer, length_sorted_batches, pad_right, tokenize_texts
from aura_core.errors import DataError, UnitPatternError
from aura_core.method.stats import youden_thresholds
from aura_core.model.architecture import unit_width
from aura_core.runtime.hooks import Recorder, forward_until_recorded
from aura_core.runtime.inline import INLINE
from aura_core.runtime.runner import Runner

__all__ = ["DENSITY_RULE", "ActivationProfile", "UnitDensity", "activation_profile", "youden_thresholds"]

DENSITY_RULE = (
    "A unit fires on a token when its output there is above τ, the cut on its max-over-tokens response that best "
    "separates the toxic from the non-toxic concept texts (the highest true-positive rate minus false-positive rate "
    "on its ROC curve). Its activation density is the share of the corpus's tokens on which it fires: how often it "
    "would raise its toxicity alarm on that text."
)


# Histogram bins are even in y = sign(x)·log(1 + |x|/c): about 0.02 wide near zero and 7 % of
# the value for large outputs, so one fixed set of bins serves units whose outputs span 0.1 or
# 1,000 (|x| up to about 3,300; beyond that the end bins hold them).
_C = 0.25
_LIMIT = 9.5
_BINS = 256
_PER_UNIT = _BINS / (2 * _LIMIT)
_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999)


def _from_y(y: float) -> float:
    return math.copysign(_C * math.expm1(abs(y)), y)


def _bin_edges(first: int, last: int) -> list[float]:
    """The activation values at the edges of bins ``first`` to ``last`` (inclusive)."""
    return [_from_y(index / _PER_UNIT - _LIMIT) for index in range(first, last + 2)]


@dataclass(frozen=True)
class UnitDensity:
    """One unit's outputs over a corpus's tokens: τ, how often it is above it, quantiles and a histogram.

    ``edges`` (one more than ``counts``) span the unit's own range; quantiles are read from the
    histogram, so they are exact to within one bin (about 6 % of the value away from zero).
    """

    corpus: str
    n_tokens: int
    threshold: float
    above: int
    minimum: float
    maximum: float
    mean: float
    quantiles: dict[str, float]
    edges: list[float]
    counts: list[int]

    @property
    def density(self) -> float:
        return self.above / self.n_tokens if self.n_tokens else 0.0

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "density": self.density}


@dataclass
class ActivationProfile:
    """Every unit's outputs over a corpus's tokens, summarised: a histogram, min, max, mean, tokens above τ."""

    corpus: str
    n_texts: int
    n_tokens: int
    thresholds: dict[str, torch.Tensor]
    counts: dict[str, torch.Tensor] = field(repr=False)
    above: dict[str, torch.Tensor] = field(repr=False)
    low: dict[str, torch.Tensor] = field(repr=False)
    high: dict[str, torch.Tensor] = field(repr=False)
    total: dict[str, torch.Tensor] = field(repr=False)

    def __contains__(self, module: object) -> bool:
        return module in self.counts

    def density(self, module: str, unit: int) -> UnitDensity:
        """The summary of one unit (``module`` must be one the profile measured)."""
        if module not in self.counts:
            raise UnitPatternError(f"the activation profile did not measure {module!r}")
        counts = self.counts[module][unit].to(torch.int64)
        low, high = float(self.low[module][unit]), float(self.high[module][unit])
        cumulative = counts.cumsum(0)
        quantiles = {f"{q:g}": self._quantile(counts, cumulative, q, low, high) for q in _QUANTILES}
        used = torch.nonzero(counts).squeeze(1)
        first, last = (int(used[0]), int(used[-1])) if used.numel() else (0, 0)
        edges = _bin_edges(first, last)
        edges[0], edges[-1] = min(edges[1], low), max(edges[-2], high)
        return UnitDensity(
            corpus=self.corpus,
            n_tokens=self.n_tokens,
            threshold=float(self.thresholds[module][unit]),
            above=int(self.above[module][unit]),
            minimum=low,
            maximum=high,
            mean=float(self.total[module][unit]) / max(1, self.n_tokens),
            quantiles=quantiles,
            edges=edges,
            counts=counts[first : last + 1].tolist(),
        )

    def _quantile(self, counts: torch.Tensor, cumulative: torch.Tensor, q: float, low: float, high: float) -> float:
        target = q * self.n_tokens
        index = int(torch.searchsorted(cumulative, torch.tensor(target, dtype=cumulative.dtype)).clamp(max=_BINS - 1))
        before = float(cumulative[index - 1]) if index else 0.0
        inside = (target - before) / max(1.0, float(counts[index]))
        y = (index + min(1.0, max(0.0, inside))) / _PER_UNIT - _LIMIT
        return min(high, max(low, _from_y(y)))


class _ProfileRecorder:
    """Per-module recorders that fold each batch's real tokens into the running summaries."""

    def __init__(self, thresholds: Mapping[str, torch.Tensor], widths: Mapping[str, int], count_dtype: torch.dtype) -> None:
        self.thresholds = {name: t.to(torch.float32).cpu() for name, t in thresholds.items()}
        self.counts = {name: torch.zeros((widths[name], _BINS), dtype=count_dtype) for name in thresholds}
        self.above = {name: torch.zeros(widths[name], dtype=torch.int64) for name in thresholds}
        self.low = {name: torch.full((widths[name],), float("inf")) for name in thresholds}
        self.high = {name: torch.full((widths[name],), float("-inf")) for name in thresholds}
        self.total = {name: torch.zeros(widths[name], dtype=torch.float64) for name in thresholds}
        self.offsets = {name: torch.arange(widths[name]) * _BINS for name in thresholds}
        self.mask = torch.zeros((0, 0), dtype=torch.bool)

    def recorder(self, name: str) -> Recorder:
        def record(hidden: torch.Tensor) -> None:
            values = hidden[self.mask.to(hidden.device)].float().cpu()  # (real tokens, units)
            y = torch.log1p(values.abs().mul_(1 / _C)).copysign_(values)
            bins = y.add_(_LIMIT).mul_(_PER_UNIT).clamp_(0, _BINS - 1).long()  # long() truncates: y ≥ 0 here
            counts = self.counts[name]
            flat = (bins + self.offsets[name]).view(-1)
            counts.view(-1).index_add_(0, flat, torch.ones(flat.numel(), dtype=counts.dtype))
            self.above[name] += (values > self.thresholds[name]).sum(0)
            self.low[name] = torch.minimum(self.low[name], values.amin(0))
            self.high[name] = torch.maximum(self.high[name], values.amax(0))
            self.total[name] += values.sum(0, dtype=torch.float64)

        return record


def activation_profile(
    model: nn.Module,
    tokenizer: Tokenizer,
    texts: list[str],
    thresholds: Mapping[str, torch.Tensor],
    *,
    corpus: str = "corpus",
    max_tokens: int = MAX_TOKENS,
    max_total_tokens: int = 32_000,
    batch_size: int = 8,
    runner: Runner = INLINE,
    progress: Callable[[int, int], None] | None = None,
) -> ActivationProfile:
    """Summarise every unit of the modules in ``thresholds`` (τ per unit) over the tokens of ``texts``.

    Texts keep the collection's token budget ``max_tokens``; texts past ``max_total_tokens``
    tokens in all are left out. Batches of ``batch_size`` texts run on ``runner`` (bulk), each
    stopping after the last module asked for.

    >>> profile = activation_profile(model, tok, load_neutral_texts(), {"model.layers.5.mlp.up_proj": tau})  # doctest: +SKIP
    >>> profile.density("model.layers.5.mlp.up_proj", 1343).density                                         # doctest: +SKIP
    0.0042
    """
    if not texts:
        raise DataError(f"{corpus}: no texts to measure the units on")
    widths = {name: unit_width(module) for name, module in model.named_modules() if name in thresholds}
    missing = sorted(set(thresholds) - set(widths))
    if missing:
        raise UnitPatternError(f"no module {missing[0]!r} in this model")
    token_ids = tokenize_texts(tokenizer, texts, max_tokens)
    kept, total = 0, 0
    for ids in token_ids:
        if total + len(ids) > max_total_tokens and kept:
            break
        total += len(ids)
        kept += 1
    token_ids = token_ids[:kept]
    summaries = _ProfileRecorder(thresholds, widths, torch.int16 if total < 2**15 else torch.int32)
    recorders = {name: summaries.recorder(name) for name in thresholds}
    device = next(model.parameters()).device
    batches = length_sorted_batches([len(ids) for ids in token_ids], batch_size)

    def forward(batch: list[int]) -> None:
        input_ids, attention = pad_right([token_ids[i] for i in batch], tokenizer.pad_token_id, device)
        summaries.mask = attention.bool().cpu()
        forward_until_recorded(model, input_ids, attention, recorders)

    done = 0
    for batch in batches:
        runner.run(partial(forward, batch), priority="bulk")
        done += len(batch)
        if progress:
            progress(done, kept)
    return ActivationProfile(
        corpus=corpus,
        n_texts=kept,
        n_tokens=total,
        thresholds={name: t.to(torch.float32).cpu() for name, t in thresholds.items()},
        counts=summaries.counts,
        above=summaries.above,
        low=summaries.low,
        high=summaries.high,
        total=summaries.total,
    )
