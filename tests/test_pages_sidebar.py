"""The sidebar tells the truth: the concept data of the experts shown, and the model as it is now."""

from pathlib import Path

from conftest import prepare_tiny
from streamlit.testing.v1 import AppTest

from studio.resources import get_model

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


def _sidebar(at: AppTest) -> str:
    return "\n".join(m.value for m in at.sidebar.markdown)


def test_a_link_to_jigsaw_experts_names_jigsaw_in_the_sidebar_and_on_learn(cache, capsys, shared_data):
    prepare_tiny(capsys)  # the server's default experts: the starter set
    jigsaw = prepare_tiny(capsys, "--data", str(shared_data / "jigsaw_balanced.csv"), "--name", "jigsaw", "--n-per-class", "12")
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["experts"] = jigsaw["experts"]
    at.run()
    assert not at.exception, at.exception
    assert "jigsaw_balanced.csv" in _sidebar(at) and "12 toxic · 12 non-toxic" in _sidebar(at)
    assert "starter" not in _sidebar(at).lower()
    at.switch_page("pages/learn.py").run()
    assert not at.exception, at.exception
    assert any("jigsaw_balanced.csv" in m.value and "12 toxic" in m.value for m in at.markdown)

    starter = AppTest.from_file(APP, default_timeout=120)
    starter.run()  # the default experts: the starter set, named as such
    assert "starter" in _sidebar(starter).lower() and "jigsaw" not in _sidebar(starter)


def test_the_model_line_shows_the_loaded_model_not_auto(cache, capsys):
    prepare_tiny(capsys)
    get_model.clear()  # this server loads its own model (the command line above loaded another in this process)
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()  # Start loads the model
    at.run()  # the sidebar's live line, as its fragment redraws it a few seconds later
    assert not at.exception, at.exception
    line = next(m.value for m in at.sidebar.markdown if m.value.startswith("`tiny-gpt2`"))
    assert "auto" not in line and "not loaded" not in line and "cpu" in line
