"""End to end in a real browser: start the server on the default model, find experts, generate.

Uses Debian's Chromium (``/usr/bin/chromium``) driven by Playwright. Screenshots of each step
land in ``test-artifacts/`` for a person to look at.
"""

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
]
ARTIFACTS = ROOT / "test-artifacts"

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs it with apt-get install chromium", pytrace=False)
    pytest.skip("Debian chromium is not installed (apt-get install chromium)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _serving(log_name: str = "server.log", **extra_env: str) -> Iterator[str]:
    """A fresh Streamlit server on the app (on the default model unless ``extra_env`` says), its address while it runs."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "AURA_STUDIO_MODEL"} | extra_env
    ARTIFACTS.mkdir(exist_ok=True)
    log = (ARTIFACTS / log_name).open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address", "127.0.0.1"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        else:
            pytest.fail(f"the Streamlit server did not start within 60 s; see test-artifacts/{log_name}")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def server():
    # Room for a generation long enough that only freeing its rows ends it within the reload test.
    with _serving(AURA_MAX_NEW_TOKENS="1024") as url:
        yield url


@contextlib.contextmanager
def launched() -> Iterator[object]:
    """Debian's Chromium, headless, while the block runs."""
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def prepared_tiny_env(cache: Path, **extra: str) -> dict[str, str]:
    """The environment of a tiny-gpt2 server on ``cache``, whose experts and demo ``prepare`` has made."""
    env = {"AURA_STUDIO_MODEL": "tiny-gpt2", "AURA_CACHE_DIR": str(cache), **extra}
    prepare = [sys.executable, "-m", "aura_core", "prepare", "--model", "tiny-gpt2", "--n-per-class", "20", "--max-tokens", "32"]
    subprocess.run(prepare, cwd=ROOT, env=os.environ | env, check=True, capture_output=True, timeout=600)
    return env


@pytest.fixture(scope="module")
def browser(server):
    with launched() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def page(browser):
    tab = browser.new_page(viewport={"width": 1400, "height": 2200})
    tab.set_default_timeout(300_000)
    return tab


def test_default_model_experts_and_side_by_side_generation(server, page):
    expect = sync_api.expect
    expect.set_options(timeout=300_000)  # the first load of the preset converts it (~30 s on 2 cores)
    page.goto(server)
    expect(page.get_by_role("button", name="Run the demo")).to_be_visible()  # the app opens on its Start page
    page.get_by_role("link", name="Model", exact=True).click()
    expect(page.get_by_text("134.5 M")).to_be_visible()  # SmolLM2-135M's parameter count
    expect(page.get_by_text("109,440 units AurA can hook")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "1-model.png"))

    page.get_by_role("link", name="Find experts").click()
    page.get_by_role("spinbutton", name="Texts per class").fill("40")
    page.get_by_role("spinbutton", name="Token budget per text").fill("32")
    page.get_by_role("button", name="Find experts").click()
    expect(page.get_by_text("Units analysed")).to_be_visible()
    expect(page.get_by_text("109,440").first).to_be_visible()
    expect(page.locator("[data-testid='stSidebar']").get_by_text("best AUROC")).to_be_visible()
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "2-find-experts.png"))

    page.get_by_role("link", name="Generate side by side").click()
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_text("same random stream on both sides")).to_be_visible()
    # The result's titles (bold); the streaming view's headings of the same names leave as it arrives.
    expect(page.get_by_role("strong").filter(has_text=re.compile(r"^Baseline$"))).to_be_visible()
    expect(page.get_by_role("strong").filter(has_text=re.compile(r"^AurA · λ = 1\.00$"))).to_be_visible()
    badges = page.get_by_text("toxicity 0.")
    expect(badges).to_have_count(16)  # the page's default: 8 pairs, every one shown
    page.screenshot(path=str(ARTIFACTS / "3-generate.png"))
    shutil.copy(ARTIFACTS / "3-generate.png", ARTIFACTS / "latest.png")


# A seed of this run's own: the server keeps every finished generation, and a stored one would
# show before anything is computed, so a fresh seed is what makes these pages compute.
RUN_SEED = int(time.time()) % 1_000_000


def _open_generate(browser, server: str, prompt: str):
    """A fresh browser (its own session) on the Generate page with ``prompt``, experts found."""
    context = browser.new_context(viewport={"width": 1400, "height": 1600})
    tab = context.new_page()
    tab.set_default_timeout(300_000)
    # Greedy decoding: a demo setting whose text is the same alone and beside other sessions.
    # The experts' settings come in the link: a value typed while a loaded server still redraws the page can be lost.
    tab.goto(f"{server}/find_experts?prompt={quote(prompt)}&samples=1&sampling=greedy&seed={RUN_SEED}&n=40&tokens=32")
    sync_api.expect(tab.get_by_role("spinbutton", name="Texts per class")).to_have_value("40")
    sync_api.expect(tab.get_by_role("spinbutton", name="Token budget per text")).to_have_value("32")
    tab.get_by_role("button", name="Find experts").click()
    sync_api.expect(tab.get_by_text("Units analysed")).to_be_visible()
    tab.get_by_role("link", name="Generate side by side").click()
    sync_api.expect(tab.get_by_role("button", name="Generate")).to_be_visible()
    return context, tab


