"""A study's working time, kept on disk across interrupted runs, per engine.

A study resumes from its stored pieces, so the minutes of its last run say little about what it
cost: the ledger adds up the seconds every run worked, by the engine that decoded.

    >>> import tempfile
    >>> ledger = WorkLedger(Path(tempfile.mkdtemp()) / "fidelity-work.json", engine="vllm")
    >>> ledger.book()
    >>> ledger.runs(), set(ledger.seconds())
    (1, {'vllm'})
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from aura_core.base.files import atomic_write


class WorkLedger:
    """Seconds of work per engine and the number of runs, in one small JSON file."""

    def __init__(self, path: Path, engine: str, since: float | None = None) -> None:
        self.path = path
        self.engine = engine
        self._booked = time.perf_counter() if since is None else since  # a perf_counter reading: the run's start
        self._paused = False
        entries = self._read()
        entries["runs"] = int(entries.get("runs", 0)) + 1
        self._write(entries)

    def _read(self) -> dict[str, float]:
        try:
            entries = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # none yet, or cut short by a full disk: start the count anew
            return {}
        if not isinstance(entries, dict):
            return {}
        return {str(k): float(v) for k, v in entries.items() if isinstance(v, int | float)}

    def _write(self, entries: dict[str, float]) -> None:
        # Atomic: a crash mid-write leaves the last complete ledger.
        atomic_write(self.path, json.dumps({**entries, "runs": int(entries.get("runs", 0))}))

    def book(self) -> None:
        """Adds the seconds since the last booking to this engine's count."""
        now = time.perf_counter()
        entries = self._read()
        if not self._paused:
            entries[self.engine] = entries.get(self.engine, 0.0) + now - self._booked
        self._booked = now
        self._write(entries)

    def pause(self) -> None:
        """Books the work so far; the time until :meth:`resume` is not work (a study suspended with Ctrl-Z)."""
        self.book()
        self._paused = True

    def resume(self) -> None:
        if self._paused:
            self._booked = time.perf_counter()
            self._paused = False

    def follow_suspension(self) -> None:
        """Pauses at SIGTSTP (Ctrl-Z), then stops the process as the terminal asked; resumes at SIGCONT (``fg``)."""
        import signal

        def suspend(signum: int, frame: object) -> None:
            self.pause()
            os.kill(os.getpid(), signal.SIGSTOP)

        signal.signal(signal.SIGTSTP, suspend)
        signal.signal(signal.SIGCONT, lambda signum, frame: self.resume())

    def runs(self) -> int:
        return int(self._read().get("runs", 0))

    def seconds(self) -> dict[str, float]:
        """Seconds worked per engine, e.g. ``{"vllm": 9120.5, "ours": 310.2}``."""
        return {k: v for k, v in self._read().items() if k != "runs"}

    def summary(self) -> str:
        """One phrase for a report's header, e.g. ``152 minutes of work over 3 runs: 5 decoding on ours, 147 decoding on vllm``."""
        self.book()
        seconds = self.seconds()
        parts = ", ".join(f"{value / 60:.0f} decoding on {engine}" for engine, value in sorted(seconds.items()))
        runs = self.runs()
        return f"{sum(seconds.values()) / 60:.0f} minutes of work over {runs} run{'s' if runs != 1 else ''}: {parts}"
