"""Tiny random models built from configs, with a byte-level tokenizer: no download, for logic tests.

Weights are random, so nothing they generate means anything; they exist to check the
pipeline's arithmetic and the app's wiring quickly.

>>> loaded = load_tiny("tiny-gpt2")
>>> loaded.model.config.n_layer, loaded.tokenizer.padding_side
(2, 'left')
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedTokenizerFast

from aura_core.model.loaded import LoadedModel
from aura_core.model.row_attention import use_row_attention

__all__ = ["PLANTED_MODULE", "TINY_MODELS", "byte_tokenizer", "load_tiny", "plant_marker_unit"]

TINY_MODELS = ("tiny-gpt2", "tiny-llama")
PLANTED_MODULE = "model.layers.0.mlp.up_proj"  # where :func:`plant_marker_unit` wires its unit 0


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A fast tokenizer over the 256 bytes plus ``<pad>`` and ``<eos>``: every string encodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: index for index, symbol in enumerate(sorted(alphabet))}
    vocab["<pad>"] = len(vocab)
    vocab["<eos>"] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False), pre_tokenizers.Split("", "isolated")]
    )
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")
    tokenizer.padding_side = "left"
    return tokenizer


def load_tiny(name: str = "tiny-gpt2", seed: int = 0) -> LoadedModel:
    """A 2-layer GPT-2 or Llama with random weights drawn from ``seed``."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    tokenizer = byte_tokenizer()
    vocab = len(tokenizer)
    # A wide initialisation gives peaked next-token distributions, so an intervention visibly
    # changes what is sampled (the default 0.02 gives near-uniform logits).
    common = {
        "initializer_range": 0.4,
        "vocab_size": vocab,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": None,
    }
    config: GPT2Config | LlamaConfig
    if name == "tiny-gpt2":
        config = GPT2Config(n_layer=2, n_embd=16, n_head=2, n_positions=256, **common)
    elif name == "tiny-llama":
        config = LlamaConfig(
            num_hidden_layers=2,
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=256,
            **common,
        )
    else:
        raise ValueError(f"unknown tiny model {name!r}: one of {TINY_MODELS}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.eval()
    use_row_attention(model)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, source="config", device=torch.device("cpu"))


def plant_marker_unit(loaded: LoadedModel, marker: str = "Z", gain: float = 1.0, silence_downstream: bool = False) -> None:
    """Wire unit 0 of ``PLANTED_MODULE`` in a tiny-llama to fire only on the byte ``marker``, in place.

    Its output is ``gain`` on the marker and 0 elsewhere; ``silence_downstream`` keeps the down
    projection from copying it into the residual stream, so no later unit inherits the signal.

    >>> loaded = load_tiny("tiny-llama", seed=1)
    >>> plant_marker_unit(loaded, gain=10.0)
    >>> loaded.model.model.layers[0].mlp.up_proj.weight[0, :2].tolist()
    [10.0, 0.0]
    """
    model: Any = loaded.model  # a LlamaForCausalLM; nn.Module types its submodules as Tensor | Module
    tokenizer: Any = loaded.tokenizer  # the byte tokenizer: every byte is one token
    marker_id = tokenizer.convert_tokens_to_ids(marker)
    layer = model.model.layers[0]
    with torch.no_grad():
        embed = model.model.embed_tokens.weight
        embed[:, 0] = 0.0
        embed[marker_id] = 0.0
        embed[marker_id, 0] = 1.0
        layer.self_attn.o_proj.weight.zero_()  # residual after attention = embedding
        up = layer.mlp.up_proj.weight
        up[0] = 0.0
        up[0, 0] = gain
        if silence_downstream:
            layer.mlp.down_proj.weight[:, 0] = 0.0
