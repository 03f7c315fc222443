"""Shared fixtures: tiny random models for logic, the real default model for integration."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from aura_core.base.data import ConceptData
from aura_core.model.tiny import load_tiny
from aura_core.runtime.vllm_runner import vllm_python

# vLLM's environment as found before the tests turn it off: `--engine auto` means our engine in tests,
# and only tests/test_vllm.py asks for vLLM, by this path.
VLLM_PYTHON = vllm_python()
os.environ["AURA_VLLM_PYTHON"] = ""

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ROOT = Path(__file__).resolve().parents[1]

# mypy over the project takes minutes on one core with a cold cache; started at collection, at low
# priority, it runs beside the other tests (which leave a core idle much of the time) instead of after them.
_typecheck: dict[str, object] = {}


def _start_typecheck() -> subprocess.Popen[str]:
    cache = tempfile.mkdtemp(prefix="aura-mypy-")
    process = subprocess.Popen(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", cache],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: os.nice(10),  # the tests beside it keep their pace
    )
    _typecheck.update(process=process, cache=cache)
    return process


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "process" not in _typecheck and any(item.path.name == "test_types.py" for item in items):
        _start_typecheck()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    process = _typecheck.get("process")
    if isinstance(process, subprocess.Popen) and process.poll() is None:
        process.kill()
        process.wait()
    if isinstance(cache := _typecheck.get("cache"), str):
        shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture
def typecheck() -> tuple[int, str]:
    """mypy's exit status and output over the project, from the run started at collection (or started now)."""
    process = _typecheck.get("process")
    if not isinstance(process, subprocess.Popen):
        process = _start_typecheck()
    output, _ = process.communicate()
    return process.returncode, output


@pytest.fixture(params=["tiny-gpt2", "tiny-llama"])
def tiny(request):
    """Each logic test runs on a 2-layer GPT-2 (Conv1D) and a 2-layer Llama (nn.Linear)."""
    return load_tiny(request.param, seed=0)


@pytest.fixture
def tiny_gpt2():
    return load_tiny("tiny-gpt2", seed=0)


@pytest.fixture
def toy_data() -> ConceptData:
    """Texts of varied length; label 1 texts contain the marker byte 'Z'."""
    positives = [f"Z{'x' * (i % 7)} bad Z thing {i}" for i in range(12)]
    negatives = [f"{'y' * (i % 5)} good thing number {i}" for i in range(12)]
    texts = [t for pair in zip(positives, negatives, strict=False) for t in pair]
    labels = [1 - (i % 2) for i in range(len(texts))]
    return ConceptData(texts, labels, "toy")


def logits_of(model: torch.nn.Module, tokenizer, texts: list[str]) -> torch.Tensor:
    encoded = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        return model(**encoded).logits.clone()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "jigsaw_balanced.csv").is_file():
        pytest.fail(f"real data missing: expected {SHARED_DATA} beside the checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def real():
    """The real default model (SmolLM2-135M-Instruct), loaded once for the whole run."""
    from aura_core.model.loading import DEFAULT_MODEL, load_model

    return load_model(DEFAULT_MODEL, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def served(real):
    """The default model as the app's server loads it (``dtype="auto"``): float32 generation, and a bfloat16
    copy for collection where the CPU computes bfloat16 natively (else ``real`` itself)."""
    from aura_core.model.loading import DEFAULT_MODEL, load_model

    loaded = load_model(DEFAULT_MODEL)
    return real if loaded.bulk is None else loaded


@pytest.fixture(scope="session")
def real_bf16():
    """The real default model in bfloat16, where the CPU computes it natively (else the test is skipped)."""
    from aura_core.model.devices import cpu_has_native_bf16
    from aura_core.model.loading import DEFAULT_MODEL, load_model

    if not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bfloat16 (AVX-512-BF16 or AMX)")
    return load_model(DEFAULT_MODEL, device="cpu", dtype="bfloat16")


@pytest.fixture(scope="session")
def real_aura(real, shared_data, tmp_path_factory):
    """AurA fitted on the real model from 200 + 200 real Jigsaw texts."""
    from aura_core.analysis.collect import collect_responses
    from aura_core.base.data import balanced_sample, load_concept_data
    from aura_core.method.fit import fit_intervention
    from aura_core.model.architecture import discover_units

    data = balanced_sample(load_concept_data(shared_data / "jigsaw_balanced.csv"), 200, seed=0)
    responses = collect_responses(
        real.model,
        real.tokenizer,
        data,
        discover_units(real.model),
        max_tokens=64,
        cache_dir=tmp_path_factory.mktemp("responses"),
    )
    return fit_intervention(responses, "aura")


@pytest.fixture(scope="session")
def real_aura_file(real_aura, tmp_path_factory) -> Path:
    """``real_aura`` saved as a file from `fit`, for command-line runs."""
    path = tmp_path_factory.mktemp("aura") / "aura.safetensors"
    real_aura.save(path)
    return path


def prepare_tiny(capsys: pytest.CaptureFixture[str], *extra: str, demo: bool = False) -> dict:
    """``prepare`` on tiny-gpt2 (20 texts per class, 32 tokens): the printed record; ``demo`` also stores the demo."""
    from aura_core.cli import main

    args = ["prepare", "--model", "tiny-gpt2", "--n-per-class", "20", "--max-tokens", "32", "--json", *extra]
    assert main(args + ([] if demo else ["--no-demo"])) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def run_small_evaluation(at) -> None:
    """Run the Evaluate page of ``at`` at its smallest: 2 prompts × 1 completion, no pre-prompt, 2 neutral texts."""
    for key, value in (("eval_n_prompts", 2), ("eval_samples", 1), ("eval_n_neutral", 2), ("eval_bootstrap", 100)):
        at.number_input(key=key).set_value(value)
    at.multiselect(key="eval_groups").set_value(["none"])
    next(b for b in at.button if b.label == "Run evaluation").click().run()


@pytest.fixture
def cache(monkeypatch, tmp_path) -> Iterator[Path]:
    """A tiny-gpt2 server with its own cache, not in workshop mode: the cache folder."""
    from studio.resources import get_server_config

    monkeypatch.setenv("AURA_STUDIO_MODEL", "tiny-gpt2")
    monkeypatch.setenv("AURA_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("AURA_WORKSHOP", raising=False)
    get_server_config.clear()  # the server reads its settings once per process; each test is a new server
    yield tmp_path
    get_server_config.clear()


@pytest.fixture
def prepared_record(cache, capsys) -> dict:
    """``cache``'s server with prepared default experts: their record."""
    return prepare_tiny(capsys)


@pytest.fixture
def prepared(prepared_record, tmp_path) -> Path:
    """The cache folder of ``prepared_record``'s server."""
    return tmp_path
