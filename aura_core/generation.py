"""Seeded, batched sampling with an optional pre-prompt, plain or under an intervention.

The same seed gives the baseline and the intervened run the same random stream per batch,
so paired completions differ only by the intervention.

>>> outs = generate(model, tok, ["The weather today is"], seed=0)          # doctest: +SKIP
>>> outs[0].completion                                                    # doctest: +SKIP
' sunny and warm, with a light breeze...'
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from aura_core.errors import AuraError
from aura_core.interventions import Intervention, intervened

__all__ = ["SAMPLING_PRESETS", "Generation", "SamplingSettings", "compose_prompt", "generate", "stream_completion"]


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

    def with_(self, **changes: object) -> SamplingSettings:
        return replace(self, **changes)


SAMPLING_PRESETS: dict[str, SamplingSettings] = {
    # Suau et al. 2024: 25 sampled completions of 20 tokens per prompt.
    "paper": SamplingSettings(max_new_tokens=20, num_return_sequences=25),
    # The follow-up protocol: 1 completion of 32 tokens, T=1.0, top_p=0.3, repetition penalty 1.2.
    "followup": SamplingSettings(max_new_tokens=32, temperature=1.0, top_p=0.3, repetition_penalty=1.2),
    # A default evaluation that finishes within minutes on 2 cores: 4 completions of 20 tokens.
    "quick": SamplingSettings(max_new_tokens=20, num_return_sequences=4),
    "demo": SamplingSettings(max_new_tokens=30, temperature=0.9, top_p=0.95, repetition_penalty=1.1),
}


@dataclass(frozen=True)
class Generation:
    """One completion: which prompt, which sample, and the text the model added."""

    prompt_index: int
    sample: int
    prompt: str
    pre_prompt: str
    completion: str

    def as_dict(self) -> dict:
        return asdict(self)


def compose_prompt(prompt: str, pre_prompt: str | None) -> str:
    """The text the model sees: the pre-prompt on its own line, then the prompt.

    >>> compose_prompt("You are", "Be nice and polite.")
    'Be nice and polite.\\nYou are'
    """
    return f"{pre_prompt.strip()}\n{prompt}" if pre_prompt and pre_prompt.strip() else prompt


def _generate_kwargs(settings: SamplingSettings, tokenizer: object) -> dict:
    kwargs = {"max_new_tokens": settings.max_new_tokens, "do_sample": settings.do_sample, "pad_token_id": tokenizer.pad_token_id}
    if settings.do_sample:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
    if settings.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = settings.repetition_penalty
    return kwargs


@contextmanager
def _seeded(device: torch.device, seed: int, batch_index: int) -> Iterator[None]:
    """The random stream of one batch, derived from ``seed``; the caller's RNG state is restored after."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int.from_bytes(hashlib.sha256(f"{seed}:{batch_index}".encode()).digest()[:7], "little"))
        yield


def generate(
    model: nn.Module,
    tokenizer: object,
    prompts: list[str],
    *,
    pre_prompt: str | None = None,
    settings: SamplingSettings = SamplingSettings(),
    seed: int = 0,
    batch_size: int = 16,
    intervention: Intervention | None = None,
    mode: str = "fold",
    progress: Callable[[int, int], None] | None = None,
) -> list[Generation]:
    """``settings.num_return_sequences`` completions of every prompt, in prompt order.

    Completions are new tokens only: the pre-prompt and prompt are never part of them.
    """
    if not prompts:
        raise AuraError("no prompts to generate from")
    jobs = [(i, s) for i in range(len(prompts)) for s in range(settings.num_return_sequences)]
    texts = [compose_prompt(prompts[i], pre_prompt) for i, _ in jobs]
    # Sorting by length cuts left padding; the order is the same for every run of these prompts.
    lengths = [len(t) for t in texts]
    order = sorted(range(len(jobs)), key=lambda j: (-lengths[j], j))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    device = next(model.parameters()).device
    completions: dict[int, str] = {}
    gen_kwargs = _generate_kwargs(settings, tokenizer)
    tokenizer.padding_side = "left"
    done = 0
    with intervened(model, intervention, mode), torch.inference_mode():
        for batch_index, batch in enumerate(batches):
            encoded = tokenizer([texts[j] for j in batch], return_tensors="pt", padding=True).to(device)
            with _seeded(device, seed, batch_index):
                output = model.generate(**encoded, **gen_kwargs)
            new_tokens = output[:, encoded["input_ids"].shape[1] :]
            for j, text in zip(batch, tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=False):
                completions[j] = text
            done += len(batch)
            if progress:
                progress(done, len(jobs))
    return [Generation(i, s, prompts[i], pre_prompt or "", completions[j]) for j, (i, s) in enumerate(jobs)]


def stream_completion(
    model: nn.Module,
    tokenizer: object,
    prompt: str,
    *,
    pre_prompt: str | None = None,
    settings: SamplingSettings = SamplingSettings(),
    seed: int = 0,
    intervention: Intervention | None = None,
    mode: str = "fold",
) -> Iterator[str]:
    """Yield one completion piece by piece as it is sampled.

    It draws the same random stream as ``generate([prompt], ...)`` for its first sample, so a
    streamed demo and a batch run with the same seed agree. The model's lock is held by the
    generating thread for the whole completion.
    """
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
    device = next(model.parameters()).device
    encoded = tokenizer([compose_prompt(prompt, pre_prompt)], return_tensors="pt").to(device)
    kwargs = {**_generate_kwargs(settings, tokenizer), "num_return_sequences": 1, "streamer": streamer}
    failure: list[BaseException] = []

    def work() -> None:
        try:
            with intervened(model, intervention, mode), torch.inference_mode():
                with _seeded(device, seed, 0):
                    model.generate(**encoded, **kwargs)
        except BaseException as err:  # re-raised in the consumer's thread below
            failure.append(err)
            streamer.end()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    yield from streamer
    thread.join()
    if failure:
        raise failure[0]
