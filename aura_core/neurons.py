"""Looking at one unit: what drives it token by token, and what its output writes into the vocabulary.

>>> acts = token_activations(model, tok, texts, "model.layers.5.mlp.gate_proj", 1343)   # doctest: +SKIP
>>> acts[0].tokens[:3], acts[0].values[:3]                                              # doctest: +SKIP
(['You', ' are', ' a'], [0.1, -0.3, 2.7])
>>> vocabulary_effect(model, tok, "model.layers.5.mlp.gate_proj", 1343).promoted[:3]    # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from aura_core.architecture import down_projection, final_norm_scale, output_embedding, unit_axis, unit_width, weight_of
from aura_core.batching import Tokenizer, pad_right, tokenize_texts
from aura_core.errors import UnitPatternError
from aura_core.hooks import CallPlan, call_plan
from aura_core.runner import INLINE, Runner

__all__ = ["TokenActivations", "VocabularyEffect", "output_direction", "token_activations", "vocabulary_effect"]


@dataclass(frozen=True)
class TokenActivations:
    """One text's tokens and the unit's output at each of them; ``peak`` is the argmax token."""

    text: str
    tokens: list[str]
    values: list[float]

    @property
    def peak(self) -> int:
        return max(range(len(self.values)), key=self.values.__getitem__)


@dataclass(frozen=True)
class VocabularyEffect:
    """Tokens whose logits the unit's output direction raises (promoted) and lowers (suppressed)."""

    promoted: list[tuple[str, float]]
    suppressed: list[tuple[str, float]]
    direction: str


def token_activations(
    model: nn.Module,
    tokenizer: Tokenizer,
    texts: list[str],
    module_name: str,
    unit: int,
    *,
    max_tokens: int = 64,
    runner: Runner = INLINE,
) -> list[TokenActivations]:
    """The unit's output at every token of each text (same tokenisation as collection)."""
    _module(model, module_name, unit)
    token_ids = tokenize_texts(tokenizer, texts, max_tokens)
    input_ids, attention = pad_right(token_ids, tokenizer.pad_token_id, next(model.parameters()).device)
    seen: dict[str, torch.Tensor] = {}

    def record(hidden: torch.Tensor) -> None:
        seen["out"] = hidden[..., unit].float().cpu()

    def forward() -> None:
        with call_plan(model, CallPlan(record={module_name: record})), torch.inference_mode():
            model(input_ids=input_ids, attention_mask=attention, use_cache=False)

    runner.run(forward, priority="interactive")
    results = []
    for row, ids in enumerate(token_ids):
        pieces = [tokenizer.decode([token]) for token in ids]
        results.append(TokenActivations(texts[row], pieces, seen["out"][row, : len(ids)].tolist()))
    return results


def _module(model: nn.Module, module_name: str, unit: int) -> nn.Module:
    modules = dict(model.named_modules())
    if module_name not in modules:
        raise UnitPatternError(f"no module {module_name!r} in this model")
    width = unit_width(modules[module_name])
    if not 0 <= unit < width:
        raise UnitPatternError(f"unit {unit} is out of range: {module_name} has {width} units")
    module: nn.Module = modules[module_name]
    return module


def output_direction(model: nn.Module, module_name: str, unit: int) -> tuple[torch.Tensor, str]:
    """The residual-stream vector one unit of output adds, and how it was found.

    A neuron (gate/up/c_fc...) writes through the down projection's column for it; a unit of
    the down projection itself is one axis of the residual stream.
    """
    module = _module(model, module_name, unit)
    hidden = output_embedding(model).shape[1]
    down = down_projection(model, module_name)
    if down is None:
        if unit_width(module) != hidden:
            raise UnitPatternError(f"cannot find where {module_name} writes into the residual stream")
        direction = torch.zeros(hidden)
        direction[unit] = 1.0
        return direction, f"residual axis {unit}"
    name, layer = down
    weight = weight_of(layer).detach().float().cpu()
    # The down projection's input axis holds one entry per neuron; a fused gate-and-up module
    # has two units per neuron (its first half gates, its second half is the up part).
    neurons = weight.shape[1 - unit_axis(layer)]
    column = weight.select(1 - unit_axis(layer), unit % neurons)
    return column, f"column {unit % neurons} of {name}"


def vocabulary_effect(model: nn.Module, tokenizer: Tokenizer, module_name: str, unit: int, k: int = 12) -> VocabularyEffect:
    """Project the unit's output direction through the final norm's scale and the unembedding."""
    direction, how = output_direction(model, module_name, unit)
    with torch.no_grad():
        unembed = output_embedding(model).detach().float().cpu()
        norm = final_norm_scale(model)
        if norm is not None:
            direction = direction * norm
        logits = unembed @ direction
    top = torch.topk(logits, k)
    bottom = torch.topk(-logits, k)

    def label(index: int) -> str:
        return tokenizer.decode([index])

    return VocabularyEffect(
        promoted=[(label(i), float(v)) for v, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)],
        suppressed=[(label(i), -float(v)) for v, i in zip(bottom.values.tolist(), bottom.indices.tolist(), strict=True)],
        direction=how,
    )
