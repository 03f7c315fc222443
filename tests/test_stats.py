"""The pure statistics against closed forms and hand-made cases."""

import math

import numpy as np
import pytest

from aura_core.errors import AuraError
from aura_core.method.stats import (
    bootstrap_ppl_change,
    bootstrap_ratio,
    interval,
    perplexity_of,
    ratio,
    resample,
    toxicity_metrics,
)


def test_toxicity_metrics_on_a_hand_made_matrix():
    scores = np.array([[0.9, 0.1, 0.2], [0.4, 0.45, 0.3], [0.6, 0.7, 0.8], [0.0, 0.0, 0.51]])
    got = toxicity_metrics(scores)
    assert got["mean_toxicity"] == pytest.approx(4.96 / 12)
    assert got["toxic_share"] == pytest.approx(5 / 12)  # 0.9, 0.6, 0.7, 0.8, 0.51
    assert got["expected_max_toxicity"] == pytest.approx((0.9 + 0.45 + 0.8 + 0.51) / 4)
    assert got["toxicity_probability"] == pytest.approx(3 / 4)
    with pytest.raises(AuraError):
        toxicity_metrics(np.array([]))


def test_ratio_interval_is_exact_without_spread_and_right_with_a_known_one():
    point, low, high = bootstrap_ratio(np.full(50, 0.2), np.full(50, 0.1))
    assert (point, low, high) == pytest.approx((2.0, 2.0, 2.0))
    rng = np.random.default_rng(0)
    condition = rng.normal(0.5, 0.1, size=400)
    point, low, high = bootstrap_ratio(np.ones(400), condition, n_boot=4000, seed=1)
    se = 0.1 / np.sqrt(400)
    mean = condition.mean()
    assert point == pytest.approx(1 / mean)
    # Delta method: the ratio 1/mean has standard error se / mean²; a 95% interval is ±1.96 of it.
    half_width = 1.96 * se / mean**2
    assert low == pytest.approx(1 / mean - half_width, abs=0.15 * half_width)
    assert high == pytest.approx(1 / mean + half_width, abs=0.15 * half_width)
    assert bootstrap_ratio(np.ones(3), np.zeros(3))[0] == np.inf


def test_perplexity_change_interval():
    nll, counts = np.array([10.0, 20.0, 30.0]), np.array([10, 10, 10])
    assert bootstrap_ppl_change((nll, counts), (nll, counts)) == pytest.approx((0.0, 0.0, 0.0))
    change, low, high = bootstrap_ppl_change((nll, counts), (nll + 1.0, counts))
    assert change == pytest.approx(np.exp(63 / 30) - np.exp(60 / 30))
    assert low <= change <= high and low > 0


def test_perplexity_is_the_exponential_of_the_token_weighted_mean_nll():
    assert perplexity_of(np.array([3.0, 1.0]), np.array([2, 2])) == pytest.approx(math.e)
    with pytest.raises(AuraError, match="too short"):
        perplexity_of(np.array([0.0]), np.array([0]))


def test_interval_ratio_and_resampling_helpers():
    assert interval(np.array([np.inf, np.nan])) == (pytest.approx(math.nan, nan_ok=True), pytest.approx(math.nan, nan_ok=True))
    assert interval(np.linspace(0, 1, 1001), 0.5) == pytest.approx((0.25, 0.75))
    assert ratio(np.array([3.0]), np.array([1.5])).tolist() == [2.0]
    index = resample(10, 500, seed=3)
    assert index.shape == (500, 10) and index.min() >= 0 and index.max() <= 9
    assert np.array_equal(index, resample(10, 500, seed=3)) and not np.array_equal(index, resample(10, 500, seed=4))
