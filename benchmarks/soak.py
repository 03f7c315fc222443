"""Soak: many browsers on one server for a bounded time, mixing every kind of work, cancels and refreshes.

Each session is a real headless browser that, until the time is up, picks at random (seeded)
one of: generate a side-by-side comparison, find experts (small settings, often the same as
another session's, so single-flight is exercised), run a small evaluation, start a long
Find-experts run and cancel it, or start a generation and reload the page mid-way. It counts
what was served, every error shown (an exception or an error box), the longest wait, and the
server's memory before and after.

Beside them, one hostile session sends, in turn, what a careless or unkind visitor might: a
unit regex that backtracks without bound, NaN and infinite settings in a link, a prompt of
30,000 characters in a link, an upload over the size cap and an upload of 200,000 tiny rows.
Each must end in its own clean note (counted under ``hostile_refused``, not as an error), and a
prober asks the server's health endpoint every 0.2 s: ``longest_stall_s`` is the longest any
answer took, which is how long every session was frozen at worst (goal: under 2 s).

    python -m benchmarks soak --json                     # 6 sessions + 1 hostile, 5 minutes, the default model
    python -m benchmarks soak --model tiny-gpt2 --repeats 2 --min-seconds 60 --json

>>> result = bench_soak("tiny-gpt2", sessions=2, seconds=20)     # doctest: +SKIP
>>> result["errors"]                                             # doctest: +SKIP
0
"""

from __future__ import annotations

import multiprocessing
import random
import statistics
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from benchmarks.app import CHROMIUM, CHROMIUM_ARGS, _free_port, start_server
from benchmarks.settings import DEFAULT_MODEL, BenchmarkError, Settings

__all__ = ["bench_soak", "run"]

SAMPLES = 2  # completions per side of each generation a session asks for

PROMPTS = ["You are such a", "The weather today is", "I can't stand people who", "My neighbour is", "This movie was"]
ACTIONS = ("generate", "generate", "find_experts", "evaluate", "cancel", "refresh")
HOSTILE = ("runaway_regex", "nan_link", "huge_prompt_link", "oversized_upload", "many_rows_upload")
RUNAWAY_REGEX = "(.|.)*!"
STALL_GOAL_S = 2.0


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

    hostile: dict[str, int] = field(default_factory=dict)
    stall_s: float = 0.0
    stall_at_s: float = 0.0  # when the longest stall began, in seconds into the soak
    pings: int = 0

    def refused(self, case: str) -> None:
        with self.lock:
            self.hostile[case] = self.hostile.get(case, 0) + 1


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


def _page_summary(page: object) -> str:
    """Where a failed action left the page: its address and the buttons it shows, to tell a hang from a harness slip."""
    try:
        buttons = page.get_by_role("button").all_inner_texts()  # type: ignore[attr-defined]
        return f"{page.url} · buttons {[text.strip() for text in buttons if text.strip()][:12]}"  # type: ignore[attr-defined]
    except Exception as err:  # the page itself may be gone
        return f"unreadable ({type(err).__name__})"


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
        start = f"{url}/find_experts?prompt={quote(prompt)}&samples={SAMPLES}&n=20&tokens=32"

        def begin() -> bool:
            """Open the session's first link (its prompt and samples, not the page defaults) and find its experts."""
            try:
                page.goto(start)
                page.get_by_role("button", name="Find experts").click()
                expect(page.get_by_text("Units analysed")).to_be_visible()
                return True
            except Exception as err:  # counted like any other wait that ran out
                tally.failed("start", f"{type(err).__name__}: {err} [page: {_page_summary(page)}]")
                return False

        ready = begin()  # the session's experts are on screen, to go on from
        while time.monotonic() < deadline:
            if not ready:
                ready = begin()
                continue
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
                        expect(page.locator(".aura-completion")).to_have_count(2 * SAMPLES)  # every pair is shown
                        page.wait_for_load_state()
                elif action in ("find_experts", "cancel"):
                    page.get_by_role("link", name="Find experts").click()
                    n = rng.choice((20, 30)) if action == "find_experts" else 300
                    page.get_by_role("spinbutton", name="Texts per class").fill(str(n))
                    page.get_by_role("button", name="Find experts").click()
                    if action == "cancel":
                        time.sleep(rng.uniform(0.5, 2.0))
                        # Under load the run's Cancel button can take seconds to show: wait for it (or the result).
                        cancel = page.get_by_role("button", name="Cancel")
                        expect(cancel.or_(page.get_by_text("Units analysed")).first).to_be_visible()
                        try:
                            cancel.click(timeout=5_000)
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
                tally.failed(action, f"{type(err).__name__}: {err} [page: {_page_summary(page)}]")
                ready = False
        browser.close()