def _words(text: str) -> str:
    return " ".join(text.split())


def _shown_completions(tab) -> list[str]:
    sync_api.expect(tab.locator(".aura-completion")).to_have_count(2)
    return [_words(text) for text in tab.locator(".aura-completion").all_inner_texts()]


def _solo_experts(served):
    """The experts the pages were asked for (40 starter texts per class, 32 tokens), fitted here: their key and AurA."""
    from aura_core.analysis.collect import collect_responses
    from aura_core.base.data import balanced_sample, load_concept_data
    from aura_core.method.fit import fit_intervention
    from aura_core.model.architecture import discover_units

    data = balanced_sample(load_concept_data("starter"), 40, seed=0)
    # The server collects with its collection copy (bfloat16 where the CPU has it) and generates in float32.
    responses = collect_responses(served.collector, served.tokenizer, data, discover_units(served.collector), max_tokens=32)
    return responses.meta["cache_key"], fit_intervention(responses)


def _solo_completions(served, prompts: list[str]) -> list[list[str]]:
    """What the page must show for each prompt: the library's own answer, each computed alone here."""
    from aura_core.evaluation.generation import SAMPLING_PRESETS, side_by_side_rows
    from aura_core.runtime.decoding import decode_all

    _, aura = _solo_experts(served)
    answers = []
    for prompt in prompts:
        sides = side_by_side_rows(
            served.tokenizer, prompt, {"baseline": None, "aura": aura}, settings=SAMPLING_PRESETS["greedy"], seed=RUN_SEED
        )
        rows = [row for side in sides.values() for row in side]
        decode_all(served.model, rows)
        answers.append([_words(served.tokenizer.decode(row.tokens, skip_special_tokens=True)) for row in rows])
    return answers


def test_four_browsers_generate_at_once_each_with_its_solo_result(server, browser, served):
    expect = sync_api.expect
    expect.set_options(timeout=300_000)
    prompts = ["You are such a", "The weather today is", "I can't stand people who", "My favourite food is"]
    solo = _open_generate(browser, server, prompts[0])
    sessions = [_open_generate(browser, server, prompt) for prompt in prompts]
    try:
        started = time.perf_counter()
        solo[1].get_by_role("button", name="Generate").click()
        alone = _shown_completions(solo[1])
        solo_seconds = time.perf_counter() - started

        started = time.perf_counter()
        for _, tab in sessions:
            tab.get_by_role("button", name="Generate").click()
        shown = [_shown_completions(tab) for _, tab in sessions]
        together_seconds = time.perf_counter() - started
        used = {parse_qs(urlparse(tab.url).query).get("experts", [""])[0] for _, tab in [solo, *sessions]}
        sessions[-1][1].screenshot(path=str(ARTIFACTS / "4-four-sessions.png"))
    finally:
        for context, _ in [solo, *sessions]:
            context.close()
    print(f"one request alone: {solo_seconds:.1f} s; four at once: {together_seconds:.1f} s")
    assert used == {_solo_experts(served)[0]}, "every page must use the experts it asked for, the ones computed here"
    assert shown[0] == alone
    assert shown == _solo_completions(served, prompts)  # the model loaded as the server loads it (dtype auto)
    # How much faster four at once are than four in turn is a speed figure: `python -m benchmarks serve` measures it.


