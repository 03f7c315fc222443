"""Seeded generation with an optional pre-prompt, plain or under an intervention, row by row.

Every completion has its own random stream, derived from the seed, the prompt and the sample
number. A baseline and an intervened completion of the same prompt and sample therefore draw
the same random numbers (they differ only by the intervention), and a completion is the same
whatever other rows share its batch.

>>> outs = generate(model, tok, ["The weather today is"], seed=0)          # doctest: +SKIP
>>> outs[0].completion                                                    # doctest: +SKIP
' sunny and warm, with a light breeze...'
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

from torch import nn

from aura_core.base.batching import Tokenizer, encode
from aura_core.errors import AuraError
from aura_core.method.intervention import Intervention
from aura_core.runtime.decoding import DecodeRow
from aura_core.runtime.inline import INLINE
from aura_core.runtime.runner import Priority, Runner
from aura_core.runtime.sampling import SAMPLING_PRESETS, SamplingSettings

__all__ = [
    "PREPROMPT_FORMS",
    "SAMPLING_PRESETS",
    "Generation",
    "SamplingSettings",
    "completion_rows",
    "compose_prompt",
    "generate",
    "row_seed",
    "side_by_side_rows",
]


@dataclass(frozen=True)
class Generation:
    """One completion: which prompt, which sample, and the text the model added."""

    prompt_index: int
    sample: int
    prompt: str
    pre_prompt: str
    completion: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


PREPROMPT_FORMS = ("text", "system")


def compose_prompt(prompt: str, pre_prompt: str | None, *, form: str = "text", tokenizer: Tokenizer | None = None) -> str:
    """The text the model sees. ``text``: the pre-prompt on its own line, then the prompt.

    ``system``: the pre-prompt as the system message of the tokenizer's chat template, and the
    prompt as the start of the assistant's turn (how an instruct model is told how to behave).

    >>> compose_prompt("You are", "Be nice and polite.")
    'Be nice and polite.\\nYou are'
    """
    if not pre_prompt or not pre_prompt.strip():
        return prompt
    if form == "text":
        return f"{pre_prompt.strip()}\n{prompt}"
    if form != "system":
        raise AuraError(f"pre-prompt form must be one of {', '.join(PREPROMPT_FORMS)}, not {form!r}")
    template = getattr(tokenizer, "chat_template", None)
    if tokenizer is None or not template:
        raise AuraError("this model's tokenizer has no chat template: use the plain-text pre-prompt form")
    messages = [{"role": "system", "content": pre_prompt.strip()}]
    opening = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)  # type: ignore[attr-defined]
    return f"{opening}{prompt}"


def row_seed(seed: int, prompt: str, sample: int) -> int:
    """The random stream of one completion: equal for a prompt's baseline and intervened sample.

    >>> row_seed(0, "You are", 1) == row_seed(0, "You are", 1) != row_seed(0, "You are", 2)
    True
    """
    return int.from_bytes(hashlib.sha256(f"{seed}\x00{sample}\x00{prompt}".encode()).digest()[:8], "little")


def completion_rows(
    tokenizer: Tokenizer,
    prompts: list[str],
    *,
    pre_prompt: str | None = None,
    settings: SamplingSettings = SamplingSettings(),
    seed: int = 0,
    intervention: Intervention | None = None,
    preprompt_form: str = "text",
) -> list[DecodeRow]:
    """One row per prompt and sample (prompt-major), ready for a runner to decode."""
    if not prompts:
        raise AuraError("no prompts to generate from")
    empty = [i for i, p in enumerate(prompts) if not p.strip()]
    if empty:
        raise AuraError(f"prompt {empty[0] + 1} is empty: give some text to continue")
    texts = [compose_prompt(p, pre_prompt, form=preprompt_form, tokenizer=tokenizer) for p in prompts]
    # A chat template already holds its special tokens; plain text gets the tokenizer's own.
    templated = preprompt_form == "system" and bool(pre_prompt and pre_prompt.strip())
    ids = encode(tokenizer, texts, add_special_tokens=not templated)
    per_row = settings.with_(num_return_sequences=1)
    return [
        DecodeRow(list(ids[i]), per_row, seed=row_seed(seed, prompt, sample), intervention=intervention)
        for i, prompt in enumerate(prompts)
        for sample in range(settings.num_return_sequences)
    ]


def side_by_side_rows(
    tokenizer: Tokenizer,
    prompt: str,
    sides: Mapping[str, Intervention | None],
    *,
    pre_prompt: str | None = None,
    settings: SamplingSettings = SamplingSettings(),
    seed: int = 0,
) -> dict[str, list[DecodeRow]]:
    """Rows for comparing ``sides`` on one prompt: sample ``j`` of every side shares one random stream.

    >>> rows = side_by_side_rows(tok, "You are", {"baseline": None, "aura": aura})   # doctest: +SKIP
    """
    return {
        side: completion_rows(tokenizer, [prompt], pre_prompt=pre_prompt, settings=settings, seed=seed, intervention=iv)
        for side, iv in sides.items()
    }


def generate(
    model: nn.Module,
    tokenizer: Tokenizer,
    prompts: list[str],
    *,
    pre_prompt: str | None = None,
    settings: SamplingSettings = SamplingSettings(),
    seed: int = 0,
    intervention: Intervention | None = None,
    runner: Runner = INLINE,
    priority: Priority = "bulk",
    progress: Callable[[int, int], None] | None = None,
) -> list[Generation]:
    """``settings.num_return_sequences`` completions of every prompt, in prompt order.

    Completions are new tokens only: the pre-prompt and prompt are never part of them. The
    rows decode on ``runner``: inline, or on a server's engine beside other sessions' rows.
    """
    rows = completion_rows(tokenizer, prompts, pre_prompt=pre_prompt, settings=settings, seed=seed, intervention=intervention)
    runner.decode(model, rows, priority=priority, progress=progress)
    texts = tokenizer.batch_decode([row.tokens for row in rows], skip_special_tokens=True)
    samples = settings.num_return_sequences
    return [
        Generation(index // samples, index % samples, prompts[index // samples], pre_prompt or "", text)
        for index, text in enumerate(texts)
    ]
