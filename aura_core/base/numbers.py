"""Checked numbers: every float a person sets must be finite, since NaN passes every ``<=`` check.

>>> from dataclasses import dataclass
>>> @dataclass
... class Knob:
...     level: float = 1.0
>>> check_finite(Knob(float("nan")))
Traceback (most recent call last):
...
aura_core.errors.AuraError: level must be a finite number, not nan
"""

from __future__ import annotations

import math
from dataclasses import fields, is_dataclass

from aura_core.errors import AuraError

__all__ = ["check_finite", "finite"]


def finite(name: str, value: object, error: type[AuraError] = AuraError) -> float:
    """``value`` as a float if it is a finite number; else ``error``, naming ``name``.

    >>> finite("temperature", 0.7)
    0.7
    """
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise error(f"{name} must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise error(f"{name} must be a finite number, not {value}")
    return number


def check_finite(settings: object, names: tuple[str, ...] | None = None, error: type[AuraError] = AuraError) -> None:
    """Check fields of a dataclass instance with :func:`finite`: ``names``, or every float field."""
    assert is_dataclass(settings)
    for name in names or tuple(spec.name for spec in fields(settings)):
        value = getattr(settings, name)
        if names is not None or isinstance(value, float):
            finite(name, value, error)
