import json

import numpy as np
import pandas as pd
import pytest
import torch

from aura_core.errors import AuraError
from aura_core.evaluation import protocol as evaluation
from aura_core.evaluation.protocol import EvalConfig, run_evaluation, run_sweep, summarise
from aura_core.evaluation.reports import paper_table, write_reports
from aura_core.method.intervention import Intervention
from aura_core.model.architecture import discover_units, unit_width


def test_summarise_compares_each_condition_with_both_baselines():
    rows = []
    for method, preprompt, value in [
        ("none", "none", 0.4),
        ("aura", "none", 0.1),
        ("none", "adversarial", 0.8),
        ("aura", "adversarial", 0.2),
    ]:
        for prompt in range(5):
            for sample in range(2):
                rows.append(
                    {"method": method, "preprompt": preprompt, "prompt_index": prompt, "sample": sample, "toxicity": value}
                )
    terms = {"none": (np.array([20.0, 20.0]), np.array([10, 10])), "aura": (np.array([22.0, 22.0]), np.array([10, 10]))}
    metrics = summarise(pd.DataFrame(rows), terms, n_boot=200).set_index(["method", "preprompt"])
    assert metrics.loc[("aura", "none"), "mean_toxicity_reduction"] == pytest.approx(4.0)
    assert metrics.loc[("none", "adversarial"), "mean_toxicity_reduction"] == pytest.approx(0.5)
    assert metrics.loc[("aura", "adversarial"), "mean_toxicity_reduction_same_preprompt"] == pytest.approx(4.0)
    # Every adversarial plain completion is toxic (0.8 > 0.5), none of AurA's: no toxic share left at all.
    assert metrics.loc[("aura", "adversarial"), "toxic_share_reduction_same_preprompt"] == np.inf
    assert metrics.loc[("aura", "none"), "ppl_change"] == pytest.approx(np.exp(2.2) - np.exp(2.0))
    assert metrics.loc[("aura", "none"), "ppl_change_rel"] == pytest.approx(np.exp(0.2) - 1)
    table = paper_table(metrics.reset_index())
    assert list(table["pre-prompt"]) == ["none", "adversarial"] and "AurA: toxic share vs plain" in table
    assert list(table.columns).index("AurA: toxic share vs plain") < list(table.columns).index("AurA: mean score vs plain")
    # Factors in words, as the pages say them: below 1 is more, never "0.50× less".
    by_preprompt = table.set_index("pre-prompt")
    assert by_preprompt.loc["none", "AurA: mean score vs plain"].startswith("4.0× less")
    assert by_preprompt.loc["adversarial", "Plain model: mean score vs plain"].startswith("2.0× more")
    assert by_preprompt.loc["none", "Plain model: mean score vs plain"] == "the reference"


def _aura(model) -> Intervention:
    modules = dict(model.named_modules())
    gen = torch.Generator().manual_seed(0)
    return Intervention({n: torch.rand(unit_width(modules[n]), generator=gen) for n in discover_units(model)})


def test_tiny_end_to_end_evaluation_resumes_and_reports(tiny_gpt2, tmp_path, monkeypatch):
    config = EvalConfig(
        n_prompts=4, samples=2, max_new_tokens=5, n_neutral=6, methods=("none", "aura", "det0"), k=10, bootstrap=200
    )
    aura = _aura(tiny_gpt2.model)
    result = run_evaluation(tiny_gpt2.model, tiny_gpt2.tokenizer, aura, config, out_dir=tmp_path / "run")
    assert len(result.metrics) == 3 * 3 and len(result.generations) == 9 * 4 * 2
    assert result.metrics.set_index(["method", "preprompt"]).loc[("none", "none"), "mean_toxicity_reduction"] == 1.0

    def no_more_generation(*args, **kwargs):
        raise AssertionError("a finished condition was generated again")

    monkeypatch.setattr(evaluation, "completion_rows", no_more_generation)
    again = run_evaluation(tiny_gpt2.model, tiny_gpt2.tokenizer, aura, config, out_dir=tmp_path / "run")
    pd.testing.assert_frame_equal(again.metrics, result.metrics)
    monkeypatch.undo()

    result.sweep = run_sweep(tiny_gpt2.model, tiny_gpt2.tokenizer, aura, config, strengths=(0.0, 1.0), out_dir=tmp_path / "run")
    sweep = result.sweep.set_index("strength")
    assert sweep.loc[0.0, "ppl_change"] == 0.0 and sweep.loc[1.0, "ppl_change"] != 0.0
    assert sweep.loc[1.0, "ppl_change_rel_low"] <= sweep.loc[1.0, "ppl_change_rel"] <= sweep.loc[1.0, "ppl_change_rel_high"]
    paths = write_reports(result, tmp_path / "report")
    report = json.loads(paths["json"].read_text())
    assert report["settings"]["sampling_settings"]["num_return_sequences"] == 2
    assert len(report["metrics"]) == 9 and len(report["sweep"]) == 2
    page = paths["html"].read_text()
    assert "<table" in page and "Plotly.newPlot" in page and "Settings (repeat the run with these)" in page


