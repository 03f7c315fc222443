"""Everything the project knows about a model family, in one table.

A family names the modules whose outputs are AurA's units (the paper's MLP layers), which of
them hold MLP neurons (written into the residual stream by the down projection) and which
already write the residual stream, where the final norm is and how its scale is stored.
Adding a family is one entry in :data:`FAMILIES` (and a tiny-model test).

>>> family_for("llama").down
'mlp.down_proj'
>>> layer_of("model.layers.3.mlp.up_proj"), module_kind("model.layers.3.mlp.up_proj")
(3, 'up_proj')
>>> family_for("llama").roles()["gate"], family_for("gpt2").roles()["up"]
(('mlp.gate_proj',), ('mlp.c_fc',))
"""

from __future__ import annotations

import difflib
import re
import time
from dataclasses import dataclass
from typing import Any

import regex
import torch
from torch import nn

from aura_core.errors import UnitPatternError

__all__ = [
    "ALL_UNITS",
    "FAMILIES",
    "UNIT_ROLES",
    "Family",
    "context_length",
    "discover_units",
    "down_projection",
    "family_for",
    "family_in_layers",
    "family_of",
    "final_norm_scale",
    "layer_count",
    "layer_of",
    "module_kind",
    "neuron_kinds",
    "output_embedding",
    "sliding_window",
    "text_config",
    "unit_axis",
    "unit_families",
    "unit_family_label",
    "unit_family_roles",
    "unit_width",
    "weight_of",
]


# Where transformers keeps the final norm, across families.
_FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "final_layernorm")


@dataclass(frozen=True)
class Family:
    """One model family: its unit modules and how their outputs reach the vocabulary.

    ``neurons`` are the kinds whose units are MLP neurons (their output goes through the
    ``down`` projection's column for that neuron); ``down`` is the kind that writes the
    residual stream (one unit per residual axis). ``gated`` families (SwiGLU) pair the
    ``neurons`` kinds by index: gate ``i`` and up ``i`` are halves of one neuron.
    ``norm_offset`` is added to the final norm's stored scale (Gemma stores ``scale - 1``).
    """

    name: str
    model_types: tuple[str, ...]
    block: str
    neurons: tuple[str, ...]
    down: str
    final_norms: tuple[str, ...] = _FINAL_NORMS
    norm_offset: float = 0.0
    gated: bool = False

    @property
    def unit_pattern(self) -> str:
        """The regex (``re.fullmatch``) over module names that selects the paper's units."""
        return rf".*{self.block}\.\d+\.{_alternatives((*self.neurons, self.down))}"

    def roles(self) -> dict[str, tuple[str, ...]]:
        """The unit modules of each role (:data:`UNIT_ROLES`) this family has.

        A gated MLP has a gate and an up projection; a plain MLP's one neuron layer is its
        ``up`` (Phi-3's fused gate-up projection too); ``down`` writes the residual stream.
        """
        if self.gated:
            gate, up = self.neurons
            return {"gate": (gate,), "up": (up,), "down": (self.down,)}
        return {"up": self.neurons, "down": (self.down,)}

    def pattern_of(self, unit_family: str) -> str:
        r"""The regex over module names of a unit family (``gate``, ``up+down``, ``all``...).

        >>> family_for("llama").pattern_of("gate+up")
        '.*layers\\.\\d+\\.(mlp\\.gate_proj|mlp\\.up_proj)'
        """
        roles = unit_family_roles(unit_family)
        if roles is None:
            raise UnitPatternError(f"{unit_family!r} is not a unit family: use {', '.join(UNIT_FAMILY_EXAMPLES)}")
        if unit_family.strip().lower() == ALL_UNITS:
            return self.unit_pattern
        have = self.roles()
        missing = [role for role in roles if role not in have]
        if missing:
            raise UnitPatternError(
                f"{self.name} models have no {missing[0]} projections: use one of {', '.join(_names_of(self))}"
            )
        return rf".*{self.block}\.\d+\.{_alternatives(tuple(kind for role in roles for kind in have[role]))}"


def _alternatives(kinds: tuple[str, ...]) -> str:
    return "(" + "|".join(re.escape(k) for k in kinds) + ")"


