"""Matrix products on CPU with the weight laid out once for oneDNN, not on every call.

``F.linear`` in bfloat16 on CPU hands the weight to oneDNN, which reorders it into its own
blocked layout on every call; for the small products of a decode step that reorder costs more
than the product. :func:`pack_linears` keeps a reordered copy per ``nn.Linear`` and computes
with it; in bfloat16 its result equals ``F.linear``'s bit for bit.

In float32, ``F.linear`` goes to MKL, which is quickest up to 3 rows and then changes kernel:
a decode step of SmolLM2 on 2 cores takes 31.4 ms for 2 rows and 46.6 ms for 4, where the
packed products take 41.5 ms for 4 rows, and 58.7 ms instead of 61.8 for 16 (the README's
figures). So a float32 product of up to
:data:`MKL_ROWS` rows still goes to ``F.linear``, and a larger one to the packed weight; a
side-by-side comparison of 2 + 2 rows then costs little more than one side. The packed copy
costs as much memory as the weights it packs.

The copy is rebuilt whenever the weight changes (folding writes into it), and the module keeps
its own weight, hooks and name, so units, folding and export see no difference.

>>> from aura_core.tiny import load_tiny
>>> model = load_tiny("tiny-llama").model.to(torch.bfloat16)
>>> packed = pack_linears(model)
>>> packed == 0 or packed == sum(isinstance(m, torch.nn.Linear) for m in model.modules())
True
"""

from __future__ import annotations

import types
import weakref
from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MKL_ROWS", "can_pack", "pack_linears", "packed_forward"]

# Rows up to which MKL's own float32 product beats the packed one (see the module docstring).
MKL_ROWS = 3

# Each module's packed weight, with the weight's address and version it was packed from. Kept
# outside the module, so copying a model copies no packed weight (the copy packs its own).
_PACKED: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, int], torch.Tensor]] = weakref.WeakKeyDictionary()


def can_pack(dtype: torch.dtype = torch.bfloat16) -> bool:
    """Whether this torch build and CPU run oneDNN's prepacked products in ``dtype``.

    >>> isinstance(can_pack(), bool), isinstance(can_pack(torch.float32), bool)
    (True, True)
    """
    ops: Any = torch.ops.mkldnn
    try:
        return bool(
            torch.backends.mkldnn.is_available()
            and hasattr(ops, "_reorder_linear_weight")
            and hasattr(ops, "_linear_pointwise")
            and (dtype == torch.float32 or (dtype == torch.bfloat16 and ops._is_mkldnn_bf16_supported()))
        )
    except (AttributeError, RuntimeError):
        return False


def packed_forward(module: nn.Linear, hidden: torch.Tensor) -> torch.Tensor:
    """``F.linear(hidden, weight, bias)`` with the input cast to the weight's dtype, from the packed weight."""
    # Runs for every product of every step: each line here costs a decode step about 0.1 ms.
    weight = module.weight
    if hidden.dtype != weight.dtype:
        hidden = hidden.to(weight.dtype)
    if weight.dtype == torch.float32 and hidden.numel() <= MKL_ROWS * hidden.shape[-1]:
        return F.linear(hidden, weight, module.bias)
    bias = module.bias
    return _OPS.linear(hidden, _packed_weight(module), None if bias is None else bias.detach(), "none", [], "")  # type: ignore[no-any-return]


def _packed_weight(module: nn.Linear) -> torch.Tensor:
    """The module's packed weight, packed again if the weight has changed since."""
    weight = module.weight
    key = (weight.data_ptr(), weight._version)
    cached = _PACKED.get(module)
    if cached is None or cached[0] != key:
        cached = _PACKED[module] = (key, _OPS.reorder(weight.detach()))
    return cached[1]


class _Ops:
    """oneDNN's two operations, looked up on first use and then held: each lookup costs about a microsecond."""

    @cached_property
    def linear(self) -> Any:
        return torch.ops.mkldnn._linear_pointwise.default

    @cached_property
    def reorder(self) -> Any:
        return torch.ops.mkldnn._reorder_linear_weight.default


_OPS = _Ops()


def pack_linears(model: nn.Module) -> int:
    """Compute every bfloat16 and float32 ``nn.Linear`` of a CPU model from a packed weight; returns how many.

    Packs now, so the first large batch does not pay for it. Leaves a product alone where
    :func:`can_pack` is false for its dtype or it is not on the CPU.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.weight.device.type == "cpu" and can_pack(module.weight.dtype):
            module.forward = types.MethodType(packed_forward, module)  # type: ignore[method-assign]
            _packed_weight(module)
            count += 1
    return count
