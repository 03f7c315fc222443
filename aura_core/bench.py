"""Benchmarks: each runs a fast path beside its reference path on the same data, in one run.

Ratios within one run are what to compare: absolute seconds depend on the machine and its load.

>>> results = run_benchmarks(["auroc"])                       # doctest: +SKIP
>>> results[0]["speedup_vs_sklearn"] >= 50                    # doctest: +SKIP
True
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from aura_core.errors import AuraError

__all__ = ["BENCHMARKS", "machine_description", "markdown_report", "run_benchmarks"]

ROOT = Path(__file__).resolve().parent.parent
SHARED_JIGSAW = ROOT.parent / "shared" / "data" / "jigsaw_balanced.csv"


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def bench_auroc(n_texts: int = 1000, n_units: int = 20_000, seed: int = 0) -> dict:
    """Our AUROC against the paper's path: roc_auc_score(average=None) on chunks of 10 units."""
    from sklearn.metrics import roc_auc_score

    from aura_core.auroc import auroc

    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(n_texts, n_units, generator=gen)
    tied = n_units // 10
    scores[:, :tied] = torch.randint(0, 4, (n_texts, tied), generator=gen).float()  # heavily tied
    labels = torch.randint(0, 2, (n_texts,), generator=gen)
    t_ours, ours = _timed(lambda: auroc(scores, labels))
    scores_np, labels_np = scores.numpy(), labels.numpy()
    tiled = np.tile(labels_np[:, None], (1, 10))

    def reference() -> np.ndarray:
        parts = [
            roc_auc_score(tiled[:, : min(10, n_units - s)], scores_np[:, s : s + 10], average=None) for s in range(0, n_units, 10)
        ]
        return np.concatenate(parts)

    t_ref, ref = _timed(reference)
    return {
        "name": "auroc",
        "texts": n_texts,
        "units": n_units,
        "tied_units": tied,
        "t_ours_s": round(t_ours, 4),
        "t_sklearn_s": round(t_ref, 4),
        "speedup_vs_sklearn": round(t_ref / t_ours, 1),
        "max_abs_err": float(np.abs(ours.numpy() - ref).max()),
        "units_per_s": round(n_units / t_ours),
        "goal": "speedup_vs_sklearn >= 50 and max_abs_err <= 1e-9",
    }


