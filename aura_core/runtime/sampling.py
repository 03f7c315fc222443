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

from aura_core.base.numbers import check_finite
from aura_core.errors import AuraError

__all__ = ["SAMPLING_PRESETS", "SamplingSettings", "describe_presets", "next_tokens", "row_generator"]


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
        check_finite(self)
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

    def describe(self) -> str:
        """What a person needs to tell presets apart: ``4×20 tokens`` and whatever is not the default.

        >>> SamplingSettings(max_new_tokens=32, top_p=0.3, repetition_penalty=1.2).describe()
        '1×32 tokens, top_p 0.3, repetition penalty 1.2'
        >>> SamplingSettings(do_sample=False).describe()
        '1×20 tokens, greedy'
        """
        parts = [f"{self.num_return_sequences}×{self.max_new_tokens} tokens"]
        if not self.do_sample:
            return ", ".join([*parts, "greedy"])
        plain = SamplingSettings()
        for label, value, default in (
            ("T", self.temperature, plain.temperature),
            ("top_p", self.top_p, plain.top_p),
            ("top_k", self.top_k, plain.top_k),
            ("repetition penalty", self.repetition_penalty, plain.repetition_penalty),
        ):
            if value != default:
                parts.append(f"{label} {value:g}")
        return ", ".join(parts)


def describe_presets(names: Sequence[str] | None = None) -> str:
    """One line naming each preset and what it does, for help texts.

    >>> describe_presets(["quick"])
    'quick: 4×20 tokens'
    """
    chosen = list(SAMPLING_PRESETS) if names is None else list(names)
    return " · ".join(f"{name}: {SAMPLING_PRESETS[name].describe()}" for name in chosen)


SAMPLING_PRESETS: dict[str, SamplingSettings] = {
    # Suau et al. 2024: 25 sampled completions of 20 tokens per prompt.
    "paper": SamplingSettings(max_new_tokens=20, num_return_sequences=25),
    # The follow-up protocol: 1 completion of 32 tokens, T=1.0, top_p=0.3, repetition penalty 1.2.
    "followup": SamplingSettings(max_new_tokens=32, temperature=1.0, top_p=0.3, repetition_penalty=1.2),
    # A default evaluation that finishes within minutes on 2 cores: 4 completions of 20 tokens.
    "quick": SamplingSettings(max_new_tokens=20, num_return_sequences=4),
    "demo": SamplingSettings(max_new_tokens=30, temperature=0.9, top_p=0.95, repetition_penalty=1.1),
    # The most likely token every time: no randomness, so the text follows from the prompt alone.
    "greedy": SamplingSettings(max_new_tokens=20, do_sample=False),
}


