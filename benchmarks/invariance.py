"""What batch invariance costs: decode steps with each row computed as if alone, against the fused kernels.

``pinned`` is the model as it loads: attention per group of rows on torch's math kernel, every
product on the packed kernel (one row computed as two). ``free`` is what it replaced: fused
``sdpa`` attention over the padded batch, and MKL's ``F.linear`` for products of up to 3 rows.
Both paths decode the same rows (a side-by-side pair per session, prompts of different lengths)
on the same model, interleaved; ``cost_<rows>`` is pinned time over free time.

>>> result = bench_invariance("tiny-llama", rows=(2,), new_tokens=4, repeats=1)   # doctest: +SKIP
>>> result["cost_2"] > 0                                                          # doctest: +SKIP
True
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.settings import DEFAULT_MODEL, Settings
from benchmarks.timing import interleaved, timing_fields

__all__ = ["bench_invariance", "run"]

_FUSED_ROWS = 3  # MKL's own float32 product was the quicker one up to this many rows


def _free_forward(module: nn.Linear, hidden: torch.Tensor) -> torch.Tensor:
    """The former product: MKL for a few rows, the packed weight beyond."""
    from aura_core.model.packed_linear import packed_forward

    if module.weight.dtype == torch.float32 and hidden.numel() <= _FUSED_ROWS * hidden.shape[-1]:
        return F.linear(hidden.to(module.weight.dtype), module.weight, module.bias)
    return packed_forward(module, hidden)


@contextmanager
def _free(model: nn.Module) -> Iterator[None]:
    """The model with fused attention and MKL's few-row products, restored on exit."""
    from aura_core.model.packed_linear import packed_forward
    from aura_core.model.row_attention import ROW_ATTENTION

    swapped = [m for m in model.modules() if getattr(m.forward, "__func__", None) is packed_forward]
    hf: Any = model
    for module in swapped:
        module.forward = types.MethodType(_free_forward, module)
    hf.set_attn_implementation("sdpa")
    try:
        yield
    finally:
        hf.set_attn_implementation(ROW_ATTENTION)
        for module in swapped:
            module.forward = types.MethodType(packed_forward, module)


def bench_invariance(
    model_name: str = DEFAULT_MODEL, rows: tuple[int, ...] = (1, 2, 4, 16), new_tokens: int = 32, repeats: int = 5
) -> dict[str, object]:
    """Pinned against free decoding, for each batch size, interleaved round after round."""
    from aura_core.base.batching import encode
    from aura_core.base.data import load_prompts
    from aura_core.model.loading import load_model
    from aura_core.runtime.decoding import DecodeRow, decode_all
    from aura_core.runtime.sampling import SamplingSettings

    loaded = load_model(model_name, device="cpu")
    model, tok = loaded.model, loaded.tokenizer
    prompts = [p.text for p in load_prompts(n=max(rows), seed=0)]
    settings = SamplingSettings(max_new_tokens=new_tokens, do_sample=False)

    def decode(count: int, pinned: bool) -> Callable[[], list[list[int]]]:
        def once() -> list[list[int]]:
            batch = [DecodeRow(encode(tok, [prompts[i % len(prompts)]])[0], settings) for i in range(count)]
            if pinned:
                decode_all(model, batch, max_rows=count, stops=set())
            else:
                with _free(model):
                    decode_all(model, batch, max_rows=count, stops=set())
            return [row.tokens for row in batch]

        return once

    paths = {f"{kind}_{count}": decode(count, kind == "pinned") for count in rows for kind in ("pinned", "free")}
    times = interleaved(paths, repeats=repeats)
    result: dict[str, object] = {"name": "invariance", "model": model_name, "new_tokens": new_tokens, **timing_fields(times)}
    for count in rows:
        pinned, free = times[f"pinned_{count}"], times[f"free_{count}"]
        result[f"step_ms_pinned_{count}"] = round(1000 * pinned.median / new_tokens, 2)
        result[f"step_ms_free_{count}"] = round(1000 * free.median / new_tokens, 2)
        result[f"cost_{count}"] = round(pinned.median / free.median, 3)
        same, other = cast(list[list[int]], pinned.last), cast(list[list[int]], free.last)
        greedy = [a == b for a, b in zip(same, other, strict=True)]
        result[f"greedy_same_{count}"] = f"{sum(greedy)}/{len(greedy)}"
    result["goal"] = "cost_16 <= 1.15"
    return result


def run(settings: Settings) -> dict[str, object]:
    return bench_invariance(settings.model, repeats=settings.repeats_or(5))
