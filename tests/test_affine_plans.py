"""Plans that scale, shift and gate unit outputs: hand-computed outputs, exact gates, untouched rows, export refusals."""

import copy

import pytest
import torch

from aura_core.base.batching import pad_right, tokenize_texts
from aura_core.errors import InterventionError
from aura_core.method.fit import synthetic_intervention
from aura_core.method.registry import METHODS, Method, UnitEdit
from aura_core.model.architecture import discover_units
from aura_core.runtime.folding import export_model, fold_into_weights, folded_state_dict
from aura_core.runtime.hooks import CallPlan, call_plan
from aura_core.runtime.plans import row_plan, rows_intervened

TEXTS = ["hello there, friend", "Zap! you are a Z", "another line of text"]
MODULE = "transformer.h.0.mlp.c_fc"  # tiny-gpt2: a Conv1D with a bias, 64 units


def _batch(tok, texts):
    return pad_right(tokenize_texts(tok, texts, 32, drop_bos=False), tok.pad_token_id)


def _logits(model, input_ids, mask):
    with torch.inference_mode():
        return model(input_ids=input_ids, attention_mask=mask).logits.clone()


def _edit_seen(model, input_ids, mask, plan):
    """The module's output before and after the plan's edit, recorded in the same pass."""
    seen = {}
    full = CallPlan(
        scale=plan.scale,
        shift=plan.shift,
        low=plan.low,
        high=plan.high,
        record={MODULE: lambda out: seen.update(after=out.detach().clone())},
        record_raw={MODULE: lambda out: seen.update(before=out.detach().clone())},
    )
    with call_plan(model, full), torch.inference_mode():
        model(input_ids=input_ids, attention_mask=mask)
    return seen["before"], seen["after"]


def test_an_affine_plan_matches_weights_edited_by_hand(tiny_gpt2):
    model, tok = tiny_gpt2.model, tiny_gpt2.tokenizer
    gen = torch.Generator().manual_seed(1)
    scale, shift = 0.5 + torch.rand(64, generator=gen), torch.randn(64, generator=gen)
    input_ids, mask = _batch(tok, TEXTS)
    plan = CallPlan(scale={MODULE: scale}, shift={MODULE: shift})
    before, after = _edit_seen(model, input_ids, mask, plan)
    assert torch.allclose(after, before * scale + shift, atol=1e-6)
    with call_plan(model, plan):
        planned = _logits(model, input_ids, mask)
    # By hand: unit j of a linear layer is w_j·h + c_j, so y = s·x + t is the unit (s·w_j)·h + (s·c_j + t).
    edited = copy.deepcopy(model)
    layer = dict(edited.named_modules())[MODULE]
    with torch.no_grad():
        layer.weight.mul_(scale)  # Conv1D keeps units on the weight's last axis
        layer.bias.mul_(scale).add_(shift)
    by_hand = _logits(edited, input_ids, mask)
    assert torch.allclose(planned, by_hand, atol=1e-5)
    assert not torch.allclose(planned, _logits(model, input_ids, mask), atol=1e-3)


def test_a_gated_plan_edits_exactly_the_tokens_above_tau(tiny_gpt2):
    model, tok = tiny_gpt2.model, tiny_gpt2.tokenizer
    input_ids, mask = _batch(tok, TEXTS)
    tau = torch.linspace(-0.2, 0.2, 64)
    plan = CallPlan(scale={MODULE: torch.full((64,), 0.25)}, low={MODULE: tau})
    before, after = _edit_seen(model, input_ids, mask, plan)
    above = before > tau
    assert 0 < int(above.sum()) < above.numel()  # the gate splits the tokens
    assert torch.equal(after[~above], before[~above])  # bit for bit where the unit does not fire
    assert torch.allclose(after[above], before[above] * 0.25)
    # A two-sided gate (the transport's support): only values inside (low, high) change.
    band = CallPlan(scale={MODULE: torch.zeros(64)}, low={MODULE: tau}, high={MODULE: tau + 0.3})
    before, after = _edit_seen(model, input_ids, mask, band)
    inside = (before > tau) & (before < tau + 0.3)
    assert torch.equal(after[~inside], before[~inside]) and bool((after[inside] == 0).all())


@pytest.mark.parametrize("method", ["aura-cond", "linear-act"])
def test_identity_rows_beside_affine_and_gated_rows_are_bit_identical_to_the_plain_model(tiny, method):
    model, tok = tiny.model, tiny.tokenizer
    iv = synthetic_intervention(model, torch.Generator().manual_seed(0), low=0.5).with_settings(method=method)
    input_ids, mask = _batch(tok, TEXTS)
    plain = _logits(model, input_ids, mask)
    per_row = [None, iv, iv.with_strength(0.0)]
    plan = row_plan(model, per_row)
    assert plan is not None and plan.gated  # the rows carry gates (and, for Linear-AcT, shifts)
    with rows_intervened(model, per_row):
        mixed = _logits(model, input_ids, mask)
    assert torch.equal(mixed[0], plain[0]) and torch.equal(mixed[2], plain[2])
    assert not torch.allclose(mixed[1], plain[1], atol=1e-4)
    assert row_plan(model, [iv.with_strength(0.0)]) is None


