"""One engine per loaded model: a worker that serves every session's requests in shared batches.

Generation requests from all sessions decode together in one continuous batch, each row with
its own intervention factors and its own seeded random stream, so a request's text does not
depend on who shares its batch. Other model work (a collection batch, a perplexity batch, a
neuron's activations) comes as small units that take turns with the decode steps: a long job
never holds the model for more than one of its batches.

>>> from aura_core.model.tiny import load_tiny
>>> from aura_core.runtime.decoding import DecodeRow
>>> from aura_core.runtime.sampling import SamplingSettings
>>> tiny = load_tiny("tiny-gpt2")
>>> engine = Engine(tiny.model)
>>> request = engine.submit([DecodeRow([72, 105], SamplingSettings(max_new_tokens=4, do_sample=False))])
>>> len(request.result(timeout=60)[0].tokens)
4
>>> engine.close()
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from aura_core.errors import AuraError
from aura_core.runtime.decoding import DecodeBatch, DecodeRow
from aura_core.runtime.runner import Priority
from aura_core.runtime.scheduler import Admission, Limits, StepTimes, Waiting, estimate_wait, queue_key, schedule

__all__ = ["Engine", "EngineBusy", "EngineTimeout", "Request", "RequestState", "engine_for"]

T = TypeVar("T")


class EngineTimeout(AuraError):
    """A request did not finish within its time limit; its rows were freed."""


class EngineBusy(AuraError):
    """The engine was closed or failed while a request waited."""


@dataclass(frozen=True)
class RequestState:
    """A snapshot of one request: where it waits, and how far its rows have come."""

    queued: bool
    ahead: int
    eta_s: float
    tokens: tuple[tuple[int, ...], ...]
    done: bool

    def describe(self) -> str:
        """``queued: 3 requests ahead, about 4 s`` while waiting (no time before a step was measured), else empty.

        >>> RequestState(queued=True, ahead=3, eta_s=4.2, tokens=(), done=False).describe()
        'queued: 3 requests ahead, about 4 s'
        >>> RequestState(queued=True, ahead=1, eta_s=float("nan"), tokens=(), done=False).describe()
        'queued: 1 request ahead'
        """
        if not self.queued:
            return ""
        who = "next in line" if self.ahead == 0 else ("1 request ahead" if self.ahead == 1 else f"{self.ahead} requests ahead")
        return f"queued: {who}" if math.isnan(self.eta_s) else f"queued: {who}, about {max(1, round(self.eta_s))} s"


class Request:
    """A generation request: rows decoded by the engine; follow it with :meth:`states` or :meth:`result`."""

    def __init__(self, engine: Engine, rows: Sequence[DecodeRow], priority: Priority) -> None:
        self.engine = engine
        self.rows = list(rows)
        self.priority = priority
        self.created = time.monotonic()
        self.started: float | None = None
        self.finished = threading.Event()
        self.error: BaseException | None = None
        self.pending = list(self.rows)  # rows not yet admitted into the batch
        self.first_estimate: tuple[float, float] | None = None  # (when, seconds to wait) as first told
        self._open = len(self.rows)

    @property
    def cancelled(self) -> bool:
        return bool(self.rows) and all(row.cancelled for row in self.rows)

    def cancel(self) -> None:
        """Free this request's rows: waiting rows never start, running rows leave at the next step."""
        for row in self.rows:
            row.cancelled = True
        self.engine._wake()

    def state(self) -> RequestState:
        ahead, eta = self.engine._position(self)
        queued = self.started is None and not self.finished.is_set()
        if queued and self.first_estimate is None and not math.isnan(eta):
            self.first_estimate = (time.monotonic(), eta)
        return RequestState(
            queued=queued,
            ahead=ahead,
            eta_s=eta,
            tokens=tuple(tuple(row.tokens) for row in self.rows),
            done=self.finished.is_set(),
        )

    def states(self, *, poll_s: float = 0.1, timeout_s: float = 300.0) -> Iterator[RequestState]:
        """Snapshots every ``poll_s`` until the request ends; past ``timeout_s`` it is cancelled.

        Raises :class:`EngineTimeout` on timeout, and the engine's error if the work failed.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            finished = self.finished.wait(poll_s)
            yield self.state()
            if finished:
                break
            if time.monotonic() > deadline:
                self.cancel()
                raise EngineTimeout(
                    f"no answer within {timeout_s:.0f} s (the server is very busy); try again, or ask for fewer samples"
                )
        if self.error is not None:
            raise self.error

    def result(self, timeout: float = 300.0) -> list[DecodeRow]:
        """Wait for every row; the rows, with their tokens."""
        for _ in self.states(poll_s=min(1.0, timeout), timeout_s=timeout):
            pass
        return self.rows

    def _row_finished(self) -> None:
        self._open -= 1
        if self._open <= 0:
            self.finished.set()

    def _end(self, error: BaseException) -> None:
        """Fail the request with ``error``: its rows stop (running ones leave at the next step), none waits."""
        for row in self.rows:
            row.cancelled = True
        self.pending = []
        self.error = error
        self.finished.set()


@dataclass
class _Unit:
    work: Callable[[], object]
    priority: Priority
    future: Future[Any]


class Engine:
    """The worker that owns one model's forward passes.

    ``max_rows`` rows decode at once, within ``token_budget`` cached positions; bulk rows (an
    evaluation) never take the last ``interactive_reserve`` places, and bulk units (a
    collection) get about ``bulk_share`` of the time while interactive work waits. The worker
    thread ends after ``idle_exit_s`` seconds with nothing to do and starts again on demand.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        max_rows: int = 64,
        token_budget: int = 16384,
        interactive_reserve: int = 8,
        bulk_share: float = 0.34,
        idle_exit_s: float = 2.0,
    ) -> None:
        # Held weakly: the engine of an evicted model must let it go (see engine_for).
        self._model = weakref.ref(model)
        self.max_rows = max_rows
        self.token_budget = token_budget
        self.interactive_reserve = min(interactive_reserve, max_rows - 1)
        self.bulk_share = bulk_share
        self.idle_exit_s = idle_exit_s
        self._cond = threading.Condition()
        self._requests: deque[Request] = deque()
        self._units: deque[_Unit] = deque()
        self._active: dict[int, Request] = {}  # id(row) -> its request
        self._batch = DecodeBatch(model)
        self._closed = False
        self._decode_since_bulk = 0.0
        self._last_bulk_s = 0.0
        self._tokens_per_s = 0.0
        self._requests_total = 0  # requests ever queued: how many computations the server ran
        self._step_times = StepTimes()  # decode steps alone; prefills are timed per prompt token
        self._prefill_s_per_token = 0.0
        self._joining: list[DecodeRow] = []  # rows admitted and being prefilled: in neither the queue nor the batch
        self._waits: deque[tuple[float, float]] = deque(maxlen=1000)  # (estimated, waited) seconds, per request
        self._thread: threading.Thread | None = None

    @property
    def model(self) -> nn.Module:
        model = self._model()
        if model is None:
            raise EngineBusy("this engine's model is gone; load the model again")
        return model

    # ----- the public side (any thread) -----

    def submit(self, rows: Sequence[DecodeRow], *, priority: Priority = "interactive") -> Request:
        """Queue rows for decoding; they stream into ``row.tokens`` as they are sampled."""
        request = Request(self, rows, priority)
        if len({id(row) for row in request.rows}) != len(request.rows):
            raise AuraError("the same row was submitted twice: make one DecodeRow per sequence")
        if not request.rows:
            request.finished.set()
            return request
        for row in request.rows:
            if row.settings.max_new_tokens + len(row.prompt_ids) > self.token_budget:
                raise AuraError(f"a prompt of {len(row.prompt_ids)} tokens plus its new tokens exceeds the budget")
        with self._cond:
            if self._closed:
                raise EngineBusy("this model's engine is closed; load the model again")
            self._requests.append(request)
            self._requests_total += 1
            self._ensure_thread()
            self._cond.notify()
        return request

    def run(self, work: Callable[[], T], *, priority: Priority = "bulk") -> T:
        """Run one unit of model work on the engine's thread and return its result (a Runner)."""
        if threading.current_thread() is self._thread:
            return work()  # already on the worker: a nested call must not wait for itself
        future: Future[T] = Future()
        with self._cond:
            if self._closed:
                raise EngineBusy("this model's engine is closed; load the model again")
            self._units.append(_Unit(work, priority, future))
            self._ensure_thread()
            self._cond.notify()
        return future.result()

    def decode(
        self,
        model: nn.Module,
        rows: Sequence[DecodeRow],
        *,
        priority: Priority = "bulk",
        progress: Callable[[int, int], None] | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """Decode rows to their end through the shared batch (a Runner); cancelled if the caller stops.

        The time limit follows the work: 2 minutes, plus half a second per token asked for
        (a pace far below any machine's), unless ``timeout_s`` says otherwise.
        """
        if model is not self.model:
            raise AuraError("this engine serves another model")
        if timeout_s is None:
            timeout_s = 120.0 + 0.5 * sum(row.settings.max_new_tokens for row in rows)
        request = self.submit(rows, priority=priority)
        try:
            for state in request.states(poll_s=0.25, timeout_s=timeout_s):
                if progress:
                    progress(sum(row.done for row in request.rows), len(request.rows))
                del state
        finally:
            if not request.finished.is_set():
                request.cancel()

    def load(self) -> dict[str, float]:
        """What the engine holds now: rows decoding, requests and units waiting, recent tokens/s."""
        with self._cond:
            return {
                "rows_decoding": len(self._batch),
                "requests_waiting": sum(1 for r in self._requests if r.pending),
                "units_waiting": len(self._units),
                "tokens_per_s": round(self._tokens_per_s, 1),
                "requests_total": self._requests_total,
            }

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
            worker = self._thread
        if worker is not None:
            worker.join(timeout=30)

    # ----- the worker -----

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="aura-engine", daemon=True)
            self._thread.start()

    def _position(self, request: Request) -> tuple[int, float]:
        """Requests that will start before this one, and about how many seconds until it starts (nan: not known yet).

        The queue is played forward with the step times measured on this machine (see
        :func:`~aura_core.runtime.scheduler.estimate_wait`); while bulk units wait, decoding
        gets its share of the time.
        """
        with self._cond:
            if request.started is not None or request not in self._requests:
                return 0, 0.0
            order = sorted(self._requests, key=lambda r: queue_key(r.priority, r.created))
            ahead = order[: order.index(request)]
            running = [row.settings.max_new_tokens - len(row.tokens) for row in [*self._batch.rows, *self._joining]]
            rows_ahead = [[row.settings.max_new_tokens for row in r.pending] for r in ahead]
            prefills = [sum(len(row.prompt_ids) for row in r.pending) * self._prefill_s_per_token for r in ahead]
            interactive = request.priority == "interactive"
            rows = min(len(request.pending), self.max_rows) if interactive else 1
            limit = self.max_rows if interactive else self.max_rows - self.interactive_reserve
            shared = any(unit.priority == "bulk" for unit in self._units)
        if not self._step_times.measured:
            return len(ahead), 0.0 if not running and not rows_ahead else math.nan
        wait = estimate_wait(running, rows_ahead, rows, limit, self._step_times.predict, prefills)
        return len(ahead), wait / (1.0 - self.bulk_share) if shared else wait

    def estimates(self) -> list[tuple[float, float]]:
        """For the latest requests that were told a wait: (seconds estimated, seconds they then waited)."""
        with self._cond:
            return list(self._waits)

    def _loop(self) -> None:
        """The worker, supervised: whatever fails in it fails the work it holds, with the cause, and never hangs a caller."""
        try:
            self._serve()
        except BaseException as err:
            failure = EngineBusy(f"the engine failed ({type(err).__name__}: {err}); try again")
            failure.__cause__ = err
            model = self._model()
            with self._cond:
                if model is not None:
                    self._batch = DecodeBatch(model)  # the old one may be half-updated: start clean
                self._fail_all(failure)
                self._thread = None  # the next request starts a fresh worker

    def _serve(self) -> None:
        while True:
            with self._cond:
                idle_since = time.monotonic()
                while not (self._closed or self._requests or self._units or self._batch.rows):
                    left = self.idle_exit_s - (time.monotonic() - idle_since)
                    if left <= 0:
                        # An idle worker ends, and with it its OpenMP pool (see compute_threads);
                        # the next request starts a new one.
                        self._thread = None
                        return
                    self._cond.wait(left)
                if self._closed:
                    self._fail_all(EngineBusy("this model's engine was closed"))
                    return
                interactive = [u for u in self._units if u.priority == "interactive"]
                bulk = [u for u in self._units if u.priority == "bulk"]
            for unit in interactive:
                self._run_unit(unit)
            started = time.perf_counter()
            prefilled = self._admit()
            admitted = time.perf_counter()
            if prefilled:
                per_token = (admitted - started) / prefilled
                rate = self._prefill_s_per_token
                self._prefill_s_per_token = 0.8 * rate + 0.2 * per_token if rate else per_token
            if self._batch.rows:
                rows = len(self._batch)
                self._step()
                self._step_times.record(rows, time.perf_counter() - admitted)
            self._decode_since_bulk += time.perf_counter() - started
            if bulk and (not self._batch.rows or self._bulk_turn()):
                started = time.perf_counter()
                self._run_unit(bulk[0])
                self._last_bulk_s = time.perf_counter() - started
                self._decode_since_bulk = 0.0

    def _bulk_turn(self) -> bool:
        """Whether a bulk unit may run now: it gets about ``bulk_share`` of the time next to decoding."""
        owed = self._last_bulk_s * (1.0 - self.bulk_share) / max(self.bulk_share, 1e-6)
        return self._decode_since_bulk >= owed

    def _run_unit(self, unit: _Unit) -> None:
        with self._cond:
            try:
                self._units.remove(unit)
            except ValueError:
                return
        if not unit.future.set_running_or_notify_cancel():
            return
        try:
            unit.future.set_result(unit.work())
        except BaseException as err:  # handed to the caller, who sees its own error
            unit.future.set_exception(err)

    def _admit(self) -> int:
        """Move waiting rows into the batch: the scheduler decides which, from plain values; this executes.

        Returns the prompt tokens prefilled.
        """
        with self._cond:
            queue = list(self._requests)
        waiting: list[Waiting] = []
        for request in queue:
            live = []
            for row in request.pending:
                if row.cancelled:
                    request._row_finished()
                else:
                    live.append(row)
            request.pending = live
            if not live:
                self._dequeue(request)
                continue
            costs = tuple(len(r.prompt_ids) + r.settings.max_new_tokens for r in live)
            waiting.append(Waiting(id(request), request.priority, request.created, costs))
        by_key: dict[Hashable, Request] = {id(request): request for request in queue}

        def rows_of(admissions: list[Admission]) -> list[DecodeRow]:
            return [row for a in admissions for row in by_key[a.key].pending[: a.rows]]

        admissions = schedule(
            waiting,
            running=len(self._batch),
            held=self._batch.tokens_held(),
            limits=Limits(self.max_rows, self.token_budget, self.interactive_reserve),
            fits=lambda candidate: self._batch.can_join(rows_of(candidate)),
        )
        joining = rows_of(admissions)
        with self._cond:
            self._joining = joining
        for admission in admissions:
            request = by_key[admission.key]
            for row in request.pending[: admission.rows]:
                self._active[id(row)] = request
            request.pending = request.pending[admission.rows :]
            if request.started is None:
                request.started = time.monotonic()
                if request.first_estimate is not None:
                    told_at, estimate = request.first_estimate
                    with self._cond:
                        self._waits.append((estimate, request.started - told_at))
            if not request.pending:
                self._dequeue(request)
        if not joining:
            return 0
        try:
            self._batch.join(joining)
        except Exception as err:  # a failed prefill fails its own request, never the engine or the others
            self._join_each(joining, err)
        finally:
            with self._cond:
                self._joining = []
        self._collect_finished()
        return sum(len(row.prompt_ids) for row in joining)

    def _join_each(self, joining: list[DecodeRow], error: BaseException) -> None:
        """Prefill each request's rows on their own, after a prefill of several failed: only the faulty ones fail."""
        owners: dict[int, list[DecodeRow]] = {}
        for row in joining:
            owner = self._active.get(id(row))
            owners.setdefault(id(owner), []).append(row)
        if len(owners) == 1:
            self._fail_rows(joining, error)
            return
        for rows in owners.values():
            try:
                self._batch.join(rows)
            except Exception as err:
                self._fail_rows(rows, err)

    def _dequeue(self, request: Request) -> None:
        with self._cond:
            if request in self._requests:
                self._requests.remove(request)

    def _step(self) -> None:
        self._collect_finished()  # cancelled rows leave before another token is spent on them
        rows = len(self._batch)
        if not rows:
            return
        started = time.perf_counter()
        try:
            self._batch.step()
        except BaseException as err:
            self._fail_rows(list(self._batch.rows), err)
            self._batch = DecodeBatch(self.model)
            return
        spent = time.perf_counter() - started
        rate = rows / max(spent, 1e-6)
        self._tokens_per_s = 0.8 * self._tokens_per_s + 0.2 * rate if self._tokens_per_s else rate
        self._collect_finished()

    def _collect_finished(self) -> None:
        for row in self._batch.drop_finished():
            if row.error is not None:  # its own callback failed: its request fails, no one else's
                self._fail_rows([row], row.error)
                continue
            request = self._active.pop(id(row), None)
            if request is not None:
                request._row_finished()

    def _fail_rows(self, rows: list[DecodeRow], error: BaseException) -> None:
        """End the requests that own ``rows`` with ``error``; their other rows are freed too."""
        failed = {id(r): r for r in (self._active.pop(id(row), None) for row in rows) if r is not None}
        for request in failed.values():
            for row in request.rows:
                self._active.pop(id(row), None)
            self._dequeue(request)
            request._end(error)
        self._batch.drop_finished()

    def _fail_all(self, error: BaseException) -> None:
        """Fail every request, queued or already decoding, and every unit: nobody waits out a timeout."""
        for request in {id(r): r for r in [*self._requests, *self._active.values()]}.values():
            request._end(error)
        self._requests.clear()
        self._active.clear()
        self._batch.drop_finished()
        for unit in list(self._units):
            if unit.future.set_running_or_notify_cancel():
                unit.future.set_exception(error)
        self._units.clear()


# Keyed weakly by the model, and the engine holds its model weakly: both go when nothing else holds the model.
_ENGINES: weakref.WeakKeyDictionary[nn.Module, Engine] = weakref.WeakKeyDictionary()
_ENGINES_GUARD = threading.Lock()


def engine_for(model: nn.Module, **settings: int | float) -> Engine:
    """The one engine of ``model`` in this process, started on first use."""
    with _ENGINES_GUARD:
        engine = _ENGINES.get(model)
        if engine is None:
            engine = _ENGINES[model] = Engine(model, **settings)  # type: ignore[arg-type]
        return engine
