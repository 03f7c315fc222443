"""The scheduler alone, from plain values: who joins the batch next, without a model."""

from __future__ import annotations

import pytest

from aura_core.runtime.scheduler import Admission, Limits, Waiting, queue_order, schedule

LIMITS = Limits(max_rows=8, token_budget=1000, interactive_reserve=2)


def _w(key: str, priority: str = "interactive", created: float = 0.0, rows: int = 2, cost: int = 50) -> Waiting:
    return Waiting(key, priority, created, (cost,) * rows)  # type: ignore[arg-type]


def test_interactive_work_goes_first_whatever_arrived_before_it() -> None:
    queue = [_w("evaluation", "bulk", created=0.0, rows=20), _w("alice", created=5.0), _w("bob", created=6.0)]
    admitted = schedule(queue, running=0, held=0, limits=LIMITS)
    assert [a.key for a in admitted] == ["alice", "bob", "evaluation"]
    assert admitted[-1].rows == LIMITS.max_rows - LIMITS.interactive_reserve - 4  # bulk never takes the reserve


def test_bulk_rows_trickle_in_and_leave_the_reserve_free() -> None:
    admitted = schedule([_w("evaluation", "bulk", rows=20)], running=0, held=0, limits=LIMITS)
    assert admitted == [Admission("evaluation", LIMITS.max_rows - LIMITS.interactive_reserve)]
    assert schedule([_w("evaluation", "bulk", rows=20)], running=6, held=0, limits=LIMITS) == []
    # ... while a person still gets in beside them.
    assert schedule([_w("alice", rows=2)], running=6, held=0, limits=LIMITS) == [Admission("alice", 2)]


def test_a_side_by_side_request_joins_whole_and_later_ones_do_not_overtake_it() -> None:
    queue = [_w("pair", created=0.0, rows=4), _w("single", created=1.0, rows=1)]
    assert schedule(queue, running=5, held=0, limits=LIMITS) == []  # 4 rows do not fit in 3 places: both wait
    assert schedule(queue, running=4, held=0, limits=LIMITS) == [Admission("pair", 4)]


def test_nothing_joins_past_the_token_budget_but_an_empty_batch_takes_one_request() -> None:
    big = _w("long", rows=2, cost=800)
    assert schedule([big], running=0, held=0, limits=LIMITS) == [Admission("long", 2)]  # alone, it must run
    assert schedule([big], running=1, held=100, limits=LIMITS) == []
    queue = [_w("a", created=0.0, rows=2, cost=300), _w("b", created=1.0, rows=2, cost=300)]
    assert schedule(queue, running=0, held=0, limits=LIMITS) == [Admission("a", 2)]


def test_cancelled_requests_have_no_rows_left_and_are_skipped() -> None:
    queue = [Waiting("gone", "interactive", 0.0, ()), _w("next", created=1.0)]
    assert schedule(queue, running=0, held=0, limits=LIMITS) == [Admission("next", 2)]


def test_a_refused_set_ends_the_admissions_of_this_step() -> None:
    queue = [_w("a", created=0.0), _w("b", created=1.0), _w("c", created=2.0)]
    seen: list[list[str]] = []

    def fits(candidate: list[Admission]) -> bool:
        seen.append([str(a.key) for a in candidate])
        return len(candidate) < 2  # a sliding window that holds one more request only

    assert schedule(queue, running=0, held=0, limits=LIMITS, fits=fits) == [Admission("a", 2)]
    assert seen == [["a"], ["a", "b"]]


def test_the_queue_position_a_page_shows_is_the_serving_order() -> None:
    queue = [_w("bulk", "bulk", created=0.0), _w("late", created=9.0), _w("early", created=1.0)]
    assert [w.key for w in queue_order(queue)] == ["early", "late", "bulk"]


def test_a_wait_is_the_queue_played_forward_with_the_measured_step_times() -> None:
    from aura_core.runtime.scheduler import StepTimes, estimate_wait

    def step(rows: int) -> float:
        return 0.01 + 0.001 * rows

    assert estimate_wait([], [], rows=16, max_rows=64, step_s=step) == 0.0  # room now: no wait
    assert estimate_wait([20] * 60, [], rows=2, max_rows=64, step_s=step) == 0.0
    full = estimate_wait([20] * 64, [], rows=16, max_rows=64, step_s=step)
    assert full == pytest.approx(20 * step(64))  # the whole batch must finish its 20 tokens first
    behind_four = estimate_wait([20] * 64, [[20] * 16] * 4, rows=16, max_rows=64, step_s=step)
    assert behind_four == pytest.approx(2 * 20 * step(64))  # the four ahead join together, then their round
    assert estimate_wait([5] * 64, [[20] * 64], rows=1, max_rows=64, step_s=step) > estimate_wait(
        [5] * 64, [], rows=1, max_rows=64, step_s=step
    )
    times = StepTimes()
    assert not times.measured and times.predict(8) == 0.0
    for _ in range(50):
        times.record(8, 0.05)
    assert times.predict(8) == pytest.approx(0.05) and times.predict(64) == pytest.approx(0.05)  # one size seen: a constant
