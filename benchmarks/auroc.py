"""Our AUROC against the paper's path, scikit-learn's ``roc_auc_score(average=None)`` on chunks of 10 units.

A third path, a plain row-wise sort of the same scores, is the floor no exact rank-based
AUROC can beat; ``floor_ratio`` says how far above it we are.

>>> result = bench_auroc(n_texts=200, n_units=300, repeats=2)
>>> result["max_abs_err"] <= 1e-9
True
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.settings import Settings
from benchmarks.timing import interleaved, timing_fields

__all__ = ["bench_auroc", "run"]


def bench_auroc(
    n_texts: int = 1000,
    n_units: int = 20_000,
    seed: int = 0,
    repeats: int = 5,
    min_seconds: float = 0.0,
    fast_calls: int = 10,
) -> dict[str, object]:
    """Time ours, scikit-learn's and a plain sort interleaved; the ratio is of medians.

    Each round times ``fast_calls`` calls of ours and of the sort (their mean) beside one of
    scikit-learn's, so both sides of the ratio average the machine over seconds.
    """
    from sklearn.metrics import roc_auc_score

    from aura_core.method.auroc import auroc

    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(n_texts, n_units, generator=gen)
    tied = n_units // 10
    scores[:, :tied] = torch.randint(0, 4, (n_texts, tied), generator=gen).float()  # heavily tied
    labels = torch.randint(0, 2, (n_texts,), generator=gen)
    scores_np, labels_np = scores.numpy(), labels.numpy()
    tiled = np.tile(labels_np[:, None], (1, 10))
    units_by_texts = np.ascontiguousarray(scores_np.T)

    def reference() -> np.ndarray:
        parts = [
            roc_auc_score(tiled[:, : min(10, n_units - s)], scores_np[:, s : s + 10], average=None) for s in range(0, n_units, 10)
        ]
        return np.concatenate(parts)

    # The floor sorts the same rows as ours, in cache-sized chunks of a reused buffer (as ours
    # does), but 32-bit values already laid out unit by unit: no transpose, labels or ties.
    rows = max(1, (1 << 17) // n_texts)
    buffer = np.empty((rows, n_texts), dtype=np.float32)

    def sort_floor() -> None:
        for start in range(0, n_units, rows):
            chunk = units_by_texts[start : start + rows]
            part = buffer[: len(chunk)]
            np.copyto(part, chunk)
            part.sort(axis=1)

    # Warm-up of the fast paths only: one more scikit-learn round would cost more than all of ours.
    auroc(scores, labels)
    sort_floor()
    times = interleaved(
        {"ours": lambda: auroc(scores, labels), "sklearn": reference, "sort_floor": sort_floor},
        repeats=repeats,
        min_seconds=min_seconds,
        warmup=0,
        number={"ours": fast_calls, "sort_floor": fast_calls},
    )
    ours, ref = times["ours"].last, times["sklearn"].last
    median_ours = times["ours"].median
    return {
        "name": "auroc",
        "texts": n_texts,
        "units": n_units,
        "tied_units": tied,
        **timing_fields(times),
        "speedup_vs_sklearn": round(times["sklearn"].median / median_ours, 1),
        "floor_ratio": round(median_ours / times["sort_floor"].median, 2),
        "max_abs_err": float(np.abs(np.asarray(ours) - np.asarray(ref)).max()),
        "units_per_s": round(n_units / median_ours),
        "goal": "speedup_vs_sklearn >= 50 and max_abs_err <= 1e-9",
    }


def run(settings: Settings) -> dict[str, object]:
    """1000 texts × 20,000 units, a tenth of them heavily tied; 5 rounds by default."""
    return bench_auroc(repeats=settings.repeats_or(5), min_seconds=settings.min_seconds)
