"""The address bar holds what is on screen: Generate's sampling knobs and Evaluate's report, restored in a fresh session."""

from pathlib import Path

import pytest
from conftest import run_small_evaluation
from streamlit.testing.v1 import AppTest

from studio.resources import get_server_config

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


def _page(page: str, params: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(params or {})
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def _generate(at: AppTest) -> object:
    next(b for b in at.button if b.label == "Generate").click().run()
    assert not at.exception, at.exception
    return at.session_state["last_generation"]["samples"]


def test_a_link_with_custom_sampling_restores_it_and_opens_that_run(prepared):
    teacher = _page("pages/generate.py")
    teacher.slider(key="w:samples").set_value(2).run()
    plain = _generate(teacher)
    assert not {"temperature", "new_tokens", "top_p", "repetition"} & set(teacher.query_params)  # the preset's own values
    teacher.number_input(key="w:temperature").set_value(1.3).run()
    teacher.number_input(key="w:max_new").set_value(24).run()
    teacher.number_input(key="w:top_p").set_value(0.8).run()
    teacher.number_input(key="w:repetition").set_value(1.2).run()
    custom = _generate(teacher)
    link = dict(teacher.query_params)
    assert (link["temperature"], link["new_tokens"], link["top_p"], link["repetition"]) == ("1.3", "24", "0.8", "1.2")

    student = _page("pages/generate.py", link)
    assert student.number_input(key="w:temperature").value == pytest.approx(1.3)
    assert student.number_input(key="w:max_new").value == 24
    assert student.number_input(key="w:top_p").value == pytest.approx(0.8)
    assert student.number_input(key="w:repetition").value == pytest.approx(1.2)
    shown = student.session_state["last_generation"]["samples"]
    assert shown.equals(custom) and not shown.equals(plain)


def test_choosing_another_preset_brings_its_own_sampling_values(prepared):
    at = _page("pages/generate.py", {"temperature": "1.3"})
    assert at.number_input(key="w:temperature").value == pytest.approx(1.3)
    at.selectbox(key="w:sampling").set_value("followup").run()
    assert at.number_input(key="w:temperature").value == pytest.approx(1.0)
    assert at.number_input(key="w:top_p").value == pytest.approx(0.3)
    assert "temperature" not in at.query_params and at.query_params["sampling"] == "followup"


def test_new_tokens_over_the_servers_cap_say_which_cap(prepared, monkeypatch):
    monkeypatch.setenv("AURA_MAX_NEW_TOKENS", "16")
    get_server_config.clear()
    at = _page("pages/generate.py", {"new_tokens": "40"})
    assert any("its cap max_new_tokens" in e.value for e in at.error)
    assert next(b for b in at.button if b.label == "Generate").disabled


def test_an_evaluation_link_opens_its_stored_report_in_a_fresh_session(prepared):
    at = _page("pages/evaluate.py")
    run_small_evaluation(at)
    assert not at.exception, at.exception
    metrics = at.session_state["eval_result"].metrics
    link = dict(at.query_params)
    assert len(link["eval"]) == 24

    fresh = _page("pages/evaluate.py", link)
    assert not fresh.status  # nothing evaluated again
    assert fresh.session_state["eval_result"].metrics.equals(metrics)
    assert any("stored evaluation of this link" in c.value for c in fresh.caption)
    assert fresh.number_input(key="eval_n_prompts").value == 2 and fresh.number_input(key="eval_samples").value == 1
    assert fresh.multiselect(key="eval_groups").value == ["none"]  # the form shows the report's own settings
    missing = _page("pages/evaluate.py", {**link, "eval": "0" * 24})
    assert any("not on this server" in w.value for w in missing.warning)


def test_the_demo_samples_as_its_preset_whatever_was_tried_before(prepared):
    at = _page("pages/generate.py", {"temperature": "2.5", "new_tokens": "7"})
    at.switch_page("pages/start.py").run()
    next(b for b in at.button if b.label == "Run the demo").click().run()
    assert not at.exception, at.exception
    assert not {"temperature", "new_tokens"} & set(at.query_params)
    assert at.number_input(key="w:temperature").value == pytest.approx(1.0)
