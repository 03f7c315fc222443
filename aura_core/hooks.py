"""The one place that unwraps module outputs and serialises access to a shared model.

>>> import torch
>>> unwrap_output((torch.ones(2), "cache")).shape
torch.Size([2])
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["exclusive", "rewrap_output", "unwrap_output"]

_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def unwrap_output(output: object) -> torch.Tensor:
    """The hidden-state tensor of a module's output, whether a tensor or a tuple led by one."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find a tensor in a module output of type {type(output).__name__}")


def rewrap_output(output: object, tensor: torch.Tensor) -> object:
    """``output`` with its hidden-state tensor replaced by ``tensor``, in the same shape of container."""
    if isinstance(output, torch.Tensor):
        return tensor
    return type(output)((tensor, *output[1:]))


def _lock_for(model: nn.Module) -> threading.RLock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


@contextmanager
def exclusive(model: nn.Module) -> Iterator[nn.Module]:
    """Hold the model's own re-entrant lock: one intervention scope or forward run at a time.

    A model shared by many sessions of a server is only ever changed inside this scope, and
    every forward pass that must see the plain model runs inside it too.
    """
    lock = _lock_for(model)
    with lock:
        yield model
