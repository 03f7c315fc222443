"""Where model work runs: inline in the caller's thread, or queued on a model's shared engine.

Long jobs (collection, perplexity, evaluation) hand their work to a runner one batch at a
time, so on a server their batches take turns with everyone else's requests instead of
holding the model for minutes.

>>> INLINE.run(lambda: 1 + 1)
2
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

if TYPE_CHECKING:
    from torch import nn

    from aura_core.decoding import DecodeRow

__all__ = ["INLINE", "Inline", "Priority", "Runner"]

T = TypeVar("T")
Priority = Literal["interactive", "bulk"]


class Runner(Protocol):
    """Runs units of model work: a forward pass over a batch, or rows to decode."""

    def run(self, work: Callable[[], T], *, priority: Priority = "bulk") -> T:
        """Run ``work`` (one forward pass or so) and return its result."""
        ...

    def decode(
        self,
        model: nn.Module,
        rows: Sequence[DecodeRow],
        *,
        priority: Priority = "bulk",
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Decode every row to its end (tokens land in ``row.tokens``)."""
        ...


class Inline:
    """Runs the work at once in the caller's thread (the command line, tests), ``max_rows`` rows decoding at once."""

    def __init__(self, max_rows: int = 32) -> None:
        self.max_rows = max_rows

    def run(self, work: Callable[[], T], *, priority: Priority = "bulk") -> T:
        return work()

    def decode(
        self,
        model: nn.Module,
        rows: Sequence[DecodeRow],
        *,
        priority: Priority = "bulk",
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        from aura_core.decoding import decode_all

        decode_all(model, rows, max_rows=self.max_rows, progress=progress)


INLINE = Inline()
