"""One unit in detail and which experts fire: on tiny models, against plain forward passes and brute force."""

import pytest
import torch

from aura_core.analysis.collect import collect_responses
from aura_core.analysis.firing import expert_weights, experts_firing, generation_activity, unit_baselines
from aura_core.analysis.neurons import check_unit, parse_unit, token_activations, unit_detail, unit_widths
from aura_core.analysis.token_text import readable_token, text_pieces, visible_whitespace
from aura_core.analysis.unit_profile import activation_profile, youden_thresholds
from aura_core.errors import DataError, UnitPatternError
from aura_core.method.fit import fit_intervention
from aura_core.method.intervention import Intervention
from aura_core.method.responses import Responses
from aura_core.model.architecture import discover_units, unit_width
from aura_core.model.tiny import byte_tokenizer, load_tiny, plant_marker_unit
from aura_core.runtime.hooks import forward_until_recorded

PLANTED = ("model.layers.0.mlp.up_proj", 0)


def _random_auroc(model, seed=0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    return {name: torch.rand(unit_width(modules[name]), generator=gen, dtype=torch.float64) for name in discover_units(model)}


def _plain_outputs(model, text_ids: list[int]) -> dict[str, torch.Tensor]:
    """Every unit module's output on one text, read by ordinary forward hooks (no call plans)."""
    seen: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = [
        modules[name].register_forward_hook(lambda _m, _i, out, name=name: seen.__setitem__(name, out.detach().clone()))
        for name in discover_units(model)
    ]
    try:
        with torch.inference_mode():
            model(input_ids=torch.tensor([text_ids]))
    finally:
        for handle in handles:
            handle.remove()
    return seen


@pytest.fixture
def planted(toy_data, tmp_path):
    """tiny-llama with up_proj unit 0 of layer 0 wired to fire only on the marker byte 'Z' (every toxic text has it)."""
    loaded = load_tiny("tiny-llama", seed=1)
    model, tok = loaded.model, loaded.tokenizer
    plant_marker_unit(loaded, gain=10.0, silence_downstream=True)  # nothing downstream copies the planted unit
    responses = collect_responses(model, tok, toy_data, discover_units(model), cache_dir=tmp_path)
    return loaded, responses, fit_intervention(responses, "aura")


def test_a_planted_unit_tops_the_tokens_where_it_was_planted(planted):
    loaded, responses, aura = planted
    firing = experts_firing(loaded.model, loaded.tokenizer, aura, "an aZb ZZ c", baselines=unit_baselines(responses))
    texts = [t.text for t in firing.tokens]
    assert "".join(texts) == "an aZb ZZ c"
    for token in firing.tokens:
        refs = [(e.module, e.unit) for e in token.experts]
        if token.text == "Z":
            assert refs[0] == PLANTED
            assert token.experts[0].weight == pytest.approx(1.0)
        else:
            assert PLANTED not in refs  # zero away from the marker: below its threshold, so it scores nothing
    z_scores = [t.score for t in firing.tokens if t.text == "Z"]
    assert min(z_scores) > max(t.score for t in firing.tokens if t.text != "Z")


def test_firing_activations_equal_a_plain_forward_pass(tiny):
    model, tok = tiny.model, tiny.tokenizer
    aura = Intervention(_random_auroc(model))
    text = "You are a fool, ok?"
    firing = experts_firing(model, tok, aura, text, top_k=5)
    plain = _plain_outputs(model, tok(text)["input_ids"])
    listed = 0
    for token in firing.tokens:
        assert token.stop - token.start == 1  # ASCII: one byte token per piece
        for expert in token.experts:
            assert expert.activation == pytest.approx(float(plain[expert.module][0, token.start, expert.unit]), abs=1e-5)
            listed += 1
        weights = expert_weights(aura)
        total = sum(float((plain[m][0, token.start].clamp(min=0) * w).sum()) for m, w in weights.items())
        assert token.score == pytest.approx(total, rel=1e-4)
        # The experts are the units of highest score over the whole model.
        best = max(
            (
                (float(plain[m][0, token.start, u].clamp(min=0) * w[u]), m, u)
                for m, w in weights.items()
                for u in range(w.numel())
            ),
        )
        assert (token.experts[0].module, token.experts[0].unit) == (best[1], best[2])
    assert listed > 0
    first = firing.tokens[0].experts[0]
    acts = token_activations(model, tok, [text], first.module, first.unit)[0]
    assert acts.values[0] == pytest.approx(first.activation, abs=1e-5)


def test_byte_fragments_merge_into_one_character(tiny_gpt2):
    model, tok = tiny_gpt2.model, tiny_gpt2.tokenizer
    ids = tok("é🙂x")["input_ids"]
    pieces = text_pieces(tok, ids)
    assert [p.text for p in pieces] == ["é", "🙂", "x"]
    assert [(p.start, p.stop) for p in pieces] == [(0, 2), (2, 6), (6, 7)]
    aura = Intervention(_random_auroc(model))
    firing = experts_firing(model, tok, aura, "é🙂x")
    assert [t.text for t in firing.tokens] == ["é", "🙂", "x"]
    acts = token_activations(model, tok, ["é🙂x"], "transformer.h.0.mlp.c_fc", 3)[0]
    plain = _plain_outputs(model, ids)["transformer.h.0.mlp.c_fc"][0, :, 3]
    assert acts.tokens == ["é", "🙂", "x"]
    assert acts.values == pytest.approx([float(plain[0:2].max()), float(plain[2:6].max()), float(plain[6])], abs=1e-5)


def test_tokens_read_as_words_with_their_whitespace_and_byte_fragments_marked():
    tok = byte_tokenizer()
    assert readable_token(tok, tok.convert_tokens_to_ids("Ã")).kind == "byte fragment"
    assert readable_token(tok, tok.convert_tokens_to_ids("Ã")).text == "⟨c3⟩"
    assert readable_token(tok, tok.convert_tokens_to_ids("a")).kind == "word piece"
    assert readable_token(tok, tok.eos_token_id).kind == "special"
    assert visible_whitespace(" gil\n\t") == "␣gil⏎⇥"


def test_real_tokenizer_shows_word_starts_and_merges_split_characters(real):
    tok = real.tokenizer
    word = readable_token(tok, tok(" idiot", add_special_tokens=False)["input_ids"][0])
    assert word.text.startswith("␣") and word.kind == "word start"
    ids = tok(" こんにちは 🙂", add_special_tokens=False)["input_ids"]
    assert "".join(p.text for p in text_pieces(tok, ids)) == " こんにちは 🙂"
    assert all("\ufffd" not in p.text for p in text_pieces(tok, ids))


def test_youden_threshold_matches_brute_force():
    gen = torch.Generator().manual_seed(3)
    values = torch.randint(0, 6, (40, 30), generator=gen).float()  # many ties
    labels = torch.randint(0, 2, (40,), generator=gen)
    values[:, 0] = labels * 5.0  # a perfect unit
    thresholds = youden_thresholds(values, labels)
    for unit in range(values.shape[1]):
        column = values[:, unit]
        cuts = sorted(set(column.tolist()))
        best = max(
            float((column[labels == 1] > c).float().mean() - (column[labels == 0] > c).float().mean())
            for c in [cuts[0] - 1, *cuts]
        )
        tau = float(thresholds[unit])
        found = float((column[labels == 1] > tau).float().mean() - (column[labels == 0] > tau).float().mean())
        assert found == pytest.approx(max(best, 0.0)) or best <= 0
    assert float(thresholds[0]) == pytest.approx(2.5)
    with pytest.raises(DataError, match="both labels"):
        youden_thresholds(values, torch.ones(40, dtype=torch.long))


def test_activation_profile_density_is_exact_and_quantiles_within_a_bin(tiny):
    model, tok = tiny.model, tiny.tokenizer
    texts = ["The cat sat on the mat.", "A quiet day by the sea, with gulls.", "Numbers: 1, 2, 3.", "ok"]
    names = discover_units(model)[:2]
    widths = unit_widths(model)
    thresholds = {name: torch.linspace(-1.0, 1.0, widths[name]) for name in names}
    profile = activation_profile(model, tok, texts, thresholds, corpus="test", batch_size=3)
    outputs = {name: [] for name in names}
    for text in texts:
        plain = _plain_outputs(model, tok(text)["input_ids"])
        for name in names:
            outputs[name].append(plain[name][0])
    for name in names:
        values = torch.cat(outputs[name])  # (tokens, units)
        assert profile.n_tokens == values.shape[0]
        for unit in (0, 5, widths[name] - 1):
            density = profile.density(name, unit)
            column = values[:, unit]
            assert density.above == int((column > thresholds[name][unit]).sum())
            assert sum(density.counts) == values.shape[0]
            assert density.minimum == pytest.approx(float(column.min()), abs=1e-5)
            assert density.maximum == pytest.approx(float(column.max()), abs=1e-5)
            median = float(column.median())
            assert abs(density.quantiles["0.5"] - median) <= 0.1 * abs(median) + 0.1
            assert density.edges[0] <= density.minimum and density.edges[-1] >= density.maximum


def test_forward_stops_after_the_last_recorded_module():
    loaded = load_tiny("tiny-llama")
    model = loaded.model
    ran = []
    handle = model.lm_head.register_forward_hook(lambda *_: ran.append(True))
    try:
        seen = {}
        ids = torch.tensor([[5, 6, 7]])
        forward_until_recorded(model, ids, torch.ones_like(ids), {"model.layers.0.mlp.up_proj": lambda h: seen.update(h=h)})
    finally:
        handle.remove()
    assert seen["h"].shape == (1, 3, 32) and not ran


def test_unit_detail_shows_both_halves_of_a_gated_neuron_and_both_classes(planted, toy_data):
    loaded, responses, aura = planted
    detail = unit_detail(loaded.model, loaded.tokenizer, aura, *PLANTED, responses=responses, texts=toy_data.texts, per_class=3)
    assert detail.unit.auroc == pytest.approx(1.0) and detail.unit.alpha == pytest.approx(0.0, abs=1e-6)
    assert detail.partner is not None and detail.partner.module == "model.layers.0.mlp.gate_proj" and detail.partner.unit == 0
    assert [t.label for t in detail.top_texts] == [1, 1, 1, 0, 0, 0]
    for top in detail.texts_of(1):
        assert top.activations.tokens[top.activations.peak] == "Z"
        assert top.partner_values is not None and len(top.partner_values) == len(top.activations.tokens)
    assert 0.0 < detail.threshold < 40.0
    assert detail.vocabulary is not None and len(detail.vocabulary.promoted) == 12
    assert all(e.kind in ("word start", "word piece", "symbol", "special", "byte fragment") for e in detail.vocabulary.promoted)
    as_json = detail.as_dict()
    assert as_json["ref"] == "model.layers.0.mlp.up_proj:0" and len(as_json["top_texts"]["non-toxic"]) == 3


def test_units_are_named_and_checked():
    assert parse_unit(" model.layers.5.mlp.gate_proj:1343 ") == ("model.layers.5.mlp.gate_proj", 1343)
    for bad in ("model.layers.5.mlp.gate_proj", ":3", "m:-1", "m:x"):
        with pytest.raises(UnitPatternError, match="MODULE:INDEX"):
            parse_unit(bad)
    with pytest.raises(UnitPatternError, match="no unit module"):
        check_unit({"m": 4}, "n", 0)
    with pytest.raises(UnitPatternError, match="out of range"):
        check_unit({"m": 4}, "m", 4)


def test_empty_text_is_refused(tiny_gpt2):
    aura = Intervention(_random_auroc(tiny_gpt2.model))
    with pytest.raises(DataError, match="empty"):
        experts_firing(tiny_gpt2.model, tiny_gpt2.tokenizer, aura, "  \n")


def test_generation_activity_splits_what_the_intervention_removed(tiny):
    """An intervention on the last unit module only: upstream units are untouched, so after + removed = before."""
    model, tok = tiny.model, tiny.tokenizer
    scores = _random_auroc(model)
    last = discover_units(model)[-1]
    only_last = {name: (values if name == last else torch.zeros_like(values)) for name, values in scores.items()}
    experts = Intervention(scores)
    applied = Intervention(only_last)
    baseline = generation_activity(model, tok, experts, "You are", " a fool!")
    after = generation_activity(model, tok, experts, "You are", " a fool!", applied=applied)
    assert [p.text for p in baseline] == [p.text for p in after] == list(" a fool!")
    assert all(p.reduced == 0.0 for p in baseline)
    assert any(p.reduced > 0 for p in after)
    for plain, changed in zip(baseline, after, strict=True):
        assert changed.expert + changed.reduced == pytest.approx(plain.expert, rel=1e-4, abs=1e-5)
    assert generation_activity(model, tok, experts, "You are", "") == []


def test_baselines_must_fit_the_intervention(tiny_gpt2):
    model = tiny_gpt2.model
    aura = Intervention(_random_auroc(model))
    name = discover_units(model)[0]
    wrong = Responses({name: torch.zeros(4, 3)}, torch.tensor([0, 1, 0, 1]))
    with pytest.raises(DataError, match="baselines"):
        experts_firing(model, tiny_gpt2.tokenizer, aura, "hi", baselines=unit_baselines(wrong))


@pytest.mark.parametrize("text", ["h.0.mlp.c_fc:²", "h.0.mlp.c_fc:٣", "h.0.mlp.c_fc:1e3", "../etc:1", "h.0:" + "9" * 12, ":3"])
def test_one_unit_rule_refuses_what_int_cannot_read_in_the_library_and_in_links(text: str) -> None:
    from aura_core.analysis.neurons import parse_unit
    from aura_core.errors import UnitPatternError
    from studio.settings import parse_unit as parse_link_unit

    with pytest.raises(UnitPatternError):
        parse_unit(text)
    with pytest.raises(ValueError):
        parse_link_unit(text)
    assert parse_link_unit("model.layers.5.mlp.gate_proj:1343") == ("model.layers.5.mlp.gate_proj", 1343)
