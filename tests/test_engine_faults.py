"""Faults and lifetimes: what closing, one bad row, evicting a model and copying one do to everyone else."""

from __future__ import annotations

import copy
import gc
import threading
import time
import weakref

import pytest
import torch

from aura_core.errors import AuraError
from aura_core.method.intervention import Intervention
from aura_core.model.architecture import discover_units, unit_width
from aura_core.model.loading import load_model
from aura_core.model.tiny import load_tiny
from aura_core.runtime.decoding import DecodeRow
from aura_core.runtime.engine import Engine, EngineBusy, engine_for
from aura_core.runtime.plans import intervened
from aura_core.runtime.sampling import SamplingSettings

GREEDY = SamplingSettings(max_new_tokens=12, do_sample=False)


def _rows(count: int, settings: SamplingSettings = GREEDY) -> list[DecodeRow]:
    return [DecodeRow([65 + i, 66 + i, 67], settings) for i in range(count)]


def test_close_with_rows_in_flight_fails_their_requests_at_once() -> None:
    model = load_tiny("tiny-llama").model  # the engine holds its model weakly: the caller holds it
    engine = Engine(model)
    started = threading.Event()
    rows = _rows(2, SamplingSettings(max_new_tokens=200, do_sample=False))
    slow = threading.Event()

    def on_token(row: DecodeRow) -> None:
        started.set()
        slow.wait(0.01)  # keeps the rows in flight while the test closes the engine

    for row in rows:
        row.on_token = on_token
    request = engine.submit(rows)
    assert started.wait(60), "the rows began decoding"
    began = time.monotonic()
    engine.close()
    with pytest.raises(EngineBusy, match="closed"):
        request.result(timeout=30)
    assert time.monotonic() - began < 30
    assert request.finished.is_set()


def test_a_fault_of_one_row_fails_only_its_own_request() -> None:
    model = load_tiny("tiny-llama").model
    engine = Engine(model)
    try:
        expected = [engine.submit([row]).result(timeout=60)[0].tokens for row in _rows(16)]
        requests = []
        rows = _rows(16)

        def broken(row: DecodeRow) -> None:
            if len(row.tokens) == 3:
                raise RuntimeError("this session's stream broke")

        rows[5].on_token = broken
        bad_prompt = DecodeRow([10_000_000], GREEDY)  # no such token: its prefill fails
        for row in rows:
            requests.append(engine.submit([row]))
        bad = engine.submit([bad_prompt])
        for index, request in enumerate(requests):
            if index == 5:
                with pytest.raises(RuntimeError, match="stream broke"):
                    request.result(timeout=60)
            else:
                assert request.result(timeout=60)[0].tokens == expected[index]
        with pytest.raises((IndexError, RuntimeError, AuraError)):
            bad.result(timeout=60)
        # The engine still serves.
        assert engine.submit(_rows(1)).result(timeout=60)[0].tokens == expected[0]
    finally:
        engine.close()


def test_a_model_no_one_holds_is_collected_with_its_engine() -> None:
    loaded = load_model("tiny-llama")
    engine = engine_for(loaded.model)
    assert engine.submit(_rows(2)).result(timeout=60)
    model_ref, engine_ref = weakref.ref(loaded.model), weakref.ref(engine)
    del loaded, engine
    deadline = time.monotonic() + 30
    while (model_ref() is not None or engine_ref() is not None) and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.2)  # an idle worker ends after 2 s
    assert model_ref() is None, "the engine kept its model alive"
    assert engine_ref() is None


def _aura(model: torch.nn.Module, scale: float) -> Intervention:
    modules = dict(model.named_modules())
    return Intervention({n: torch.full((unit_width(modules[n]),), scale, dtype=torch.float64) for n in discover_units(model)})


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.inference_mode():
        return model(torch.tensor([[72, 105, 33]])).logits


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_a_deep_copy_of_a_hooked_model_takes_its_own_interventions(name: str) -> None:
    original = load_tiny(name).model
    aura = _aura(original, 0.9)
    plain = _logits(original)
    with intervened(original, aura):
        changed = _logits(original)  # installs the hooks
    assert not torch.equal(plain, changed)
    twin = copy.deepcopy(original)
    with intervened(twin, aura):
        assert torch.equal(_logits(twin), changed), "the copy follows its own intervention"
        assert torch.equal(_logits(original), plain), "the original is untouched by the copy's"
    with intervened(original, aura):
        assert torch.equal(_logits(twin), plain), "the copy is untouched by the original's"
        assert torch.equal(_logits(original), changed)


def test_a_fault_outside_the_step_fails_the_work_held_with_its_cause_and_the_worker_restarts(monkeypatch) -> None:
    model = load_tiny("tiny-gpt2").model
    engine = Engine(model)
    try:
        expected = engine.submit(_rows(1)).result(timeout=60)[0].tokens
        admit = engine._admit
        calls = {"n": 0}

        def failing_admit() -> None:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("a fault in the scheduler")
            admit()

        monkeypatch.setattr(engine, "_admit", failing_admit)
        began = time.monotonic()
        with pytest.raises(EngineBusy, match="a fault in the scheduler") as info:
            engine.submit(_rows(2)).result(timeout=60)
        assert time.monotonic() - began < 30, "the caller heard at once, not at its timeout"
        assert isinstance(info.value.__cause__, RuntimeError)
        assert engine.submit(_rows(1)).result(timeout=60)[0].tokens == expected, "a new worker serves"
    finally:
        engine.close()


def test_a_prompt_past_the_models_context_is_a_clear_error_for_its_own_request_only() -> None:
    model = load_tiny("tiny-gpt2").model  # 256 positions
    engine = Engine(model)
    try:
        long = DecodeRow(list(range(65, 65 + 250)), GREEDY)
        short = _rows(1)
        requests = [engine.submit([long]), engine.submit(short)]
        with pytest.raises(AuraError, match="context of 256 tokens"):
            requests[0].result(timeout=60)
        assert len(requests[1].result(timeout=60)[0].tokens) == GREEDY.max_new_tokens
    finally:
        engine.close()
