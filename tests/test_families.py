"""Unit families (gate, up, down, all): named without a regex, swept beside methods and λ, found by the budget."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from aura_core.cli import main
from aura_core.errors import AuraError, UnitPatternError
from aura_core.evaluation.protocol import EvalConfig, Evaluation, evaluate_args, operating_point, run_sweep
from aura_core.evaluation.reports import describe_operating_point
from aura_core.method.intervention import Intervention
from aura_core.model.architecture import discover_units, unit_families, unit_width
from aura_core.model.tiny import load_tiny

ROOT = Path(__file__).resolve().parents[1]
MARKER = "Z"


class MarkerShare:
    """A toxicity judge for a planted concept: the share of a completion's characters that are the marker."""

    name = "marker-share"

    def score(self, texts: list[str]) -> np.ndarray:
        return np.array([t.count(MARKER) / len(t) if t else 0.0 for t in texts])


def _planted_llama():
    """A tiny Llama whose neuron 0 of layer 0 writes the marker: it fires on every token, and only it reaches the marker's logit.

    Zeroing the neuron's up unit (or its gate unit) silences it; the other gate and down units
    only move what the other neurons write, never the marker's logit.
    """
    loaded = load_tiny("tiny-llama", seed=0)
    model, marker = loaded.model, loaded.tokenizer.convert_tokens_to_ids(MARKER)
    with torch.no_grad():
        embed = model.model.embed_tokens.weight
        embed[:, 0] = 8.0  # one axis of the residual stream is on for every token
        embed[:, 1] = 0.0  # the marker's axis: only neuron 0 writes it
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight[1] = 0.0
        mlp = model.model.layers[0].mlp
        for projection in (mlp.gate_proj, mlp.up_proj):
            projection.weight[0] = 0.0
            projection.weight[0, 0] = 3.0
        mlp.down_proj.weight[:, 0] = 0.0
        mlp.down_proj.weight[1, 0] = 1.0
        model.lm_head.weight[marker] = 0.0
        model.lm_head.weight[:, 1] = 0.0
        model.lm_head.weight[marker, 1] = 10.0
    return loaded


def _planted_auroc(model) -> Intervention:
    """The marker neuron's up unit at AUROC 1; every other gate and down unit above 0.5 (dampened), the other up units at 0.5."""
    modules = dict(model.named_modules())
    gen = torch.Generator().manual_seed(0)
    auroc = {}
    for name in discover_units(model):
        n = unit_width(modules[name])
        if name.endswith("up_proj"):
            values = torch.full((n,), 0.5)
        else:
            values = 0.5 + 0.3 * torch.rand(n, generator=gen)
        auroc[name] = values
    auroc["model.layers.0.mlp.up_proj"][0] = 1.0
    auroc["model.layers.0.mlp.gate_proj"][0] = 0.5  # the neuron's gate half is no expert
    auroc["model.layers.0.mlp.down_proj"][1] = 0.5  # nor the residual axis it writes
    return Intervention(auroc)


def test_family_names_select_modules_without_a_regex():
    llama, gpt2 = load_tiny("tiny-llama").model, load_tiny("tiny-gpt2").model
    assert discover_units(llama, "gate") == ["model.layers.0.mlp.gate_proj", "model.layers.1.mlp.gate_proj"]
    assert discover_units(llama, "up+gate") == discover_units(llama, "gate+up") == discover_units(llama, r".*mlp\.(gate|up)_proj")
    assert discover_units(llama, "all") == discover_units(llama) and len(discover_units(llama)) == 6
    assert discover_units(gpt2, "up") == ["transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"]
    assert unit_families(llama, pairs=False) == ("gate", "up", "down", "all")
    assert unit_families(llama) == ("gate", "up", "down", "gate+up", "gate+down", "up+down", "all")
    with pytest.raises(UnitPatternError, match="gpt2 models have no gate projections: use one of up, down, all"):
        discover_units(gpt2, "gate")
    with pytest.raises(UnitPatternError, match="matches no module"):
        discover_units(llama, "gate+gate")  # not a family: a regex that names nothing


