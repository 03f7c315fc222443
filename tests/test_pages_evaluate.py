"""Evaluate reads at a glance: ratios in words, narrow tables with word headers, and an empty result that says why."""

from pathlib import Path

import numpy as np
import pandas as pd
from streamlit.testing.v1 import AppTest

from aura_core.evaluation.plots import condition_figure, ratio_with_interval, ratio_words
from aura_core.evaluation.protocol import EvalConfig, EvalResult, summarise
from aura_core.evaluation.reports import describe_operating_point, glance_table, sweep_table
from studio.resources import store_evaluation

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TERMS = {"none": (np.array([20.0, 20.0]), np.array([10, 10])), "aura": (np.array([22.0, 22.0]), np.array([10, 10]))}


def _generations(scores: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    rows = [
        {"method": method, "preprompt": pre, "prompt_index": prompt, "sample": 0, "toxicity": value, "completion": "x"}
        for (method, pre), values in scores.items()
        for prompt, value in enumerate(values)
    ]
    return pd.DataFrame(rows)


# The plain model is toxic on 2 of 6 prompts; AurA on 6 of 6 with the adversarial pre-prompt: three times more.
SCORES = {
    ("none", "none"): [0.9, 0.8, 0.1, 0.1, 0.1, 0.1],
    ("aura", "none"): [0.9, 0.1, 0.1, 0.1, 0.1, 0.1],
    ("none", "adversarial"): [0.9] * 6,
    ("aura", "adversarial"): [0.9] * 6,
}


def test_ratios_read_as_less_or_more_never_a_fraction_less():
    assert ratio_words(1 / 3) == "3.0× more" and ratio_words(2.08) == "2.1× less"
    assert ratio_with_interval(0.5, 0.25, 1.5) == "2.0× more (from 4.0× more to 1.5× less)"
    metrics = summarise(_generations(SCORES), TERMS, n_boot=200)
    table = glance_table(metrics)
    row = table.set_index(["Method", "Pre-prompt"]).loc[("AurA", "adversarial")]
    assert row["Against the plain model"].startswith("3.0× more")
    assert table.set_index(["Method", "Pre-prompt"]).loc[("AurA", "none"), "Against the plain model"].startswith("2.0× less")
    assert len(table.columns) <= 7 and not any("_" in c for c in table.columns)
    assert not table.isin(["None", "nan"]).any().any()
    labels = [t for trace in condition_figure(metrics).data for t in trace.text]
    assert "3.0× more" in labels and not any("0.33" in t for t in labels)


def test_the_sweep_table_reads_as_words():
    sweep = pd.DataFrame(
        {
            "method": ["aura", "aura", "det0"],
            "strength": [0.0, 1.0, 1.0],
            "k": [None, None, 50],
            "toxic_share": [0.3, 0.1, 0.6],
            "toxic_share_reduction": [1.0, 3.0, 0.5],
            "toxic_share_reduction_low": [1.0, 1.5, 0.25],
            "toxic_share_reduction_high": [1.0, 6.0, 1.1],
            "perplexity": [20.0, 21.0, 25.0],
            "ppl_change_rel": [0.0, 0.05, 0.25],
            "ppl_change_rel_low": [0.0, 0.01, 0.2],
            "ppl_change_rel_high": [0.0, 0.09, 0.3],
        }
    )
    table = sweep_table(sweep)
    assert list(table["k"]) == ["–", "–", "50"] and list(table["Method"])[2] == "Det0"
    assert table["Against the plain model"][2] == "2.0× more (from 4.0× more to 1.1× less)"
    assert not any("_" in c for c in table.columns) and not table.isin(["None", "nan"]).any().any()
    point = {**sweep.iloc[2].to_dict(), "ppl_budget": 0.3}
    assert "2.0× more (from 4.0× more to 1.1× less) toxic share" in describe_operating_point(point)


def _open_report(scores: dict[tuple[str, str], list[float]], key: str) -> AppTest:
    generations = _generations(scores)
    metrics = summarise(generations, TERMS, n_boot=200)
    config = EvalConfig(n_prompts=6, samples=1, methods=("none", "aura"), preprompts=("none", "adversarial"))
    store_evaluation(key, EvalResult(config, generations, metrics, TERMS))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["eval"] = key
    at.run()
    at.switch_page("pages/evaluate.py").run()
    assert not at.exception, at.exception
    return at


def test_the_results_table_fits_and_the_chart_labels_read_as_words(prepared):
    at = _open_report(SCORES, "a" * 24)
    table = at.dataframe[0].value
    assert list(table.columns) == list(glance_table(summarise(_generations(SCORES), TERMS, n_boot=200)).columns)
    assert len(at.get("plotly_chart")) == 1
    assert not any("no toxic share to compare" in i.value for i in at.info)


def test_a_result_without_any_toxic_completion_says_why_instead_of_an_empty_chart(prepared):
    clean = {cell: [0.1] * 6 for cell in SCORES}
    at = _open_report(clean, "b" * 24)
    assert any("no toxic share to compare" in i.value for i in at.info)
    assert not at.get("plotly_chart")


def test_a_report_names_its_judge_and_warns_when_it_cannot_resolve_a_halving(prepared):
    at = _open_report(SCORES, "c" * 24)  # 6 completions per condition at a 33 % plain toxic share
    assert any(c.value == "Scored by profanity-check (the words used)." for c in at.caption)
    warning = next(w.value for w in at.warning if w.value.startswith("Underpowered"))
    assert "6 completions per condition" in warning and "needed to resolve 2× less toxic share at 33.3%" in warning
    assert at.selectbox(key="eval_judge").options == [
        "profanity-check (the words used)",
        "MiniLM judge (the words in context)",
    ]
