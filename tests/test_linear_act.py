"""Linear-AcT and conditional AurA: fitted from the same responses as AurA, stored as statistics, plain at λ = 0."""

import pytest
import torch

from aura_core.base.batching import pad_right, tokenize_texts
from aura_core.errors import InterventionError
from aura_core.method.fit import fit_intervention, synthetic_intervention
from aura_core.method.intervention import Intervention
from aura_core.method.registry import TAU, TRANSPORT, method_names
from aura_core.method.responses import Responses
from aura_core.method.stats import youden_thresholds
from aura_core.runtime.hooks import CallPlan
from aura_core.runtime.plans import row_plan, rows_intervened


def _planted(n_toxic=300, n_clean=200, seed=0) -> Responses:
    """Two units: unit 0 responds N(3, 2) to toxic texts and N(0, 0.5) to the others; unit 1 is noise."""
    gen = torch.Generator().manual_seed(seed)
    toxic = torch.stack([3.0 + 2.0 * torch.randn(n_toxic, generator=gen), torch.randn(n_toxic, generator=gen)], 1)
    clean = torch.stack([0.5 * torch.randn(n_clean, generator=gen), torch.randn(n_clean, generator=gen)], 1)
    labels = torch.cat([torch.ones(n_toxic, dtype=torch.long), torch.zeros(n_clean, dtype=torch.long)])
    return Responses({"m": torch.cat([toxic, clean])}, labels, {"pooling": "max"})


def _applied(iv: Intervention, values: torch.Tensor) -> torch.Tensor:
    """The intervention's edit applied to a batch of unit outputs, as a plan applies it in a forward pass."""
    edit = iv.edits()["m"]
    plan = CallPlan(
        scale={"m": edit.scale},
        shift={"m": edit.shift} if edit.shift is not None else {},
        low={"m": edit.low} if edit.low is not None else {},
        high={"m": edit.high} if edit.high is not None else {},
    )
    out = plan.apply("m", values[None])
    assert isinstance(out, torch.Tensor)
    return out[0]


def test_linear_act_moves_a_planted_units_toxic_mean_and_spread_onto_its_non_toxic_ones():
    responses = _planted()
    iv = fit_intervention(responses, "linear-act", device="cpu")
    toxic = responses.per_module["m"][responses.labels == 1]
    clean = responses.per_module["m"][responses.labels == 0]
    moved = _applied(iv, toxic)[:, 0]
    assert float(moved.mean()) == pytest.approx(float(clean[:, 0].mean()), abs=0.05)
    assert float(moved.std()) == pytest.approx(float(clean[:, 0].std()), rel=0.1)
    assert float(toxic[:, 0].mean()) > 2.5  # it did move: the toxic mean was far away
    # λ interpolates between the identity and the map: y = x + λ·((a − 1)·x + b).
    half = _applied(iv.with_strength(0.5), toxic)[:, 0]
    assert torch.allclose(half, (toxic[:, 0] + moved) / 2, atol=1e-5)


def test_linear_act_leaves_outputs_outside_the_toxic_support_alone():
    iv = fit_intervention(_planted(), "linear-act", device="cpu")
    low, high = iv.stats[TRANSPORT]["m"][0, 5:7].tolist()
    outside = torch.tensor([[low - 1.0, 0.0], [high + 1.0, 0.0]])
    assert torch.equal(_applied(iv, outside)[:, 0], outside[:, 0])


def test_the_fit_stores_statistics_and_the_file_keeps_them(tmp_path):
    responses = _planted()
    iv = fit_intervention(responses, device="cpu")
    assert torch.equal(iv.stats[TAU]["m"], youden_thresholds(responses.per_module["m"], responses.labels))
    loaded = Intervention.load(iv.save(tmp_path / "iv.safetensors"), method="linear-act")
    assert loaded.key() == iv.with_settings(method="linear-act").key()
    for name, edit in iv.with_settings(method="linear-act").edits().items():
        assert torch.equal(loaded.edits()[name].scale, edit.scale) and torch.equal(loaded.edits()[name].shift, edit.shift)
    # A file from before the statistics: AurA still loads, the new methods say what to do.
    old = Intervention({"m": iv.auroc["m"]}).save(tmp_path / "old.safetensors")
    assert Intervention.load(old).factors()["m"].shape == (2,)
    for method in ("linear-act", "aura-cond"):
        with pytest.raises(InterventionError, match="fit them again"):
            Intervention.load(old, method=method)


def test_conditional_aura_dampens_a_unit_only_where_it_fires():
    responses = _planted()
    iv = fit_intervention(responses, "aura-cond", device="cpu")
    tau = float(iv.stats[TAU]["m"][0])
    values = torch.tensor([[tau - 0.5, 1.0], [tau + 0.5, 1.0]])
    out = _applied(iv, values)
    alpha = float(iv.alphas()["m"][0])
    assert alpha < 0.2  # unit 0 is a strong expert
    assert out[0, 0] == values[0, 0] and out[1, 0] == pytest.approx(alpha * values[1, 0])


def test_conditional_aura_at_strength_zero_is_the_plain_model(tiny):
    model, tok = tiny.model, tiny.tokenizer
    iv = synthetic_intervention(model, torch.Generator().manual_seed(3), low=0.5).with_settings(method="aura-cond", strength=0.0)
    assert row_plan(model, [iv, iv]) is None
    input_ids, mask = pad_right(tokenize_texts(tok, ["you are a fool", "hello"], 16, drop_bos=False), tok.pad_token_id)
    with torch.inference_mode():
        plain = model(input_ids=input_ids, attention_mask=mask).logits
        with rows_intervened(model, [iv, iv]):
            zero = model(input_ids=input_ids, attention_mask=mask).logits
    assert torch.equal(zero, plain)


def test_both_methods_are_listed_wherever_methods_are():
    assert {"linear-act", "aura-cond"} <= set(method_names())
