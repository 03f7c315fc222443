"""Which waiting rows join the running batch next: a decision over plain values, tested without a model.

The engine turns its queue into :class:`Waiting` values, asks :func:`schedule` for the
admissions, and then executes them (prefill, merge). Interactive requests go first, in arrival
order, and join whole, so both sides of a comparison stream together; bulk rows (an evaluation)
trickle in and never take the last ``interactive_reserve`` places; nothing joins past the token
budget, and a request that does not fit stops the ones behind it (no overtaking).

>>> limits = Limits(max_rows=4, token_budget=100, interactive_reserve=1)
>>> queue = [Waiting("bulk", "bulk", 0.0, (10, 10, 10)), Waiting("pair", "interactive", 1.0, (20, 20))]
>>> schedule(queue, running=0, held=0, limits=limits)
[Admission(key='pair', rows=2), Admission(key='bulk', rows=1)]
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Admission",
    "Limits",
    "Priority",
    "StepTimes",
    "Waiting",
    "estimate_wait",
    "queue_key",
    "queue_order",
    "schedule",
]

Priority = Literal["interactive", "bulk"]
"""Interactive work (a person waiting) before bulk work (an evaluation, a collection)."""


@dataclass(frozen=True)
class Waiting:
    """A request's rows still waiting: its key, priority, arrival time and each row's cost in cached positions."""

    key: Hashable
    priority: Priority
    created: float
    costs: tuple[int, ...]


@dataclass(frozen=True)
class Limits:
    """What the batch may hold: rows, cached positions, and places kept for interactive work."""

    max_rows: int
    token_budget: int
    interactive_reserve: int = 0


@dataclass(frozen=True)
class Admission:
    """The first ``rows`` waiting rows of request ``key`` join now."""

    key: Hashable
    rows: int


def queue_key(priority: Priority, created: float) -> tuple[bool, float]:
    """Interactive before bulk, each in arrival order: the order requests are served and shown."""
    return (priority != "interactive", created)


def queue_order(waiting: Sequence[Waiting]) -> list[Waiting]:
    """``waiting`` in :func:`queue_key` order.

    >>> [w.key for w in queue_order([Waiting("b", "bulk", 0.0, (1,)), Waiting("i", "interactive", 5.0, (1,))])]
    ['i', 'b']
    """
    return sorted(waiting, key=lambda w: queue_key(w.priority, w.created))


def schedule(
    waiting: Sequence[Waiting],
    *,
    running: int,
    held: int,
    limits: Limits,
    fits: Callable[[list[Admission]], bool] | None = None,
) -> list[Admission]:
    """The admissions for this step, given ``running`` rows holding ``held`` cached positions.

    ``fits(admissions)`` may refuse a set the batch cannot take (a sliding-window cache); the
    first refusal ends the step's admissions, as a full budget does.
    """
    admissions: list[Admission] = []
    rows, total = running, held
    for request in queue_order(waiting):
        if not request.costs:
            continue
        interactive = request.priority == "interactive"
        limit = limits.max_rows if interactive else limits.max_rows - limits.interactive_reserve
        room = limit - rows
        whole = interactive and len(request.costs) <= limits.max_rows
        take = len(request.costs) if whole else max(min(room, len(request.costs)), 0)
        if take == 0 or take > room:
            if interactive:
                break  # later interactive requests must not overtake this one
            continue
        cost = sum(request.costs[:take])
        if (rows or admissions) and total + cost > limits.token_budget:
            break
        candidate = [*admissions, Admission(request.key, take)]
        if fits is not None and not fits(candidate):
            break
        admissions = candidate
        rows += take
        total += cost
    return admissions


class StepTimes:
    """Seconds per engine step as a line in the rows decoding, fitted on the steps measured lately.

    A decode step costs a fixed part (the weights are read once) and a part per row; the fit
    forgets old steps (``decay`` per step), so a slower machine or a new model shows at once.

    >>> times = StepTimes()
    >>> for rows, seconds in [(2, 0.030), (16, 0.058), (32, 0.090)] * 5:
    ...     times.record(rows, seconds)
    >>> round(times.predict(8), 3), round(times.predict(64), 3)
    (0.042, 0.154)
    """

    def __init__(self, decay: float = 0.98) -> None:
        self.decay = decay
        self._sums = [0.0] * 5  # weight, Σ rows, Σ rows², Σ seconds, Σ rows·seconds

    def record(self, rows: int, seconds: float) -> None:
        weight, sum_n, sum_nn, sum_t, sum_nt = (value * self.decay for value in self._sums)
        self._sums = [weight + 1, sum_n + rows, sum_nn + rows * rows, sum_t + seconds, sum_nt + rows * seconds]

    @property
    def measured(self) -> bool:
        return self._sums[0] > 0

    def predict(self, rows: int) -> float:
        """Seconds one step takes with ``rows`` rows (0.0 before any step was measured)."""
        weight, sum_n, sum_nn, sum_t, sum_nt = self._sums
        if weight <= 0:
            return 0.0
        mean_n, mean_t = sum_n / weight, sum_t / weight
        spread = sum_nn / weight - mean_n * mean_n
        slope = (sum_nt / weight - mean_n * mean_t) / spread if spread > 1.0 else 0.0  # one batch size seen: a constant
        slope = max(slope, 0.0)
        return max(mean_t + slope * (rows - mean_n), 0.2 * mean_t)


def estimate_wait(
    running: Sequence[int],
    ahead: Sequence[Sequence[int]],
    rows: int,
    max_rows: int,
    step_s: Callable[[int], float],
    join_s: Sequence[float] = (),
) -> float:
    """Seconds until a request of ``rows`` rows joins: the queue played forward, step by step.

    ``running`` holds the tokens each decoding row has left, ``ahead`` each earlier request's
    rows (tokens to write), which join whole, in order, when there is room (as :func:`schedule`
    admits interactive work), each after its prefill of ``join_s`` seconds. Each stretch of
    steps costs ``step_s(rows decoding)`` a step.

    >>> estimate_wait([10, 20], [[5, 5]], rows=2, max_rows=4, step_s=lambda n: 0.1)  # the 2 rows ahead end first
    0.5
    >>> estimate_wait([], [], rows=2, max_rows=4, step_s=lambda n: 0.1)
    0.0
    """
    batch = sorted(t for t in running if t > 0)
    queue = [sorted(t for t in request if t > 0) for request in ahead]
    prefills = list(join_s) + [0.0] * (len(queue) - len(join_s))
    waited = 0.0
    while True:
        while queue and len(batch) + len(queue[0]) <= max_rows:
            batch = sorted(batch + queue.pop(0))
            waited += prefills.pop(0)
        if (not queue and len(batch) + rows <= max_rows) or not batch:
            return waited
        steps = batch[0]  # until the next row finishes and frees its place
        waited += steps * step_s(len(batch))
        batch = [t - steps for t in batch if t > steps]
