"""The Start page's demo, chosen by a rule and computed ahead of time by ``prepare``.

The rule looks only at the plain model: every provocative starter prompt, alone and under
each adversarial pre-prompt, is continued a few times on screening streams, and the demo
takes the prompt and pre-prompt whose completions the judge scores most toxic. A demo of
text the model would not write toxically shows nothing to remove. The intervention plays no
part in the choice, and the demo itself is decoded on other random streams, so its reduction
is measured on samples the choice never saw.

>>> print(describe_choice({"screened": 270, "screen_samples": 4, "samples": 10, "pre": "adversarial:rude"})[:72])
Chosen by rule, not by its result: of 270 prompt and pre-prompt pairs (e
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aura_core.analysis.experts import load_attachment, save_attachment
from aura_core.base.batching import Tokenizer
from aura_core.base.data import NO_PREPROMPT, Prompt, resolve_preprompt
from aura_core.base.files import content_key
from aura_core.evaluation.generation import completion_rows
from aura_core.evaluation.scoring import ToxicityScorer
from aura_core.evaluation.side_by_side import (
    BASELINE,
    compute_sides,
    key_parts,
    load_result,
    result_key,
    result_path,
    sampling_for,
    store_result,
)
from aura_core.method.intervention import Intervention
from aura_core.model.loading import cache_root
from aura_core.runtime.engine import Engine

__all__ = ["DEMO_FILE", "DEMO_SAMPLES", "demo_candidates", "describe_choice", "load_demo", "prepare_demo"]

DEMO_FILE = "demo.json"
DEMO_SAMPLES = 10
"""Completions per side: the most a workshop server allows, so the stored demo opens on every server."""
DEMO_PRESET = "paper"
SCREEN_SAMPLES = 4
SCREEN_SEED = 1_000_003  # screening streams, never the demo's own
DEMO_SEED = 0  # the Generate page's default seed, so the stored demo is what the page computes


def demo_candidates(prompts: Sequence[Prompt], preprompts: dict[str, list[dict[str, str]]]) -> list[tuple[str, str]]:
    """Every provocative prompt, alone and under each adversarial pre-prompt (named as the Generate page names it)."""
    pres = [NO_PREPROMPT] + [f"adversarial:{p['name']}" for p in preprompts.get("adversarial", [])]
    return [(p.text, pre) for p in prompts if p.kind == "provocative" for pre in pres]


def _pre_text(pre: str) -> str:
    return "" if pre == NO_PREPROMPT else resolve_preprompt(pre)


def screen(
    engine: Engine,
    tokenizer: Tokenizer,
    candidates: Sequence[tuple[str, str]],
    scorer: ToxicityScorer,
    *,
    samples: int = SCREEN_SAMPLES,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """The plain model's mean toxicity on each candidate, over ``samples`` screening completions."""
    sampling = sampling_for(DEMO_PRESET, samples)
    rows = [
        row
        for prompt, pre in candidates
        for row in completion_rows(tokenizer, [prompt], pre_prompt=_pre_text(pre), settings=sampling, seed=SCREEN_SEED)
    ]
    request = engine.submit(rows, priority="bulk")
    total = len(rows) * sampling.max_new_tokens
    for state in request.states(poll_s=0.5, timeout_s=6 * 3600.0):
        if progress is not None:
            progress(sum(len(tokens) for tokens in state.tokens), total)
    scores = scorer.score(tokenizer.batch_decode([row.tokens for row in rows], skip_special_tokens=True))
    means: np.ndarray = np.asarray(scores, dtype=np.float64).reshape(len(candidates), samples).mean(axis=1)
    return means


def prepare_demo(
    engine: Engine,
    tokenizer: Tokenizer,
    model_name: str,
    experts_key: str,
    fitted: Intervention,
    scorer: ToxicityScorer,
    candidates: Sequence[tuple[str, str]],
    *,
    samples: int = DEMO_SAMPLES,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Choose the demo by the rule above, decode it on its own streams, store it, and return its choice.

    ``fitted`` is the experts' intervention; the demo is AurA at full strength on every unit.
    The stored result has the key the Generate page computes for the same settings.
    """
    if not candidates:
        raise ValueError("no provocative prompts to choose a demo from")
    earlier = load_demo(experts_key)
    if (
        earlier is not None
        and earlier.get("candidates") == content_key(list(candidates), length=16)
        and earlier.get("samples") == samples
        and load_result(cache_root(), str(earlier.get("key"))) is not None
    ):
        if "keeps" not in earlier:  # chosen before the store kept what demos open
            earlier["keeps"] = [result_path(Path(), str(earlier["key"])).as_posix()]
            save_attachment(experts_key, DEMO_FILE, earlier)
        return earlier  # the same rule on the same candidates: chosen and stored already

    def stage(name: str) -> Callable[[int, int], None] | None:
        return None if progress is None else (lambda done, total: progress(name, done, total))

    means = screen(engine, tokenizer, candidates, scorer, progress=stage("screening"))
    best = int(np.argmax(means))  # the first of equals: the candidates' order is the data's
    prompt, pre = candidates[best]
    aura = fitted.with_settings(method="aura", strength=1.0)
    sides: dict[str, Intervention | None] = {BASELINE: None, "aura": aura}
    sampling = sampling_for(DEMO_PRESET, samples)
    pre_text = _pre_text(pre)
    frame = compute_sides(engine, tokenizer, prompt, pre_text, sides, sampling, DEMO_SEED, scorer, progress=stage("demo"))
    key = result_key(key_parts(model_name, experts_key, prompt, pre_text, sides, sampling, DEMO_SEED))
    result = {
        "prompt": prompt,
        "pre_prompt": pre_text,
        "method": "aura",
        "strength": 1.0,
        "seed": DEMO_SEED,
        "judged": scorer.description,
    }
    store_result(cache_root(), key, {**result, "samples": frame})
    choice = {
        "prompt": prompt,
        "pre": pre,
        "samples": samples,
        "seed": DEMO_SEED,
        "sampling": DEMO_PRESET,
        **aura.settings(),
        "key": key,
        "screened": len(candidates),
        "screen_samples": SCREEN_SAMPLES,
        "screen_mean": round(float(means[best]), 4),
        "candidates": content_key(list(candidates), length=16),
        "keeps": [result_path(Path(), key).as_posix()],  # the store never evicts the result this demo opens
    }
    save_attachment(experts_key, DEMO_FILE, choice)
    return choice


def load_demo(experts_key: str) -> dict[str, Any] | None:
    """The demo ``prepare`` stored for these experts, if any."""
    return load_attachment(experts_key, DEMO_FILE)


def describe_choice(choice: dict[str, Any]) -> str:
    """How the demo was chosen, in words, for the page."""
    pre = "no pre-prompt" if choice["pre"] == NO_PREPROMPT else f"the pre-prompt {choice['pre'].split(':', 1)[1]!r}"
    return (
        f"Chosen by rule, not by its result: of {choice['screened']} prompt and pre-prompt pairs (every provocative "
        f"starter prompt, alone and under each adversarial pre-prompt), the one whose {choice['screen_samples']} "
        f"screening completions from the plain model scored most toxic ({pre}). The intervention played no part in the "
        f"choice, and the {choice['samples']} completions per side shown were drawn on other random streams."
    )
