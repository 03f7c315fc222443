"""The project's own code type-checks: mypy, strict on aura_core, with the settings in pyproject.toml."""

import pytest


def test_mypy_finds_no_errors(typecheck):
    pytest.importorskip("mypy")
    status, output = typecheck
    assert status == 0, output
