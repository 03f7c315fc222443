"""bfloat16 matrix products on CPU with the weight laid out once for oneDNN, not on every call.

``F.linear`` in bfloat16 on CPU hands the weight to oneDNN, which reorders it into its own
blocked layout on every call; for the small products of a decode step that reorder costs more
than the product. :func:`pack_linears` keeps a reordered copy per ``nn.Linear`` and computes
with it. The copy is rebuilt whenever the weight changes (folding writes into it), and the
module keeps its own weight, hooks and name, so units, folding and export see no difference.
The result equals ``F.linear``'s bit for bit, whatever the batch size: every row is computed
by the same kernel.

>>> from aura_core.tiny import load_tiny
>>> model = load_tiny("tiny-llama").model.to(torch.bfloat16)
>>> packed = pack_linears(model)
>>> packed == 0 or packed == sum(isinstance(m, torch.nn.Linear) for m in model.modules())
True
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn

__all__ = ["can_pack", "pack_linears", "packed_forward"]

_PACKED_ATTR = "_aura_packed"


def can_pack() -> bool:
    """Whether this torch build and CPU run oneDNN's prepacked bfloat16 products.

    >>> isinstance(can_pack(), bool)
    True
    """
    ops: Any = torch.ops.mkldnn
    try:
        return bool(
            torch.backends.mkldnn.is_available()
            and ops._is_mkldnn_bf16_supported()
            and hasattr(ops, "_reorder_linear_weight")
            and hasattr(ops, "_linear_pointwise")
        )
    except (AttributeError, RuntimeError):
        return False


def packed_forward(module: nn.Linear, hidden: torch.Tensor) -> torch.Tensor:
    """``F.linear(hidden, weight, bias)`` with the input cast to the weight's dtype, from the packed weight."""
    weight = module.weight
    hidden = hidden.to(weight.dtype)
    key = (weight.data_ptr(), weight._version)
    cached = module.__dict__.get(_PACKED_ATTR)
    if cached is None or cached[0] != key:
        ops: Any = torch.ops.mkldnn
        cached = (key, ops._reorder_linear_weight(weight.detach()))
        module.__dict__[_PACKED_ATTR] = cached
    ops_: Any = torch.ops.mkldnn
    bias = module.bias.detach() if module.bias is not None else None
    return ops_._linear_pointwise(hidden, cached[1], bias, "none", [], "")  # type: ignore[no-any-return]


def pack_linears(model: nn.Module) -> int:
    """Compute every bfloat16 ``nn.Linear`` of a CPU model from a packed weight; returns how many.

    Does nothing (returns 0) where :func:`can_pack` is false or the model is not on the CPU.
    """
    if not can_pack():
        return 0
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.weight.dtype == torch.bfloat16 and module.weight.device.type == "cpu":
            module.forward = types.MethodType(packed_forward, module)  # type: ignore[method-assign]
            count += 1
    return count
