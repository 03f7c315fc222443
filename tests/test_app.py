"""Headless page tests of the Streamlit app on a tiny model (AURA_STUDIO_MODEL=tiny-gpt2)."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture
def app(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("AURA_STUDIO_MODEL", "tiny-gpt2")
    monkeypatch.setenv("AURA_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "app-cache"))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception
    return at


def _find_experts(at: AppTest, n_per_class: int = 20) -> AppTest:
    at.switch_page("pages/find_experts.py").run()
    at.number_input(key="w:n_per_class").set_value(n_per_class)
    at.number_input(key="w:max_tokens").set_value(32)
    next(b for b in at.button if b.label == "Find experts").click().run()
    assert not at.exception, at.exception
    return at


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _markdown_text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_model_page_describes_the_loaded_model(app):
    app.switch_page("pages/model.py").run()
    assert _metric(app, "Layers") == "2"
    assert _metric(app, "Architecture") == "GPT2"
    assert any(s.label == "Model" for s in app.selectbox)
    assert len(app.dataframe) >= 1
    assert "tiny-gpt2" in _markdown_text(app.sidebar)


def test_find_experts_shows_headlines_plots_and_downloads(app):
    at = _find_experts(app)
    assert _metric(at, "Units analysed") == f"{2 * (64 + 16):,}"
    assert len(at.get("plotly_chart")) == 3
    assert {b.proto.label for b in at.get("download_button")} == {"AUROC table (CSV)", "Intervention file (safetensors)"}


def test_bad_file_shows_an_error_and_keeps_the_active_data(app, tmp_path):
    bad = tmp_path / "one_class.csv"
    bad.write_text("text,label\nyou fool,1\nidiot,1\n")
    at = app.switch_page("pages/find_experts.py").run()
    before = next(c.value for c in at.caption if c.value.startswith("Active:"))
    at.radio(key="data_source").set_value("File on the server").run()
    at.text_input(key="concept_path").set_value(str(bad)).run()
    next(b for b in at.button if b.label == "Read file").click().run()
    assert not at.exception
    assert any("only one class" in e.value for e in at.error)
    assert next(c.value for c in at.caption if c.value.startswith("Active:")) == before


def test_expert_neurons_page_inspects_a_unit(app):
    at = _find_experts(app)
    at.switch_page("pages/expert_neurons.py").run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 2
    assert any("Texts that activate it most" in m.value for m in at.markdown)
    assert any("outline" in m.value for m in at.markdown)  # the peak token is highlighted
    assert len(at.dataframe) == 3  # unit table, promoted, suppressed


def test_side_by_side_generation_gives_two_scored_outputs(app):
    at = _find_experts(app)
    at.switch_page("pages/generate.py").run()
    assert not at.exception, at.exception
    at.slider(key="w:samples").set_value(3)
    next(b for b in at.button if b.label == "Generate").click().run()
    assert not at.exception, at.exception
    text = _markdown_text(at)
    assert text.count("toxicity ") >= 2 and "Baseline" in text and "AurA" in text
    assert len([m for m in at.metric if "mean toxicity" in m.label]) == 3  # each side, and their ratio
    assert any(b.proto.label == "Generations (CSV)" for b in at.get("download_button"))


def test_url_parameters_open_the_same_view(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("AURA_STUDIO_MODEL", "tiny-gpt2")
    monkeypatch.setenv("AURA_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "app-cache"))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update({"method": "damp", "strength": "0.3", "prompt": "You are a", "pre": "adversarial:rude"})
    at.run()
    _find_experts(at)
    at.switch_page("pages/generate.py").run()
    assert not at.exception, at.exception
    assert at.radio(key="w:method").value == "damp"
    assert at.slider(key="w:strength").value == pytest.approx(0.3)
    assert at.text_area(key="w:prompt").value == "You are a"
    assert at.selectbox(key="w:pre").value == "adversarial:rude"


def test_pages_end_early_through_settings_stop_so_the_address_bar_keeps_up():
    """After ``st.stop()`` Streamlit sends nothing more, so a page that stopped with it would lose its link."""
    root = Path(APP).parent
    pages = [root / "app.py", *sorted((root / "pages").glob("*.py")), *sorted((root / "studio").glob("*.py"))]
    stopping = [
        f"{page.relative_to(root)}:{number}"
        for page in pages
        if page.name != "settings.py"  # settings.stop itself
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        if "st.stop()" in line
    ]
    assert not stopping, f"use settings.stop() instead of st.stop() at {', '.join(stopping)}"


def test_learn_page_uses_live_numbers(app):
    at = app.switch_page("pages/learn.py").run()
    assert not at.exception
    assert any("Find experts" in i.value for i in at.info)
    at = _find_experts(at)
    at.switch_page("pages/learn.py").run()
    assert not at.exception, at.exception
    assert _metric(at, "Units looked at") == "160"
    assert "The strongest unit is" in _markdown_text(at)


def test_unknown_model_is_an_in_page_error(app):
    at = app.switch_page("pages/model.py").run()
    form_select = next(s for s in at.selectbox if s.label == "Model")
    form_select.set_value("Hugging Face id or local folder…")
    next(t for t in at.text_input if t.label.startswith("Or type")).set_value("no-such-model-anywhere")
    next(b for b in at.button if b.label == "Load model").click().run()
    assert not at.exception
    assert any("unknown model" in e.value for e in at.error)


def test_evaluate_page_runs_conditions_a_sweep_and_offers_reports(app):
    at = _find_experts(app)
    at.switch_page("pages/evaluate.py").run()
    assert not at.exception, at.exception
    at.number_input(key="eval_n_prompts").set_value(3)
    at.number_input(key="eval_samples").set_value(2)
    at.number_input(key="eval_n_neutral").set_value(4)
    at.number_input(key="eval_bootstrap").set_value(200)
    next(b for b in at.button if b.label == "Run evaluation").click().run()
    assert not at.exception, at.exception
    result = at.session_state["eval_result"]
    assert len(result.metrics) == 2 * 3
    # A tiny random model rarely writes a toxic completion: then the page says so instead of drawing empty bars.
    bars = int((result.metrics.toxic_share > 0).any())
    assert len(at.get("plotly_chart")) == bars
    assert bars or any("no toxic share to compare" in i.value for i in at.info)
    at.multiselect(key="sweep_grid").set_value([0.5, 1.0])
    next(b for b in at.button if b.label == "Run sweep").click().run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == bars + 1
    labels = {b.proto.label for b in at.get("download_button")}
    assert {"Metrics (CSV)", "Generations (CSV)", "Report (JSON)", "Report (HTML)"} <= labels


def _subheaders(at: AppTest) -> list[str]:
    return [s.value for s in at.subheader]


def test_unit_permalink_search_and_a_bad_link(app):
    import html

    at = _find_experts(app)
    at.query_params["unit"] = "transformer.h.1.mlp.c_fc:5"
    at.switch_page("pages/expert_neurons.py").run()
    assert not at.exception, at.exception
    assert _subheaders(at) == ["Layer 1 · c_fc · unit 5"]
    assert at.query_params["unit"] == "transformer.h.1.mlp.c_fc:5"
    assert any(m.label == "Activation density" for m in at.metric)
    assert any("Toxic texts" in m.value for m in at.markdown) and any("Non-toxic texts" in m.value for m in at.markdown)

    at.selectbox(key="search_layer").set_value(0)
    at.selectbox(key="search_kind").set_value("c_proj")
    at.number_input(key="search_index").set_value(7)
    next(b for b in at.button if b.label == "Open unit").click().run()
    assert _subheaders(at) == ["Layer 0 · c_proj · unit 7"] and at.query_params["unit"] == "transformer.h.0.mlp.c_proj:7"

    for bad, message in (("transformer.h.1.mlp.c_fc:64", "out of range"), ("transformer.h.9.mlp.nope:1", "no unit module")):
        at.query_params["unit"] = bad
        at.run()
        assert not at.exception, at.exception
        assert _subheaders(at) == []  # nothing opens
        assert any(message in html.unescape(e.value) and bad in html.unescape(e.value) for e in at.error)


@pytest.fixture
def tiny_llama_server(monkeypatch, tmp_path_factory):
    """A server whose default model is the tiny Llama (its settings are read once per process: read them again)."""
    from studio.resources import get_server_config

    monkeypatch.setenv("AURA_STUDIO_MODEL", "tiny-llama")
    monkeypatch.setenv("AURA_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "app-cache"))
    get_server_config.clear()
    yield
    get_server_config.clear()


def test_gated_units_show_both_halves(tiny_llama_server):
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["unit"] = "model.layers.1.mlp.up_proj:4"
    at.run()
    _find_experts(at)
    at.switch_page("pages/expert_neurons.py").run()
    assert not at.exception, at.exception
    assert _subheaders(at) == ["Layer 1 · up_proj · unit 4"]
    assert {m.label for m in at.metric} >= {"gate_proj 4", "up_proj 4"}
    assert any("gate_proj 4 on the same text" in m.value for m in at.markdown)


def test_which_experts_fire_lists_experts_that_link_to_their_unit_pages(app):
    at = _find_experts(app)
    at.switch_page("pages/firing.py").run()
    assert not at.exception, at.exception
    at.text_area(key="firing_text").set_value("<img src=x onerror=alert(1)> you **fool**")
    next(b for b in at.button if b.label == "Show the experts that fire").click().run()
    assert not at.exception, at.exception
    links = at.get("page_link")
    assert links and all(link.proto.page == "expert_neurons" for link in links)
    assert all(link.proto.query_string.startswith("unit=transformer.h.") for link in links)
    firing = at.session_state["firing"][1]
    assert "".join(t.text for t in firing.tokens) == "<img src=x onerror=alert(1)> you **fool**"
    assert not any("<img" in m.value for m in at.markdown)  # what was typed is escaped wherever it is shown


def test_generate_page_shows_experts_in_the_completions(app):
    at = _find_experts(app)
    at.switch_page("pages/generate.py").run()
    at.slider(key="w:samples").set_value(2)
    next(b for b in at.button if b.label == "Generate").click().run()
    at.toggle(key="gen_expert_activity").set_value(True).run()
    assert not at.exception, at.exception
    text = _markdown_text(at)
    assert "Baseline: expert activity per token" in text and "what the intervention removed per token" in text
    assert "var(--aura-hot) " in text and "var(--aura-cool) " in text  # shaded by the theme's colours
