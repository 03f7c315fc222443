import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from aura_core.auroc import auroc
from aura_core.errors import DataError


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
    from aura_core.auroc import auroc_reference_torch

    assert torch.allclose(auroc(scores, labels), auroc_reference_torch(scores, labels), atol=1e-12)
