"""Which engine `--engine auto` decodes an evaluation on: vLLM only where it is installed and computes in bfloat16."""

from __future__ import annotations

from pathlib import Path

import pytest

from aura_core.runtime import vllm_runner


@pytest.mark.parametrize(
    ("installed", "dtype", "expected"),
    [
        (True, "bfloat16", "vllm"),  # a GPU, or a CPU with AVX-512-BF16 or AMX: vLLM's lead
        (True, "float32", "ours"),  # float32 on an AVX2 CPU: ours matched vLLM, without its start-up
        (False, "bfloat16", "ours"),
    ],
)
def test_auto_takes_vllm_where_it_is_installed_and_computes_in_bfloat16(installed, dtype, expected, monkeypatch):
    monkeypatch.setattr(vllm_runner, "vllm_python", lambda: Path("/opt/vllm/bin/python") if installed else None)
    monkeypatch.setattr(vllm_runner, "default_dtype", lambda: dtype)
    assert vllm_runner.auto_engine() == expected
