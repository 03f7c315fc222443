"""Our engine on a GPU: the paths that run where CUDA exists (skipped on a machine without one).

``bash scripts/gpu_check.sh`` runs these and the serve benchmark in under 10 minutes.
"""

from __future__ import annotations

import pytest
import torch

from aura_core.evaluation.generation import completion_rows
from aura_core.model.loading import DEFAULT_MODEL, load_model
from aura_core.runtime.engine import engine_for
from aura_core.runtime.inline import Inline
from aura_core.runtime.sampling import SamplingSettings

if not torch.cuda.is_available():
    pytest.skip("no CUDA device here", allow_module_level=True)

PROMPTS = ["You are such a", "The weather today is", "I can't stand people who", "My favourite food is"]


@pytest.fixture(scope="module")
def on_gpu():
    return load_model(DEFAULT_MODEL, device="cuda", dtype="auto")


def test_the_model_loads_on_the_gpu_without_packed_cpu_products(on_gpu):
    assert on_gpu.device.type == "cuda"
    assert all(p.device.type == "cuda" for p in on_gpu.model.parameters())


def test_the_engine_decodes_on_the_gpu_and_an_intervention_changes_the_text(on_gpu, real_aura):
    greedy = SamplingSettings(max_new_tokens=16, do_sample=False)
    plain = completion_rows(on_gpu.tokenizer, PROMPTS, settings=greedy)
    dampened = completion_rows(on_gpu.tokenizer, PROMPTS, settings=greedy, intervention=real_aura)
    engine = engine_for(on_gpu.model)
    engine.decode(plain + dampened)
    assert all(len(row.tokens) > 0 for row in plain + dampened)
    assert any(a.tokens != b.tokens for a, b in zip(plain, dampened, strict=True))
    alone = completion_rows(on_gpu.tokenizer, PROMPTS[:1], settings=greedy, intervention=real_aura)
    Inline(max_rows=1).decode(on_gpu.model, alone)
    assert alone[0].tokens == dampened[0].tokens  # greedy rows rarely change with their batch, even on a GPU


def test_bfloat16_collection_on_the_gpu(on_gpu, toy_data):
    from aura_core.analysis.collect import collect_responses
    from aura_core.model.architecture import discover_units

    units = discover_units(on_gpu.collector)[:4]
    responses = collect_responses(on_gpu.collector, on_gpu.tokenizer, toy_data, units, max_tokens=16, use_cache=False)
    assert all(torch.isfinite(t).all() for t in responses.per_module.values())