def test_a_reload_during_a_generation_follows_the_same_run_and_a_closed_tab_frees_its_rows(server, browser):
    """A person reloads while the model writes: the page comes back following the same run; closing it frees the rows."""
    expect = sync_api.expect
    expect.set_options(timeout=300_000)
    context, tab = _open_generate(browser, server, "Nobody asked you, you")
    try:
        # Before anything is generated, the address bar already holds the page's settings.
        expect(tab).to_have_url(re.compile(r"[?&]experts=.*[?&]prompt=Nobody"), timeout=30_000)
        tab.goto(tab.url + "&samples=25")
        tab.get_by_text("Sampling", exact=True).click()
        tab.get_by_role("spinbutton", name="New tokens").fill("1024")
        tab.get_by_role("spinbutton", name="New tokens").press("Enter")
        tab.get_by_role("button", name="Generate").click()
        expect(tab.get_by_role("heading", name="Baseline")).to_be_visible()  # the two columns stream
        time.sleep(2)
        assert tab.locator(".aura-completion").count() == 0, "the reload must come while the model still writes"
        tab.reload()
        # 2 × 25 rows of 1024 tokens, minutes of work: the reloaded page streams the run it left, not a new one.
        # (A loaded machine draws a page slowly: a minute for each, far less than the run takes.)
        expect(tab.get_by_text(re.compile(r"of 51,200 tokens"))).to_be_visible(timeout=60_000)
        expect(tab.get_by_role("textbox", name="Prompt")).to_have_value("Nobody asked you, you", timeout=60_000)
        expect(tab.get_by_role("heading", name="Baseline")).to_be_visible()
        link = tab.url
    finally:
        context.close()
    watcher_context = browser.new_context(viewport={"width": 1400, "height": 1600})
    try:
        watcher = watcher_context.new_page()
        watcher.goto(server)
        # Once the rejoin grace has run out, the rows leave the engine; the sidebar redraws every few seconds.
        expect(watcher.locator("[data-testid='stSidebar']").get_by_text(re.compile(r"^0 completions decoding"))).to_be_visible(
            timeout=120_000
        )
        # Freed, not finished: nothing was stored, so the same link offers to generate and shows no result.
        watcher.goto(link)
        expect(watcher.get_by_role("button", name="Generate")).to_be_visible(timeout=60_000)
        time.sleep(3)
        assert watcher.locator(".aura-completion").count() == 0
        assert watcher.get_by_text(re.compile(r"of 51,200 tokens")).count() == 0
    finally:
        watcher_context.close()


def test_a_copied_link_restores_experts_and_a_generation_in_a_fresh_browser(server, browser):
    """What a student sees when a teacher's link opens in a browser that has never used the app."""
    expect = sync_api.expect
    expect.set_options(timeout=300_000)
    teacher_context, teacher = _open_generate(browser, server, "People like you are")
    teacher.get_by_role("button", name="Generate").click()
    shown = _shown_completions(teacher)
    link = teacher.url
    assert "experts=" in link and "prompt=" in link
    teacher.get_by_role("link", name="Expert neurons").click()
    unit_heading = teacher.get_by_role("heading", name="Layer ")
    sync_api.expect(unit_heading).to_be_visible()
    # The address bar is brought up to date when the page's run ends, just after the heading shows.
    sync_api.expect(teacher).to_have_url(re.compile(r"[?&]unit="))
    heading, unit_link = unit_heading.inner_text(), teacher.url
    teacher_context.close()

    student_context = browser.new_context(viewport={"width": 1400, "height": 1600})
    student = student_context.new_page()
    try:
        student.goto(link)
        # No button pressed here: the experts and the completions come from the server's store.
        expect(student.locator("[data-testid='stSidebar']").get_by_text("best AUROC")).to_be_visible()
        assert _shown_completions(student) == shown
        expect(student.get_by_text("People like you are").first).to_be_visible()
        student.screenshot(path=str(ARTIFACTS / "5-shared-link.png"))
        student.goto(unit_link)  # and the unit the teacher was looking at
        sync_api.expect(student.get_by_role("heading", name=heading)).to_be_visible()
    finally:
        student_context.close()


