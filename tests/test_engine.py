"""One engine per model: shared batches, per-request random streams, fair turns, cancel and timeouts."""

import math
import threading
import time

import pytest
import torch

from aura_core.analysis.collect import collect_responses
from aura_core.base.data import ConceptData
from aura_core.evaluation.generation import completion_rows, side_by_side_rows
from aura_core.method.intervention import Intervention
from aura_core.model.architecture import discover_units, unit_width
from aura_core.runtime.decoding import decode_all
from aura_core.runtime.engine import Engine, EngineTimeout
from aura_core.runtime.flights import Flights
from aura_core.runtime.sampling import SamplingSettings

GREEDY = SamplingSettings(max_new_tokens=12, do_sample=False)
SAMPLED = SamplingSettings(max_new_tokens=12, temperature=0.9, top_p=0.9, top_k=40, repetition_penalty=1.2)


def _aura(model, seed=1) -> Intervention:
    modules = dict(model.named_modules())
    gen = torch.Generator().manual_seed(seed)
    return Intervention(
        {n: torch.rand(unit_width(modules[n]), generator=gen, dtype=torch.float64) for n in discover_units(model)}
    )


def _mixed_requests(tok, aura, n=15):
    """Requests of every shape: lengths, sampling rules, interventions and sizes differ."""
    requests = []
    for i in range(n):
        settings = (GREEDY if i % 2 else SAMPLED).with_(max_new_tokens=6 + i % 7, num_return_sequences=1 + i % 3)
        iv = [None, aura, aura.with_strength(0.6)][i % 3]
        requests.append(completion_rows(tok, [f"request {i} " + "word " * (i % 9)], settings=settings, seed=i, intervention=iv))
    return requests


@pytest.fixture
def engine(tiny):
    engine = Engine(tiny.model, max_rows=16)
    yield engine
    engine.close()


def test_a_request_gives_the_same_tokens_alone_and_batched_with_15_others(tiny, engine):
    aura = _aura(tiny.model)
    for settings in (GREEDY, SAMPLED):
        sides = side_by_side_rows(
            tiny.tokenizer,
            "You are such a",
            {"baseline": None, "aura": aura},
            settings=settings.with_(num_return_sequences=2),
            seed=7,
        )
        alone = [list(r.tokens) for r in engine.submit([*sides["baseline"], *sides["aura"]]).result(60)]
        others = [
            engine.submit(rows, priority="bulk" if i % 4 == 0 else "interactive")
            for i, rows in enumerate(_mixed_requests(tiny.tokenizer, aura))
        ]
        sides = side_by_side_rows(
            tiny.tokenizer,
            "You are such a",
            {"baseline": None, "aura": aura},
            settings=settings.with_(num_return_sequences=2),
            seed=7,
        )
        crowded = engine.submit([*sides["baseline"], *sides["aura"]])
        assert [list(r.tokens) for r in crowded.result(60)] == alone
        for request in others:
            request.result(60)
        assert alone[0] != alone[2] or alone[1] != alone[3]  # AurA changed something


def test_seeded_sampling_is_reproducible_per_request_and_sides_share_a_stream(tiny, engine):
    rows = completion_rows(tiny.tokenizer, ["Once upon a time"], settings=SAMPLED.with_(num_return_sequences=3), seed=3)
    first = [list(r.tokens) for r in engine.submit(rows).result(60)]
    inline = completion_rows(tiny.tokenizer, ["Once upon a time"], settings=SAMPLED.with_(num_return_sequences=3), seed=3)
    decode_all(tiny.model, inline, max_rows=2)
    assert [list(r.tokens) for r in inline] == first
    assert len({tuple(t) for t in first}) > 1  # three samples, three streams
    other_seed = completion_rows(tiny.tokenizer, ["Once upon a time"], settings=SAMPLED.with_(num_return_sequences=3), seed=4)
    assert [list(r.tokens) for r in engine.submit(other_seed).result(60)] != first
    # λ = 0 is the plain model, and a side at λ = 0 draws exactly the baseline's random numbers.
    sides = side_by_side_rows(
        tiny.tokenizer, "Once upon a time", {"a": None, "b": _aura(tiny.model).with_strength(0.0)}, settings=SAMPLED, seed=3
    )
    request = engine.submit([*sides["a"], *sides["b"]]).result(60)
    assert request[0].tokens == request[1].tokens == first[0]


def test_cancel_frees_rows_and_a_timeout_ends_with_a_clear_error(tiny):
    tiny.model.generation_config.eos_token_id = None  # no early stop: these rows run their full length
    engine = Engine(tiny.model, max_rows=16)
    long = SamplingSettings(max_new_tokens=250, do_sample=False)
    try:
        busy = engine.submit(completion_rows(tiny.tokenizer, ["x"] * 16, settings=long))
        while len(busy.rows[0].tokens) < 3:  # decoding, with steps measured
            time.sleep(0.001)
        waiting = engine.submit(completion_rows(tiny.tokenizer, ["y"], settings=long))
        state = waiting.state()
        assert state.queued and state.ahead == 0 and state.describe().startswith("queued: next in line, about")
        assert waiting.first_estimate is not None and waiting.first_estimate[1] > 0  # the busy batch's 250 steps
        busy.cancel()
        assert busy.finished.wait(30)
        with pytest.raises(EngineTimeout, match="no answer within"):
            for _ in waiting.states(poll_s=0.001, timeout_s=0.001):
                pass
        assert waiting.finished.wait(30) and all(row.cancelled for row in waiting.rows)
        assert len(waiting.rows[0].tokens) < 250
        assert engine.load()["rows_decoding"] == 0
    finally:
        engine.close()


