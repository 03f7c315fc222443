"""A workshop server in a real browser: small and dark screens, links that restore what was on screen, caps that hold.

A tiny-gpt2 server in workshop mode with a prepared demo (this is about the app, not the
model); screenshots land in ``test-artifacts/`` for a person to look at.
"""

import re

import pytest
from test_browser import ARTIFACTS, _serving, launched, prepared_tiny_env

sync_api = pytest.importorskip("playwright.sync_api")

PHONE = {"width": 390, "height": 844}

# Every visible leaf element of the main area (not the collapsed sidebar) whose box overlaps another's.
_OVERLAPS_JS = """
() => {
  const leaves = [...document.querySelectorAll("[data-testid='stMain'] [data-testid='stElementContainer']")]
    .filter(el => !el.querySelector("[data-testid='stElementContainer']"))
    .map(el => [el, el.getBoundingClientRect()])
    .filter(([el, r]) => r.width > 1 && r.height > 1 && el.checkVisibility({visibilityProperty: true}));  // not in a closed expander
  const found = [];
  for (let i = 0; i < leaves.length; i++) {
    for (let j = i + 1; j < leaves.length; j++) {
      const [a, ra] = leaves[i], [b, rb] = leaves[j];
      const w = Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left);
      const h = Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top);
      if (w > 2 && h > 2) found.push([a.innerText.slice(0, 40), b.innerText.slice(0, 40)]);
    }
  }
  return found;
}
"""

# Pairs of a plotly figure's texts (titles, annotations such as τ, legend) whose boxes overlap.
_FIGURE_OVERLAPS_JS = """
() => {
  const found = [];
  for (const plot of document.querySelectorAll(".js-plotly-plot")) {
    const texts = [...plot.querySelectorAll(".gtitle, .annotation-text, .legendtext, .g-xtitle text, .g-ytitle text")]
      .map(el => [el.textContent, el.getBoundingClientRect()]).filter(([, r]) => r.width > 0);
    for (let i = 0; i < texts.length; i++) {
      for (let j = i + 1; j < texts.length; j++) {
        const [a, ra] = texts[i], [b, rb] = texts[j];
        const w = Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left);
        const h = Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top);
        if (w > 1 && h > 1) found.push([a, b]);
      }
    }
  }
  return found;
}
"""


def _luminance(css_colour: str) -> float:
    """Relative brightness 0…1 of an ``rgb(…)`` / ``rgba(…)`` / ``color(srgb …)`` colour."""
    numbers = [float(n) for n in re.findall(r"[\d.]+", css_colour)[:3]]
    scale = 1.0 if css_colour.startswith("color(") else 255.0
    red, green, blue = (n / scale for n in numbers)
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("workshop-cache")


@pytest.fixture(scope="module")
def tiny_server(tiny_cache):
    with _serving("workshop-server.log", **prepared_tiny_env(tiny_cache, AURA_WORKSHOP="1")) as url:
        yield url


@pytest.fixture(scope="module")
def chromium(tiny_server):
    with launched() as browser:
        yield browser


def _demo(chromium, url: str, **context_options):
    """A fresh browser with ``context_options`` on the prepared demo's Generate page."""
    sync_api.expect.set_options(timeout=120_000)
    context = chromium.new_context(**context_options)
    tab = context.new_page()
    tab.set_default_timeout(120_000)
    tab.goto(url)
    tab.get_by_role("button", name="Run the demo").click()
    sync_api.expect(tab.locator(".aura-completion")).to_have_count(20)
    _settled(tab)
    return context, tab


def _settled(tab) -> None:
    """Wait until the page's run has drawn everything (no placeholder left, the app not running)."""
    sync_api.expect(tab.get_by_test_id("stSkeleton")).to_have_count(0)
    sync_api.expect(tab.get_by_test_id("stStatusWidget")).to_have_count(0)