def _bench_texts(n: int, seed: int = 0) -> list[str]:
    from aura_core.data import balanced_sample, load_concept_data

    source = SHARED_JIGSAW if SHARED_JIGSAW.is_file() else "starter"
    data = load_concept_data(source)
    per_class = min(n // 2, min(data.counts().values()))
    texts = balanced_sample(data, per_class, seed=seed).texts
    while len(texts) < n:  # the starter set alone is smaller than some benchmarks
        texts = texts + texts[: n - len(texts)]
    return texts[:n]


def bench_collect(
    model_name: str = "smollm2-135m", n_texts: int = 256, max_tokens: int = 64, batch_size: int = 32, repeats: int = 2
) -> dict:
    """Collecting pooled responses of every unit against the bare forward pass over the same batches."""
    from aura_core.batching import length_sorted_batches, pad_right, padding_fraction, tokenize_texts
    from aura_core.data import ConceptData
    from aura_core.models import discover_units, load_model, unit_width
    from aura_core.responses import collect_responses

    loaded = load_model(model_name, device="cpu")
    texts = _bench_texts(n_texts)
    data = ConceptData(texts, [i % 2 for i in range(len(texts))], "bench")
    units = discover_units(loaded.model)
    token_ids = tokenize_texts(loaded.tokenizer, texts, max_tokens)
    lengths = [len(ids) for ids in token_ids]
    batches = length_sorted_batches(lengths, batch_size)
    unsorted = [list(range(i, min(i + batch_size, len(texts)))) for i in range(0, len(texts), batch_size)]
    pad_id = loaded.tokenizer.pad_token_id

    def forward() -> None:
        with torch.inference_mode():
            for batch in batches:
                input_ids, attention = pad_right([token_ids[i] for i in batch], pad_id)
                loaded.model(input_ids=input_ids, attention_mask=attention, use_cache=False)

    def collect() -> None:
        collect_responses(
            loaded.model, loaded.tokenizer, data, units, max_tokens=max_tokens, batch_size=batch_size, use_cache=False
        )

    forward()  # warm-up: first-call allocations are not what we measure
    t_forward, t_collect = [], []
    for _ in range(repeats):  # interleaved, so drifting machine load hits both paths alike
        t_forward.append(_timed(forward)[0])
        t_collect.append(_timed(collect)[0])
    tf, tc = min(t_forward), min(t_collect)
    return {
        "name": "collect",
        "model": model_name,
        "texts": len(texts),
        "units": sum(unit_width(dict(loaded.model.named_modules())[u]) for u in units),
        "t_forward_s": round(tf, 3),
        "t_collect_s": round(tc, 3),
        "overhead": round(tc / tf - 1.0, 4),
        "tokens_per_s": round(sum(lengths) / tc),
        "padding_fraction": round(padding_fraction(lengths, batches), 4),
        "padding_fraction_unsorted": round(padding_fraction(lengths, unsorted), 4),
        "goal": "overhead <= 0.10",
    }


def bench_generate(model_name: str = "smollm2-135m", n_prompts: int = 16, new_tokens: int = 32, repeats: int = 3) -> dict:
    """Tokens per second: plain, AurA by hooks, and AurA folded into the weights (same seeds)."""
    from aura_core.data import load_prompts
    from aura_core.generation import SamplingSettings, generate
    from aura_core.interventions import Intervention
    from aura_core.models import discover_units, load_model, unit_width

    loaded = load_model(model_name, device="cpu")
    modules = dict(loaded.model.named_modules())
    gen = torch.Generator().manual_seed(0)
    # A realistic AurA: about half the units dampened, as fitted AUROCs give.
    aura = Intervention(
        {n: 0.5 + 0.5 * torch.rand(unit_width(modules[n]), generator=gen).double() for n in discover_units(loaded.model)}
    )
    prompts = [p.text for p in load_prompts(n=n_prompts, seed=0)]
    # Greedy decoding and no stop token keep the token count equal on all three paths.
    settings = SamplingSettings(max_new_tokens=new_tokens, do_sample=False)
    loaded.model.generation_config.eos_token_id = None

    def run(intervention: Intervention | None, mode: str) -> float:
        return _timed(
            lambda: generate(
                loaded.model,
                loaded.tokenizer,
                prompts,
                settings=settings,
                batch_size=n_prompts,
                intervention=intervention,
                mode=mode,
            )
        )[0]

    run(None, "fold")  # warm-up
    # The first folded call makes the folded weight copies; later calls with it swap them in.
    first_folded = run(aura, "fold")
    times: dict[str, list[float]] = {"base": [], "hooks": [], "folded": []}
    for _ in range(repeats):
        times["base"].append(run(None, "fold"))
        times["hooks"].append(run(aura, "hooks"))
        times["folded"].append(run(aura, "fold"))
    med = {k: statistics.median(v) for k, v in times.items()}
    tokens = n_prompts * new_tokens
    return {
        "name": "generate",
        "model": model_name,
        "prompts": n_prompts,
        "new_tokens": new_tokens,
        "units_dampened": int(sum(int((f != 1).sum()) for f in aura.factors().values())),
        "tokens_per_s_base": round(tokens / med["base"], 1),
        "tokens_per_s_hooks": round(tokens / med["hooks"], 1),
        "tokens_per_s_folded": round(tokens / med["folded"], 1),
        "folded_ratio": round(med["folded"] / med["base"], 4),
        "first_folded_call_ratio": round(first_folded / med["base"], 4),
        "hook_ratio": round(med["hooks"] / med["base"], 4),
        "goal": "folded_ratio <= 1.03",
    }


_MEMORY_PROBE = """
import json, resource, sys, time
from aura_core.models import load_model, discover_units
stage = sys.argv[1]
loaded = load_model(sys.argv[2], device="cpu")
result = {"after_load_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
if stage == "collect":
    from aura_core.bench import _bench_texts
    from aura_core.data import ConceptData
    from aura_core.responses import collect_responses
    texts = _bench_texts(int(sys.argv[3]))
    data = ConceptData(texts, [i % 2 for i in range(len(texts))], "bench")
    units = discover_units(loaded.model)
    started = time.perf_counter()
    responses = collect_responses(loaded.model, loaded.tokenizer, data, units, max_tokens=int(sys.argv[4]), use_cache=False)
    result["collect_s"] = time.perf_counter() - started
    result["stored_bytes"] = sum(t.numel() * t.element_size() for t in responses.per_module.values())
    result["tensors"] = len(responses.per_module)
    result["modules"] = len(units)
    result["units"] = responses.n_units
    result["texts"] = len(texts)
    result["after_collect_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(result))
"""


def _probe(*args: str) -> dict:
    output = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, *args], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def bench_memory(model_name: str = "smollm2-135m", n_texts: int = 2000, max_tokens: int = 32) -> dict:
    """Peak resident memory to load the model, and to collect responses for ``n_texts`` texts."""
    loaded = _probe("load", model_name)
    collected = _probe("collect", model_name, str(n_texts), str(max_tokens))
    budget = collected["units"] * collected["texts"] * 4
    return {
        "name": "memory",
        "model": model_name,
        "peak_rss_load_mb": round(loaded["after_load_mb"], 1),
        "peak_rss_collect_mb": round(collected["after_collect_mb"], 1),
        "collect_extra_mb": round(collected["after_collect_mb"] - collected["after_load_mb"], 1),
        "texts": collected["texts"],
        "units": collected["units"],
        "stored_mb": round(collected["stored_bytes"] / 2**20, 1),
        "budget_mb": round(budget / 2**20, 1),
        "stored_within_budget": collected["stored_bytes"] <= budget,
        "tensors_per_module": collected["tensors"] / collected["modules"],
        "collect_s": round(collected["collect_s"], 1),
        "goal": "stored bytes <= units x texts x 4, one tensor per module",
    }