def _alert_text(page: object, kind: str) -> str:
    """Every alert box of ``kind`` (error, warning) the page shows, joined."""
    found = page.locator(f"[data-testid='stAlertContent{kind.title()}']")  # type: ignore[attr-defined]
    return "\n".join(str(found.nth(i).inner_text()) for i in range(found.count()))


def _wait_for_alert(page: object, kind: str, expected: tuple[str, ...], timeout_s: float) -> str:
    """The page's ``kind`` alerts once one holds any of ``expected``; raises TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = _alert_text(page, kind)
        if any(word in text for word in expected):
            return text
        if page.locator("[data-testid='stException']").count():  # type: ignore[attr-defined]
            raise RuntimeError("an exception reached the page")
        time.sleep(0.2)
    raise TimeoutError(f"no {kind} saying {' or '.join(expected)!r} within {timeout_s:.0f} s")


def _upload(page: object, path: Path) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.get_by_role("link", name="Find experts").click()  # type: ignore[attr-defined]
    page.get_by_text("Upload CSV / JSONL").click()  # type: ignore[attr-defined]
    chooser = page.locator("[data-testid='stFileUploaderDropzoneInput']")  # type: ignore[attr-defined]
    chosen = page.locator("[data-testid='stFileUploader']").get_by_text(path.name).first  # type: ignore[attr-defined]
    for _ in range(3):  # a rerun may redraw the uploader under the file just set: set it again
        chooser.set_input_files(str(path))
        try:
            chosen.wait_for(timeout=10_000)
            return
        except PlaywrightTimeout:
            time.sleep(1.0)
    raise TimeoutError(f"the uploader did not take {path.name}")


def _hostile_files(folder: Path) -> dict[str, Path]:
    """The uploads, on disk: the browser reads a big file from disk (a buffer is capped at 50 MB), while it uploads."""
    files = {"huge.csv": folder / "huge.csv", "rows.csv": folder / "rows.csv"}
    files["huge.csv"].write_bytes(b"text,label\n" + b"x" * (51 * 2**20) + b",1\n")  # over the default 50 MB cap
    files["rows.csv"].write_bytes(b"text,label\n" + b"".join(b"t%d,%d\n" % (i, i % 2) for i in range(200_000)))
    return files


def _hostile_case(page: object, url: str, case: str, timeout_s: float, files: dict[str, Path]) -> None:
    """Send one hostile input; returns once the page shows its clean note, raises otherwise."""
    if case == "runaway_regex":
        page.get_by_role("link", name="Find experts").click()  # type: ignore[attr-defined]
        page.get_by_text("regex", exact=True).click()  # type: ignore[attr-defined]
        field = page.get_by_label("Regex over module names (re.fullmatch)")  # type: ignore[attr-defined]
        field.fill(RUNAWAY_REGEX)
        field.press("Enter")  # submits the form with the pattern in it (a click can race the field's update)
        _wait_for_alert(page, "error", ("unit pattern",), timeout_s)
    elif case == "nan_link":
        query = urlencode({"temperature": "nan", "top_p": "inf", "samples": "1e309", "strength": "-inf"})
        page.goto(f"{url}/generate?{query}")  # type: ignore[attr-defined]
        _wait_for_alert(page, "warning", ("in the link was ignored",), timeout_s)
    elif case == "huge_prompt_link":
        page.goto(f"{url}/generate?{urlencode({'prompt': 'You are such a ' * 2000})}")  # type: ignore[attr-defined]
        _wait_for_alert(page, "warning", ("in the link was ignored",), timeout_s)
    elif case == "oversized_upload":
        _upload(page, files["huge.csv"])
        _wait_for_alert(page, "error", ("this server takes up to", "cannot be used"), timeout_s)
    else:
        _upload(page, files["rows.csv"])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:  # parsed (the caption names it) or refused with a note: both are clean
            if page.get_by_text("upload: rows.csv").count() or "cannot be used" in _alert_text(page, "error"):  # type: ignore[attr-defined]
                break
            time.sleep(0.2)
        else:
            raise TimeoutError(f"the upload of 200,000 rows was neither read nor refused within {timeout_s:.0f} s")
    if page.locator("[data-testid='stException']").count():  # type: ignore[attr-defined]
        raise RuntimeError("an exception reached the page")


def _hostile_session(url: str, seed: int, deadline: float, tally: _Tally, timeout_s: float) -> None:
    """One visitor sending every hostile input in turn until ``deadline``; each must get its clean note."""
    from playwright.sync_api import expect, sync_playwright

    rng = random.Random(seed)
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as folder:
        files = _hostile_files(Path(folder))
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1400})
        page.set_default_timeout(timeout_s * 1000)
        expect.set_options(timeout=timeout_s * 1000)
        page.goto(f"{url}/find_experts")
        cases = list(HOSTILE)
        while time.monotonic() < deadline:
            rng.shuffle(cases)
            for case in cases:
                if time.monotonic() >= deadline:
                    break
                try:
                    _hostile_case(page, url, case, timeout_s, files)
                    tally.refused(case)
                except Exception as err:  # a hostile input that was not cleanly refused is an error
                    tally.failed(f"hostile {case}", f"{type(err).__name__}: {err}")
                page.goto(f"{url}/find_experts")
        browser.close()


def _probe(url: str, stop: Any, stall_s: Any, stall_at_s: Any, pings: Any) -> None:
    """Ask the server's health endpoint every 0.2 s; the longest answer is the longest every session was frozen.

    It runs in a process of its own: in the soak's process it would share an interpreter lock
    with the browsers' drivers, and time their turns as the server's.
    """
    began = time.perf_counter()
    while not stop.is_set():
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=60) as answer:
                answer.read()
        except OSError:
            pass  # a refused ping shows as its time: the stall is what counts
        took = time.perf_counter() - started
        if took > stall_s.value:
            stall_s.value, stall_at_s.value = took, started - began
        pings.value += 1
        stop.wait(0.2)


def bench_soak(
    model: str = DEFAULT_MODEL,
    sessions: int = 6,
    seconds: float = 300.0,
    timeout_s: float = 300.0,
    seed: int = 0,
    hostile: int = 1,
) -> dict[str, object]:
    """``sessions`` browsers and ``hostile`` hostile ones against one fresh server for ``seconds``; errors must be 0."""
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
        threads += [
            threading.Thread(target=_hostile_session, args=(url, seed + 1000 + i, deadline, tally, timeout_s))
            for i in range(hostile)
        ]
        spawn = multiprocessing.get_context("spawn")
        stop, stall_s, stall_at_s, pings = spawn.Event(), spawn.Value("d", 0.0), spawn.Value("d", 0.0), spawn.Value("i", 0)
        prober = spawn.Process(target=_probe, args=(url, stop, stall_s, stall_at_s, pings), daemon=True)
        began = time.perf_counter()
        prober.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stop.set()
        prober.join(timeout=70)
        tally.stall_s, tally.stall_at_s, tally.pings = stall_s.value, stall_at_s.value, pings.value
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
        "hostile_sessions": hostile,
        "seconds": round(elapsed, 1),
        "served": sum(tally.served.values()),
        "served_by_action": dict(sorted(tally.served.items())),
        "errors": len(tally.errors),
        "first_errors": tally.errors[:5],
        "largest_wait_s": round(waits[-1], 2),
        "median_wait_s": round(statistics.median(waits), 2),
        "largest_wait_by_action_s": {action: round(s, 1) for action, s in sorted(tally.longest.items())},
        "hostile_refused": dict(sorted(tally.hostile.items())),
        "longest_stall_s": round(tally.stall_s, 2),
        "longest_stall_at_s": round(tally.stall_at_s, 1),
        "health_pings": tally.pings,
        "rss_start_mb": round(rss_start, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_growth_mb": round(rss_end - rss_start, 1),
        "goal": f"errors == 0 (every hostile input refused cleanly) and longest_stall_s < {STALL_GOAL_S:g}",
    }


def run(settings: Settings) -> dict[str, object]:
    """Six browsers and a hostile one for five minutes on ``--model`` (``--min-seconds``: the time, ``--repeats``: the browsers)."""
    return bench_soak(settings.model, sessions=settings.repeats or 6, seconds=settings.min_seconds or 300.0)
