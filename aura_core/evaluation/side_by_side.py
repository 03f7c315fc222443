"""One prompt, two sides, the same random streams: the Generate page's result, as the library computes and stores it.

The page, a shared link and ``prepare`` (which stores the demo ahead of time) all name a
result by the same key, built here from everything that decides its texts and scores, and
read and write it in the same place of the store.

>>> sampling = sampling_for("paper", 8)
>>> (sampling.max_new_tokens, sampling.num_return_sequences)
(20, 8)
>>> len(result_key(["SmolLM2", "ab" * 8, "You are", "", {"method": "aura"}, {}, 0, "profanity-check"]))
24
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from aura_core.base.batching import Tokenizer
from aura_core.base.files import atomic_write, content_key
from aura_core.base.store import mark_used
from aura_core.evaluation.comparison import scored_sides
from aura_core.evaluation.generation import side_by_side_rows
from aura_core.evaluation.scoring import DEFAULT_SCORER, ToxicityScorer
from aura_core.method.intervention import Intervention
from aura_core.model.architecture import ALL_UNITS
from aura_core.runtime.engine import Engine
from aura_core.runtime.sampling import SAMPLING_PRESETS, SamplingSettings

__all__ = [
    "BASELINE",
    "compute_sides",
    "key_parts",
    "load_result",
    "result_key",
    "result_path",
    "sampling_for",
    "store_result",
]

BASELINE = "baseline"
"""The side without an intervention."""


def sampling_for(
    preset: str,
    samples: int,
    *,
    max_new: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    repetition: float | None = None,
) -> SamplingSettings:
    """A preset's sampling with ``samples`` completions per side; each knob left None keeps the preset's value."""
    base = SAMPLING_PRESETS[preset]
    return SamplingSettings(
        max_new_tokens=int(base.max_new_tokens if max_new is None else max_new),
        temperature=base.temperature if temperature is None else float(temperature),
        top_p=base.top_p if top_p is None else float(top_p),
        repetition_penalty=base.repetition_penalty if repetition is None else float(repetition),
        do_sample=base.do_sample,
        num_return_sequences=int(samples),
    )


def key_parts(
    model: str,
    experts: str,
    prompt: str,
    pre_prompt: str,
    sides: Mapping[str, Intervention | None],
    sampling: SamplingSettings,
    seed: int,
    *,
    scorer: str = DEFAULT_SCORER,
    units: str = ALL_UNITS,
) -> list[object]:
    """Everything that decides a side-by-side result's texts and scores, in the order its key hashes them.

    The intervened side comes last; a first side other than the plain model adds its settings
    at the end, so results against the plain model keep their keys.
    """
    names = list(sides)
    if len(names) != 2:
        raise ValueError("a side-by-side result has two sides")
    first, second = (sides[name] for name in names)
    if second is None:
        raise ValueError("the second side is the intervened one")
    parts: list[object] = [model, experts, prompt, pre_prompt, second.settings(), asdict(sampling), int(seed), scorer]
    parts += [] if units == ALL_UNITS else [units]
    parts += [] if first is None else [["versus", names[0], first.settings()]]
    return parts


def result_key(parts: list[object]) -> str:
    """The key of a side-by-side result (24 hex digits), from :func:`key_parts`."""
    return content_key(parts, length=24)


def result_path(root: Path, key: str) -> Path:
    """Where the store keeps the result of ``key``."""
    return root / "generations" / f"{key}.json"


def store_result(root: Path, key: str, result: Mapping[str, Any]) -> Path:
    """Write a result (its ``samples`` a frame) as small JSON; raises the store's error when it cannot."""
    stored = {**result, "samples": result["samples"].to_dict(orient="records"), "key": key}
    return atomic_write(result_path(root, key), json.dumps(stored))


def load_result(root: Path, key: str) -> dict[str, Any] | None:
    """The result stored under ``key``, its ``samples`` a frame again, or None (absent or unreadable)."""
    path = result_path(root, key)
    try:
        stored: dict[str, Any] = json.loads(path.read_text())
        stored["samples"] = pd.DataFrame(stored["samples"])
        mark_used(path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return stored


def compute_sides(
    engine: Engine,
    tokenizer: Tokenizer,
    prompt: str,
    pre_prompt: str,
    sides: Mapping[str, Intervention | None],
    sampling: SamplingSettings,
    seed: int,
    scorer: ToxicityScorer,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Decode both sides on ``engine`` (beside whatever else it serves) and score them: one row per completion."""
    rows = side_by_side_rows(tokenizer, prompt, sides, pre_prompt=pre_prompt, settings=sampling, seed=seed)
    request = engine.submit([row for side in rows.values() for row in side], priority="bulk")
    total = sum(len(side) for side in rows.values()) * sampling.max_new_tokens
    for state in request.states(poll_s=0.25, timeout_s=3600.0):
        if progress is not None:
            progress(sum(len(tokens) for tokens in state.tokens), total)
    return scored_sides(tokenizer, rows, scorer)