def bench_app(port: int | None = None, timeout_s: float = 300.0) -> dict:
    """Server start to the Model page showing the default model; and a switch to a computed Find experts page."""
    from playwright.sync_api import expect, sync_playwright

    chromium = "/usr/bin/chromium"
    if not Path(chromium).exists():
        raise AuraError("the app benchmark drives Debian's Chromium: apt-get install chromium")
    if port is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "AURA_STUDIO_MODEL"}
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address", "127.0.0.1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium,
                args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
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
            expect(page.get_by_text("units AurA can hook")).to_be_visible()
            cold = time.perf_counter() - started
            page.get_by_role("link", name="Find experts").click()
            page.get_by_label("Texts per class").fill("20")
            page.get_by_label("Token budget per text").fill("32")
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
    return {"name": "app", "cold_start_s": round(cold, 2), "cached_page_s": round(cached, 2), "goal": "reported, no fixed goal"}


BENCHMARKS: dict[str, Callable[[], dict]] = {
    "auroc": bench_auroc,
    "collect": bench_collect,
    "generate": bench_generate,
    "memory": bench_memory,
    "app": bench_app,
}


def run_benchmarks(names: list[str], progress: Callable[[str], None] | None = None) -> list[dict]:
    if "all" in names:
        names = list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise AuraError(f"unknown benchmark {', '.join(unknown)}: one of {', '.join(BENCHMARKS)} or all")
    threads = torch.get_num_threads()
    results = []
    for name in names:
        if progress:
            progress(name)
        seconds, result = _timed(BENCHMARKS[name])
        result["bench_seconds"] = round(seconds, 1)
        result["torch_threads"] = threads
        results.append(result)
    return results


def machine_description() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "os": platform.platform(),
    }


def markdown_report(results: list[dict], machine: dict, command: str) -> str:
    """BENCHMARKS.md: generated from one run, never typed by hand."""
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{command}` on {machine['date']}. Do not edit by hand: run the command again.",
        "",
        "## Machine",
        "",
        *[f"- {key}: {value}" for key, value in machine.items() if key != "date"],
        "",
        "Each benchmark runs its fast path and its reference path in the same run on the same data;",
        "compare the ratios, not the absolute seconds, across machines.",
        "",
    ]
    for result in results:
        lines += [f"## {result['name']}", "", "| field | value |", "| --- | --- |"]
        lines += [f"| {key} | {value} |" for key, value in result.items() if key != "name"]
        lines.append("")
    lines += ["## Raw JSON", "", "```json", *[json.dumps(r) for r in results], "```", ""]
    return "\n".join(lines)
