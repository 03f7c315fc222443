"""The methods study's plumbing, end to end on a tiny model with the smoke plan, and its prompt split."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

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


def test_a_method_with_no_setting_within_the_budget_gets_its_least_costly_one_and_no_crown():
    from studies.fidelity import Setting
    from studies.methods import choose_setting, winner

    mild, wild = Setting("n=1", "linear-act", strength=0.5), Setting("n=1", "linear-act")
    # Both over +5 %: the damage must not win.
    over = pd.DataFrame({"setting": [mild, wild], "reduction": [1.4, 121.5], "ppl": [0.10, 72_000.0]})
    assert choose_setting(over, 0.05) == (mild, False)
    fits = Setting("n=1", "aura")
    assert choose_setting(pd.DataFrame({"setting": [fits, wild], "reduction": [1.3, 1.1], "ppl": [0.01, 0.04]}), 0.05) == (
        fits,
        True,
    )
    report = pd.DataFrame(
        {
            "judge": ["profanity-check"] * 3,
            "method": ["none", "aura", "linear-act"],
            "toxic_share_reduction": [np.nan, 1.3, 9.0],
            "toxic_share_reduction_low": [np.nan, 1.05, 5.0],
            "toxic_share_reduction_high": [np.nan, 1.66, 18.0],
        }
    )
    sentence = winner(report, "profanity-check", over_budget={"linear-act"})
    assert "**AurA**" in sentence and "Linear-AcT had no setting within +5%" in sentence