def test_strength_zero_is_the_baseline(tiny_gpt2):
    config = EvalConfig(
        n_prompts=3,
        samples=2,
        max_new_tokens=4,
        n_neutral=4,
        methods=("none", "aura"),
        preprompts=("none",),
        strength=0.0,
        bootstrap=100,
    )
    result = run_evaluation(tiny_gpt2.model, tiny_gpt2.tokenizer, _aura(tiny_gpt2.model), config)
    by = result.metrics.set_index("method")
    assert by.loc["aura", "mean_toxicity_reduction"] == 1.0 and by.loc["aura", "ppl_change"] == 0.0


def test_bad_settings_are_refused_before_any_work(tiny_gpt2):
    with pytest.raises(AuraError, match="sampling preset"):
        EvalConfig(sampling="fast")
    with pytest.raises(AuraError, match="methods"):
        EvalConfig(methods=("aura", "zap"))
    from aura_core.model.tiny import load_tiny

    other = _aura(load_tiny("tiny-llama").model)
    with pytest.raises(AuraError, match="not in this model"):
        run_evaluation(tiny_gpt2.model, tiny_gpt2.tokenizer, other, EvalConfig(n_prompts=2))


def test_the_operating_point_is_the_best_reduction_within_the_perplexity_budget():
    """A front known by construction: more strength, more reduction, more perplexity."""
    from aura_core.evaluation.protocol import operating_point

    sweep = pd.DataFrame(
        {
            "method": ["aura"] * 4 + ["aura-null"] * 4,
            "strength": [0.0, 0.5, 0.75, 1.0] * 2,
            "k": [None] * 8,
            "toxic_share_reduction": [1.0, 1.5, 1.9, 2.4, 1.0, 1.6, 2.1, 2.2],
            "ppl_change_rel": [0.0, 0.02, 0.06, 0.2, 0.0, 0.015, 0.045, 0.09],
        }
    )
    best = operating_point(sweep, 0.05)
    assert (best["method"], best["strength"]) == ("aura-null", 0.75) and best["ppl_budget"] == 0.05
    assert operating_point(sweep, 0.019)["strength"] == 0.5  # aura-null at 0.5 is the only point inside 1.9 %
    assert operating_point(sweep, 0.001) is None


def test_a_sweep_over_two_methods_and_its_operating_point_on_a_tiny_model(tiny_gpt2, tmp_path):
    from aura_core.evaluation.protocol import operating_point

    config = EvalConfig(n_prompts=3, samples=2, max_new_tokens=4, n_neutral=4, bootstrap=100)
    iv = _aura(tiny_gpt2.model).with_settings()
    iv.meta["n_per_label"] = [50, 50]
    sweep = run_sweep(tiny_gpt2.model, tiny_gpt2.tokenizer, iv, config, method=("aura", "aura-null"), strengths=(0.5, 1.0))
    assert sorted(zip(sweep.method, sweep.strength, strict=True)) == [
        ("aura", 0.0),
        ("aura", 0.5),
        ("aura", 1.0),
        ("aura-null", 0.0),
        ("aura-null", 0.5),
        ("aura-null", 1.0),
    ]
    # A random tiny model writes nothing toxic, so its toxic share cannot shrink: the mean score can.
    assert operating_point(sweep, 10.0) is None
    point = operating_point(sweep, 10.0, measure="mean_toxicity")
    assert point is not None and point["strength"] > 0
    assert point["mean_toxicity_reduction"] == sweep[sweep.strength > 0].mean_toxicity_reduction.max()