def test_export_and_folding_refuse_a_gated_plan(tiny_gpt2, tmp_path):
    model, tok = tiny_gpt2.model, tiny_gpt2.tokenizer
    for method in ("aura-cond", "linear-act"):
        iv = synthetic_intervention(model, torch.Generator().manual_seed(0), low=0.5).with_settings(method=method)
        with pytest.raises(InterventionError, match="cannot be exported"):
            export_model(model, tok, iv, tmp_path / method)
        with pytest.raises(InterventionError, match="cannot be exported"), fold_into_weights(model, iv):
            pass
        assert not (tmp_path / method).exists()


def _shifted(inputs, strength):
    """An ungated affine method: scale 1 − λ/2, shift λ·(AUROC − 0.5)."""
    return {
        name: UnitEdit(torch.full_like(a, 1.0 - strength / 2).float(), (strength * (a - 0.5)).float())
        for name, a in inputs.auroc.items()
    }


def test_an_ungated_shift_folds_into_the_bias_exactly(tiny_gpt2, monkeypatch):
    model, tok = tiny_gpt2.model, tiny_gpt2.tokenizer
    monkeypatch.setitem(METHODS, "shifted", Method("shifted", "Shifted", "a test's affine edit", lambda i: {}, edits=_shifted))
    base = synthetic_intervention(model, torch.Generator().manual_seed(2))
    names = [n for n in discover_units(model) if n.endswith("c_fc")]
    iv = base.restricted(names).with_settings(method="shifted", strength=0.8)
    input_ids, mask = _batch(tok, TEXTS)
    with rows_intervened(model, [iv]):
        planned = _logits(model, input_ids, mask)
    folded = copy.deepcopy(model)
    folded.load_state_dict(folded_state_dict(model, iv))
    assert torch.allclose(_logits(folded, input_ids, mask), planned, atol=1e-5)
    with fold_into_weights(model, iv):
        assert torch.allclose(_logits(model, input_ids, mask), planned, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rowwise", [False, True])
@pytest.mark.parametrize("empty", [False, True])
def test_the_fused_gate_is_exactly_low_below_x_below_high(dtype, rowwise, empty):
    """The plan's one-clamp gate against the rule it stands for, at the bounds, beyond them, at ±inf and NaN."""
    gen = torch.Generator().manual_seed(0)
    units = 7
    low = torch.tensor([-1.0, 0.0, -float("inf"), 0.5, -2.0, 3.0, 1.0])
    high = torch.tensor([1.0, float("inf"), 2.0, 0.5 if empty else 0.75, 2.0, 4.0, 1.5])  # empty: unit 3 has no x inside
    scale, shift = torch.rand(units, generator=gen) * 2, torch.randn(units, generator=gen)
    edges = torch.stack([low, high, torch.nextafter(low, high), torch.nextafter(high, low)])
    special = torch.tensor([[float("inf")] * units, [-float("inf")] * units, [float("nan")] * units])
    hidden = torch.cat([edges, special, torch.randn(40, units, generator=gen) * 3]).to(dtype).unsqueeze(0)
    hidden = hidden.repeat(2, 1, 1)  # (rows, tokens, units)
    parts = {"scale": scale, "shift": shift, "low": low, "high": high}
    if rowwise:  # row 0 edited, row 1 neutral (the plan's rows for an untouched sequence)
        neutral = {"scale": 1.0, "shift": 0.0, "low": -float("inf"), "high": float("inf")}
        parts = {part: torch.stack([values, torch.full((units,), neutral[part])]) for part, values in parts.items()}
    plan = CallPlan(**{part: {"m": values} for part, values in parts.items()})
    got = plan.apply("m", hidden)

    def rule(part):
        values = parts[part].to(dtype)
        return values.unsqueeze(1) if rowwise else values

    inside = (hidden > rule("low")) & (hidden < rule("high"))
    expected = torch.where(inside, torch.addcmul(rule("shift"), hidden, rule("scale")), hidden)
    assert torch.equal(got.isnan(), expected.isnan())
    assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(expected))
    if rowwise:
        assert torch.equal(torch.nan_to_num(got[1]), torch.nan_to_num(hidden[1]))  # the neutral row is untouched


def test_a_plan_of_mixed_rows_holds_each_rows_own_edits(tiny):
    """Rows of several methods in one batch: each row of every part is that row's own plan, or neutral."""
    model = tiny.model
    base = synthetic_intervention(model, torch.Generator().manual_seed(0), low=0.5)
    per_row = [None, base.with_settings(method="aura-cond"), base, base.with_settings(method="linear-act"), None, base]
    mixed = row_plan(model, per_row)
    assert mixed is not None
    neutral = {"scale": 1.0, "shift": 0.0, "low": -torch.inf, "high": torch.inf}
    for row, iv in enumerate(per_row):
        alone = row_plan(model, [iv]) if iv is not None else None
        for part, fill in neutral.items():
            for name, table in getattr(mixed, part).items():
                own = None if alone is None else getattr(alone, part).get(name)
                expected = torch.full_like(table[row], fill) if own is None else own.to(table.dtype)
                assert torch.equal(table[row], expected), (row, part, name)
