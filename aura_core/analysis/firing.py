"""Which experts fire on a text: per token, the units that are both expert and well above their firing threshold.

A unit's score at a token is ``max(0, (activation − τ) / p) · w`` (see :data:`WEIGHTING`):

- w = max(0, 2·(AUROC − 0.5)) = 1 − α, how expert it is (the share of its output AurA removes);
- τ, its firing threshold: the cut on its max-over-tokens response that best separates the
  toxic from the non-toxic concept texts (the same τ as the unit page's activation density);
- p, its usual peak: the mean size of that response over the concept texts, which puts units
  whose outputs differ in size by orders of magnitude on one scale.

A token's score sums every unit's; its experts are the units of highest score. Without
baselines (τ = 0, p = 1) the score is the plain ``max(0, activation) · w``.

>>> firing = experts_firing(model, tok, aura, "You are such an idiot", baselines=unit_baselines(responses))  # doctest: +SKIP
>>> firing.tokens[-1].text, firing.tokens[-1].experts[0].ref                                                   # doctest: +SKIP
(' idiot', 'model.layers.7.mlp.up_proj:412')
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial

import torch
from torch import nn

from aura_core.analysis.neurons import unit_ref
from aura_core.analysis.token_text import Piece, text_pieces, visible_whitespace
from aura_core.base.batching import Tokenizer, encode, pad_right, tokenize_texts
from aura_core.errors import DataError
from aura_core.method.intervention import Intervention
from aura_core.method.responses import Responses
from aura_core.method.stats import youden_thresholds
from aura_core.model.architecture import layer_of, module_kind
from aura_core.runtime.hooks import forward_until_recorded
from aura_core.runtime.inline import INLINE
from aura_core.runtime.plans import row_plan
from aura_core.runtime.runner import Runner

__all__ = [
    "WEIGHTING",
    "ActivityPiece",
    "Baselines",
    "Firing",
    "FiringExpert",
    "FiringToken",
    "expert_weights",
    "experts_firing",
    "generation_activity",
    "unit_baselines",
]

WEIGHTING = (
    "score = max(0, (activation − τ) ÷ p) × w. w = max(0, 2·(AUROC − 0.5)) = 1 − α says how expert the unit is "
    "(0 at chance level, 1 for a perfect detector; it is also the share of the unit's output AurA removes). τ is the "
    "unit's firing threshold: the cut on its max-over-tokens response that best separates toxic from non-toxic "
    "concept texts. p is its usual peak, the mean size of that response over the concept texts: it puts units whose "
    "outputs differ in size by orders of magnitude on one scale. A token's score sums every unit's; its experts are "
    "the units of highest score."
)


def expert_weights(intervention: Intervention) -> dict[str, torch.Tensor]:
    """w = max(0, 2·(AUROC − 0.5)) per unit: how expert each unit is, whatever method the file was saved with.

    >>> expert_weights(Intervention({"m": torch.tensor([0.25, 0.5, 0.75, 1.0])}))["m"].tolist()
    [0.0, 0.0, 0.5, 1.0]
    """
    return {name: (2.0 * (a.to(torch.float32) - 0.5)).clamp(min=0.0) for name, a in intervention.auroc.items()}


@dataclass(frozen=True)
class Baselines:
    """Per unit: τ, its firing threshold, and p, its usual peak (both from the concept texts' responses)."""

    thresholds: dict[str, torch.Tensor]
    peaks: dict[str, torch.Tensor]


def unit_baselines(responses: Responses) -> Baselines:
    """τ (:func:`aura_core.method.stats.youden_thresholds`, as the fit stores it) and p (mean |response|, at least 1e-3) of every unit.

    >>> r = Responses({"m": torch.tensor([[2.0, -0.5], [0.0, 0.5]])}, torch.tensor([1, 0]))
    >>> b = unit_baselines(r)  # unit 1 responds more to the non-toxic text: τ is its highest response
    >>> b.thresholds["m"].tolist(), b.peaks["m"].tolist()
    ([1.0, 0.5], [1.0, 0.5])
    """
    return Baselines(
        thresholds={name: youden_thresholds(values, responses.labels) for name, values in responses.per_module.items()},
        peaks={name: values.abs().mean(dim=0).to(torch.float32).clamp(min=1e-3) for name, values in responses.per_module.items()},
    )


@dataclass(frozen=True)
class _Scorer:
    """τ, p and w of one module's units, on the module's device: turns its outputs into unit scores."""

    threshold: torch.Tensor
    peak: torch.Tensor
    weight: torch.Tensor

    def scores(self, acts: torch.Tensor) -> torch.Tensor:
        """max(0, (activation − τ) / p) · w for every token and unit."""
        return (acts - self.threshold).div_(self.peak).clamp_(min=0.0).mul_(self.weight)


def _scorers(intervention: Intervention, baselines: Baselines | None, device: torch.device) -> dict[str, _Scorer]:
    weights = expert_weights(intervention)
    scorers = {}
    for name, weight in weights.items():
        threshold = baselines.thresholds.get(name) if baselines else None
        peak = baselines.peaks.get(name) if baselines else None
        threshold = torch.zeros_like(weight) if threshold is None else threshold.to(torch.float32)
        peak = torch.ones_like(weight) if peak is None else peak.to(torch.float32)
        if threshold.shape != weight.shape or peak.shape != weight.shape:
            raise DataError(f"the baselines of {name} hold {peak.numel()} units, the intervention {weight.numel()}")
        scorers[name] = _Scorer(threshold.to(device), peak.to(device), weight.to(device))
    return scorers


@dataclass(frozen=True)
class FiringExpert:
    """One unit firing at a token: its raw activation there, τ, p, AUROC, w, and its score."""

    module: str
    unit: int
    activation: float
    threshold: float
    peak: float
    auroc: float
    weight: float

    @property
    def score(self) -> float:
        return max(0.0, (self.activation - self.threshold) / self.peak) * self.weight

    @property
    def ref(self) -> str:
        return unit_ref(self.module, self.unit)

    def as_dict(self) -> dict[str, object]:
        return {
            "ref": self.ref,
            **asdict(self),
            "layer": layer_of(self.module),
            "kind": module_kind(self.module),
            "score": self.score,
        }


@dataclass(frozen=True)
class FiringToken:
    """One piece of the text (a token, or a character's byte fragments merged), its score and top experts."""

    text: str
    start: int
    stop: int
    score: float
    experts: tuple[FiringExpert, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "token": self.text,
            "shown": visible_whitespace(self.text),
            "tokens": [self.start, self.stop],
            "score": self.score,
            "experts": [e.as_dict() for e in self.experts],
        }


@dataclass(frozen=True)
class Firing:
    """Which experts fire on ``text``, piece by piece."""

    text: str
    tokens: tuple[FiringToken, ...]

    def as_dict(self) -> dict[str, object]:
        return {"text": self.text, "weighting": WEIGHTING, "tokens": [t.as_dict() for t in self.tokens]}


class _Candidates:
    """Per module, each token's best ``k`` units by score (the text's best units are among them)."""

    def __init__(self, scorers: dict[str, _Scorer], k: int) -> None:
        self.scorers = scorers
        self.k = k
        self.names: list[str] = []
        self.scores: list[torch.Tensor] = []
        self.units: list[torch.Tensor] = []
        self.activations: list[torch.Tensor] = []
        self.total: torch.Tensor | None = None

    def record(self, name: str, hidden: torch.Tensor) -> None:
        acts = hidden[0].float()  # (tokens, units): one text
        scores = self.scorers[name].scores(acts)
        total = scores.sum(dim=1).cpu()
        self.total = total if self.total is None else self.total + total
        best, units = scores.topk(min(self.k, scores.shape[1]), dim=1)
        self.names.append(name)
        self.scores.append(best.cpu())
        self.units.append(units.cpu())
        self.activations.append(acts.gather(1, units).cpu())


def experts_firing(
    model: nn.Module,
    tokenizer: Tokenizer,
    intervention: Intervention,
    text: str,
    *,
    baselines: Baselines | None = None,
    top_k: int = 8,
    max_tokens: int = 256,
    runner: Runner = INLINE,
) -> Firing:
    """One forward pass over ``text`` recording every unit the intervention scores (see :data:`WEIGHTING`).

    The text is tokenised as collection does (no leading BOS, at most ``max_tokens`` tokens);
    the pass stops after the last unit module. Only units with a positive score are listed.
    """
    if not text.strip():
        raise DataError("the text is empty: type something for the experts to read")
    if top_k < 1:
        raise DataError("top_k must be at least 1")
    intervention.check_fits(model)
    device = next(model.parameters()).device
    ids = tokenize_texts(tokenizer, [text], max_tokens)[0]
    candidates = _Candidates(_scorers(intervention, baselines, device), top_k)
    input_ids, attention = pad_right([ids], tokenizer.pad_token_id, device)
    record = {name: partial(candidates.record, name) for name in candidates.scorers}
    runner.run(partial(forward_until_recorded, model, input_ids, attention, record), priority="interactive")
    table = _CandidateTable(candidates, intervention)
    return Firing(text, tuple(table.piece(piece, top_k) for piece in text_pieces(tokenizer, ids)))


class _CandidateTable:
    """Every module's candidates side by side: (tokens, modules × k)."""

    def __init__(self, candidates: _Candidates, intervention: Intervention) -> None:
        assert candidates.total is not None
        self.candidates = candidates
        self.intervention = intervention
        self.total = candidates.total
        self.scores = torch.cat(candidates.scores, dim=1)
        self.units = torch.cat(candidates.units, dim=1)
        self.activations = torch.cat(candidates.activations, dim=1)
        self.owner = torch.cat([torch.full((s.shape[1],), m) for m, s in enumerate(candidates.scores)])

    def piece(self, piece: Piece, top_k: int) -> FiringToken:
        """A piece's experts: each unit at its best token of the piece (a one-token piece: that token)."""
        span = slice(piece.start, piece.stop)
        scores = self.scores[span].reshape(-1)
        units = self.units[span].reshape(-1).tolist()
        acts = self.activations[span].reshape(-1).tolist()
        owners = self.owner.repeat(piece.stop - piece.start).tolist()
        experts: list[FiringExpert] = []
        seen: set[tuple[int, int]] = set()
        for index in torch.argsort(scores, descending=True, stable=True).tolist():
            if len(experts) == top_k or float(scores[index]) <= 0.0:
                break
            owner, unit = owners[index], units[index]
            if (owner, unit) in seen:
                continue
            seen.add((owner, unit))
            name = self.candidates.names[owner]
            scorer = self.candidates.scorers[name]
            experts.append(
                FiringExpert(
                    module=name,
                    unit=unit,
                    activation=acts[index],
                    threshold=float(scorer.threshold[unit]),
                    peak=float(scorer.peak[unit]),
                    auroc=float(self.intervention.auroc[name][unit]),
                    weight=float(scorer.weight[unit]),
                )
            )
        return FiringToken(piece.text, piece.start, piece.stop, float(self.total[span].max()), tuple(experts))


@dataclass(frozen=True)
class ActivityPiece:
    """A piece of a completion: its summed expert score, and the part of it an intervention removed."""

    text: str
    expert: float
    reduced: float


def generation_activity(
    model: nn.Module,
    tokenizer: Tokenizer,
    experts: Intervention,
    prompt: str,
    completion: str,
    *,
    baselines: Baselines | None = None,
    applied: Intervention | None = None,
    runner: Runner = INLINE,
) -> list[ActivityPiece]:
    """Per piece of ``completion`` (read after ``prompt``): its summed expert score, and what ``applied`` removed.

    The model reads prompt and completion as one text, the completion re-encoded (the tokens
    the model would read it back as). With ``applied``, every unit it scales is recorded before
    and after its factor: ``expert`` sums the scores the model goes on with, ``reduced`` the
    scores the factors took away. Without, ``reduced`` is 0. Scores as in :data:`WEIGHTING`,
    with ``experts`` giving the AUROC.

    >>> pieces = generation_activity(model, tok, aura, "You are", " a fool", applied=aura)   # doctest: +SKIP
    >>> [(p.text, round(p.reduced, 2)) for p in pieces]                                         # doctest: +SKIP
    [(' a', 0.4), (' fool', 3.1)]
    """
    if not completion:
        return []
    experts.check_fits(model)
    prompt_ids = encode(tokenizer, [prompt])[0] if prompt else []
    completion_ids = encode(tokenizer, [completion], add_special_tokens=False)[0]
    if not completion_ids:
        return []
    ids = prompt_ids + completion_ids
    device = next(model.parameters()).device
    scorers = _scorers(experts, baselines, device)
    plan = row_plan(model, [applied])
    scale = dict(plan.scale) if plan is not None else {}
    expert = torch.zeros(len(ids))  # every unit, as the model goes on with it
    before = torch.zeros(len(ids))  # the scaled units, before their factor
    kept = torch.zeros(len(ids))  # the scaled units, after it

    def after_factor(name: str, hidden: torch.Tensor) -> None:
        summed = scorers[name].scores(hidden[0].float()).sum(dim=1).cpu()
        expert.add_(summed)
        if name in scale:
            kept.add_(summed)

    def before_factor(name: str, hidden: torch.Tensor) -> None:
        before.add_(scorers[name].scores(hidden[0].float()).sum(dim=1).cpu())

    record = {name: partial(after_factor, name) for name in scorers}
    record_raw = {name: partial(before_factor, name) for name in scorers if name in scale}
    input_ids, attention = pad_right([ids], tokenizer.pad_token_id, device)
    runner.run(
        partial(forward_until_recorded, model, input_ids, attention, record, record_raw=record_raw, edits=plan),
        priority="interactive",
    )
    reduced = before - kept
    offset = len(prompt_ids)
    return [
        ActivityPiece(
            p.text,
            float(expert[offset + p.start : offset + p.stop].max()),
            float(reduced[offset + p.start : offset + p.stop].max()),
        )
        for p in text_pieces(tokenizer, completion_ids)
    ]
