"""The family table: every family's units are found, and each neuron's output direction is real."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from aura_core.analysis.neurons import output_direction
from aura_core.model.architecture import (
    FAMILIES,
    discover_units,
    down_projection,
    family_of,
    final_norm_scale,
    layer_of,
    module_kind,
    neuron_kinds,
    unit_axis,
    unit_width,
)

SMALL = {"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 24}


def _config(model_type: str):
    from transformers import AutoConfig

    specific = {
        "gpt2": {"vocab_size": 64, "n_embd": 16, "n_layer": 2, "n_head": 2},
        "gemma3_text": {**SMALL, "num_key_value_heads": 1, "head_dim": 8, "sliding_window": 8},
        "falcon": {"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2},
        "gpt_neox": {**SMALL, "rotary_pct": 1.0},
        "opt": {
            "vocab_size": 64,
            "hidden_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "ffn_dim": 24,
            "word_embed_proj_dim": 16,
        },
        "llama": {**SMALL, "num_key_value_heads": 1},
        "mistral": {**SMALL, "num_key_value_heads": 1},
        "qwen2": {**SMALL, "num_key_value_heads": 1},
        "phi": SMALL,
        "phi3": {**SMALL, "num_key_value_heads": 1, "pad_token_id": 0},
    }[model_type]
    return AutoConfig.for_model(model_type, **specific)


MODEL_TYPES = ["gpt2", "llama", "mistral", "qwen2", "gemma3_text", "gpt_neox", "falcon", "opt", "phi", "phi3"]


@pytest.fixture(params=MODEL_TYPES)
def model(request):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(_config(request.param)).eval()


def test_every_model_type_in_the_table_is_tested():
    assert {t for f in FAMILIES for t in f.model_types} >= set(MODEL_TYPES)


def test_units_neurons_and_down_projections_are_found(model):
    family = family_of(model)
    assert family is not None
    units = discover_units(model)
    assert len(units) == 2 * (len(family.neurons) + 1)  # two layers: every neuron kind and the down projection
    assert sorted({layer_of(u) for u in units}) == [0, 1]
    hidden = model.get_output_embeddings().weight.shape[1]
    modules = dict(model.named_modules())
    for name in units:
        down = down_projection(model, name)
        if module_kind(name) in neuron_kinds(model):
            assert down is not None and layer_of(down[0]) == layer_of(name)
            neurons = down[1].weight.shape[1 - unit_axis(down[1])]
            assert unit_width(modules[name]) in (neurons, 2 * neurons)  # a fused gate-and-up has two per neuron
        else:
            assert down is None and unit_width(modules[name]) == hidden


def test_a_neurons_output_direction_is_what_its_down_projection_adds(model):
    """Feeding the down projection one unit of neuron i adds exactly the reported direction."""
    units = discover_units(model)
    neuron = next(u for u in units if module_kind(u) in neuron_kinds(model))
    name, layer = down_projection(model, neuron)
    direction, how = output_direction(model, neuron, 3)
    inputs = layer.weight.shape[1 - unit_axis(layer)]
    basis = torch.zeros(1, inputs)
    basis[0, 3] = 1.0
    with torch.no_grad():
        added = layer(basis) - layer(torch.zeros(1, inputs))
    assert torch.allclose(added[0], direction, atol=1e-6) and name in how


def test_final_norm_scale_includes_the_family_offset(model):
    scale = final_norm_scale(model)
    assert scale is not None and scale.shape == (model.get_output_embeddings().weight.shape[1],)
    if family_of(model).norm_offset:
        # Gemma stores its RMSNorm scale as an offset from 1: a fresh model's zeros mean a scale of 1.
        assert torch.allclose(scale, torch.ones_like(scale))


def test_a_pattern_that_backtracks_without_bound_ends_quickly_or_with_a_clear_error(monkeypatch) -> None:
    """``re`` took 79 s over a tiny GPT-2's names with this pattern, holding the interpreter lock throughout."""
    import time

    from aura_core.errors import UnitPatternError
    from aura_core.model import architecture
    from aura_core.model.architecture import discover_units
    from aura_core.model.tiny import load_tiny

    model = load_tiny("tiny-gpt2").model
    started = time.monotonic()
    with pytest.raises(UnitPatternError, match="matches no module"):
        discover_units(model, "(.|.)*!")
    assert time.monotonic() - started < architecture.UNIT_PATTERN_SECONDS + 5
    monkeypatch.setattr(architecture, "UNIT_PATTERN_SECONDS", 1e-9)
    with pytest.raises(UnitPatternError, match="takes too long"):
        discover_units(model, r"transformer\.h\.\d+\.mlp\.c_fc")
    with pytest.raises(UnitPatternError, match="at most"):
        discover_units(model, "a" * 10_000)
