"""NaN and infinity are refused by every settings value: NaN passes every ``<=`` check, so each float is checked."""

from __future__ import annotations

import math
from dataclasses import fields

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aura_core.errors import AuraError
from aura_core.evaluation.protocol import EvalConfig
from aura_core.method.intervention import Intervention
from aura_core.runtime.sampling import SamplingSettings

AUROC = {"m": torch.tensor([0.4, 0.8])}
BUILDERS = {
    "SamplingSettings": (SamplingSettings, {}),
    "EvalConfig": (EvalConfig, {}),
    "Intervention": (Intervention, {"auroc": AUROC}),
}
FLOAT_FIELDS = [
    (name, spec.name) for name, (cls, _) in BUILDERS.items() for spec in fields(cls) if spec.type in ("float", "float | None")
]


def test_every_settings_class_has_float_fields_to_check() -> None:
    assert {name for name, _ in FLOAT_FIELDS} == set(BUILDERS)


@settings(max_examples=60, deadline=None)
@given(
    target=st.sampled_from(FLOAT_FIELDS),
    bad=st.one_of(st.just(math.nan), st.just(math.inf), st.just(-math.inf), st.floats(allow_nan=True).filter(math.isnan)),
)
def test_nan_and_infinity_are_refused_in_every_float_setting(target: tuple[str, str], bad: float) -> None:
    name, field_name = target
    cls, required = BUILDERS[name]
    with pytest.raises(AuraError, match=field_name.replace("_", ".")):
        cls(**required, **{field_name: bad})


def test_the_command_line_refuses_a_nan_temperature_in_one_line(capsys) -> None:
    from aura_core.cli import main

    assert main(["generate", "--model", "tiny-gpt2", "--compare", "--prompt", "You", "--temperature", "nan"]) == 2
    err = capsys.readouterr().err.strip()
    assert "temperature must be a finite number" in err and "\n" not in err
