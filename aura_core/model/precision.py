"""Computing in bfloat16 without losing what AurA measures: which parts stay float32, and why.

>>> from aura_core.model.tiny import load_tiny
>>> tiny = load_tiny("tiny-llama")
>>> precision_of(tiny.model).label
'float32'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from aura_core.base.batching import Tokenizer
from aura_core.model.loaded import LoadedModel
from aura_core.model.packed_linear import pack_linears, packed_forward, unpack_linears

__all__ = ["MASSIVE_OUTPUT", "Precision", "calibration_batch", "compute_in_bf16", "describe_precision", "precision_of"]


MASSIVE_OUTPUT = 256.0
"""A block whose matrix products reach this size writes or erases a massive activation: it stays float32.

From 256 on, neighbouring bfloat16 numbers are 2 or more apart.
"""

# Short texts of different kinds (prose, a line break, wiki markup), padded into one batch.
_CALIBRATION = (
    "The quick brown fox jumps over the lazy dog.",
    "It was a bright cold day in April,\nand the clocks were striking thirteen!",
    "== Notes ==\n* Smith, J. (1990). ''A history''. p. 12",
)
_PRECISION_ATTR = "_aura_precision"


@dataclass(frozen=True)
class Precision:
    """How a model computes: the dtype of its matrix products and what runs in float32 beside them.

    >>> Precision(torch.bfloat16, True, ("model.layers.2.mlp",), 3, 211).label
    'bfloat16 (float32 residual stream, norms and 3 of 211 matmuls)'
    >>> Precision(torch.float32).label
    'float32'
    """

    dtype: torch.dtype
    float32_residual: bool = False
    float32_blocks: tuple[str, ...] = ()
    float32_matmuls: int = 0
    matmuls: int = 0

    @property
    def name(self) -> str:
        """The dtype's short name (``bfloat16``)."""
        return str(self.dtype).removeprefix("torch.")

    @property
    def float32_parts(self) -> str | None:
        """What runs in float32 beside a lower dtype (None: nothing does)."""
        if not self.float32_residual:
            return None
        return f"residual stream, norms and {self.float32_matmuls} of {self.matmuls} matmuls"

    @property
    def label(self) -> str:
        """The dtype, and what runs in float32 beside it."""
        parts = self.float32_parts
        return f"{self.name} (float32 {parts})" if parts else self.name


def describe_precision(loaded: LoadedModel) -> str:
    """``float32``, or ``float32 · collection in bfloat16`` when collection runs on a bfloat16 copy.

    >>> from aura_core.model.tiny import load_tiny
    >>> describe_precision(load_tiny("tiny-gpt2"))
    'float32'
    """
    generation = precision_of(loaded.model).name
    if loaded.bulk is None:
        return generation
    return f"{generation} · collection in {precision_of(loaded.bulk).name}"


def precision_of(model: nn.Module) -> Precision:
    """How ``model`` computes: what :func:`compute_in_bf16` set up, else the dtype of its matrix weights.

    >>> from aura_core.model.tiny import load_tiny
    >>> precision_of(load_tiny("tiny-llama").model).label
    'float32'
    """
    recorded = model.__dict__.get(_PRECISION_ATTR)
    if isinstance(recorded, Precision):
        return recorded
    weights = [module.weight for module in _matmul_modules(model).values() if isinstance(module.weight, torch.Tensor)]
    weights = weights or list(model.parameters())
    return Precision(weights[0].dtype if weights else torch.float32)


def _matmul_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The modules that multiply by a weight matrix: ``nn.Linear`` and GPT-2's ``Conv1D``."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"
    }


def _input_in_weight_dtype(module: nn.Module, args: tuple[object, ...]) -> tuple[object, ...] | None:
    first = args[0] if args else None
    weight = module.weight
    if isinstance(first, torch.Tensor) and first.is_floating_point() and isinstance(weight, torch.Tensor):
        if first.dtype != weight.dtype:
            return (first.to(weight.dtype), *args[1:])
    return None


def _output_in(dtype: torch.dtype) -> Callable[[nn.Module, object, object], object | None]:
    def cast(value: object) -> object:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.to(dtype)
        return value

    def hook(module: nn.Module, args: object, output: object) -> object | None:
        if isinstance(output, tuple):
            return tuple(cast(value) for value in output)
        return cast(output)

    return hook


