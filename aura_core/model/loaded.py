"""A loaded model and its tokenizer: the value every part of the project passes around.

Kept apart from the loader so that anything (the tiny test models, the app) can build one
without importing the loading machinery.

>>> from aura_core.model.tiny import load_tiny
>>> load_tiny("tiny-gpt2").n_parameters > 0
True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from aura_core.base.batching import Tokenizer

__all__ = ["LoadedModel"]


@dataclass
class LoadedModel:
    """A causal LM in eval mode and its tokenizer (which has a pad token)."""

    model: nn.Module
    tokenizer: Tokenizer
    name: str
    source: str
    device: torch.device
    load_seconds: float = 0.0
    bulk: nn.Module | None = None

    @property
    def collector(self) -> nn.Module:
        """The copy that long forward passes over many texts use (collection): ``bulk`` if there is one.

        On a CPU that computes bfloat16 natively, ``dtype="auto"`` keeps generation in float32,
        where a completion never depends on which other rows share its batch, and gives
        collection a bfloat16 copy, which is more than twice as fast.
        """
        return self.bulk if self.bulk is not None else self.model

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def memory_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())
