"""Ready for a room: prepared experts, links that restore the view, settings that survive, a safe workshop mode."""

from pathlib import Path

import pytest
from conftest import prepare_tiny, run_small_evaluation
from streamlit.testing.v1 import AppTest

from studio.resources import get_server_config
from studio.server import server_config

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


def _session(params: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(params or {})
    at.run()
    assert not at.exception, at.exception
    return at


def test_prepare_gives_a_key_that_any_session_restores_without_computing(cache, capsys):
    prepared = prepare_tiny(capsys)
    assert prepared["query"] == f"model=tiny-gpt2&experts={prepared['experts']}"
    at = _session()  # a fresh session opens on the server's default experts
    assert "best AUROC" in "\n".join(m.value for m in at.sidebar.markdown)
    at.switch_page("pages/find_experts.py").run()
    assert not at.exception, at.exception
    assert any(m.label == "Units analysed" for m in at.metric)
    assert at.number_input(key="w:n_per_class").value == 20  # the page shows the settings the experts came from
    assert at.query_params["experts"] == prepared["experts"]


def test_a_named_preset_opens_from_its_link(cache, capsys):
    named = prepare_tiny(capsys, "--name", "class-demo", "--pooling", "mean")
    default = prepare_tiny(capsys)
    assert named["experts"] != default["experts"]
    at = _session({"experts": named["experts"]})
    at.switch_page("pages/find_experts.py").run()
    assert at.selectbox(key="w:pooling").value == "mean"


def test_settings_survive_page_switches_and_reloads(cache, capsys):
    prepare_tiny(capsys)
    at = _session()
    at.switch_page("pages/generate.py").run()
    at.text_area(key="w:prompt").set_value("My neighbour is").run()
    at.slider(key="w:strength").set_value(0.4).run()
    at.slider(key="w:samples").set_value(3).run()
    assert at.slider(key="w:samples").value == 3  # a move of the slider holds (it once snapped back to 8)
    at.switch_page("pages/model.py").run()
    at.switch_page("pages/find_experts.py").run()
    at.switch_page("pages/generate.py").run()
    assert at.text_area(key="w:prompt").value == "My neighbour is"
    assert at.slider(key="w:strength").value == pytest.approx(0.4)
    link = dict(at.query_params)
    assert link["prompt"] == "My neighbour is" and link["strength"] == "0.4"
    reloaded = _session(link)  # a reload, or a student opening the teacher's link
    reloaded.switch_page("pages/generate.py").run()
    assert reloaded.text_area(key="w:prompt").value == "My neighbour is"
    assert reloaded.slider(key="w:strength").value == pytest.approx(0.4)
    assert reloaded.slider(key="w:samples").value == 3


def test_a_shared_generation_is_shown_without_generating_again(cache, capsys):
    prepare_tiny(capsys)
    teacher = _session()
    teacher.switch_page("pages/generate.py").run()
    teacher.slider(key="w:samples").set_value(2).run()
    next(b for b in teacher.button if b.label == "Generate").click().run()
    assert not teacher.exception, teacher.exception
    shown = teacher.session_state["last_generation"]["samples"]
    link = dict(teacher.query_params)
    student = _session(link)
    student.switch_page("pages/generate.py").run()
    assert not student.exception, student.exception
    assert student.session_state["last_generation"]["samples"].equals(shown)


def test_the_demo_compares_the_means_of_several_samples(cache):
    at = _session()
    next(b for b in at.button if b.label == "Run the demo").click().run()
    assert not at.exception, at.exception
    frame = at.session_state["last_generation"]["samples"]
    assert (frame.groupby("side").size() >= 8).all()
    assert any(m.label.startswith("Baseline: mean toxicity") for m in at.metric)
    assert any("scored by profanity-check" in c.value for c in at.caption)


def _requests_computed() -> int:
    """Requests queued on every engine of this process: the server's computations."""
    from aura_core.runtime.engine import _ENGINES

    return sum(int(engine.load()["requests_total"]) for engine in list(_ENGINES.values()))


def test_the_prepared_demo_opens_from_the_store_without_computing(cache, capsys):
    record = prepare_tiny(capsys, demo=True)
    assert record["demo"]["samples"] == 10 and record["demo"]["key"]
    before = _requests_computed()
    assert prepare_tiny(capsys, demo=True)["demo"] == record["demo"]  # prepared again: kept, not screened again
    assert _requests_computed() == before
    at = _session()
    assert any("Prepared on this server" in c.value for c in at.caption)
    next(b for b in at.button if b.label == "Run the demo").click().run()
    assert not at.exception, at.exception
    shown = at.session_state["last_generation"]
    assert shown["key"] == record["demo"]["key"] and _requests_computed() == before  # opened, not computed
    assert (shown["samples"].groupby("side").size() == 10).all()
    assert any(c.value.startswith("**The prepared demo.** Chosen by rule") for c in at.caption)
    assert dict(at.query_params).get("pre", "none") == record["demo"]["pre"]  # the link names what is on screen
    next(b for b in at.button if b.label == "Fresh samples").click().run()  # new streams: computed, once
    assert not at.exception, at.exception
    assert at.session_state["last_generation"]["key"] != record["demo"]["key"] and _requests_computed() == before + 1


def test_workshop_mode_hides_what_reaches_the_server(cache, monkeypatch, capsys):
    prepare_tiny(capsys)
    monkeypatch.setenv("AURA_WORKSHOP", "1")
    get_server_config.clear()
    at = _session({"model": "/etc"})
    assert any("does not offer the model `/etc`" in w.value for w in at.warning)
    at.switch_page("pages/model.py").run()
    assert [s.options for s in at.selectbox if s.label == "Model"] == [["tiny-gpt2"]]
    assert not [t for t in at.text_input if t.label.startswith("Or type")]
    assert not at.checkbox  # no "trust remote code" for a browser, ever
    at.switch_page("pages/find_experts.py").run()
    assert at.radio(key="data_source").options == ["Starter set", "Upload CSV / JSONL"]
    at.number_input(key="w:n_per_class").set_value(500)
    next(b for b in at.button if b.label == "Find experts").click().run()
    assert any("its cap max_texts_per_class" in e.value for e in at.error) and not at.status
    at.switch_page("pages/evaluate.py").run()
    assert not [t for t in at.text_input if t.label.startswith("Prompt file")]
    at.switch_page("pages/generate.py").run()
    assert at.slider(key="w:samples").max == 10


def test_a_bad_link_value_is_refused_with_a_note(cache):
    at = _session({"strength": "7", "experts": "../../etc/passwd", "unit": "x;rm:1"})
    notes = "\n".join(w.value for w in at.warning)
    assert "`strength` in the link was ignored" in notes and "`experts` in the link was ignored" in notes
    assert "strength" not in at.query_params and "experts" not in at.query_params


def test_server_config_from_a_file_and_the_environment(tmp_path):
    path = tmp_path / "studio.toml"
    path.write_text('[studio]\nworkshop = true\nmodels = ["smollm2-135m", "gemma-3-270m"]\nmax_samples = 6\n')
    config = server_config({"AURA_STUDIO_CONFIG": str(path), "AURA_MAX_UPLOAD_MB": "2"})
    assert config.workshop and config.max_samples == 6 and config.max_upload_mb == 2 and not config.allow_hub_ids
    assert config.offered_models() == ("smollm2-135m", "gemma-3-270m")
    path.write_text("[studio]\nmax_sample = 6\n")
    with pytest.raises(Exception, match="unknown setting 'max_sample'"):
        server_config({"AURA_STUDIO_CONFIG": str(path)})


def test_the_server_never_stops_every_session_for_a_full_garbage_collection():
    """Streamlit's default collects all generations after every script run, holding the interpreter lock.

    With a model loaded (half a million objects) each collection takes about 0.3 s on 2 cores, and
    every session's every rerun would pay it for all sessions.
    """
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["runner"]["postScriptGC"] is False
    assert config["server"]["fileWatcherType"] == "none"


@pytest.fixture
def workshop(cache, monkeypatch, capsys):
    """A workshop server with prepared experts on the tiny model, as a room would have it."""
    prepare_tiny(capsys)
    monkeypatch.setenv("AURA_WORKSHOP", "1")
    get_server_config.clear()
    return cache


def _page(page: str, params: dict[str, str] | None = None) -> AppTest:
    at = _session(params)
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def _errors(at: AppTest) -> str:
    return "\n".join(e.value for e in at.error)


@pytest.mark.parametrize(
    ("key", "value", "cap"),
    [
        ("eval_n_prompts", 500, "max_prompts"),
        ("eval_samples", 50, "max_eval_samples"),
        ("eval_n_neutral", 1000, "max_neutral_texts"),
        ("eval_bootstrap", 20_000, "max_bootstrap"),
    ],
)
def test_evaluate_refuses_a_value_over_a_workshop_cap_and_names_the_cap(workshop, key, value, cap):
    at = _page("pages/evaluate.py")
    at.number_input(key=key).set_value(value)
    next(b for b in at.button if b.label == "Run evaluation").click().run()
    assert not at.exception, at.exception
    assert f"its cap {cap}" in _errors(at)
    assert "eval_result" not in at.session_state  # nothing was started


def test_evaluate_caps_the_completions_of_every_condition_together(workshop):
    at = _page("pages/evaluate.py")
    at.number_input(key="eval_n_prompts").set_value(100)  # within max_prompts, but 100 × 4 × 12 conditions is not
    at.multiselect(key="eval_methods").set_value(["none", "aura", "det0", "damp"])
    next(b for b in at.button if b.label == "Run evaluation").click().run()
    assert "its cap max_eval_completions" in _errors(at)
    assert "eval_result" not in at.session_state


def test_a_workshop_evaluation_hides_server_paths_and_caps_its_sweep(workshop):
    at = _page("pages/evaluate.py")
    run_small_evaluation(at)
    assert not at.exception, at.exception
    assert "eval_result" in at.session_state
    shown = "\n".join(e.value for e in [*at.caption, *at.markdown, *at.error, *at.info])
    assert "kept on the server" in shown and str(workshop) not in shown and "evaluations" not in shown
    assert not _errors(at)  # the default sweep fits the workshop's caps
    at.multiselect(key="sweep_methods").set_value(["aura", "aura-null"]).run()  # 8 points
    assert "its cap max_sweep_points" in _errors(at)
    assert next(b for b in at.button if b.label == "Run sweep").disabled


def test_find_experts_caps_the_token_budget_by_name(workshop):
    at = _page("pages/find_experts.py")
    at.number_input(key="w:max_tokens").set_value(256)
    next(b for b in at.button if b.label == "Find experts").click().run()
    assert not at.exception, at.exception
    assert "its cap max_token_budget" in _errors(at)
    assert not at.status  # no run was started


def test_the_density_upload_is_capped_in_lines(workshop):
    at = _page("pages/expert_neurons.py")
    at.radio(key="density_corpus").set_value("Upload a corpus").run()
    lines = "\n".join(f"An ordinary sentence, number {i}." for i in range(1_001))
    at.file_uploader[0].set_value(("corpus.txt", lines.encode(), "text/plain")).run()
    assert not at.exception, at.exception
    assert "1,001 texts" in _errors(at) and "its cap max_upload_lines" in _errors(at)


def test_workshop_units_are_a_family_in_a_layer_range_never_a_visitors_pattern(cache, monkeypatch):
    monkeypatch.setenv("AURA_WORKSHOP", "1")
    at = _session()
    at.switch_page("pages/find_experts.py").run()
    modes = at.radio(key="units_mode")
    assert not any("regex" in option for option in modes.options)
    modes.set_value(modes.options[1]).run()
    at.selectbox(key="units_family").set_value("up")  # form widgets: their values go with the submit
    at.slider(key="units_layers").set_value((1, 1))
    at.number_input(key="w:n_per_class").set_value(10)
    at.number_input(key="w:max_tokens").set_value(16)
    next(b for b in at.button if b.label == "Find experts").click().run()
    assert not at.exception, at.exception
    assert next(m.value for m in at.metric if m.label == "Units analysed") == f"{4 * 16:,}"  # one layer's c_fc of tiny-gpt2


def test_outside_a_workshop_the_regex_stays(cache):
    at = _session()
    at.switch_page("pages/find_experts.py").run()
    assert any("regex" in option for option in at.radio(key="units_mode").options)


def test_generate_lets_a_person_choose_the_judge_and_says_which_one_scored(cache, capsys):
    from aura_core.evaluation.judge import JUDGE_NAME

    prepare_tiny(capsys)
    at = _session()
    at.switch_page("pages/generate.py").run()
    at.slider(key="w:samples").set_value(2).run()
    at.selectbox(key="w:judge").set_value(JUDGE_NAME).run()
    next(b for b in at.button if b.label == "Generate").click().run()
    assert not at.exception, at.exception
    judged = at.session_state["last_generation"]
    assert "MiniLM" in judged["judged"] and any("scored by" in c.value and "MiniLM" in c.value for c in at.caption)
    assert at.query_params["judge"] == JUDGE_NAME  # the link names the judge, and the result's key holds it
    at.selectbox(key="w:judge").set_value("profanity-check").run()
    assert at.session_state["last_generation"]["key"] == judged["key"]  # nothing new shown until Generate
    next(b for b in at.button if b.label == "Generate").click().run()
    assert at.session_state["last_generation"]["key"] != judged["key"]
