"""bfloat16 compute: what stays float32, that AUROCs agree with float32, and float32 log-probabilities."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma2Config

from aura_core.analysis.collect import _Pooler, collect_responses
from aura_core.base.data import balanced_sample, load_concept_data
from aura_core.evaluation.scoring import float32_logits, text_nll
from aura_core.method.auroc import auroc
from aura_core.method.fit import fit_intervention
from aura_core.method.intervention import unit_table
from aura_core.model.architecture import discover_units
from aura_core.model.loading import load_model
from aura_core.model.packed_linear import can_pack, is_product, pack_linears, packed_forward
from aura_core.model.precision import Precision, calibration_batch, compute_in_bf16, precision_of
from aura_core.model.tiny import byte_tokenizer, load_tiny, plant_marker_unit

TEXTS = ["the quick brown fox", "a b", "jumps over the lazy dog again and again", "hello there"]


def _bf16(name: str, seed: int = 0):
    tiny = load_tiny(name, seed=seed)
    compute_in_bf16(tiny.model, calibration_batch(tiny.tokenizer))
    return tiny


def _aurocs(model, tokenizer, data, tmp_path) -> np.ndarray:
    responses = collect_responses(model, tokenizer, data, discover_units(model), max_tokens=32, cache_dir=tmp_path)
    return np.concatenate([auroc(values, responses.labels).numpy() for values in responses.per_module.values()])


def test_bf16_setup_keeps_the_residual_stream_and_norms_in_float32():
    tiny = _bf16("tiny-llama")
    model = tiny.model
    assert precision_of(model) == Precision(torch.bfloat16, True, (), 0, 15)
    assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert model.model.layers[0].input_layernorm.weight.dtype == torch.float32
    seen = {}
    model.model.layers[1].register_forward_pre_hook(lambda m, args: seen.update(residual=args[0].dtype))
    model.model.layers[0].mlp.up_proj.register_forward_hook(lambda m, a, out: seen.update(unit=out.dtype))
    with torch.inference_mode():
        logits = model(torch.tensor([[5, 6, 7]])).logits
    assert seen == {"residual": torch.float32, "unit": torch.bfloat16}
    assert torch.isfinite(logits).all()


def test_a_block_with_massive_outputs_stays_float32():
    tiny = load_tiny("tiny-llama", seed=0)
    with torch.no_grad():
        tiny.model.model.layers[1].mlp.down_proj.weight[3] *= 5000.0  # a massive activation, as SmolLM2's layer 11 writes
    precision = compute_in_bf16(tiny.model, calibration_batch(tiny.tokenizer))
    assert precision.float32_blocks == ("model.layers.1.mlp",) and precision.float32_matmuls == 3
    mlp = tiny.model.model.layers[1].mlp
    assert {mlp.gate_proj.weight.dtype, mlp.up_proj.weight.dtype, mlp.down_proj.weight.dtype} == {torch.float32}
    assert tiny.model.model.layers[0].mlp.down_proj.weight.dtype == torch.bfloat16
    with torch.inference_mode():
        assert torch.isfinite(tiny.model(torch.tensor([[5, 6, 7]])).logits).all()
    assert "3 of 15 matmuls" in precision.label


def test_a_setup_the_architecture_cannot_run_falls_back_to_plain_bf16(monkeypatch):
    from aura_core.model import precision

    def broken(*args, **kwargs):
        raise RuntimeError("expected mat1 and mat2 to have the same dtype")

    monkeypatch.setattr(precision, "_peaks", broken)
    tiny = load_tiny("tiny-gpt2")
    assert compute_in_bf16(tiny.model, calibration_batch(tiny.tokenizer)) == Precision(torch.bfloat16)
    assert {p.dtype for p in tiny.model.parameters()} == {torch.bfloat16}
    with torch.inference_mode():
        assert tiny.model(torch.tensor([[5, 6, 7]])).logits.dtype == torch.bfloat16  # no casting hooks left


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_bf16_and_fp32_aurocs_agree_and_rank_the_same_top_units(name, tmp_path):
    """Tolerance: mean |ΔAUROC| <= 0.005 and max <= 0.03 over 100 + 100 texts (measured: about 0.001 and 0.005)."""
    data = balanced_sample(load_concept_data("starter"), 100, seed=0)
    fp32 = load_tiny(name, seed=0)
    bf16 = _bf16(name, seed=0)
    ref = _aurocs(fp32.model, fp32.tokenizer, data, tmp_path / "fp32")
    new = _aurocs(bf16.model, bf16.tokenizer, data, tmp_path / "bf16")
    diff = np.abs(ref - new)
    print(f"{name}: mean |ΔAUROC| {diff.mean():.4f}, max {diff.max():.4f} over {diff.size} units")
    assert diff.mean() <= 0.005 and diff.max() <= 0.03
    top_ref, top_new = set(np.argsort(-ref)[:10]), set(np.argsort(-new)[:10])
    assert len(top_ref & top_new) >= 8


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_planted_unit_is_found_in_both_dtypes(dtype, toy_data, tmp_path):
    """A Llama unit wired to fire only on the marker byte 'Z' that every toxic text holds."""
    loaded = load_tiny("tiny-llama", seed=1)
    model, tok = loaded.model, loaded.tokenizer
    plant_marker_unit(loaded)
    if dtype == "bfloat16":
        compute_in_bf16(model, calibration_batch(tok))
    aura = fit_intervention(collect_responses(model, tok, toy_data, discover_units(model), cache_dir=tmp_path), "aura")
    assert aura.auroc["model.layers.0.mlp.up_proj"][0].item() == pytest.approx(1.0)
    top = unit_table(aura).iloc[0]
    assert (top.module, top.unit) == ("model.layers.0.mlp.up_proj", 0)


def test_mean_pooling_adds_up_bf16_outputs_in_float32():
    # 300 tokens of 1 + 1/128: a bfloat16 running sum stops growing by 1 at 256 and drifts.
    hidden = torch.full((1, 300, 1), 1.0 + 1 / 128, dtype=torch.bfloat16)
    buffers = {"m": torch.zeros(1, 1)}
    pooler = _Pooler(["m"], buffers, "mean")
    pooler.set_batch(torch.tensor([0]), torch.ones(1, 300, dtype=torch.long))
    pooler.plan.record["m"](hidden)
    assert buffers["m"].item() == pytest.approx(1.0 + 1 / 128, abs=1e-6)
    assert hidden.sum(dim=1).item() / 300 != pytest.approx(1.0 + 1 / 128, abs=1e-3)  # what a bf16 sum gives


def _nll_from(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits[0, :-1].float(), ids[0, 1:], reduction="sum")


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_text_nll_of_a_float32_model_is_that_of_its_own_logits(name):
    tiny = load_tiny(name)
    sums, counts = text_nll(tiny.model, tiny.tokenizer, TEXTS, batch_size=1)
    for text, total, count in zip(TEXTS, sums, counts, strict=True):
        ids = tiny.tokenizer(text, return_tensors="pt").input_ids
        with torch.inference_mode():
            expected = _nll_from(tiny.model(ids).logits, ids)
        assert total == pytest.approx(expected.item(), rel=1e-5) and count == ids.shape[1] - 1


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_text_nll_of_a_bf16_model_comes_from_float32_logits(name):
    tiny = _bf16(name)
    model, tok = tiny.model, tiny.tokenizer
    sums, _ = text_nll(model, tok, TEXTS, batch_size=1)
    head = model.get_output_embeddings()
    rounded_gap = 0.0
    for text, total in zip(TEXTS, sums, strict=True):
        ids = tok(text, return_tensors="pt").input_ids
        with torch.inference_mode():
            hidden = model.get_decoder()(ids).last_hidden_state
            assert hidden.dtype == torch.float32  # the final norm's output is not rounded
            exact = _nll_from(torch.nn.functional.linear(hidden, head.weight.float()), ids)
            rounded = _nll_from(model(ids).logits, ids)  # bf16 logits, cast afterwards
        assert total == pytest.approx(exact.item(), rel=1e-6)
        rounded_gap = max(rounded_gap, abs(rounded.item() - exact.item()))
    assert rounded_gap > 1e-3  # so the test tells the two apart


def test_float32_logits_apply_the_final_softcap():
    config = Gemma2Config(
        vocab_size=258,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        final_logit_softcapping=2.0,
        initializer_range=0.4,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).eval()
    ids = byte_tokenizer()(["softcapped logits"], return_tensors="pt").input_ids
    with torch.inference_mode():
        ours = float32_logits(model, ids, torch.ones_like(ids))
        theirs = model(ids).logits
    assert ours.abs().max() < 2.0  # capped
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_float32_logits_leave_other_logit_scalings_to_the_model(monkeypatch):
    tiny = load_tiny("tiny-llama")
    tiny.model.config.logits_scaling = 4.0  # a family that rescales its logits its own way: its own code must run
    monkeypatch.setattr(tiny.model, "get_decoder", lambda: pytest.fail("the decoder alone would skip the rescaling"))
    ids = torch.tensor([[5, 6, 7]])
    with torch.inference_mode():
        assert torch.equal(float32_logits(tiny.model, ids, torch.ones_like(ids)), tiny.model(ids).logits.float())


def test_an_explicit_bf16_tiny_model_loads_with_the_setup():
    assert precision_of(load_model("tiny-llama").model).name == "float32"  # auto keeps test models float32
    assert precision_of(load_model("tiny-llama", dtype="bfloat16").model).float32_residual


@pytest.mark.skipif(not can_pack(), reason="this CPU or torch build has no oneDNN bfloat16 products")
def test_packed_products_equal_plain_bf16_products_bit_for_bit_and_follow_weight_changes():
    tiny = _bf16("tiny-llama")
    packed = [m for m in tiny.model.modules() if getattr(m.forward, "__func__", None) is packed_forward]
    assert packed, "compute_in_bf16 packs the bfloat16 products where oneDNN runs them"
    module = packed[0]
    hidden = torch.randn(3, 5, module.in_features, generator=torch.Generator().manual_seed(0))
    plain = torch.nn.functional.linear(hidden.bfloat16(), module.weight, module.bias)
    assert torch.equal(module(hidden), plain)
    with torch.no_grad():
        module.weight.mul_(0.5)  # what folding does: the packed copy must follow
    assert torch.equal(module(hidden), torch.nn.functional.linear(hidden.bfloat16(), module.weight, module.bias))


@pytest.mark.skipif(not can_pack(torch.float32), reason="this CPU or torch build has no oneDNN products")
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_float32_products_give_a_row_the_same_numbers_at_every_row_count(name: str):
    tiny = load_tiny(name)
    products = [m for m in tiny.model.modules() if is_product(m)]
    assert pack_linears(tiny.model) == len(products)
    module = products[0]
    width = module.in_features if isinstance(module, torch.nn.Linear) else module.weight.shape[0]  # Conv1D: (in, out)
    rows = torch.randn(40, width, generator=torch.Generator().manual_seed(0))
    alone = module(rows[:1])
    for count in (2, 3, 4, 17, 40):
        assert torch.equal(module(rows[:count])[:1], alone)  # MKL would change kernel at 4 rows
    torch.testing.assert_close(module(rows[None]), _plain_product(module, rows[None]))
    with torch.no_grad():
        module.weight.mul_(-2.0)  # what folding does: the packed copy must follow
    torch.testing.assert_close(module(rows[None]), _plain_product(module, rows[None]))
    assert any(getattr(m.forward, "__func__", None) is packed_forward for m in load_model(name).model.modules())


def _plain_product(module: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    if isinstance(module, torch.nn.Linear):
        return torch.nn.functional.linear(hidden, module.weight, module.bias)
    return hidden @ module.weight + module.bias
