"""Every page opened with hostile link values: no exception, and nothing the visitor typed runs as Markdown."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from studio.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PAGES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pages").glob("*.py"))


@pytest.fixture
def fresh(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("AURA_STUDIO_MODEL", "tiny-gpt2")
    monkeypatch.setenv("AURA_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hostile-cache"))

    def make(params: dict[str, str]) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=120)
        at.query_params.update(params)
        return at

    return make


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("value", ["²", "nan", "1e309", "-1", "../../etc/passwd", "[x](http://evil.example)"])
def test_a_page_opened_with_hostile_values_in_every_setting_raises_nothing(fresh, page: str, value: str) -> None:
    params = {setting.url: value for setting in SETTINGS.values()}
    at = fresh(params)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, f"{page} with every setting = {value!r}: {at.exception}"
