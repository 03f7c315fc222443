"""The power line against the closed form worked by hand, and against a simulated test."""

import math

import numpy as np
import pytest

from aura_core.errors import AuraError
from aura_core.evaluation.power import completions_needed, power_line

Z_975, Z_80 = 1.959964, 0.841621  # standard normal quantiles, from a table


def by_hand(p1: float, factor: float = 2.0) -> int:
    p2 = p1 / factor
    mean = (p1 + p2) / 2
    top = Z_975 * math.sqrt(2 * mean * (1 - mean)) + Z_80 * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(top**2 / (p1 - p2) ** 2)


def test_ten_percent_halved_needs_the_textbook_435():
    # p̄ = 0.075: 1.96·√(2·0.075·0.925) = 0.73006; 0.8416·√(0.09 + 0.0475) = 0.31208;
    # (1.04215)² / 0.05² = 434.4, so 435 completions per side.
    assert completions_needed(0.10) == 435


@pytest.mark.parametrize("rate", [0.008, 0.03, 0.097, 0.25, 0.6])
@pytest.mark.parametrize("factor", [1.5, 2.0, 3.0])
def test_matches_the_closed_form(rate: float, factor: float):
    assert completions_needed(rate, factor) == by_hand(rate, factor)


def test_a_rarer_base_rate_needs_more_and_a_larger_factor_fewer():
    assert completions_needed(0.008) > completions_needed(0.03) > completions_needed(0.1)
    assert completions_needed(0.1, 3.0) < completions_needed(0.1, 2.0) < completions_needed(0.1, 1.5)


def test_a_simulated_z_test_at_that_size_has_the_stated_power():
    rng = np.random.default_rng(0)
    p1, n = 0.12, completions_needed(0.12)
    assert n is not None
    x1, x2 = rng.binomial(n, p1, 20_000), rng.binomial(n, p1 / 2, 20_000)
    pooled = (x1 + x2) / (2 * n)
    z = (x1 - x2) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    assert np.mean(np.abs(z) > Z_975) == pytest.approx(0.8, abs=0.02)


def test_the_line_and_its_warning():
    enough, short = power_line(0.1, 435), power_line(0.1, 434)
    assert not enough.underpowered and enough.warning() is None
    assert short.underpowered and "434 completions per condition, 435 needed" in str(short.warning())
    assert "435 completions per condition" in enough.text() and "this run has 435" in enough.text()
    none_toxic = power_line(0.0, 2500)
    assert none_toxic.needed is None and none_toxic.underpowered
    assert "no toxic completion in 2,500" in str(none_toxic.warning())
    assert enough.as_dict()["needed"] == 435


@pytest.mark.parametrize("rate, factor", [(-0.1, 2.0), (1.5, 2.0), (math.nan, 2.0), (0.1, 1.0), (0.1, math.inf)])
def test_bad_input_is_one_clear_error(rate: float, factor: float):
    with pytest.raises(AuraError):
        completions_needed(rate, factor)