UNIT_ROLES = ("gate", "up", "down")
"""Unit families by their role in the MLP, the names ``--units`` accepts beside a regex (see :meth:`Family.roles`)."""
ALL_UNITS = "all"
"""Every unit module of the architecture: the paper's units."""
UNIT_FAMILY_EXAMPLES = (*UNIT_ROLES, "gate+up", ALL_UNITS)


def unit_family_roles(name: str) -> tuple[str, ...] | None:
    r"""The roles a unit-family name stands for, in :data:`UNIT_ROLES` order; None when ``name`` is not one.

    Roles join with ``+``; ``all`` stands for every role. Anything else is a regex to the callers.

    >>> unit_family_roles("up+gate"), unit_family_roles("all"), unit_family_roles(r".*mlp\.up_proj")
    (('gate', 'up'), ('gate', 'up', 'down'), None)
    """
    text = name.strip().lower()
    if text == ALL_UNITS:
        return UNIT_ROLES
    parts = text.split("+")
    if not all(part in UNIT_ROLES for part in parts) or len(set(parts)) != len(parts):
        return None
    return tuple(role for role in UNIT_ROLES if role in parts)


def unit_family_label(name: str) -> str:
    """A unit family in words: ``gate+up`` → "the gate and up projections"; ``all`` → "all units"; a regex as itself.

    >>> unit_family_label("gate+up"), unit_family_label("all"), unit_family_label("down")
    ('the gate and up projections', 'all units', 'the down projections')
    """
    roles = unit_family_roles(name)
    if roles is None:
        return f"the units {name!r} names"
    if name.strip().lower() == ALL_UNITS:
        return "all units"
    return f"the {' and '.join(roles)} projections"


def _names_of(family: Family) -> list[str]:
    """A family's unit-family names: each role, each pair of roles, then ``all`` (no two of the same modules)."""
    roles = [role for role in UNIT_ROLES if role in family.roles()]
    pairs = [f"{a}+{b}" for i, a in enumerate(roles) for b in roles[i + 1 :]] if len(roles) > 2 else []
    return [*roles, *pairs, ALL_UNITS]


_LLAMA_LIKE: dict[str, object] = {
    "block": "layers",
    "neurons": ("mlp.gate_proj", "mlp.up_proj"),
    "down": "mlp.down_proj",
    "gated": True,
}

# Keyed by ``config.model_type``; the paper's units are the outputs of these linear layers.
FAMILIES: tuple[Family, ...] = (
    Family("gpt2", ("gpt2",), block="h", neurons=("mlp.c_fc",), down="mlp.c_proj"),
    Family("llama", ("llama", "mistral", "mixtral", "qwen2", "qwen3", "smollm3"), **_LLAMA_LIKE),  # type: ignore[arg-type]
    Family("gemma", ("gemma", "gemma2", "gemma3", "gemma3_text"), norm_offset=1.0, **_LLAMA_LIKE),  # type: ignore[arg-type]
    Family("gpt_neox", ("gpt_neox",), block="layers", neurons=("mlp.dense_h_to_4h",), down="mlp.dense_4h_to_h"),
    Family("falcon", ("falcon",), block="h", neurons=("mlp.dense_h_to_4h",), down="mlp.dense_4h_to_h"),
    Family("opt", ("opt",), block="layers", neurons=("fc1",), down="fc2"),
    Family("phi", ("phi",), block="layers", neurons=("mlp.fc1",), down="mlp.fc2"),
    Family("phi3", ("phi3",), block="layers", neurons=("mlp.gate_up_proj",), down="mlp.down_proj"),
)


def family_for(model_type: str | None) -> Family | None:
    """The family of a ``config.model_type``, or None for an architecture the table does not know."""
    return next((f for f in FAMILIES if model_type in f.model_types), None)


def family_of(model: nn.Module) -> Family | None:
    return family_for(getattr(getattr(model, "config", None), "model_type", None))


def unit_families(model: nn.Module, *, pairs: bool = True) -> tuple[str, ...]:
    """The unit-family names this model's architecture has: each role, each pair (unless ``pairs=False``), then ``all``.

    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> unit_families(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2)))
    ('up', 'down', 'all')
    """
    family = family_of(model)
    if family is None:
        return (ALL_UNITS,)
    names = _names_of(family)
    return tuple(name for name in names if pairs or "+" not in name)