def test_a_restricted_intervention_changes_only_its_family():
    loaded = load_tiny("tiny-llama")
    iv = _planted_auroc(loaded.model)
    gate = iv.restricted(discover_units(loaded.model, "gate"))
    assert list(gate.auroc) == discover_units(loaded.model, "gate") and gate.key() != iv.key()
    with pytest.raises(AuraError, match="acts on none of the 2 modules"):
        gate.restricted(discover_units(loaded.model, "down"))
    evaluation = Evaluation(loaded.model, loaded.tokenizer, iv, EvalConfig(n_prompts=2, units="down"))
    assert list(evaluation.intervention_for("aura").auroc) == discover_units(loaded.model, "down")
    with pytest.raises(AuraError, match="units 'gate': gpt2 models have no gate projections"):
        tiny = load_tiny("tiny-gpt2")
        Evaluation(
            tiny.model, tiny.tokenizer, Intervention({"transformer.h.0.mlp.c_fc": torch.rand(64)}), EvalConfig(units="gate")
        )


def test_the_sweep_finds_the_family_that_holds_the_planted_unit(tmp_path):
    loaded = _planted_llama()
    config = EvalConfig(n_prompts=3, samples=4, max_new_tokens=6, n_neutral=4, bootstrap=200)
    families = unit_families(loaded.model, pairs=False)[::-1]  # all first: the lighter touch must win a tie, not the order
    sweep = run_sweep(
        loaded.model,
        loaded.tokenizer,
        _planted_auroc(loaded.model),
        config,
        strengths=(0.5, 1.0),
        units=families,
        scorer=MarkerShare(),
        out_dir=tmp_path / "run",
    )
    assert len(sweep) == len(families) * 3 and set(sweep.units) == set(families)
    full = sweep[sweep.strength == 1.0].set_index("units")
    assert (sweep[sweep.strength == 0].toxic_share == 1.0).all()  # the plain model writes the marker throughout
    # Only the up family holds the marker's unit: gate and down change many units and leave every completion toxic.
    assert full.loc["gate", "toxic_share"] == full.loc["down", "toxic_share"] == 1.0
    assert full.loc["gate", "units_changed"] > 1 and full.loc["up", "units_changed"] == 1
    assert full.loc["up", "toxic_share"] == full.loc["all", "toxic_share"] == 0.0
    point = operating_point(sweep, 0.05)
    assert point is not None and (point["units"], point["strength"]) == ("up", 1.0)  # all does as much, touching more units
    assert point["evaluate_args"] == ["--methods", "none,aura", "--units", "up", "--strength", "1"]

    # The arguments measure the same point again: the same completions, so the same toxic share.
    again = Evaluation(
        loaded.model,
        loaded.tokenizer,
        _planted_auroc(loaded.model),
        EvalConfig(n_prompts=3, samples=4, max_new_tokens=6, n_neutral=4, bootstrap=200, preprompts=("none",), units="up"),
        scorer=MarkerShare(),
    ).run()
    assert again.metrics.set_index("method").loc["aura", "toxic_share"] == point["toxic_share"]


def test_evaluate_args_carry_k_and_damp_alpha():
    args = evaluate_args({"method": "damp", "units": "down", "strength": 0.5, "k": 20, "damp_alpha": 0.25})
    assert args == ["--methods", "none,damp", "--units", "down", "--strength", "0.5", "--k", "20", "--damp-alpha", "0.25"]


