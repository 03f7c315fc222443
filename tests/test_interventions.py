import pytest
import torch
from conftest import logits_of
from transformers import AutoModelForCausalLM

from aura_core.analysis.collect import collect_responses
from aura_core.errors import AuraError, InterventionError
from aura_core.method.fit import fit_intervention
from aura_core.method.intervention import Intervention, unit_table
from aura_core.model.architecture import discover_units, unit_width
from aura_core.runtime.folding import export_model, fold_into_weights
from aura_core.runtime.plans import intervened

TEXTS = ["hello there, friend", "Zap! you are a Z", "a"]


def _random_auroc(model, seed=0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    return {name: torch.rand(unit_width(modules[name]), generator=gen, dtype=torch.float64) for name in discover_units(model)}


def _interventions(model):
    scores = _random_auroc(model)
    return [
        Intervention(scores, "aura"),
        Intervention(scores, "aura", strength=0.4),
        Intervention(scores, "det0", k=10),
        Intervention(scores, "damp", k=25, damp_alpha=0.3, strength=0.7),
    ]


def test_planted_unit_gets_auroc_one_and_alpha_zero(toy_data, tmp_path):
    """A Llama unit wired to fire only on the marker byte 'Z' that every toxic text holds."""
    from aura_core.model.tiny import load_tiny, plant_marker_unit

    loaded = load_tiny("tiny-llama", seed=1)
    model, tok = loaded.model, loaded.tokenizer
    plant_marker_unit(loaded)
    responses = collect_responses(model, tok, toy_data, discover_units(model), cache_dir=tmp_path)
    aura = fit_intervention(responses, "aura")
    assert aura.auroc["model.layers.0.mlp.up_proj"][0].item() == pytest.approx(1.0)
    assert aura.alphas()["model.layers.0.mlp.up_proj"][0].item() == pytest.approx(0.0, abs=1e-6)
    top = unit_table(aura).iloc[0]
    assert (top.module, top.unit) == ("model.layers.0.mlp.up_proj", 0)


def test_alpha_rules():
    scores = {"a": torch.tensor([0.2, 0.5, 0.75, 0.9, 1.0], dtype=torch.float64), "b": torch.tensor([0.95, 0.6])}
    aura = Intervention(scores, "aura")
    assert aura.alphas()["a"].tolist() == pytest.approx([1.0, 1.0, 0.5, 0.2, 0.0])
    det0 = Intervention(scores, "det0", k=3)
    assert det0.alphas()["a"].tolist() == [1, 1, 1, 0, 0] and det0.alphas()["b"].tolist() == [0, 1]
    damp = Intervention(scores, "damp", k=2, damp_alpha=0.25, strength=0.5)
    assert damp.factors()["a"].tolist() == pytest.approx([1, 1, 1, 1, 0.625])
    with pytest.raises(InterventionError, match="strength"):
        Intervention(scores, strength=1.5)
    with pytest.raises(InterventionError, match="needs k"):
        Intervention(scores, "det0")
    with pytest.raises(InterventionError, match="more than the 7 units"):
        Intervention(scores, "det0", k=8)
    with pytest.raises(InterventionError, match="unknown method"):
        Intervention(scores, "zero")


def test_strength_zero_and_leaving_the_block_give_identical_logits(tiny):
    model, tok = tiny.model, tiny.tokenizer
    plain = logits_of(model, tok, TEXTS)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    for iv in _interventions(model):
        with intervened(model, iv.with_strength(0.0)):
            assert torch.equal(logits_of(model, tok, TEXTS), plain)
        with intervened(model, iv):
            assert not torch.allclose(logits_of(model, tok, TEXTS), plain)
        assert torch.equal(logits_of(model, tok, TEXTS), plain)
        with fold_into_weights(model, iv):
            assert not torch.allclose(logits_of(model, tok, TEXTS), plain)
        assert torch.equal(logits_of(model, tok, TEXTS), plain)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_call_plans_and_folding_give_the_same_logits(tiny):
    model, tok = tiny.model, tiny.tokenizer
    for iv in _interventions(model):
        with intervened(model, iv):
            hooked = logits_of(model, tok, TEXTS)
        with fold_into_weights(model, iv):
            folded = logits_of(model, tok, TEXTS)
        assert torch.allclose(hooked, folded, atol=1e-5)


def test_scopes_are_undone_when_the_body_raises(tiny):
    model, tok = tiny.model, tiny.tokenizer
    plain = logits_of(model, tok, TEXTS)
    iv = _interventions(model)[0]
    for scope in (intervened, fold_into_weights):
        with pytest.raises(RuntimeError, match="boom"):
            with scope(model, iv):
                raise RuntimeError("boom")
        assert torch.equal(logits_of(model, tok, TEXTS), plain)


def test_save_load_round_trip_and_overrides(tiny, tmp_path):
    iv = Intervention(_random_auroc(tiny.model), "damp", k=7, damp_alpha=0.2, strength=0.6, meta={"model": "x"})
    loaded = Intervention.load(iv.save(tmp_path / "iv.safetensors"))
    assert loaded.settings() == iv.settings() and loaded.meta["model"] == "x"
    for name in iv.auroc:
        assert torch.equal(loaded.factors()[name], iv.factors()[name])
    assert Intervention.load(tmp_path / "iv.safetensors", strength=0.1).strength == 0.1


def test_a_fitted_intervention_keeps_its_key_through_the_store(toy_data, tmp_path):
    """Evaluations are stored by the intervention's key: experts read back from disk must find them (a study resumes)."""
    from aura_core.model.tiny import load_tiny

    loaded = load_tiny("tiny-llama", seed=1)
    responses = collect_responses(loaded.model, loaded.tokenizer, toy_data, discover_units(loaded.model), cache_dir=tmp_path)
    fitted = fit_intervention(responses, "aura")
    assert fitted.stats  # τ and the transport sums are part of the key, stored in another order than fitted
    assert Intervention.load(fitted.save(tmp_path / "iv.safetensors")).key() == fitted.key()


def test_intervention_that_does_not_fit_the_model_is_refused(tmp_path):
    from aura_core.model.tiny import load_tiny

    gpt2, llama = load_tiny("tiny-gpt2").model, load_tiny("tiny-llama").model
    with pytest.raises(InterventionError, match="not in this model"):
        with intervened(llama, Intervention(_random_auroc(gpt2))):
            pass
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(InterventionError, match="not a readable intervention"):
        Intervention.load(tmp_path / "junk.safetensors")


def test_exported_checkpoint_reproduces_intervened_logits_with_plain_transformers(tiny, tmp_path):
    model, tok = tiny.model, tiny.tokenizer
    plain_weights = {k: v.clone() for k, v in model.state_dict().items()}
    iv = Intervention(_random_auroc(model), "aura", strength=0.8)
    with intervened(model, iv):
        expected = logits_of(model, tok, TEXTS)
    folder = export_model(model, tok, iv, tmp_path / "export")
    # Export folds into copies: the served model's own weights are never touched.
    assert all(torch.equal(plain_weights[k], v) for k, v in model.state_dict().items())
    reloaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert torch.allclose(logits_of(reloaded, tok, TEXTS), expected, atol=1e-5)
    with pytest.raises(AuraError, match="not an empty folder"):
        export_model(model, tok, iv, folder)


def test_nested_folds_are_an_error_and_leave_no_trace(tiny_gpt2):
    """Folding B inside a fold of A once poisoned a cache of folded weights (logits off by 2.87)."""
    model, tok = tiny_gpt2.model, tiny_gpt2.tokenizer
    first, second = _interventions(model)[0], _interventions(model)[3]
    with intervened(model, second):
        expected = logits_of(model, tok, TEXTS)
    with fold_into_weights(model, first):
        with pytest.raises(InterventionError, match="already has an intervention folded"):
            with fold_into_weights(model, second):
                pass
    with fold_into_weights(model, second):
        assert torch.allclose(logits_of(model, tok, TEXTS), expected, atol=1e-5)
