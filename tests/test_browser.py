"""End to end in a real browser: start the server on the default model, find experts, generate.

Uses Debian's Chromium (``/usr/bin/chromium``) driven by Playwright. Screenshots of each step
land in ``test-artifacts/`` for a person to look at.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

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


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "AURA_STUDIO_MODEL"}
    ARTIFACTS.mkdir(exist_ok=True)
    log = (ARTIFACTS / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address", "127.0.0.1"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("the Streamlit server did not start within 60 s; see test-artifacts/server.log")
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 2200})
        tab.set_default_timeout(300_000)
        yield tab
        browser.close()


def test_default_model_experts_and_side_by_side_generation(server, page):
    expect = sync_api.expect
    expect.set_options(timeout=300_000)  # the first load of the preset converts it (~30 s on 2 cores)
    page.goto(server)
    expect(page.get_by_text("134.5 M")).to_be_visible()  # SmolLM2-135M's parameter count
    expect(page.get_by_text("109,440 units AurA can hook")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "1-model.png"))

    page.get_by_role("link", name="Find experts").click()
    page.get_by_label("Texts per class").fill("40")
    page.get_by_label("Token budget per text").fill("32")
    page.get_by_role("button", name="Find experts").click()
    expect(page.get_by_text("Units analysed")).to_be_visible()
    expect(page.get_by_text("109,440").first).to_be_visible()
    expect(page.locator("[data-testid='stSidebar']").get_by_text("best AUROC")).to_be_visible()
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "2-find-experts.png"))

    page.get_by_role("link", name="Generate side by side").click()
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_text("same random stream on both sides")).to_be_visible()
    expect(page.get_by_text("Baseline", exact=True)).to_be_visible()
    expect(page.get_by_text("AurA · λ = 1.00")).to_be_visible()
    badges = page.get_by_text("toxicity 0.")
    expect(badges).to_have_count(2)
    page.screenshot(path=str(ARTIFACTS / "3-generate.png"))
    shutil.copy(ARTIFACTS / "3-generate.png", ARTIFACTS / "latest.png")
