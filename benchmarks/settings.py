"""What every benchmark may read from the command line, and where its data comes from.

>>> Settings(repeats=3).repeats_or(5), Settings().repeats_or(5)
(3, 5)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_MODEL", "ROOT", "BenchmarkError", "Settings", "bench_texts", "default_data"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "smollm2-135m"


class BenchmarkError(Exception):
    """Bad input or a missing requirement: the command line reports it in one line, exit code 2."""


def default_data(root: Path = ROOT) -> str:
    """The balanced Jigsaw sample beside the checkout (``../shared/data``) if present, else the starter set.

    >>> default_data(Path("/nowhere"))
    'starter'
    """
    shared = root.parent / "shared" / "data" / "jigsaw_balanced.csv"
    return str(shared) if shared.is_file() else "starter"


@dataclass(frozen=True)
class Settings:
    """Options shared by all benchmarks; each benchmark reads the ones it needs.

    ``repeats`` of None lets each benchmark use its own default number of rounds.
    """

    data: str = field(default_factory=default_data)
    model: str = DEFAULT_MODEL
    repeats: int | None = None
    min_seconds: float = 0.0
    device: str = "cpu"

    def repeats_or(self, default: int) -> int:
        return self.repeats if self.repeats is not None else default


def bench_texts(n: int, data: str = "starter", seed: int = 0) -> list[str]:
    """``n`` texts, balanced between the labels of ``data`` (a path or ``starter``), repeated if it is small.

    >>> len(bench_texts(5))
    5
    """
    from aura_core.base.data import balanced_sample, load_concept_data

    concept = load_concept_data(data)
    per_class = min(max(n // 2, 1), min(concept.counts().values()))
    texts = balanced_sample(concept, per_class, seed=seed).texts
    while len(texts) < n:  # the starter set alone is smaller than some benchmarks
        texts = texts + texts[: n - len(texts)]
    return texts[:n]
