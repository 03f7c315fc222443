"""The runner that runs model work at once in the caller's thread (the command line, tests).

>>> INLINE.run(lambda: 1 + 1)
2
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from aura_core.runtime.decoding import DecodeRow, decode_all
from aura_core.runtime.runner import DECODE_ROWS, Priority, T

if TYPE_CHECKING:
    from torch import nn

__all__ = ["INLINE", "Inline"]


class Inline:
    """Runs the work at once in the caller's thread (the command line, tests), ``max_rows`` rows decoding at once."""

    def __init__(self, max_rows: int = DECODE_ROWS) -> None:
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
        decode_all(model, rows, max_rows=self.max_rows, progress=progress)


INLINE = Inline()
