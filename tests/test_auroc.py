import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from aura_core.errors import DataError
from aura_core.method.auroc import auroc


def _reference(scores: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    return np.array([roc_auc_score(labels.numpy(), scores[:, i].numpy()) for i in range(scores.shape[1])])


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_sklearn_on_random_data(seed):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(301, 257, generator=gen)
    labels = torch.randint(0, 2, (301,), generator=gen)
    assert np.abs(auroc(scores, labels).numpy() - _reference(scores, labels)).max() <= 1e-9


def test_matches_sklearn_on_heavily_tied_data():
    gen = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 3, (500, 200), generator=gen).float()
    scores[:, :10] = 1.0  # constant columns: every pair tied
    labels = (torch.rand(500, generator=gen) < 0.3).long()
    result = auroc(scores, labels)
    assert np.abs(result.numpy() - _reference(scores, labels)).max() <= 1e-9
    assert torch.all(result[:10] == 0.5)


def test_chunking_and_dtype_do_not_change_the_result():
    gen = torch.Generator().manual_seed(4)
    scores = torch.randn(64, 50, generator=gen)
    labels = torch.arange(64) % 2
    whole = auroc(scores, labels)
    assert torch.equal(whole, auroc(scores, labels, chunk_units=7))
    assert torch.allclose(whole, auroc(scores.double(), labels), atol=1e-12)


def test_planted_separating_unit_gets_one_and_reversed_gets_zero():
    labels = torch.tensor([0, 1] * 20)
    scores = torch.randn(40, 3)
    scores[:, 0] = labels * 5.0 + torch.rand(40)
    scores[:, 1] = -scores[:, 0]
    result = auroc(scores, labels)
    assert result[0] == 1.0 and result[1] == 0.0


def test_one_class_and_misaligned_inputs_raise():
    with pytest.raises(DataError, match="both classes"):
        auroc(torch.randn(5, 2), torch.ones(5, dtype=torch.long))
    with pytest.raises(DataError, match="line up"):
        auroc(torch.randn(5, 2), torch.ones(4, dtype=torch.long))


def test_cpu_fast_path_equals_the_torch_path_used_on_gpus():
    gen = torch.Generator().manual_seed(5)
    scores = torch.randn(300, 120, generator=gen)
    scores[:, :30] = torch.randint(-2, 3, (300, 30), generator=gen).float()  # ties across zero and signs
    scores[:5, 30] = -0.0
    labels = torch.randint(0, 2, (300,), generator=gen)
    from aura_core.method.auroc import auroc_reference_torch

    assert torch.allclose(auroc(scores, labels), auroc_reference_torch(scores, labels), atol=1e-12)


def _pairwise(scores: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """The Mann-Whitney definition pair by pair; unlike sklearn it accepts infinite scores."""
    values = scores.double().numpy()
    pos, neg = values[labels.numpy() == 1], values[labels.numpy() == 0]
    above = (pos[:, None, :] > neg[None, :, :]).sum(axis=(0, 1))
    tied = (pos[:, None, :] == neg[None, :, :]).sum(axis=(0, 1))
    return (above + 0.5 * tied) / (len(pos) * len(neg))


def test_signed_zeros_infinities_denormals_and_ties_below_zero_are_exact():
    gen = torch.Generator().manual_seed(6)
    special = torch.tensor([0.0, -0.0, 1e-45, -1e-45, float("inf"), float("-inf"), -3.0, -3.0, 2.0, 2.0])
    scores = special[torch.randint(0, len(special), (150, 40), generator=gen)]
    labels = torch.randint(0, 2, (150,), generator=gen)
    expected = _pairwise(scores, labels)
    assert np.abs(auroc(scores, labels).numpy() - expected).max() == 0.0
    assert np.abs(auroc(scores, labels, force_torch=True).numpy() - expected).max() == 0.0


def test_scores_float32_cannot_hold_are_still_exact():
    labels = torch.tensor([0, 1] * 30)
    scores = torch.full((60, 2), 1.0, dtype=torch.float64)
    scores[1::2, 0] = 1.0 + 2.0**-40  # positives one float64 step above: float32 would tie them
    scores[:, 1] = torch.arange(60, dtype=torch.float64) * 2.0**-40
    result = auroc(scores, labels)
    assert result[0] == 1.0 and result.tolist() == _pairwise(scores, labels).tolist()
    as_int = torch.arange(60) * (2**25) + 1  # integers above 2**24 that float32 would round together
    assert auroc(as_int, labels).tolist() == _pairwise(as_int[:, None].double(), labels).tolist()


def test_exact_when_denormals_are_flushed_to_zero():
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    try:
        gen = torch.Generator().manual_seed(7)
        special = torch.tensor([0.0, -0.0, 1e-45, 2e-45, -1e-45, -2e-45, 1.0, -1.0])  # denormals tied and not
        scores = special[torch.randint(0, len(special), (300, 40), generator=gen)]
        labels = torch.randint(0, 2, (300,), generator=gen)
        result = auroc(scores, labels)
    finally:
        torch.set_flush_denormal(False)
    assert np.abs(result.numpy() - _pairwise(scores, labels)).max() == 0.0