def row_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The random stream of one row: the same seed gives the same draws, alone or in any batch."""
    return torch.Generator(device=device).manual_seed(int(seed) % 2**63)


def _penalised(logits: torch.Tensor, settings: Sequence[SamplingSettings], history: Sequence[list[int]]) -> torch.Tensor:
    """The CTRL repetition penalty, row by row: the logits of tokens a row has seen shrink towards 0."""
    penalty = [rule.repetition_penalty if ids else 1.0 for rule, ids in zip(settings, history, strict=True)]
    if all(p == 1.0 for p in penalty):
        return logits
    width = max(len(ids) for ids in history)
    # Rows are padded with one of their own ids: penalising a token twice writes the same value twice.
    seen = torch.tensor([ids + [ids[0]] * (width - len(ids)) if ids else [0] * width for ids in history], device=logits.device)
    factor = torch.tensor(penalty, device=logits.device, dtype=logits.dtype).unsqueeze(1)
    values = logits.gather(1, seen)
    return logits.scatter(1, seen, torch.where(values < 0, values * factor, values / factor))


_BLOCK = 512
"""Tokens a draw sums at a time: block totals first, then prefix sums inside the one block hit."""


def _draw(weights: torch.Tensor, generators: Sequence[torch.Generator | None]) -> torch.Tensor:
    """One index per row, drawn in proportion to its (unnormalised, non-negative) weights by the inverse CDF.

    Each row uses one uniform number from its own generator. The search runs block by block
    (float64 exponentials and prefix sums of a whole vocabulary took a quarter of a decode step), and
    each block is summed on its own, so a row draws the same index however wide its batch made it.
    The index drawn always has a positive weight.

    >>> weights = torch.tensor([[0.0, 1.0, 0.0, 3.0]])
    >>> int(_draw(weights, [row_generator(0)])[0]) in (1, 3)
    True
    """
    rows, width = weights.shape
    block = min(_BLOCK, width)
    if width % block:
        weights = torch.nn.functional.pad(weights, (0, block - width % block))  # zeros change no prefix sum
    blocks = weights.reshape(rows, -1, block)
    ends = torch.cumsum(blocks.sum(dim=2).double(), dim=1)  # the mass up to each block's end
    u = torch.cat([torch.rand((1,), generator=g, dtype=torch.float64, device=weights.device) for g in generators])
    total = ends[:, -1:]
    target = torch.minimum(u.unsqueeze(1) * total, torch.nextafter(total, torch.zeros_like(total)))  # below the end
    hit = torch.searchsorted(ends, target, right=True).clamp(max=ends.shape[1] - 1)
    start = torch.where(hit > 0, ends.gather(1, (hit - 1).clamp(min=0)), torch.zeros_like(target))
    inside = torch.cumsum(blocks[torch.arange(rows, device=weights.device), hit.squeeze(1)].double(), dim=1)
    # The block's own sum can round below the part of the target it holds: stay inside the block.
    last = inside[:, -1:]
    local = torch.minimum(target - start, torch.nextafter(last, torch.zeros_like(last))).clamp(min=0.0)
    index = torch.searchsorted(inside, local, right=True).clamp(max=block - 1)
    return (hit * block + index).squeeze(1)


_HEAD_WIDTHS = (256, 2048, 16384)
"""How many top tokens a row ranks at first, then if its nucleus reaches past them (then all)."""


def _sample(
    logits: torch.Tensor, settings: Sequence[SamplingSettings], generators: Sequence[torch.Generator | None]
) -> torch.Tensor:
    """Temperature, then top-k and the top-p nucleus, then one draw per row."""
    device = logits.device
    if any(rule.temperature != 1.0 for rule in settings):  # dividing by 1 changes nothing and costs a pass
        temperature = torch.tensor([rule.temperature for rule in settings], device=device, dtype=logits.dtype)
        logits = logits / temperature.unsqueeze(1)
    if all(rule.top_k <= 0 and rule.top_p >= 1.0 for rule in settings):
        return _draw(torch.sub(logits, logits.amax(dim=1, keepdim=True)).exp_(), generators)
    # Only the head of each distribution is ranked (a full sort of a large vocabulary costs
    # milliseconds per row). A row whose nucleus reaches past its head is ranked again, wider,
    # on its own: how wide a row is ranked depends on that row alone, never on its batch.
    vocab = logits.shape[1]
    peak = logits.amax(dim=1, keepdim=True)
    # Each row's softmax mass; float32 sums are exact enough, the logits themselves move more
    # than that with the batch's size.
    total = (logits - peak).exp_().sum(dim=1).double()
    chosen = torch.empty(len(settings), dtype=torch.long, device=device)
    rows = list(range(len(settings)))
    for width in (*(w for w in _HEAD_WIDTHS if w < vocab), vocab):
        if not rows:
            break
        index = torch.tensor(rows, device=device)
        head, ids = torch.topk(logits if len(rows) == len(settings) else logits[index], width, dim=1)
        probs = torch.exp(head.double() - peak[index].double()) / total[index].unsqueeze(1)
        before = torch.cumsum(probs, dim=1) - probs  # mass ranked above each token
        rank = torch.arange(width, device=device).unsqueeze(0)
        top_p = torch.tensor([settings[i].top_p for i in rows], device=device, dtype=torch.float64).unsqueeze(1)
        top_k = torch.tensor([settings[i].top_k for i in rows], device=device).unsqueeze(1)
        keep = (before < top_p) & ((top_k <= 0) | (rank < top_k))
        keep[:, 0] = True  # the most likely token always stays
        limited = top_k.squeeze(1)
        wider = keep[:, -1] & ((limited <= 0) | (limited > width)) & (probs.sum(dim=1) < top_p.squeeze(1))
        if width == vocab:
            wider = torch.zeros_like(wider)  # the whole vocabulary holds every nucleus
        done = (~wider).nonzero().squeeze(1)
        if done.numel():
            weights = torch.exp(head[done].double() - head[done, :1].double()).masked_fill(~keep[done], 0.0)
            drawn = _draw(weights, [generators[rows[i]] for i in done.tolist()])
            chosen[index[done]] = ids[done].gather(1, drawn.unsqueeze(1)).squeeze(1)
        rows = [row for row, again in zip(rows, wider.tolist(), strict=True) if again]
    return chosen


def next_tokens(
    logits: torch.Tensor,
    settings: Sequence[SamplingSettings],
    generators: Sequence[torch.Generator | None],
    history: Sequence[list[int]],
) -> torch.Tensor:
    """The next token of each row from its last-position logits ``(rows, vocab)``.

    ``history[i]`` holds the row's prompt and generated ids (for the repetition penalty);
    a row that samples draws from ``generators[i]``. Every operation works row by row, so a
    row's token never depends on the other rows.
    """
    logits = _penalised(logits.float(), settings, history)
    sampled = [row for row, rule in enumerate(settings) if rule.do_sample]
    if len(sampled) == len(settings):
        return _sample(logits, settings, generators)
    chosen = torch.argmax(logits, dim=1)
    if sampled:
        index = torch.tensor(sampled, device=logits.device)
        chosen[index] = _sample(logits[index], [settings[r] for r in sampled], [generators[r] for r in sampled])
    return chosen
