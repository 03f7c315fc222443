"""The methods study's plumbing, end to end on a tiny model with the smoke plan, and its prompt split."""

from __future__ import annotations

import json

from studies.methods import main
from studies.prompts import halves


def test_the_halves_are_disjoint_cover_every_prompt_and_split_each_category(shared_data):
    path = shared_data / "rtp_challenging.jsonl"
    choose, report = halves(path, seed=0)
    texts = [json.loads(line)["prompt"]["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    chosen = [r["prompt"]["text"] for r in choose]
    reported = [r["prompt"]["text"] for r in report]
    assert not set(chosen) & set(reported)
    assert sorted(chosen + reported) == sorted(texts)
    for kind in {r["kind"] for r in choose + report}:
        a = sum(r["kind"] == kind for r in choose)
        b = sum(r["kind"] == kind for r in report)
        assert abs(a - b) <= 1, kind
    again, _ = halves(path, seed=0)
    other, _ = halves(path, seed=1)
    assert again == choose and other != choose


def test_smoke_methods_study_writes_both_halves_both_judges_and_a_chart(tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv("AURA_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["--model", "tiny-gpt2", "--smoke", "--out-dir", str(tmp_path)]) == 0
    report = (tmp_path / "METHODS-tiny-gpt2.md").read_text(encoding="utf-8")
    assert "## Choosing half" in report and "## Reporting half" in report
    for label in ("AurA", "Conditional AurA", "Linear-AcT"):
        assert f"| {label} |" in report, label
    rows = [
        line for line in report.splitlines() if line.startswith("| ") and ("| profanity-check |" in line or "| minilm |" in line)
    ]
    assert len(rows) == 8, "the plain model and three methods, under two judges"
    assert (tmp_path / "METHODS-tiny-gpt2.html").read_text(encoding="utf-8").count("Linear-AcT") >= 1
