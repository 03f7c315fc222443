"""One exception family for every input a person can get wrong.

>>> try:
...     raise DataError("data.csv: no 'label' column")
... except AuraError as err:
...     print(err)
data.csv: no 'label' column
"""

from __future__ import annotations

__all__ = ["AuraError", "DataError", "InterventionError", "ModelLoadError", "UnitPatternError"]


class AuraError(Exception):
    """Bad input or an unavailable resource: the message says what failed and what to do."""


class DataError(AuraError):
    """A concept dataset or prompt file that cannot be used as given."""


class ModelLoadError(AuraError):
    """A model that cannot be found, read or loaded here."""


class UnitPatternError(AuraError):
    """A unit pattern that matches no module of the model."""


class InterventionError(AuraError):
    """An intervention file or setting that does not fit the model."""