def test_a_phone_sees_the_result_before_the_settings_and_nothing_overlaps(chromium, tiny_server):
    context, tab = _demo(chromium, tiny_server, viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        headline = tab.get_by_text("mean toxicity").first.bounding_box()
        prompt = tab.get_by_role("textbox", name="Prompt").bounding_box()
        title = tab.get_by_role("heading", name="Generate side by side").bounding_box()
        assert headline is not None and prompt is not None and title is not None
        print(f"on a {PHONE['width']} px phone the headline starts {headline['y']:.0f} px down, the prompt {prompt['y']:.0f} px")
        assert title["y"] < headline["y"] < prompt["y"]  # the title, then the result, then the settings
        tab.screenshot(path=str(ARTIFACTS / "phone-generate.png"), full_page=True)
        overlaps = tab.evaluate(_OVERLAPS_JS)
        assert overlaps == [], overlaps
    finally:
        context.close()


def test_the_dark_theme_reaches_the_page_and_the_apps_own_colours(chromium, tiny_server):
    context, tab = _demo(chromium, tiny_server, viewport={"width": 1280, "height": 1400}, color_scheme="dark")
    try:
        background = tab.locator(".stApp").evaluate("el => getComputedStyle(el).backgroundColor")
        assert _luminance(background) < 0.2, background
        badge = tab.get_by_text(re.compile(r"^toxicity \d")).first
        colour = badge.evaluate("el => getComputedStyle(el).color")
        assert _luminance(colour) > 0.35, colour  # the dark theme's badge colours, light on the dark page
        tab.screenshot(path=str(ARTIFACTS / "dark-generate.png"), full_page=True)
        overlaps = tab.evaluate(_OVERLAPS_JS)
        assert overlaps == [], overlaps
    finally:
        context.close()
    light = chromium.new_context(color_scheme="light")
    try:
        tab = light.new_page()
        tab.goto(tiny_server)
        sync_api.expect(tab.get_by_role("button", name="Run the demo")).to_be_visible()
        assert _luminance(tab.locator(".stApp").evaluate("el => getComputedStyle(el).backgroundColor")) > 0.8
    finally:
        light.close()


def test_a_unit_page_on_a_phone_keeps_its_figure_titles_and_a_tap_shows_a_value(chromium, tiny_server):
    context = chromium.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    tab = context.new_page()
    tab.set_default_timeout(120_000)
    sync_api.expect.set_options(timeout=120_000)
    try:
        tab.goto(f"{tiny_server}/expert_neurons")
        sync_api.expect(tab.locator(".js-plotly-plot").first).to_be_visible()
        _settled(tab)
        tab.wait_for_timeout(1500)  # plotly lays its texts out after the first frame
        overlaps = tab.evaluate(_FIGURE_OVERLAPS_JS)
        assert overlaps == [], overlaps
        tip = tab.locator(".aura-tip").first
        tip.scroll_into_view_if_needed()
        tip.tap()
        shown = tip.evaluate("el => getComputedStyle(el, '::after').content")
        assert re.search(r"\d\.\d{3}", shown), shown  # the value a mouse would see on hover
        tab.screenshot(path=str(ARTIFACTS / "phone-unit.png"), full_page=True)
    finally:
        context.close()


def _fresh(chromium, link: str):
    """A browser that has never used the app, on ``link``, once the page has drawn."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1600})
    tab = context.new_page()
    tab.set_default_timeout(120_000)
    tab.goto(link)
    sync_api.expect(tab.get_by_test_id("stSidebar").get_by_text("best AUROC")).to_be_visible()
    _settled(tab)
    return context, tab


def test_a_link_with_custom_sampling_restores_it_and_opens_no_other_run(chromium, tiny_server):
    expect = sync_api.expect
    context, tab = _demo(chromium, tiny_server)
    link = tab.url + "&temperature=1.3&new_tokens=24"
    context.close()
    context, tab = _fresh(chromium, link)
    try:
        # Not the stored demo (the preset's sampling): these settings have no result yet.
        expect(tab.get_by_text("The prepared demo.")).to_have_count(0)
        expect(tab.locator(".aura-completion")).to_have_count(0)
        expect(tab.get_by_role("spinbutton", name="Temperature")).to_have_value("1.30")
        expect(tab.get_by_role("spinbutton", name="New tokens")).to_have_value("24")
        tab.get_by_role("button", name="Generate").click()
        expect(tab.locator(".aura-completion")).to_have_count(20)
        shown, made = tab.locator(".aura-completion").all_inner_texts(), tab.url
    finally:
        context.close()
    assert "temperature=1.3" in made and "new_tokens=24" in made
    context, tab = _fresh(chromium, made)
    try:
        expect(tab.locator(".aura-completion")).to_have_count(20)  # opened from the store, no button pressed
        assert tab.locator(".aura-completion").all_inner_texts() == shown
        expect(tab.get_by_role("spinbutton", name="Temperature")).to_have_value("1.30")
    finally:
        context.close()


def _fill(tab, label: str, value: int) -> None:
    field = tab.get_by_role("spinbutton", name=label)
    field.fill(str(value))
    field.press("Tab")


def test_an_evaluate_link_restores_its_report_and_workshop_caps_hold(chromium, tiny_server, tiny_cache):
    expect = sync_api.expect
    context, tab = _fresh(chromium, f"{tiny_server}/evaluate")
    try:
        _fill(tab, "Completions per prompt (0 = preset)", 50)
        tab.get_by_role("button", name="Run evaluation").click()
        expect(tab.get_by_text(re.compile(r"Asked for 50 completions per prompt: .* at most 4 \(its cap"))).to_be_visible()
        expect(tab.get_by_text("Evaluating…")).to_have_count(0)
        for label, value in (("Number of prompts", 2), ("Completions per prompt (0 = preset)", 1)):
            _fill(tab, label, value)
        _fill(tab, "Neutral texts for perplexity", 2)
        _fill(tab, "Bootstrap resamples", 100)
        tab.get_by_role("button", name="Run evaluation").click()
        expect(tab.get_by_role("heading", name="Results")).to_be_visible()
        _settled(tab)
        assert str(tiny_cache) not in tab.content()  # a room sees no server path
        link = tab.url
        glance = tab.get_by_text(re.compile(r"^As in the paper, the lead measure")).inner_text()
    finally:
        context.close()
    assert "eval=" in link
    context, tab = _fresh(chromium, link)
    try:
        expect(tab.get_by_role("heading", name="Results")).to_be_visible()  # no button pressed
        assert tab.get_by_text(re.compile(r"^As in the paper, the lead measure")).inner_text() == glance
        expect(tab.get_by_text("Evaluating…")).to_have_count(0)
    finally:
        context.close()


def test_generate_compares_aura_with_linear_act_on_the_same_streams(chromium, tiny_server):
    """Two methods side by side: the AurA texts are the very ones AurA wrote against the plain model (same seed)."""
    expect = sync_api.expect
    context, tab = _demo(chromium, tiny_server, viewport={"width": 1400, "height": 1600})
    try:
        against_plain = tab.locator(".aura-completion").all_inner_texts()[1::2]  # pairs: plain model, then AurA
        tab.get_by_test_id("stRadio").get_by_text("Linear-AcT", exact=True).click()
        tab.get_by_test_id("stSelectbox").filter(has_text="Compared with").click()
        tab.get_by_role("option", name="AurA", exact=True).click()
        _settled(tab)
        tab.get_by_role("button", name="Generate").click()
        expect(tab.get_by_text("Linear-AcT · λ = 1.00 against AurA · λ = 1.00: mean toxicity")).to_be_visible()
        expect(tab.locator(".aura-completion")).to_have_count(20)
        assert "method=linear-act" in tab.url and "versus=aura" in tab.url
        assert tab.locator(".aura-completion").all_inner_texts()[0::2] == against_plain
        tab.screenshot(path=str(ARTIFACTS / "aura-against-linear-act.png"))
    finally:
        context.close()