def layer_count(model: nn.Module) -> int:
    """How many blocks the model's text decoder has (0 when its config does not say).

    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> layer_count(GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=8, n_head=2)))
    3
    """
    config = text_config(model)
    return int(getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None) or 0)


def family_in_layers(model: nn.Module, unit_family: str, first: int, last: int) -> str:
    r"""The regex over module names of ``unit_family`` in blocks ``first`` to ``last`` (both included).

    Built from literal names only, so it cannot run away as a visitor's own pattern could.

    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> family_in_layers(GPT2LMHeadModel(GPT2Config(n_layer=4, n_embd=8, n_head=2)), "up", 1, 2)
    '.*h\\.(1|2)\\.(mlp\\.c_fc)'
    """
    family = family_of(model)
    if family is None:
        raise UnitPatternError("this architecture has no unit families: choose its units with a regex")
    if first > last or first < 0:
        raise UnitPatternError(f"layers {first} to {last}: give a first layer no later than the last")
    pattern = family.pattern_of(unit_family)
    marker = rf"{family.block}\.\d+\."
    if marker not in pattern:
        raise UnitPatternError(f"{unit_family!r} cannot be limited to layers on {family.name} models")
    layers = "|".join(str(i) for i in range(first, last + 1))
    return pattern.replace(marker, rf"{re.escape(family.block)}\.({layers})\.", 1)


def layer_of(unit_module: str) -> int:
    """The block index in a module name (``model.layers.3.mlp.up_proj`` → 3), or -1."""
    found = re.findall(r"\.(\d+)\.", f".{unit_module}.")
    return int(found[0]) if found else -1


def module_kind(unit_module: str) -> str:
    """The module's own name without its layer (``model.layers.3.mlp.up_proj`` → ``up_proj``)."""
    return unit_module.rsplit(".", 1)[-1]


def neuron_kinds(model: nn.Module) -> tuple[str, ...]:
    """The kinds (``module_kind``) whose units are MLP neurons in this model's family."""
    family = family_of(model)
    return tuple(module_kind(k) for k in family.neurons) if family else ()


def unit_axis(module: nn.Module) -> int:
    """The weight axis that holds one row per output unit: 0 for ``nn.Linear``, 1 for GPT-2's ``Conv1D``."""
    return 0 if isinstance(module, nn.Linear) or not hasattr(module, "nf") else 1


