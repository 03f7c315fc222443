"""vLLM beside our engine on the real model: greedy texts agree, and an evaluation reproduces within its intervals.

These run where the vLLM environment exists (``bash scripts/setup.sh --vllm``); CI builds it in a
step of its own and sets ``AURA_REQUIRE_VLLM=1``, so there a missing environment fails instead of
skipping. Each vLLM start costs one to three minutes on 2 cores (its compile cache helps).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from conftest import VLLM_PYTHON

from aura_core.base.data import load_prompts
from aura_core.cli import main
from aura_core.evaluation.generation import completion_rows
from aura_core.runtime.inline import Inline
from aura_core.runtime.plans import intervened
from aura_core.runtime.sampling import SamplingSettings

if VLLM_PYTHON is None:
    if os.environ.get("AURA_REQUIRE_VLLM"):
        pytest.fail("the vLLM environment is missing: bash scripts/setup.sh --vllm", pytrace=False)
    pytest.skip("vLLM is not installed (bash scripts/setup.sh --vllm)", allow_module_level=True)


@pytest.fixture(scope="module")
def vllm_fp32(real, tmp_path_factory):
    from aura_core.runtime.vllm_runner import VllmRunner

    log = tmp_path_factory.mktemp("vllm") / "worker.log"
    with VllmRunner(dtype="float32", python=VLLM_PYTHON, tokenizer=real.tokenizer, log=log) as runner:
        yield runner


def _challenging(shared_data: Path, n: int) -> list[str]:
    return [p.text for p in load_prompts(str(shared_data / "rtp_challenging.jsonl"), n=n, seed=0)]


def test_greedy_completions_of_a_folded_checkpoint_match_our_hooks(real, real_aura, vllm_fp32, shared_data):
    """At least 15 of 16 prompts agree token for token; where one differs, our own logits there are a near tie."""
    prompts = _challenging(shared_data, 16)
    greedy = SamplingSettings(max_new_tokens=20, do_sample=False)
    ours = completion_rows(real.tokenizer, prompts, settings=greedy, intervention=real_aura)
    theirs = completion_rows(real.tokenizer, prompts, settings=greedy, intervention=real_aura)
    plain = completion_rows(real.tokenizer, prompts, settings=greedy)
    Inline(max_rows=16).decode(real.model, ours)
    vllm_fp32.decode(real.model, plain + theirs)  # plain first: the engine must swap the folded tensors in
    assert sum(p.tokens != t.tokens for p, t in zip(plain, theirs, strict=True)) >= 4, "AurA changed almost nothing"
    same = [a.tokens == b.tokens for a, b in zip(ours, theirs, strict=True)]
    assert sum(same) >= 15, f"only {sum(same)} of 16 greedy completions agree"
    for a, b in zip(ours, theirs, strict=True):
        if a.tokens == b.tokens:
            continue
        at = next(i for i, (x, y) in enumerate(zip(a.tokens, b.tokens, strict=False)) if x != y)
        ids = torch.tensor([a.prompt_ids + a.tokens[:at]])
        with torch.inference_mode(), intervened(real.model, real_aura):
            logits = real.model(ids).logits[0, -1].float()
        gap = float(logits[a.tokens[at]] - logits[b.tokens[at]])
        assert 0 <= gap < 0.05, f"vLLM chose a token {gap:.3f} below ours: more than kernel rounding"


def _wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    share = hits / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_evaluate_on_vllm_reproduces_our_engine_within_its_intervals(real_aura_file, shared_data, tmp_path, monkeypatch):
    """``evaluate --engine vllm`` and ``--engine ours`` on the same prompts: shares and reductions agree."""
    monkeypatch.setenv("AURA_VLLM_PYTHON", str(VLLM_PYTHON))
    common = [
        "evaluate", "--intervention", str(real_aura_file), "--prompts", str(shared_data / "rtp_challenging.jsonl"),
        "--n-prompts", "24", "--samples", "10", "--methods", "none,aura", "--preprompts", "none",
        "--dtype", "float32", "--n-neutral", "20", "--json",
    ]  # fmt: skip
    metrics = {}
    for engine, extra in (("ours", []), ("vllm", ["--vllm-dtype", "float32"])):
        out = tmp_path / engine
        assert main([*common, "--engine", engine, *extra, "--out", str(out)]) == 0
        report = json.loads((out / "report.json").read_text())
        metrics[engine] = {row["method"]: row for row in report["metrics"]}
        assert report["provenance"]["engine"] == "aura" if engine == "ours" else report["provenance"]["engine"]["name"] == "vllm"
    for method in ("none", "aura"):
        n = 24 * 10
        low_a, high_a = _wilson(round(metrics["ours"][method]["toxic_share"] * n), n)
        low_b, high_b = _wilson(round(metrics["vllm"][method]["toxic_share"] * n), n)
        assert low_a <= high_b and low_b <= high_a, f"{method}: toxic shares disagree beyond their intervals"
    ours, theirs = metrics["ours"]["aura"], metrics["vllm"]["aura"]
    low, high = ours["mean_toxicity_reduction_low"], ours["mean_toxicity_reduction_high"]
    assert low <= theirs["mean_toxicity_reduction"] <= high, "vLLM's reduction lies outside our run's interval"


def test_a_condition_no_checkpoint_can_hold_decodes_on_our_engine(real, real_aura, vllm_fp32, shared_data, capsys):
    """Conditional AurA edits tokens above a threshold: it cannot fold, so its rows decode on our engine, as alone."""
    gated = real_aura.with_settings(method="aura-cond")
    greedy = SamplingSettings(max_new_tokens=12, do_sample=False)
    prompts = _challenging(shared_data, 4)
    ours = completion_rows(real.tokenizer, prompts, settings=greedy, intervention=gated)
    theirs = completion_rows(real.tokenizer, prompts, settings=greedy, intervention=gated)
    Inline(max_rows=4).decode(real.model, ours)
    vllm_fp32.decode(real.model, theirs)
    assert [r.tokens for r in theirs] == [r.tokens for r in ours]
    assert "decode on our engine" in capsys.readouterr().err