def _peaks(model: nn.Module, batch: dict[str, torch.Tensor], modules: dict[str, nn.Module]) -> dict[str, float]:
    """The largest absolute output of each of ``modules`` over the real tokens of ``batch``."""
    peaks: dict[str, float] = {}
    real = batch["attention_mask"].bool()

    def recorder(name: str) -> Callable[[nn.Module, object, object], None]:
        def record(module: nn.Module, args: object, output: object) -> None:
            if isinstance(output, torch.Tensor):
                values = output.detach().abs()
                values = values[real] if values.shape[:2] == real.shape else values
                peaks[name] = max(peaks.get(name, 0.0), float(values.amax()))

        return record

    handles = [module.register_forward_hook(recorder(name)) for name, module in modules.items()]
    try:
        with torch.inference_mode():
            model(**batch, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return peaks


def calibration_batch(tokenizer: Tokenizer, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """A few short texts, padded into one batch, for :func:`compute_in_bf16` to measure the model on."""
    encoded = tokenizer(list(_CALIBRATION), return_tensors="pt", padding=True)
    return {key: encoded[key].to(device) for key in ("input_ids", "attention_mask")}


def compute_in_bf16(model: nn.Module, batch: dict[str, torch.Tensor], *, massive: float = MASSIVE_OUTPUT) -> Precision:
    """Make ``model`` compute in bfloat16 while keeping float32 where rounding would erase what AurA measures.

    Matrix products take bfloat16 weights and inputs (that is the speed); the residual stream
    and the norms stay float32, and so does every block (a module's parent, such as
    ``model.layers.28.mlp``) whose matrix products reach ``massive`` on ``batch``. Parameters
    change dtype in place and hooks do the casts, so names, shapes and folding stay as they
    were. An architecture whose forward pass this setup breaks is left in plain bfloat16.
    Returns the setup, which :func:`precision_of` reports.

    >>> from aura_core.model.tiny import load_tiny
    >>> tiny = load_tiny("tiny-llama")
    >>> compute_in_bf16(tiny.model, calibration_batch(tiny.tokenizer)).label
    'bfloat16 (float32 residual stream, norms and 0 of 15 matmuls)'
    """
    # Why: SmolLM2 carries a massive activation (about 24,000, from layer 11 to layer 28) in its
    # residual stream. There bfloat16's steps are 128 wide, so a bfloat16 residual stream loses
    # everything smaller; and the units of the blocks that write and erase it are near-constant
    # maxima whose differences from text to text are below one bfloat16 step, so they tie.
    unpack_linears(model)  # packed in float32 (a copy of the generation model): packed again below where bfloat16 can be
    matmuls = _matmul_modules(model)
    low = {id(module) for module in matmuls.values()}
    low |= {id(module) for module in model.modules() if isinstance(module, nn.Embedding)}
    handles = []
    try:
        with torch.no_grad():
            for module in model.modules():
                for param in module.parameters(recurse=False):
                    param.data = param.data.to(torch.bfloat16 if id(module) in low else torch.float32)
        handles.append(model.get_input_embeddings().register_forward_hook(_output_in(torch.float32)))  # type: ignore[operator]
        casts = {name: module.register_forward_pre_hook(_input_in_weight_dtype) for name, module in matmuls.items()}
        handles += list(casts.values())
        # Rotary tables follow the float32 stream; the query and key they turn must stay bfloat16 like the value.
        handles += [
            module.register_forward_hook(_output_in(torch.bfloat16))
            for module in model.modules()
            if type(module).__name__.endswith("RotaryEmbedding")
        ]
        peaks = _peaks(model, batch, matmuls)
        loud = {name.rsplit(".", 1)[0] for name, peak in peaks.items() if peak >= massive}
        blocks = [block for block in dict.fromkeys(name.rsplit(".", 1)[0] for name in matmuls) if block in loud]
        upcast = [name for name in matmuls if name.rsplit(".", 1)[0] in blocks]
        for name in upcast:
            matmuls[name].float()
        if pack_linears(model):
            for name, module in matmuls.items():
                if getattr(module.forward, "__func__", None) is packed_forward:
                    casts[name].remove()  # the packed product casts its own input
        _peaks(model, batch, {})  # the final setup runs
    except (RuntimeError, TypeError, ValueError):  # a product outside nn.Linear/Conv1D met the float32 stream
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for param in model.parameters():
                param.data = param.data.to(torch.bfloat16)
        precision = Precision(torch.bfloat16)
    else:
        precision = Precision(torch.bfloat16, True, tuple(blocks), len(upcast), len(matmuls))
    model.__dict__[_PRECISION_ATTR] = precision
    return precision
