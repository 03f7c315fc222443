"""Soak: many browsers on one server for a bounded time, mixing every kind of work, cancels and refreshes.

Each session is a real headless browser that, until the time is up, picks at random (seeded)
one of: generate a side-by-side comparison, find experts (small settings, often the same as
another session's, so single-flight is exercised), run a small evaluation, start a long
Find-experts run and cancel it, or start a generation and reload the page mid-way. It counts
what was served, every error shown (an exception or an error box), the longest wait, and the
server's memory before and after.

    python -m benchmarks soak --json                     # 6 sessions, 5 minutes, the default model
    python -m benchmarks soak --model tiny-gpt2 --repeats 1

>>> result = bench_soak("tiny-gpt2", sessions=2, seconds=20)     # doctest: +SKIP
>>> result["errors"]                                             # doctest: +SKIP
0
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from benchmarks.app import CHROMIUM, CHROMIUM_ARGS, _free_port, start_server
from benchmarks.settings import DEFAULT_MODEL, BenchmarkError, Settings

__all__ = ["bench_soak", "run"]

PROMPTS = ["You are such a", "The weather today is", "I can't stand people who", "My neighbour is", "This movie was"]
ACTIONS = ("generate", "generate", "find_experts", "evaluate", "cancel", "refresh")


@dataclass
class _Tally:
    served: dict[str, int] = field(default_factory=dict)
    waits: list[float] = field(default_factory=list)
    longest: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def done(self, action: str, seconds: float) -> None:
        with self.lock:
            self.served[action] = self.served.get(action, 0) + 1
            self.waits.append(seconds)
            self.longest[action] = max(self.longest.get(action, 0.0), seconds)

    def failed(self, action: str, message: str) -> None:
        with self.lock:
            self.errors.append(f"{action}: {message[:300]}")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _check_page(page: object) -> str | None:
    """The first error the page shows, if any."""
    for selector in ("[data-testid='stException']", "[data-testid='stAlertContentError']"):
        found = page.locator(selector)  # type: ignore[attr-defined]
        if found.count():
            return str(found.first.inner_text())[:300]
    return None


def _session(url: str, seed: int, deadline: float, tally: _Tally, timeout_s: float) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright

    rng = random.Random(seed)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1400})
        page.set_default_timeout(timeout_s * 1000)
        expect.set_options(timeout=timeout_s * 1000)
        prompt = rng.choice(PROMPTS)
        page.goto(f"{url}/find_experts?prompt={quote(prompt)}&samples=2&n=20&tokens=32")
        page.get_by_role("button", name="Find experts").click()
        expect(page.get_by_text("Units analysed")).to_be_visible()
        while time.monotonic() < deadline:
            action = rng.choice(ACTIONS)
            started = time.perf_counter()
            try:
                if action in ("generate", "refresh"):
                    page.get_by_role("link", name="Generate side by side").click()
                    page.get_by_role("button", name="Generate").click()
                    if action == "refresh":
                        time.sleep(rng.uniform(0.2, 1.5))
                        page.reload()
                        expect(page.get_by_role("button", name="Generate")).to_be_visible()
                    else:
                        expect(page.locator(".aura-completion")).to_have_count(2)
                        page.wait_for_load_state()
                elif action in ("find_experts", "cancel"):
                    page.get_by_role("link", name="Find experts").click()
                    n = rng.choice((20, 30)) if action == "find_experts" else 300
                    page.get_by_role("spinbutton", name="Texts per class").fill(str(n))
                    page.get_by_role("button", name="Find experts").click()
                    if action == "cancel":
                        time.sleep(rng.uniform(0.5, 2.0))
                        try:
                            page.get_by_role("button", name="Cancel").click(timeout=5_000)
                        except PlaywrightTimeout:
                            pass  # it finished first: nothing left to cancel
                        expect(page.get_by_text("Cancelled").or_(page.get_by_text("Units analysed")).first).to_be_visible()
                    else:
                        expect(page.get_by_text("Units analysed")).to_be_visible()
                else:
                    page.get_by_role("link", name="Evaluate").click()
                    page.get_by_role("spinbutton", name="Number of prompts").fill("3")
                    page.get_by_role("spinbutton", name="Completions per prompt (0 = preset)").fill("2")
                    page.get_by_role("spinbutton", name="Neutral texts for perplexity").fill("4")
                    page.get_by_role("button", name="Run evaluation").click()
                    expect(page.get_by_text("Evaluation finished")).to_be_visible()
                problem = _check_page(page)
                if problem:
                    tally.failed(action, problem)
                else:
                    tally.done(action, time.perf_counter() - started)
            except Exception as err:  # a timeout or a vanished element is what the soak is looking for
                tally.failed(action, f"{type(err).__name__}: {err}")
                page.goto(f"{url}/generate")
        browser.close()


def bench_soak(
    model: str = DEFAULT_MODEL, sessions: int = 6, seconds: float = 300.0, timeout_s: float = 300.0, seed: int = 0
) -> dict[str, object]:
    """``sessions`` browsers against one fresh server for ``seconds``; errors must be 0."""
    if not Path(CHROMIUM).exists():
        raise BenchmarkError("the soak test drives Debian's Chromium: apt-get install chromium")
    port = _free_port()
    server = start_server(port, model)
    url = f"http://127.0.0.1:{port}"
    tally = _Tally()
    try:
        time.sleep(3)
        _session(url, seed, time.monotonic(), tally, timeout_s)  # warm: the model loads, the experts exist
        rss_start = _rss_mb(server.pid)
        deadline = time.monotonic() + seconds
        threads = [
            threading.Thread(target=_session, args=(url, seed + 1 + i, deadline, tally, timeout_s)) for i in range(sessions)
        ]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        rss_end = _rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    waits = sorted(tally.waits) or [0.0]
    return {
        "name": "soak",
        "model": model,
        "sessions": sessions,
        "seconds": round(elapsed, 1),
        "served": sum(tally.served.values()),
        "served_by_action": dict(sorted(tally.served.items())),
        "errors": len(tally.errors),
        "first_errors": tally.errors[:5],
        "largest_wait_s": round(waits[-1], 2),
        "median_wait_s": round(statistics.median(waits), 2),
        "largest_wait_by_action_s": {action: round(s, 1) for action, s in sorted(tally.longest.items())},
        "rss_start_mb": round(rss_start, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_growth_mb": round(rss_end - rss_start, 1),
        "goal": "errors == 0",
    }


def run(settings: Settings) -> dict[str, object]:
    """Six browsers for five minutes on ``--model`` (``--min-seconds`` sets the time)."""
    return bench_soak(settings.model, seconds=settings.min_seconds or 300.0)
