"""The Streamlit app in a headless browser: server start to the Start page, Run the demo, and a cached page switch.

Each round starts a fresh server, so every cold start is cold. Run the demo is timed from the
click to the first pair on screen: the stored demo when ``prepare`` made one (``demo_stored``),
else its computation.

>>> result = bench_app(repeats=1)          # doctest: +SKIP
>>> result["cached_page_s"] < result["cold_start_s"]   # doctest: +SKIP
True
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.settings import ROOT, BenchmarkError, Settings
from benchmarks.timing import Timing, interleaved

__all__ = ["bench_app", "run", "start_server"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(port: int, model: str | None = None) -> subprocess.Popen[bytes]:
    """The app on 127.0.0.1:``port``, on ``model`` (or the default), its output discarded."""
    env = {k: v for k, v in os.environ.items() if k != "AURA_STUDIO_MODEL"}
    if model is not None:
        env["AURA_STUDIO_MODEL"] = model
    return subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address", "127.0.0.1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _session(timeout_s: float) -> tuple[float, float, float, bool]:
    """One server's life: seconds to the Start page, to the demo's pairs, and to switch back to a computed Find experts page."""
    from playwright.sync_api import expect, sync_playwright

    port = _free_port()
    started = time.perf_counter()
    server = start_server(port)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=CHROMIUM_ARGS,
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            expect.set_options(timeout=timeout_s * 1000)
            url = f"http://127.0.0.1:{port}"
            while True:
                try:
                    page.goto(url)
                    break
                except Exception:  # the server is not listening yet
                    if time.perf_counter() - started > timeout_s:
                        raise
                    time.sleep(0.2)
            expect(page.get_by_role("button", name="Run the demo")).to_be_visible()
            cold = time.perf_counter() - started
            page.get_by_role("button", name="Run the demo").click()
            clicked = time.perf_counter()
            expect(page.locator(".aura-completion").first).to_be_visible()
            demo = time.perf_counter() - clicked
            stored = page.get_by_text("The prepared demo.").count() > 0
            page.get_by_role("link", name="Find experts").click()
            page.get_by_role("spinbutton", name="Texts per class").fill("20")
            page.get_by_role("spinbutton", name="Token budget per text").fill("32")
            page.get_by_role("button", name="Find experts").click()
            expect(page.get_by_text("Units analysed")).to_be_visible()
            page.get_by_role("link", name="Learn").click()
            expect(page.get_by_text("A 45-minute workshop")).to_be_visible()
            switch = time.perf_counter()
            page.get_by_role("link", name="Find experts").click()
            expect(page.get_by_text("Units analysed")).to_be_visible()
            expect(page.locator(".js-plotly-plot").first).to_be_visible()
            cached = time.perf_counter() - switch
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return cold, demo, cached, stored


def bench_app(repeats: int = 3, timeout_s: float = 300.0) -> dict[str, object]:
    """Medians over ``repeats`` fresh servers of the cold start and the cached page switch."""
    if not Path(CHROMIUM).exists():
        raise BenchmarkError("the app benchmark drives Debian's Chromium: apt-get install chromium")
    sessions: list[tuple[float, float, float, bool]] = []
    interleaved({"session": lambda: sessions.append(_session(timeout_s))}, repeats=repeats, warmup=0)
    cold, demo, cached = (Timing(tuple(float(s[i]) for s in sessions)) for i in range(3))
    return {
        "name": "app",
        "cold_start_s": round(cold.median, 2),
        "cold_start_min_s": round(cold.min, 2),
        "spread_cold_start": round(cold.spread, 3),
        "demo_open_s": round(demo.median, 2),
        "demo_open_max_s": round(demo.max, 2),
        "demo_stored": all(s[3] for s in sessions),
        "cached_page_s": round(cached.median, 2),
        "cached_page_min_s": round(cached.min, 2),
        "spread_cached_page": round(cached.spread, 3),
        "repeats": len(sessions),
        "goal": "reported, no fixed goal",
    }


def run(settings: Settings) -> dict[str, object]:
    """Three fresh servers by default."""
    return bench_app(repeats=settings.repeats_or(3))