def test_the_command_line_names_families(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AURA_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "tiny-llama"
    tiny = load_tiny("tiny-llama", seed=2)
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    model = ["--model", str(folder), "--device", "cpu"]
    fitted = tmp_path / "gate.safetensors"
    assert main(["fit", *model, "--n-per-class", "10", "--units", "gate", "--out", str(fitted)]) == 0
    assert json.loads(capsys.readouterr().out)["units"] == 2 * 32
    assert list(Intervention.load(fitted).auroc) == ["model.layers.0.mlp.gate_proj", "model.layers.1.mlp.gate_proj"]
    everything = tmp_path / "all.safetensors"
    assert main(["fit", *model, "--n-per-class", "10", "--out", str(everything)]) == 0
    capsys.readouterr()
    run = tmp_path / "eval"
    small = ["--n-prompts", "2", "--samples", "2", "--max-new-tokens", "3", "--n-neutral", "3", "--bootstrap", "100"]
    args = ["evaluate", *model, "--intervention", str(everything), *small, "--preprompts", "none", "--out", str(run)]
    assert main([*args, "--sweep", "--sweep-strengths", "1", "--sweep-units", "gate,all", "--ppl-budget", "100", "--json"]) == 0
    report = json.loads((run / "report.json").read_text())
    assert sorted({(r["units"], r["strength"]) for r in report["sweep"]}) == [("all", 0), ("all", 1), ("gate", 0), ("gate", 1)]
    assert main([*args, "--units", "up"]) == 0
    assert json.loads((run / "report.json").read_text())["settings"]["units"] == "up"
    assert main([*args, "--sweep", "--sweep-units", "gate,.*"]) == 2
    assert "--sweep-units: '.*' is not a unit family" in capsys.readouterr().err


def _sweep_frame() -> pd.DataFrame:
    """Two families of one method along λ: gate costs little perplexity, all more."""
    rows = []
    for units, cost in (("gate", 0.01), ("all", 0.2)):
        for strength in (0.0, 1.0):
            rows.append(
                {
                    "method": "aura",
                    "units": units,
                    "strength": strength,
                    "k": None,
                    "damp_alpha": None,
                    "units_changed": 0 if strength == 0 else (10 if units == "gate" else 40),
                    "toxic_share": 0.3 if strength == 0 else 0.1,
                    "toxic_share_reduction": 1.0 if strength == 0 else 3.0,
                    "toxic_share_reduction_low": 1.0 if strength == 0 else 1.5,
                    "toxic_share_reduction_high": 1.0 if strength == 0 else 6.0,
                    "perplexity": 20.0 * (1 + cost * strength),
                    "ppl_change_rel": cost * strength,
                    "ppl_change_rel_low": cost * strength / 2,
                    "ppl_change_rel_high": cost * strength * 2,
                }
            )
    return pd.DataFrame(rows)


def test_the_pareto_view_draws_each_family_with_its_own_marker():
    from aura_core.evaluation.plots import tradeoff_figure

    sweep = _sweep_frame()
    point = operating_point(sweep, 0.05)
    assert point is not None and point["units"] == "gate"
    traces = [t for t in tradeoff_figure(sweep, point).data if t.name and "operating point" not in t.name]
    assert [t.name for t in traces] == ["AurA · the gate projections", "AurA · all units"]
    assert traces[0].marker.symbol != traces[1].marker.symbol and traces[0].marker.color == traces[1].marker.color
    assert "AurA on the gate projections at λ = 1.0" in describe_operating_point(point)


@pytest.fixture
def llama_server(monkeypatch, tmp_path, capsys):
    from studio.resources import get_server_config

    monkeypatch.setenv("AURA_STUDIO_MODEL", "tiny-llama")
    monkeypatch.setenv("AURA_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("AURA_WORKSHOP", raising=False)
    get_server_config.clear()
    assert main(["prepare", "--model", "tiny-llama", "--n-per-class", "20", "--max-tokens", "32", "--json", "--no-demo"]) == 0
    capsys.readouterr()
    yield tmp_path
    get_server_config.clear()


def test_the_pages_show_families_and_generate_applies_the_operating_points_family(llama_server):
    from streamlit.testing.v1 import AppTest

    from aura_core.analysis.experts import save_operating_point
    from aura_core.evaluation.protocol import EvalResult, summarise
    from studio.resources import store_evaluation

    generations = pd.DataFrame(
        [
            {"method": m, "preprompt": "none", "prompt_index": i, "sample": 0, "toxicity": v, "completion": "x"}
            for m, values in (("none", [0.9, 0.1, 0.1]), ("aura", [0.1, 0.1, 0.1]))
            for i, v in enumerate(values)
        ]
    )
    terms = {"none": (np.array([20.0, 20.0]), np.array([10, 10])), "aura": (np.array([21.0, 21.0]), np.array([10, 10]))}
    sweep = _sweep_frame()
    point = operating_point(sweep, 0.05)
    config = EvalConfig(n_prompts=3, samples=1, preprompts=("none",))
    result = EvalResult(config, generations, summarise(generations, terms, n_boot=200), terms, sweep=sweep, operating_point=point)
    store_evaluation("c" * 24, result)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params["eval"] = "c" * 24
    at.run()
    at.switch_page("pages/evaluate.py").run()
    assert not at.exception, at.exception
    families = at.multiselect(key="sweep_units")
    assert families.value == ["gate", "up", "down", "all"] and "the gate and up projections" in families.options
    pareto = json.loads(at.get("plotly_chart")[-1].proto.spec)
    assert {"AurA · the gate projections", "AurA · all units"} <= {trace.get("name") for trace in pareto["data"]}

    save_operating_point(at.session_state["_settings"]["experts"], point)  # as a finished sweep does
    at.switch_page("pages/generate.py").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="w:units").value == "all"
    next(b for b in at.button if b.label.startswith("Use the operating point: AurA on the gate projections")).click().run()
    assert at.selectbox(key="w:units").value == "gate" and at.query_params["units"] == "gate"
    at.slider(key="w:samples").set_value(1)
    next(b for b in at.button if b.label == "Generate").click().run()
    assert not at.exception, at.exception
