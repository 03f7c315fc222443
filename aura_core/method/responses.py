"""Pooled unit responses as a value: per module a texts × units matrix, the labels, and their file.

>>> Responses.load("runs/responses.safetensors").n_units      # doctest: +SKIP
960
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from aura_core.base.files import CONTENT_KEY, atomic_path, content_hash, content_key, read_safetensors
from aura_core.errors import DataError

__all__ = ["Responses", "responses_cache_key"]

LABELS_KEY = "__labels__"


FORMAT_VERSION = 1


@dataclass
class Responses:
    """Pooled responses per module (texts × units, fp32), the labels, and what produced them."""

    per_module: dict[str, torch.Tensor]
    labels: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def units(self) -> list[str]:
        return list(self.per_module)

    @property
    def n_units(self) -> int:
        return sum(t.shape[1] for t in self.per_module.values())

    def save(self, path: str | Path) -> Path:
        """One safetensors file, one tensor per module, metadata as JSON in the header."""
        tensors = {name: t.contiguous() for name, t in self.per_module.items()}
        tensors[LABELS_KEY] = self.labels.to(torch.int64).contiguous()
        metadata = {"aura": json.dumps(self.meta), CONTENT_KEY: content_hash(tensors)}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Responses:
        """Read a file written by :meth:`save`; anything else raises :class:`DataError` saying what is wrong.

        The file must hold 0/1 labels (one per text) and, per module, a texts × units float
        matrix with no NaN; the metadata's ``units``, when there, lists every module once.

        >>> Responses.load("runs/responses.safetensors").n_units      # doctest: +SKIP
        960
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such responses file")
        try:
            tensors, stored, intact = read_safetensors(path)
        except Exception as err:  # safetensors raises its own error types for corrupt files
            raise DataError(f"{path}: not a readable responses file ({err})") from None
        header = stored.get("aura", "{}")
        hint = "; collect the responses again"
        if intact is False:
            raise DataError(f"{path}: its content changed after it was written (the hash in its header differs){hint}")
        try:
            meta = json.loads(header)
        except (json.JSONDecodeError, RecursionError):
            raise DataError(f"{path}: its metadata is not valid JSON{hint}") from None
        if not isinstance(meta, dict):
            raise DataError(f"{path}: its metadata is not a JSON object{hint}")
        if LABELS_KEY not in tensors:
            raise DataError(f"{path}: not a responses file (no labels)")
        labels = tensors.pop(LABELS_KEY)
        if labels.ndim != 1 or labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise DataError(
                f"{path}: labels must be one row of integers, not {labels.dtype} of shape {tuple(labels.shape)}{hint}"
            )
        if not bool(((labels == 0) | (labels == 1)).all()):
            raise DataError(f"{path}: labels must all be 0 or 1{hint}")
        order = meta.get("units", list(tensors))
        if not isinstance(order, list) or not all(isinstance(name, str) for name in order) or len(set(order)) != len(order):
            raise DataError(f"{path}: metadata 'units' must list module names, each once{hint}")
        if set(order) != set(tensors):
            odd = sorted(set(order) ^ set(tensors))[:3]
            raise DataError(f"{path}: the modules listed in its metadata and those stored differ ({', '.join(odd)}){hint}")
        if not order:
            raise DataError(f"{path}: holds no module responses{hint}")
        for name in order:
            values = tensors[name]
            if values.ndim != 2 or values.shape[0] != labels.shape[0] or values.shape[1] == 0:
                raise DataError(
                    f"{path}: module {name!r} has shape {tuple(values.shape)}, not texts × units "
                    f"with {labels.shape[0]} texts{hint}"
                )
            if values.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
                raise DataError(f"{path}: module {name!r} holds {values.dtype}, not floats{hint}")
            if bool(values.isnan().any()):
                raise DataError(f"{path}: module {name!r} holds NaN responses{hint}")
        return cls({name: tensors[name] for name in order}, labels, meta)


def responses_cache_key(fingerprint: str, data_hash: str, units: list[str], pooling: str, max_tokens: int) -> str:
    """Everything that changes the numbers, hashed; batch size and device do not."""
    return content_key([FORMAT_VERSION, fingerprint, data_hash, units, pooling, max_tokens], length=20)
