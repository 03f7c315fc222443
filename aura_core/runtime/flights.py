"""Single-flight: identical expensive requests compute once, and every waiter sees the same progress.

Two sessions that ask for the same Find-experts result (the same cache key) join one flight.
The work runs on its own thread, so a session that leaves (cancel, refresh) does not stop it
while others still wait; when the last waiter leaves, the work is asked to stop.

>>> flights = Flights()
>>> flight = flights.join("key", lambda flight: 6 * 7)
>>> flight.result(timeout=5)
42
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Generic, TypeVar

from aura_core.errors import AuraError

__all__ = ["Flight", "Flights"]

T = TypeVar("T")


class Flight(Generic[T]):
    """One running computation shared by everyone who asked for it."""

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.done_count = 0
        self.total = 0
        self.stage = ""
        self.started = time.monotonic()
        self.finished = threading.Event()
        self.value: T | None = None
        self.snapshot: Any = None  # the work's latest partial result (a generation's streaming rows), for waiters to draw
        self.error: BaseException | None = None
        self.waiters = 0
        self._stop_at = 0.0  # once no waiter is left: when the work should stop (a reload may rejoin before)
        self._lock = threading.Lock()

    def progress(self, done: int, total: int) -> None:
        """Report progress (called by the work); every waiter reads it."""
        self.done_count, self.total = done, total

    def should_stop(self) -> bool:
        """True once every waiter has left (and the last one's grace has run out): stop at the next checkpoint."""
        return self.waiters <= 0 and time.monotonic() >= self._stop_at

    def leave(self, grace_s: float = 0.0) -> None:
        """This waiter no longer wants the result (it cancelled or went away).

        ``grace_s`` keeps the work going that long after the last waiter left, so a page that
        reloads joins the same run instead of starting it again.

        >>> flight = Flight("key"); flight.waiters = 1
        >>> flight.leave(grace_s=60); flight.should_stop()
        False
        """
        with self._lock:
            self.waiters -= 1
            if self.waiters <= 0:
                self._stop_at = time.monotonic() + grace_s

    def watch(self, poll_s: float = 0.25, heartbeat_s: float = 1.0) -> Iterator[Any]:
        """The latest snapshot while the work runs: whenever it changes, and at least every ``heartbeat_s``.

        A page that follows a flight draws on every yield. The heartbeat keeps it answering
        clicks while nothing changes (a queue that does not move): Streamlit can stop a run
        for a click only when the run draws.

        >>> flight = Flight("key"); flight.snapshot = "queued"
        >>> threading.Timer(0.5, flight.finished.set).start()
        >>> list(flight.watch(poll_s=0.05, heartbeat_s=0.2))[:2]
        ['queued', 'queued']
        """
        last: Any = object()
        drawn_at = time.monotonic()
        while not self.finished.wait(poll_s):
            state, now = self.snapshot, time.monotonic()
            if state != last or now - drawn_at >= heartbeat_s:
                last, drawn_at = state, now
                yield state

    def result(self, timeout: float | None = None) -> T:
        if not self.finished.wait(timeout):
            raise AuraError("the computation has not finished yet")
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


class Flights:
    """The flights of one process, by key."""

    def __init__(self) -> None:
        self._flights: dict[Hashable, Flight[Any]] = {}
        self._lock = threading.Lock()

    def running(self, key: Hashable) -> Flight[Any] | None:
        with self._lock:
            flight = self._flights.get(key)
            return flight if flight is not None and not flight.finished.is_set() else None

    def follow(self, key: Hashable) -> Flight[Any] | None:
        """The running flight for ``key``, joined as one more waiter (leave it when done), or None."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is None or flight.finished.is_set():
                return None
            with flight._lock:
                flight.waiters += 1
            return flight

    def join(self, key: Hashable, work: Callable[[Flight[T]], T]) -> Flight[T]:
        """The running flight for ``key`` (joined as one more waiter), or a new one running ``work``."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None and not flight.finished.is_set():
                with flight._lock:
                    flight.waiters += 1
                return flight
            flight = Flight(key)
            flight.waiters = 1
            self._flights[key] = flight
        threading.Thread(target=self._fly, args=(flight, work), name=f"flight-{key}", daemon=True).start()
        return flight

    def _fly(self, flight: Flight[T], work: Callable[[Flight[T]], T]) -> None:
        try:
            flight.value = work(flight)
        except BaseException as err:  # every waiter sees the work's own error
            flight.error = err
        finally:
            flight.finished.set()
            with self._lock:
                if self._flights.get(flight.key) is flight:
                    del self._flights[flight.key]
