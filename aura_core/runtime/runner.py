"""Where model work runs, as a protocol: inline in the caller's thread, or queued on a shared engine.

Long jobs (collection, perplexity, evaluation) hand their work to a runner one batch at a
time, so on a server their batches take turns with everyone else's requests instead of
holding the model for minutes. :mod:`aura_core.runtime.inline` and
:mod:`aura_core.runtime.engine` implement it.

>>> from aura_core.runtime.inline import INLINE
>>> INLINE.run(lambda: 1 + 1)
2
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

from aura_core.runtime.scheduler import Priority

if TYPE_CHECKING:
    from torch import nn

    from aura_core.runtime.decoding import DecodeRow

__all__ = ["Priority", "Runner"]

T = TypeVar("T")


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
