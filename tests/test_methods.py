"""The method registry: every method's α is a factor in [0, 1], and AurA beyond chance keeps chance out."""

import pytest
import torch

from aura_core.errors import InterventionError
from aura_core.method.auroc import auroc
from aura_core.method.registry import METHODS, AlphaInputs, null_band


# Methods that read fitted statistics (τ, transport sums) have their own tests; this one is for AUROC rules alone.
@pytest.mark.parametrize("name", [n for n, m in METHODS.items() if not m.needs])
def test_every_method_gives_a_factor_in_zero_one_per_unit_and_leaves_chance_and_below_alone(name):
    values = {"a": torch.tensor([0.2, 0.5, 0.55, 0.9]), "b": torch.tensor([0.45, 0.99])}
    alphas = METHODS[name].alphas(AlphaInputs(values, k=2, damp_alpha=0.3, n_per_label=(1000, 1000)))
    assert alphas.keys() == values.keys()
    for module, alpha in alphas.items():
        assert alpha.shape == values[module].shape
        assert bool(((alpha >= 0) & (alpha <= 1)).all())
        assert bool((alpha[values[module] <= 0.5] == 1).all())  # k = 2 is below the units above chance


def test_aura_beyond_chance_leaves_every_signal_free_unit_alone_and_dampens_a_real_expert():
    generator = torch.Generator().manual_seed(0)
    n, units = 200, 4000
    labels = torch.cat([torch.zeros(n), torch.ones(n)]).bool()
    noise = torch.randn(2 * n, units, generator=generator)
    chance = auroc(noise, labels)
    assert float((chance > 0.5).float().mean()) == pytest.approx(0.5, abs=0.05)  # AurA would touch about half of them
    band = null_band(n, n, units + 1)
    alphas = METHODS["aura-null"].alphas(AlphaInputs({"m": torch.cat([chance, torch.tensor([0.9])])}, n_per_label=(n, n)))
    assert bool((alphas["m"][:-1] == 1).all())
    assert float(alphas["m"][-1]) == pytest.approx(1 - 2 * (0.9 - 0.5 - band), abs=1e-6)
    assert float(METHODS["aura"].alphas(AlphaInputs({"m": chance}))["m"].lt(1).float().mean()) > 0.4


def test_aura_beyond_chance_needs_the_class_sizes():
    with pytest.raises(InterventionError, match="texts per label"):
        METHODS["aura-null"].alphas(AlphaInputs({"m": torch.tensor([0.9])}))
