"""Sampling settings and the next-token rule, row by row, each row with its own random stream.

Every row of a batch is processed on its own (its penalty, temperature, filters and its own
seeded ``torch.Generator``), so a row's tokens never depend on which rows share its batch.

>>> import torch
>>> logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 0.0]])
>>> greedy = SamplingSettings(do_sample=False)
>>> next_tokens(logits, [greedy, greedy], [None, None], [[0], [1]]).tolist()
[1, 0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from aura_core.errors import AuraError

__all__ = ["SAMPLING_PRESETS", "SamplingSettings", "next_tokens", "row_generator"]


@dataclass(frozen=True)
class SamplingSettings:
    """Sampling settings; ``top_k = 0`` and ``top_p = 1`` switch those filters off."""

    max_new_tokens: int = 20
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    do_sample: bool = True
    num_return_sequences: int = 1

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.num_return_sequences < 1:
            raise AuraError("max_new_tokens and the number of samples must be at least 1")
        if self.do_sample and self.temperature <= 0:
            raise AuraError("temperature must be above 0 when sampling")
        if not 0 < self.top_p <= 1:
            raise AuraError("top_p must be within (0, 1]")
        if self.top_k < 0:
            raise AuraError("top_k must be 0 (off) or more")
        if self.repetition_penalty <= 0:
            raise AuraError("repetition penalty must be above 0 (1 is off)")

    def with_(self, **changes: object) -> SamplingSettings:
        return replace(self, **changes)  # type: ignore[arg-type]


SAMPLING_PRESETS: dict[str, SamplingSettings] = {
    # Suau et al. 2024: 25 sampled completions of 20 tokens per prompt.
    "paper": SamplingSettings(max_new_tokens=20, num_return_sequences=25),
    # The follow-up protocol: 1 completion of 32 tokens, T=1.0, top_p=0.3, repetition penalty 1.2.
    "followup": SamplingSettings(max_new_tokens=32, temperature=1.0, top_p=0.3, repetition_penalty=1.2),
    # A default evaluation that finishes within minutes on 2 cores: 4 completions of 20 tokens.
    "quick": SamplingSettings(max_new_tokens=20, num_return_sequences=4),
    "demo": SamplingSettings(max_new_tokens=30, temperature=0.9, top_p=0.95, repetition_penalty=1.1),
}


def row_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The random stream of one row: the same seed gives the same draws, alone or in any batch."""
    return torch.Generator(device=device).manual_seed(int(seed) % 2**63)


def _penalise(logits: torch.Tensor, seen: list[int], penalty: float) -> None:
    """The CTRL repetition penalty on one row, in place: seen tokens' logits shrink towards 0."""
    index = torch.tensor(sorted(set(seen)), dtype=torch.long, device=logits.device)
    values = logits.index_select(0, index)
    logits.index_copy_(0, index, torch.where(values < 0, values * penalty, values / penalty))


def _candidates(values: torch.Tensor, top_k: int, top_p: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The ids and logits left by top-k and the top-p nucleus, most likely first; None when unfiltered.

    Only the head of the distribution is ranked (a full sort of a large vocabulary costs
    milliseconds per row); it is widened until it holds the whole nucleus, so the result is
    the same as ranking everything.
    """
    if top_k <= 0 and top_p >= 1.0:
        return None
    vocab = values.shape[0]
    width = min(vocab, top_k if top_k > 0 else 256)
    log_total = torch.logsumexp(values, dim=0)
    while True:
        head, ids = torch.topk(values, width)
        if top_p >= 1.0:
            return ids, head
        probs = torch.exp(head - log_total)
        before = torch.cumsum(probs, dim=0) - probs  # mass ranked above each token
        keep = before < top_p
        keep[0] = True  # the most likely token always stays
        if bool(keep.all()) and width < vocab and (top_k <= 0 or width < top_k) and float(probs.sum()) < top_p:
            width = min(vocab, width * 8)  # the nucleus reaches past the head: rank more
            continue
        return ids[keep], head[keep]


def _draw(logits: torch.Tensor, generator: torch.Generator | None) -> int:
    """One draw from softmax(logits) by the inverse CDF (one uniform number per draw)."""
    probs = torch.softmax(logits.double(), dim=0)
    cumulative = torch.cumsum(probs, dim=0)
    u = torch.rand((1,), generator=generator, dtype=torch.float64, device=logits.device) * cumulative[-1]
    return int(torch.searchsorted(cumulative, u).clamp(max=logits.shape[0] - 1)[0])


def next_tokens(
    logits: torch.Tensor,
    settings: Sequence[SamplingSettings],
    generators: Sequence[torch.Generator | None],
    history: Sequence[list[int]],
) -> torch.Tensor:
    """The next token of each row from its last-position logits ``(rows, vocab)``.

    ``history[i]`` holds the row's prompt and generated ids (for the repetition penalty);
    a row that samples draws from ``generators[i]``.
    """
    logits = logits.float()
    chosen = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
    for row, (rule, generator) in enumerate(zip(settings, generators, strict=True)):
        values = logits[row]
        if rule.repetition_penalty != 1.0 and history[row]:
            values = values.clone()
            _penalise(values, history[row], rule.repetition_penalty)
        if not rule.do_sample:
            chosen[row] = torch.argmax(values)
            continue
        values = values / rule.temperature
        kept = _candidates(values, rule.top_k, rule.top_p)
        if kept is None:
            chosen[row] = _draw(values, generator)
        else:
            ids, head = kept
            chosen[row] = ids[_draw(head, generator)]
    return chosen
