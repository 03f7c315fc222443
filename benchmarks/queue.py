"""A room pressing Generate: how close each queued request's told wait is to the wait it then had.

``sessions`` requests arrive ``gap_s`` apart, each what the Generate page sends (baseline and
AurA, ``samples`` completions per side of ``new_tokens`` tokens, the default sampling), more
than one batch holds at once. Each asks for its state as it arrives, as the page does, and
the engine keeps what it was told beside how long it then waited. Waits under ``min_wait_s``
are left out: a second either way is not a wrong estimate.

>>> result = bench_queue("tiny-gpt2", sessions=6, samples=4)   # doctest: +SKIP
>>> result["within_1_5x"] <= 1.0                                 # doctest: +SKIP
True
"""

from __future__ import annotations

import statistics
import time

import torch

from benchmarks.settings import DEFAULT_MODEL, Settings

__all__ = ["bench_queue", "run"]


def _off_by(estimate: float, waited: float) -> float:
    """How many times too long or too short an estimate was (1.0: exact)."""
    low, high = sorted((max(estimate, 1e-3), max(waited, 1e-3)))
    return high / low


def bench_queue(
    model_name: str = DEFAULT_MODEL,
    sessions: int = 24,
    samples: int = 8,
    new_tokens: int = 20,
    gap_s: float = 0.25,
    min_wait_s: float = 1.0,
    rounds: int = 2,
) -> dict[str, object]:
    """Queue ``sessions`` side-by-side requests ``gap_s`` apart, ``rounds`` times; the told waits against the real ones."""
    from aura_core.base.data import load_prompts
    from aura_core.evaluation.generation import side_by_side_rows
    from aura_core.evaluation.side_by_side import BASELINE, sampling_for
    from aura_core.method.fit import synthetic_intervention
    from aura_core.model.loading import load_model
    from aura_core.runtime.engine import Engine

    loaded = load_model(model_name)
    model, tok = loaded.model, loaded.tokenizer
    aura = synthetic_intervention(model, torch.Generator().manual_seed(0), low=0.5)
    prompts = [p.text for p in load_prompts(n=sessions, seed=0)]
    settings = sampling_for("paper", samples, max_new=new_tokens)
    pairs: list[tuple[float, float]] = []
    engine = Engine(model)
    try:
        warm = side_by_side_rows(tok, prompts[0], {BASELINE: None, "aura": aura}, settings=settings, seed=99)
        engine.submit([row for rows in warm.values() for row in rows]).result(timeout=3600)  # steps measured, as on a live server
        for round_index in range(rounds):
            requests = []
            for index in range(sessions):
                rows = side_by_side_rows(
                    tok, prompts[index % len(prompts)], {BASELINE: None, "aura": aura}, settings=settings, seed=round_index
                )
                request = engine.submit([row for side in rows.values() for row in side])
                request.state()  # what the page shows as the request arrives
                requests.append(request)
                time.sleep(gap_s)
            for request in requests:
                request.result(timeout=3600)
        pairs = engine.estimates()
    finally:
        engine.close()
    kept = [(estimate, waited) for estimate, waited in pairs if waited >= min_wait_s]
    off = sorted(_off_by(estimate, waited) for estimate, waited in kept)
    return {
        "name": "queue",
        "model": model_name,
        "sessions": sessions,
        "rows_per_request": 2 * samples,
        "new_tokens": new_tokens,
        "gap_s": gap_s,
        "told_a_wait": len(pairs),
        "waits_over_min": len(kept),
        "median_wait_s": round(statistics.median(w for _, w in kept), 2) if kept else None,
        "median_off_by": round(statistics.median(off), 3) if off else None,
        "worst_off_by": round(off[-1], 3) if off else None,
        "within_1_5x": round(sum(x <= 1.5 for x in off) / len(off), 3) if off else None,
        "too_long_share": round(sum(e > w for e, w in kept) / len(kept), 3) if kept else None,
        "goal": "within_1_5x >= 0.9",
    }


def run(settings: Settings) -> dict[str, object]:
    return bench_queue(settings.model, rounds=settings.repeats_or(2))
