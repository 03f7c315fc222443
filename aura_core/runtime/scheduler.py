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

__all__ = ["Admission", "Limits", "Priority", "Waiting", "queue_key", "queue_order", "schedule"]

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
