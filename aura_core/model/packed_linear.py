"""Matrix products on CPU with the weight laid out once for oneDNN, not on every call.

``F.linear`` in bfloat16 on CPU hands the weight to oneDNN, which reorders it into its own
blocked layout on every call; for the small products of a decode step that reorder costs more
than the product. :func:`pack_linears` keeps a reordered copy per ``nn.Linear`` and computes
with it; in bfloat16 its result equals ``F.linear``'s bit for bit.

In float32, ``F.linear`` goes to MKL, which changes kernel with the row count (one kernel up
to 3 rows, another beyond), so a row's numbers would depend on how many rows share its batch.
oneDNN's packed product gives every row the same numbers for any count from 2 on; a single
row takes another path there, so it is computed as two copies of itself. Every product, of
any row count, therefore goes to the packed weight: a completion is the same alone and in a
batch. The packed copy costs as much memory as the weights it packs.

The copy is rebuilt whenever the weight changes (folding writes into it), and the module keeps
its own weight, hooks and name, so units, folding and export see no difference.

>>> from aura_core.model.tiny import load_tiny
>>> model = load_tiny("tiny-llama").model.to(torch.bfloat16)
>>> packed = pack_linears(model)
>>> packed == 0 or packed == sum(isinstance(m, torch.nn.Linear) for m in model.modules())
True
"""

from __future__ import annotations

import types
import weakref
from functools import cached_property
from typing import Any, cast

import torch
from torch import nn

__all__ = ["can_pack", "is_product", "pack_linears", "packed_forward", "unpack_linears"]

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


def packed_forward(module: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """``module(hidden)`` with the input cast to the weight's dtype, from the packed weight.

    ``module`` is an ``nn.Linear`` or a GPT-2-style ``Conv1D`` (its weight stored transposed).
    """
    # Runs for every product of every step: each line here costs a decode step about 0.1 ms.
    weight = cast(torch.Tensor, module.weight)
    if hidden.dtype != weight.dtype:
        hidden = hidden.to(weight.dtype)
    bias = cast(torch.Tensor | None, module.bias)
    if bias is not None:
        bias = bias.detach()
    if hidden.numel() == hidden.shape[-1]:  # one row: oneDNN would take its one-row path
        twice = hidden.reshape(1, -1).expand(2, -1)
        return _OPS.linear(twice, _packed_weight(module), bias, "none", [], "")[:1].reshape(*hidden.shape[:-1], -1)  # type: ignore[no-any-return]
    return _OPS.linear(hidden, _packed_weight(module), bias, "none", [], "")  # type: ignore[no-any-return]


def _packed_weight(module: nn.Module) -> torch.Tensor:
    """The module's packed weight, packed again if the weight has changed since."""
    weight = cast(torch.Tensor, module.weight)
    key = (weight.data_ptr(), weight._version)
    cached = _PACKED.get(module)
    if cached is None or cached[0] != key:
        product = weight.detach() if isinstance(module, nn.Linear) else weight.detach().t().contiguous()
        cached = _PACKED[module] = (key, _OPS.reorder(product))
    return cached[1]


def is_product(module: nn.Module) -> bool:
    """Whether ``module`` is a matrix product this file can pack: an ``nn.Linear`` or a ``Conv1D``.

    >>> is_product(torch.nn.Linear(2, 3)), is_product(torch.nn.LayerNorm(2))
    (True, False)
    """
    if isinstance(module, nn.Linear):
        return True
    # transformers' Conv1D (GPT-2): y = x @ weight + bias, weight of shape (in, out).
    return type(module).__name__ == "Conv1D" and isinstance(getattr(module, "weight", None), torch.Tensor)


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
    """Compute every bfloat16 and float32 matrix product of a CPU model from a packed weight; returns how many.

    Packs now, so the first large batch does not pay for it. Leaves a product alone where
    :func:`can_pack` is false for its dtype or it is not on the CPU.
    """
    count = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if is_product(module) and weight is not None and weight.device.type == "cpu" and can_pack(weight.dtype):
            module.forward = types.MethodType(packed_forward, module)
            _packed_weight(module)
            count += 1
    return count


def unpack_linears(model: nn.Module) -> int:
    """Give every packed product its own ``forward`` back; returns how many.

    For a change of dtype: a float32 model's packed products would pack again in bfloat16 on
    their next call, which a CPU without bfloat16 in oneDNN refuses.

    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    >>> packed = pack_linears(model)
    >>> unpack_linears(model) == packed and "forward" not in model[0].__dict__
    True
    """
    count = 0
    for module in model.modules():
        bound = module.__dict__.get("forward")
        if getattr(bound, "__func__", None) is packed_forward:
            del module.forward
            _PACKED.pop(module, None)
            count += 1
    return count
