"""The fidelity study's plumbing, end to end on a tiny model with the smoke plan."""

from __future__ import annotations

from studies.fidelity import main


def test_compact_smoke_study_writes_a_report_without_the_pooling_stage(tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv("AURA_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["--model", "tiny-gpt2", "--smoke", "--compact", "--out-dir", str(tmp_path)]) == 0
    report = (tmp_path / "FIDELITY-tiny-gpt2.md").read_text(encoding="utf-8")
    assert "`python -m studies.fidelity --model tiny-gpt2 --compact`" in report
    assert "### 1. Noise floor" in report and "### 3. Unit families" in report and "### 4. Strength" in report
    assert "### 2. Pooling and length" not in report
    assert "**Operating point**" in report
    rows = [line for line in report.splitlines() if line.startswith(("| plain |", "| operating point |", "| AurA as in"))]
    assert len(rows) == 9, "plain, operating point and the paper's AurA under three pre-prompts"