def test_each_request_told_a_wait_is_recorded_with_the_wait_it_had(tiny, engine):
    tiny.model.generation_config.eos_token_id = None
    long = SamplingSettings(max_new_tokens=40, do_sample=False)
    first = engine.submit(completion_rows(tiny.tokenizer, ["x"] * 64, settings=long))
    while len(first.rows[0].tokens) < 3:
        time.sleep(0.001)
    behind = [engine.submit(completion_rows(tiny.tokenizer, ["y"] * 32, settings=long)) for _ in range(2)]
    told = [request.state() for request in behind]
    for request in [first, *behind]:
        request.result(timeout=120)
    assert told[1].ahead == told[0].ahead + 1 and told[1].eta_s >= told[0].eta_s
    recorded = engine.estimates()
    assert len(recorded) == sum(state.queued and not math.isnan(state.eta_s) for state in told)
    assert all(estimate >= 0 and waited >= 0 for estimate, waited in recorded)


def test_a_failing_unit_fails_its_caller_only(tiny, engine):
    def broken() -> None:
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        engine.run(broken)
    assert engine.run(lambda: 5) == 5
    rows = completion_rows(tiny.tokenizer, ["still fine"], settings=GREEDY)
    assert len(engine.submit(rows).result(60)[0].tokens) == GREEDY.max_new_tokens


class _CountingEngine(Engine):
    """Notes when each unit of bulk work finishes."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.finished_units: list[float] = []

    def run(self, work, *, priority="bulk"):
        def counted():
            value = work()
            self.finished_units.append(time.monotonic())
            return value

        return super().run(counted, priority=priority)


def test_generation_waits_at_most_one_batch_behind_a_collection_of_2000_texts(tiny_gpt2, tmp_path):
    engine = _CountingEngine(tiny_gpt2.model)
    texts = [f"text number {i} " + "filler words " * (i % 40) for i in range(2000)]
    data = ConceptData(texts, [i % 2 for i in range(2000)], "many")
    collected: dict[str, object] = {}

    def collect() -> None:
        collected["responses"] = collect_responses(
            tiny_gpt2.model, tiny_gpt2.tokenizer, data, discover_units(tiny_gpt2.model), runner=engine, use_cache=False
        )

    collector = threading.Thread(target=collect)
    collector.start()
    try:
        while len(engine.finished_units) < 3:
            time.sleep(0.005)
        rows = completion_rows(tiny_gpt2.tokenizer, ["You are"], settings=GREEDY)
        request = engine.submit(rows, priority="interactive")
        request.result(60)
        assert request.started is not None
        between = [t for t in engine.finished_units if request.created < t <= request.started]
        assert len(between) <= 1, f"{len(between)} collection batches ran before the request started"
        assert len(engine.finished_units) < 2000 // 32  # it really ran while the collection was going on
    finally:
        collector.join(120)
        engine.close()
    assert collected["responses"].per_module[discover_units(tiny_gpt2.model)[0]].shape[0] == 2000


def test_identical_expensive_requests_compute_once_and_share_progress():
    flights = Flights()
    release = threading.Event()
    calls = []

    def work(flight):
        calls.append(1)
        flight.progress(1, 4)
        release.wait(10)
        flight.progress(4, 4)
        return "experts"

    first = flights.join("key", work)
    second = flights.join("key", work)
    assert first is second and first.waiters == 2
    while first.done_count < 1:
        time.sleep(0.001)
    assert (second.done_count, second.total) == (1, 4)
    release.set()
    assert first.result(10) == second.result(10) == "experts" and len(calls) == 1
    assert flights.join("key", work).result(10) == "experts" and len(calls) == 2  # a finished flight is not reused


def test_the_last_waiter_leaving_asks_the_work_to_stop():
    flights = Flights()
    stopped = threading.Event()

    def work(flight):
        while not flight.should_stop():
            time.sleep(0.001)
        stopped.set()

    first = flights.join("k", work)
    second = flights.join("k", work)
    first.leave()
    assert not stopped.wait(0.05)
    second.leave()
    assert stopped.wait(10)


def test_an_idle_worker_ends_and_the_next_request_starts_another(tiny):
    engine = Engine(tiny.model, idle_exit_s=0.05)
    try:
        rows = completion_rows(tiny.tokenizer, ["first"], settings=GREEDY)
        engine.submit(rows).result(timeout=60)
        first = engine._thread
        deadline = time.monotonic() + 10
        while engine._thread is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine._thread is None and first is not None and not first.is_alive()
        again = completion_rows(tiny.tokenizer, ["first"], settings=GREEDY)
        engine.submit(again).result(timeout=60)
        assert again[0].tokens == rows[0].tokens
    finally:
        engine.close()
