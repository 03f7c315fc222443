"""Errors in plain sight, and units' tokens read as words."""

import re
from pathlib import Path

from streamlit.testing.v1 import AppTest

from aura_core.analysis.experts import load_experts
from studio.view import vocabulary_word, word_at

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


def _page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def test_a_unit_pattern_that_matches_nothing_says_so_outside_the_status_box(prepared_record):
    at = _page("pages/find_experts.py")
    at.radio(key="units_mode").set_value("regex").run()
    at.text_input(key="units_regex").set_value(r"nothing\.here")
    next(b for b in at.button if b.label == "Find experts").click().run()
    assert not at.exception, at.exception
    inside = {e.value for status in at.status for e in status.error}
    shown = [e.value for e in at.error if e.value not in inside]
    assert any(v.startswith("Could not find experts:") and "nothing" in v for v in shown), shown


def test_word_at_joins_the_pieces_of_a_word_and_nothing_more():
    pieces = ["The", " tax", "pay", "ers", "'", " hard", "ships", " grew", "\n"]
    assert [word_at(pieces, i) for i in (1, 2, 3)] == ["taxpayers"] * 3
    assert word_at(pieces, 6) == "hardships" and word_at(pieces, 4) == "'" and word_at(pieces, 8) == "\n"
    assert vocabulary_word("␣taxpay", "word start") == "taxpay…" and vocabulary_word("ardships", "word piece") == "…ardships"


def test_the_unit_page_names_its_peak_by_whole_words(prepared_record):
    at = _page("pages/expert_neurons.py")
    texts = load_experts(prepared_record["experts"]).data.texts
    peaks = [m for v in (m.value for m in at.markdown) for m in re.findall(r"· max [-\d.]+ at “(.*?)”</small>", v)]
    assert peaks  # the byte tokenizer cuts every word into letters: each peak must still read as a word
    words = [p for p in peaks if re.search(r"\w", p)]
    assert words and all(any(re.search(rf"(?<!\w){re.escape(w)}(?!\w)", t) for t in texts) for w in words), words
    assert any(len(w) > 1 for w in words)
