"""Matrix products on CPU with the weight laid out once for oneDNN, not on every call.

``F.linear`` in bfloat16 on CPU hands the weight to oneDNN, which reorders it into its own
blocked layout on every call; for the small products of a decode step that reorder costs more
than the product. :func:`pack_linears` keeps a reordered copy per ``nn.Linear`` and computes
with it; its result equals ``F.linear``'s bit for bit. In float32, ``F.linear`` goes to MKL,
whose time for the unembedding doubles from 2 to 4 rows (2.4 ms to 5.0 ms for SmolLM2's
49152 × 576 on 2 cores) where oneDNN's packed product stays at 2.5 to 2.7 ms: a side-by-side
comparison of 2 + 2 rows then costs little more than one side. :func:`pack_output_layer` packs
that one product.

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
from typing import Any

import torch
from torch import nn

__all__ = ["can_pack", "pack_linears", "pack_output_layer", "packed_forward"]

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
    weight = module.weight
    hidden = hidden.to(weight.dtype)
    key = (weight.data_ptr(), weight._version)
    ops: Any = torch.ops.mkldnn
    cached = _PACKED.get(module)
    if cached is None or cached[0] != key:
        cached = _PACKED[module] = (key, ops._reorder_linear_weight(weight.detach()))
    bias = module.bias.detach() if module.bias is not None else None
    return ops._linear_pointwise(hidden, cached[1], bias, "none", [], "")  # type: ignore[no-any-return]


def pack_linears(model: nn.Module) -> int:
    """Compute every bfloat16 ``nn.Linear`` of a CPU model from a packed weight; returns how many.

    Does nothing (returns 0) where :func:`can_pack` is false or the model is not on the CPU.
    """
    if not can_pack():
        return 0
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.weight.dtype == torch.bfloat16 and module.weight.device.type == "cpu":
            _pack(module)
            count += 1
    return count


def pack_output_layer(model: nn.Module) -> bool:
    """Compute a float32 CPU model's unembedding from a packed weight; whether it did.

    >>> from aura_core.tiny import load_tiny
    >>> model = load_tiny("tiny-llama").model
    >>> pack_output_layer(model) == can_pack(torch.float32)
    True
    """
    find_output: Any = getattr(model, "get_output_embeddings", None)
    output = find_output() if callable(find_output) else None
    if not isinstance(output, nn.Linear) or output.weight.dtype != torch.float32 or output.weight.device.type != "cpu":
        return False
    if not can_pack(torch.float32):
        return False
    _pack(output)
    return True


def _pack(module: nn.Linear) -> None:
    module.forward = types.MethodType(packed_forward, module)  # type: ignore[method-assign]