def weight_of(module: nn.Module) -> torch.Tensor:
    """A linear-like layer's weight; an error naming the layer when it has none."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise UnitPatternError(f"{type(module).__name__} has no weight, so its units cannot be counted")
    return weight


def output_embedding(model: nn.Module) -> torch.Tensor:
    """The unembedding matrix (vocabulary × hidden)."""
    return weight_of(model.get_output_embeddings())  # type: ignore[operator]


def unit_width(module: nn.Module) -> int:
    """Number of output units of a linear-like layer (``nn.Linear`` or GPT-2's ``Conv1D``)."""
    if isinstance(module, nn.Linear):
        return module.out_features
    if hasattr(module, "nf"):
        return int(getattr(module, "nf"))  # noqa: B009 (Conv1D's attribute, unknown to nn.Module's typing)
    return int(weight_of(module).shape[0])


def discover_units(model: nn.Module, pattern: str | None = None) -> list[str]:
    """Names of the modules whose outputs are AurA units: the family's, or those ``pattern`` names.

    ``pattern`` is a unit family (``gate``, ``up``, ``down``, ``all``, or roles joined by ``+``:
    see :meth:`Family.roles`), or else a regex matched in full against ``named_modules()``
    names, within a time limit. A pattern that matches nothing raises
    :class:`UnitPatternError` listing the closest names.

    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> tiny = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2))
    >>> discover_units(tiny)
    ['transformer.h.0.mlp.c_fc', 'transformer.h.0.mlp.c_proj', 'transformer.h.1.mlp.c_fc', 'transformer.h.1.mlp.c_proj']
    >>> discover_units(tiny, "down")
    ['transformer.h.0.mlp.c_proj', 'transformer.h.1.mlp.c_proj']
    """
    names = [name for name, module in model.named_modules() if name and hasattr(module, "weight")]
    if pattern is not None and unit_family_roles(pattern) is not None:
        family = family_of(model)
        if family is None:
            model_type = getattr(getattr(model, "config", None), "model_type", None)
            raise UnitPatternError(f"unit family {pattern!r} is unknown for model type {model_type!r}: pass a regex instead")
        pattern = family.pattern_of(pattern)
    if pattern is None:
        family = family_of(model)
        if family is None:
            model_type = getattr(getattr(model, "config", None), "model_type", None)
            raise UnitPatternError(
                f"no built-in unit pattern for model type {model_type!r}: pass a regex such as "
                r"'.*layers\.\d+\.mlp\.(up_proj|down_proj)'"
            )
        pattern = family.unit_pattern
    matched = _matching(pattern, names)
    if not matched:
        close = difflib.get_close_matches(pattern, names, n=5, cutoff=0.0)
        raise UnitPatternError(f"unit pattern {pattern!r} matches no module; closest names: {', '.join(close)}")
    return matched


UNIT_PATTERN_SECONDS = 1.0
"""The most time a unit pattern may take over all of a model's module names."""
UNIT_PATTERN_CHARS = 500


def _matching(pattern: str, names: list[str]) -> list[str]:
    """The names ``pattern`` fully matches, within :data:`UNIT_PATTERN_SECONDS`.

    ``regex`` (not ``re``) matches with a time limit and without holding the interpreter lock,
    so a pattern that backtracks without bound ends in an error instead of freezing a server.
    """
    if len(pattern) > UNIT_PATTERN_CHARS:
        raise UnitPatternError(f"unit pattern is {len(pattern)} characters long; at most {UNIT_PATTERN_CHARS}")
    try:
        compiled = regex.compile(pattern)
    except (regex.error, OverflowError, RecursionError) as err:
        raise UnitPatternError(f"unit pattern {pattern!r} is not a valid regex: {err}") from None
    deadline = time.monotonic() + UNIT_PATTERN_SECONDS
    matched = []
    try:
        for name in names:
            if compiled.fullmatch(name, timeout=max(deadline - time.monotonic(), 1e-6), concurrent=True):
                matched.append(name)
            if time.monotonic() > deadline:
                raise TimeoutError
    except TimeoutError:
        raise UnitPatternError(
            f"unit pattern {pattern[:80]!r} takes too long to match (over {UNIT_PATTERN_SECONDS:g} s): simplify it"
        ) from None
    return matched


def text_config(model: nn.Module) -> Any:
    """The config of the model's text decoder (a multimodal model keeps it inside its own); None without one."""
    config: Any = getattr(model, "config", None)
    return config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config


def sliding_window(model: nn.Module) -> int | None:
    """How many positions the model's local attention layers see (None: it has none)."""
    window = getattr(text_config(model), "sliding_window", None)
    return int(window) if window else None


def context_length(model: nn.Module) -> int | None:
    """The most positions the model was built for (None when its config does not say).

    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> context_length(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, n_positions=64)))
    64
    """
    text = text_config(model)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(text, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def down_projection(model: nn.Module, unit_module: str) -> tuple[str, nn.Module] | None:
    """The layer that writes a neuron module's units into the residual stream (None for the down projection itself)."""
    family = family_of(model)
    if family is None or module_kind(unit_module) not in neuron_kinds(model):
        return None
    layer = layer_of(unit_module)
    modules = dict(model.named_modules())
    suffix = f".{layer}.{family.down}"
    found = [name for name in modules if name.endswith(suffix) and re.search(rf"(^|\.){family.block}{re.escape(suffix)}$", name)]
    return (found[0], modules[found[0]]) if found else None


def final_norm_scale(model: nn.Module) -> torch.Tensor | None:
    """The final norm's per-axis scale (with the family's offset), or None when the model has none."""
    family = family_of(model)
    names = family.final_norms if family else _FINAL_NORMS
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    for holder in (base, getattr(base, "decoder", None)):
        for attr in names:
            weight = getattr(getattr(holder, attr, None), "weight", None)
            if isinstance(weight, torch.Tensor):
                return weight.detach().float().cpu() + (family.norm_offset if family else 0.0)
    return None
