"""The reference decode: one row, no batching, no cache surgery; what the batched loop must equal.

Short enough to read at once. :class:`~aura_core.runtime.decoding.DecodeBatch` gives every row
the same tokens as this loop gives it alone, greedy or sampled (tests hold the two together).

>>> from aura_core.model.tiny import load_tiny
>>> from aura_core.runtime.sampling import SamplingSettings
>>> model = load_tiny("tiny-llama").model
>>> len(reference_decode(model, [72, 105], SamplingSettings(max_new_tokens=3, do_sample=False)))
3
"""

from __future__ import annotations

import torch
from torch import nn

from aura_core.method.intervention import Intervention
from aura_core.runtime.plans import intervened
from aura_core.runtime.sampling import SamplingSettings, next_tokens, row_generator

__all__ = ["reference_decode"]


def reference_decode(
    model: nn.Module,
    prompt_ids: list[int],
    settings: SamplingSettings,
    *,
    seed: int = 0,
    intervention: Intervention | None = None,
    stops: set[int] | None = None,
) -> list[int]:
    """The tokens ``model`` writes after ``prompt_ids``: a forward pass per token, the cache grown by the model."""
    device = next(model.parameters()).device
    generator = row_generator(seed, device) if settings.do_sample else None
    ids = torch.tensor([prompt_ids], device=device)
    tokens: list[int] = []
    cache = None
    with intervened(model, intervention), torch.inference_mode():
        while len(tokens) < settings.max_new_tokens:
            positions = torch.arange(len(prompt_ids) + len(tokens) - ids.shape[1], len(prompt_ids) + len(tokens), device=device)
            out = model(input_ids=ids, position_ids=positions[None], past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
            history = [prompt_ids + tokens] if settings.repetition_penalty != 1.0 else [[]]
            token = int(next_tokens(out.logits[:, -1], [settings], [generator], history)[0])
            tokens.append(token)
            if stops and token in stops:
                break
            ids = torch.tensor([[token]], device=device)
    return tokens
