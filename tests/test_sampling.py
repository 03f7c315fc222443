"""The next-token rule: the nucleus it keeps is the one a full sort keeps, row by row, in any batch."""

import torch

from aura_core.runtime.sampling import SamplingSettings, _draw, next_tokens, row_generator

VOCAB = 20_000


RULES = [
    SamplingSettings(top_p=0.9, temperature=0.8),
    SamplingSettings(top_p=0.95),
    SamplingSettings(top_p=0.95),
    SamplingSettings(top_p=1.0, top_k=3000),
]


def _rows() -> torch.Tensor:
    """Logits whose nuclei need every ranking width: peaked, hundreds of tokens, nearly flat, and a top-k of 3000."""
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(4, VOCAB, generator=gen)
    return torch.stack([base[0] * 6.0, base[1] * 3.0, base[2] * 0.05, base[3] * 0.05])


def _nucleus(logits: torch.Tensor, rule: SamplingSettings) -> set[int]:
    """The tokens top-k and top-p keep, from a full sort in float64."""
    probs = torch.softmax(logits.double() / rule.temperature, dim=0)
    ordered, ids = torch.sort(probs, descending=True)
    before = torch.cumsum(ordered, dim=0) - ordered
    keep = before < rule.top_p
    if rule.top_k > 0:
        keep &= torch.arange(len(ids)) < rule.top_k
    keep[0] = True
    return set(ids[keep].tolist())


def test_draws_stay_in_the_nucleus_a_full_sort_keeps_for_every_width():
    logits = _rows()
    nuclei = [_nucleus(logits[i], rule) for i, rule in enumerate(RULES)]
    sizes = [len(nucleus) for nucleus in nuclei]
    assert sizes[0] < 256 < sizes[1] < 2048 and sizes[2] > 16_384 and sizes[3] == 3000, sizes
    top_256 = [set(torch.topk(row, 256).indices.tolist()) for row in logits]
    beyond = [0, 0, 0, 0]
    for seed in range(60):
        drawn = next_tokens(logits, RULES, [row_generator(seed * 4 + i) for i in range(4)], [[]] * 4).tolist()
        for i, (token, nucleus) in enumerate(zip(drawn, nuclei, strict=True)):
            assert token in nucleus
            beyond[i] += token not in top_256[i]
    assert all(count > 0 for count in beyond[1:]), beyond  # wide nuclei are drawn from beyond the first head


def test_a_row_draws_the_same_token_alone_and_in_any_batch():
    logits = _rows()
    for seed in range(20):
        together = next_tokens(logits, RULES, [row_generator(seed + i) for i in range(4)], [[]] * 4).tolist()
        alone = [next_tokens(logits[i : i + 1], [RULES[i]], [row_generator(seed + i)], [[]]).item() for i in range(4)]
        assert together == alone


def test_draws_follow_the_renormalised_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.06, 0.04]]))
    rule = SamplingSettings(top_p=0.8)  # keeps 0.5, 0.25 and 0.15 (mass above 0.15 is 0.75 < 0.8)
    counts = torch.zeros(5)
    gen = row_generator(7)
    for _ in range(3000):
        counts[next_tokens(logits, [rule], [gen], [[]]).item()] += 1
    share = counts / counts.sum()
    assert share[3:].sum() == 0
    assert torch.allclose(share[:3], torch.tensor([0.5, 0.25, 0.15]) / 0.9, atol=0.03)


def test_a_draw_searched_block_by_block_is_the_plain_inverse_cdf_and_never_a_zero_weight():
    gen = torch.Generator().manual_seed(3)
    weights = torch.rand(6, 1300, generator=gen, dtype=torch.float64) ** 4  # three blocks, the last one partial
    weights[weights < 0.05] = 0.0
    weights[5, 600:] = 0.0  # a row whose last blocks hold nothing
    for seed in range(300):
        drawn = _draw(weights, [row_generator(seed * 6 + i) for i in range(6)])
        u = torch.cat([torch.rand((1,), generator=row_generator(seed * 6 + i), dtype=torch.float64) for i in range(6)])
        cumulative = torch.cumsum(weights, dim=1)
        plain = torch.searchsorted(cumulative, (u * cumulative[:, -1]).unsqueeze(1), right=True).squeeze(1)
        assert drawn.tolist() == plain.tolist()
        assert bool((weights.gather(1, drawn.unsqueeze(1)) > 0).all())
    # A target that rounds to the very end of the mass still lands on a token that holds some.
    tail = torch.zeros(1, 1024, dtype=torch.float64)
    tail[0, 3] = 1.0
    assert _draw(tail, [row_generator(1)]).item() == 3
