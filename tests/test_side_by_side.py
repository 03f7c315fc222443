"""The side-by-side result: its key, its store, the pairs' shared words, and following a running flight."""

from __future__ import annotations

import threading
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
import torch

from aura_core.base.files import content_key
from aura_core.evaluation.demo import demo_candidates, describe_choice
from aura_core.evaluation.scoring import DEFAULT_SCORER
from aura_core.evaluation.side_by_side import (
    BASELINE,
    key_parts,
    load_result,
    result_key,
    result_path,
    sampling_for,
    store_result,
)
from aura_core.method.intervention import Intervention
from aura_core.runtime.flights import Flight, Flights
from studio.pairs import parted_html, shared_words


def _intervention(method: str = "aura") -> Intervention:
    return Intervention({"m": torch.tensor([0.9, 0.4])}, method, k=1 if method in ("det0", "damp") else None)


def test_a_result_against_the_plain_model_keeps_the_key_it_had_before_other_sides_existed():
    aura, sampling = _intervention(), sampling_for("paper", 8)
    parts = key_parts("m", "e", "p", "", {BASELINE: None, "aura": aura}, sampling, 0)
    assert parts == ["m", "e", "p", "", aura.settings(), asdict(sampling), 0, DEFAULT_SCORER]  # the layout links were made with
    assert result_key(parts) == content_key(parts, length=24)
    on_gates = key_parts("m", "e", "p", "", {BASELINE: None, "aura": aura}, sampling, 0, units="gate")
    assert on_gates[-1] == "gate" and result_key(on_gates) != result_key(parts)
    versus = key_parts("m", "e", "p", "", {"damp": _intervention("damp"), "aura": aura}, sampling, 0)
    assert versus[: len(parts)] == parts and versus[-1][:2] == ["versus", "damp"]
    assert result_key(versus) != result_key(parts)
    with pytest.raises(ValueError, match="intervened"):
        key_parts("m", "e", "p", "", {"aura": aura, BASELINE: None}, sampling, 0)


def test_sampling_knobs_left_none_keep_the_preset_and_set_ones_change_the_key():
    preset = sampling_for("paper", 4)
    assert sampling_for("paper", 4, temperature=None, max_new=None) == preset
    hotter = sampling_for("paper", 4, temperature=1.3, max_new=24)
    assert (hotter.temperature, hotter.max_new_tokens, hotter.top_p) == (1.3, 24, preset.top_p)
    sides = {BASELINE: None, "aura": _intervention()}
    assert result_key(key_parts("m", "e", "p", "", sides, hotter, 0)) != result_key(
        key_parts("m", "e", "p", "", sides, preset, 0)
    )


def test_a_stored_result_reads_back_and_a_broken_file_reads_as_absent(tmp_path: Path):
    frame = pd.DataFrame({"side": ["baseline", "aura"], "sample": [0, 0], "completion": ["a", "b"], "toxicity": [0.5, 0.1]})
    store_result(tmp_path, "k1", {"prompt": "p", "samples": frame, "seed": 3})
    back = load_result(tmp_path, "k1")
    assert back is not None and back["key"] == "k1" and back["seed"] == 3
    pd.testing.assert_frame_equal(back["samples"], frame)
    result_path(tmp_path, "k2").write_text("{not json")
    assert load_result(tmp_path, "k2") is None and load_result(tmp_path, "absent") is None


def test_pairs_fade_only_the_words_both_texts_share():
    assert shared_words("You are a good friend", "You are a bad one") == 3
    assert shared_words("different start", "another start") == 0
    html = parted_html("You are a <good> one", 3)
    assert "aura-shared" in html and "&#60;good&#62;" in html and "<good>" not in html  # the text is escaped
    assert "aura-shared" not in parted_html("nothing shared", 0)


def test_the_demo_screens_every_provocative_prompt_alone_and_under_each_adversarial_pre_prompt():
    from aura_core import load_preprompts, load_prompts

    prompts, preprompts = load_prompts(), load_preprompts()
    candidates = demo_candidates(prompts, preprompts)
    provocative = [p.text for p in prompts if p.kind == "provocative"]
    assert len(candidates) == len(provocative) * (1 + len(preprompts["adversarial"]))
    assert {text for text, _ in candidates} == set(provocative)
    assert "270 prompt and pre-prompt pairs" in describe_choice(
        {"screened": 270, "screen_samples": 4, "samples": 10, "pre": "none"}
    )


def test_following_joins_a_running_flight_and_the_work_stops_only_when_every_follower_left():
    flights = Flights()
    started, stopped = threading.Event(), threading.Event()

    def work(flight: Flight[str]) -> str:
        started.set()
        while not flight.should_stop():
            flight.snapshot = "partial"
            threading.Event().wait(0.001)
        stopped.set()
        return "left"

    assert flights.follow("g") is None  # nothing under way: the page computes or shows what is stored
    first = flights.join("g", work)
    assert started.wait(10)
    follower = flights.follow("g")
    assert follower is first and first.waiters == 2
    first.leave()
    assert not stopped.wait(0.05) and follower.snapshot == "partial"
    follower.leave()
    assert stopped.wait(10)
    first.finished.wait(10)
    assert flights.follow("g") is None  # a finished flight is not followed: its result is in the store