def test_a_typed_sentence_leads_through_a_click_to_a_unit_page(server, browser):
    """Which experts fire on a typed sentence, click a token, click one of its experts: that unit's page opens.

    The sentence carries markup: it must show as text (no live ``img``, no alert), in the strip and everywhere.
    """
    import re

    expect = sync_api.expect
    expect.set_options(timeout=300_000)
    context = browser.new_context(viewport={"width": 1400, "height": 1800})
    tab = context.new_page()
    tab.set_default_timeout(300_000)
    alerts: list[str] = []
    tab.on("dialog", lambda dialog: (alerts.append(dialog.message), dialog.dismiss()))
    try:
        tab.goto(f"{server}/find_experts")
        tab.get_by_role("spinbutton", name="Texts per class").fill("40")
        tab.get_by_role("spinbutton", name="Token budget per text").fill("32")
        tab.get_by_role("button", name="Find experts").click()
        expect(tab.get_by_text("Units analysed")).to_be_visible()

        tab.get_by_role("link", name="Which experts fire").click()
        typed = "You are a stupid idiot <img src=x onerror=alert(1)> and I hate you."
        tab.get_by_role("textbox", name="Text", exact=True).fill(typed)
        tab.get_by_role("button", name="Show the experts that fire").click()
        # The typed text gets a strip of its own; the example's leaves when the run ends.
        strip = tab.locator(".aura-strip").filter(has_text="<img src=x onerror=alert(1)>")
        expect(strip).to_have_count(1)
        expect(tab.locator(".aura-strip")).to_have_count(1)
        strip.get_by_role("button", name="stupid", exact=True).click()
        expect(tab.get_by_text("Experts firing at “␣stupid”")).to_be_visible()
        tab.screenshot(path=str(ARTIFACTS / "6-which-experts-fire.png"))
        expect(tab.locator("img[src='x']")).to_have_count(0)

        link = tab.get_by_role("link", name=re.compile(r"Layer \d+ · \w+ · unit \d+ · score")).first
        layer, kind, unit = re.search(r"Layer (\d+) · (\w+) · unit (\d+)", link.inner_text()).groups()
        link.click()
        expect(tab.get_by_role("heading", name=f"Layer {layer} · {kind} · unit {unit}")).to_be_visible()
        expect(tab.get_by_text("Activation density", exact=True)).to_be_visible()
        expect(tab.get_by_text("Promoted tokens", exact=True)).to_be_visible()
        expect(tab).to_have_url(re.compile(rf"[?&]unit=model\.layers\.{layer}\.mlp\.{kind}(:|%3A){unit}(&|$)"))
        tab.get_by_text("Texts that activate it most, from both classes").scroll_into_view_if_needed()
        tab.screenshot(path=str(ARTIFACTS / "7-unit-page.png"))

        tab.goto(f"{server}/expert_neurons?unit=model.layers.{layer}.mlp.{kind}:99999")
        expect(tab.get_by_text("unit 99999 is out of range").first).to_be_visible()
        tab.screenshot(path=str(ARTIFACTS / "8-bad-unit-link.png"))
        expect(tab.locator("img[src='x']")).to_have_count(0)
        assert alerts == []
    finally:
        context.close()


def test_a_fresh_server_draws_a_linked_page_inside_the_frame(browser):
    """The first visit to a new server is a direct link to a page: it still gets the navigation and sidebar."""
    expect = sync_api.expect
    expect.set_options(timeout=120_000)
    with _serving("fresh-server.log") as url:
        context = browser.new_context()
        tab = context.new_page()
        try:
            tab.goto(f"{url}/expert_neurons")
            expect(tab.get_by_role("heading", name="Expert neurons")).to_be_visible()
            sidebar = tab.get_by_test_id("stSidebar")
            expect(sidebar.get_by_text("AurA Studio")).to_be_visible()
            expect(sidebar.get_by_role("link", name="Generate side by side")).to_be_visible()
            tab.screenshot(path=str(ARTIFACTS / "0-fresh-server-direct-link.png"))
        finally:
            context.close()


def _requests_computed(tab) -> int:
    """The server's count of generation requests, as the sidebar's live line shows it."""
    line = tab.get_by_test_id("stSidebar").get_by_text(re.compile(r"computed since the server started"))
    sync_api.expect(line).to_be_visible()
    return int(re.sub(r"\D", "", line.inner_text().split(" generation")[0]))


def test_the_prepared_demo_opens_at_once_and_eight_browsers_pressing_generate_compute_once(browser, tmp_path):
    """A workshop's first minute: the stored demo opens without computing, and a room pressing the same button waits for one run."""
    expect = sync_api.expect
    expect.set_options(timeout=120_000)
    with _serving("room-server.log", **prepared_tiny_env(tmp_path)) as url:
        contexts = [browser.new_context(viewport={"width": 1400, "height": 1600}) for _ in range(8)]
        try:
            tabs = [context.new_page() for context in contexts]
            first = tabs[0]
            first.goto(url)
            first.get_by_role("button", name="Run the demo").click()
            started = time.perf_counter()
            expect(first.locator(".aura-completion")).to_have_count(20)  # 10 pairs
            print(f"the prepared demo opened {time.perf_counter() - started:.1f} s after the click")
            expect(first.get_by_text("The prepared demo.")).to_be_visible()
            # The same settings on streams no one has drawn: 8 browsers open the link and press Generate together.
            link = re.sub(r"([?&])seed=\d+", r"\1", first.url).rstrip("&") + f"&seed={RUN_SEED}&new_tokens=64"
            for tab in tabs:
                tab.goto(link)
                expect(tab.get_by_role("button", name="Generate")).to_be_visible()
            for tab in tabs:
                tab.get_by_role("button", name="Generate").click()
            for tab in tabs:
                expect(tab.locator(".aura-completion")).to_have_count(20)
            tabs[-1].screenshot(path=str(ARTIFACTS / "6-room-of-eight.png"))
            texts = [tab.locator(".aura-completion").all_inner_texts() for tab in tabs]
            assert all(shown == texts[0] for shown in texts)
            assert _requests_computed(first) == 1  # the demo came from the store; the 8 presses ran once
        finally:
            for context in contexts:
                context.close()
