"""Looking at one unit: the texts that drive it, how often it fires on ordinary text, and what it writes.

A unit is named ``module:index`` (``model.layers.5.mlp.gate_proj:1343``). Tokens are shown as
people read them: byte fragments of one character are merged into that character (or marked
when they cannot be), and lists of single tokens show their whitespace (``␣`` for a space).

>>> parse_unit("model.layers.5.mlp.gate_proj:1343")
('model.layers.5.mlp.gate_proj', 1343)
>>> acts = token_activations(model, tok, texts, "model.layers.5.mlp.gate_proj", 1343)   # doctest: +SKIP
>>> acts[0].tokens[:3], acts[0].values[:3]                                              # doctest: +SKIP
(['You', ' are', ' a'], [0.1, -0.3, 2.7])
>>> vocabulary_effect(model, tok, "model.layers.5.mlp.gate_proj", 1343).promoted[0].token   # doctest: +SKIP
'␣idiot'
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial

import torch
from torch import nn

from aura_core.analysis.collect import MAX_TOKENS
from aura_core.analysis.token_text import Piece, readable_token, text_pieces
from aura_core.analysis.unit_profile import DENSITY_RULE, ActivationProfile, UnitDensity, youden_thresholds
from aura_core.base.batching import Tokenizer, pad_right, tokenize_texts
from aura_core.errors import DataError, InterventionError, UnitPatternError
from aura_core.method.intervention import Intervention
from aura_core.method.responses import Responses
from aura_core.model.architecture import (
    discover_units,
    down_projection,
    family_of,
    final_norm_scale,
    layer_of,
    module_kind,
    neuron_kinds,
    output_embedding,
    unit_axis,
    unit_width,
    weight_of,
)
from aura_core.runtime.hooks import Recorder, forward_until_recorded
from aura_core.runtime.inline import INLINE
from aura_core.runtime.runner import Runner

__all__ = [
    "VOCABULARY_NOTE",
    "TokenActivations",
    "TokenEffect",
    "TopText",
    "UnitDetail",
    "UnitSummary",
    "VocabularyEffect",
    "check_unit",
    "gated_partner",
    "output_direction",
    "parse_unit",
    "token_activations",
    "unit_detail",
    "unit_ref",
    "unit_widths",
    "vocabulary_effect",
]

VOCABULARY_NOTE = (
    "Promoted and suppressed tokens are the vocabulary entries whose logits the unit's output direction raises or "
    "lowers most, read through the final norm and the unembedding only: they skip every later layer, so they hint at "
    "what the unit writes, not at what the model ends up saying, and sub-word pieces among them are normal."
)


# --------------------------------------------------------------------------------------------
# Naming and checking units
# --------------------------------------------------------------------------------------------


def unit_ref(module: str, unit: int) -> str:
    """The unit's name as links and the command line write it.

    >>> unit_ref("model.layers.5.mlp.gate_proj", 1343)
    'model.layers.5.mlp.gate_proj:1343'
    """
    return f"{module}:{unit}"


def parse_unit(text: str) -> tuple[str, int]:
    """``module:index`` → ``(module, index)``; anything else raises :class:`UnitPatternError`.

    >>> parse_unit("h.0.mlp.c_fc:7")
    ('h.0.mlp.c_fc', 7)
    >>> parse_unit("h.0.mlp.c_fc")
    Traceback (most recent call last):
    ...
    aura_core.errors.UnitPatternError: unit 'h.0.mlp.c_fc' is not MODULE:INDEX (e.g. model.layers.5.mlp.gate_proj:1343)
    >>> parse_unit("h.0.mlp.c_fc:²")[1]
    Traceback (most recent call last):
    ...
    aura_core.errors.UnitPatternError: unit 'h.0.mlp.c_fc:²' is not MODULE:INDEX (e.g. model.layers.5.mlp.gate_proj:1343)
    """
    module, sep, index = text.strip().rpartition(":")
    module, index = module.strip(), index.strip()
    # ASCII only: str.isdigit() takes "²", which int() then refuses.
    if not sep or not _MODULE_NAME.fullmatch(module) or not _UNIT_INDEX.fullmatch(index):
        raise UnitPatternError(f"unit {text[:80]!r} is not MODULE:INDEX (e.g. model.layers.5.mlp.gate_proj:1343)")
    return module, int(index)


_MODULE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,200}")
_UNIT_INDEX = re.compile(r"[0-9]{1,9}")


def unit_widths(model: nn.Module) -> dict[str, int]:
    """Units per unit module of the model's family, in model order."""
    modules = dict(model.named_modules())
    return {name: unit_width(modules[name]) for name in discover_units(model)}


def check_unit(widths: Mapping[str, int], module: str, unit: int) -> None:
    """Raise :class:`UnitPatternError` unless ``module`` is a unit module and ``unit`` one of its indices.

    >>> check_unit({"h.0.mlp.c_fc": 64}, "h.0.mlp.c_fc", 64)
    Traceback (most recent call last):
    ...
    aura_core.errors.UnitPatternError: unit 64 is out of range: h.0.mlp.c_fc has units 0 to 63
    """
    if module not in widths:
        example = next(iter(widths), "")
        raise UnitPatternError(f"no unit module {module!r} in this model (unit modules look like {example!r})")
    if not 0 <= unit < widths[module]:
        raise UnitPatternError(f"unit {unit} is out of range: {module} has units 0 to {widths[module] - 1}")


def gated_partner(model: nn.Module, module: str) -> str | None:
    """The other half of a gated (SwiGLU) neuron: ``gate_proj`` ↔ ``up_proj`` of the same layer, same index.

    None for families that are not gated and for the down projection.
    """
    family = family_of(model)
    kinds = neuron_kinds(model)
    if family is None or not family.gated or len(kinds) != 2 or module_kind(module) not in kinds:
        return None
    other = kinds[1 - kinds.index(module_kind(module))]
    partner = module[: -len(module_kind(module))] + other
    return partner if partner in dict(model.named_modules()) else None


# --------------------------------------------------------------------------------------------
# Forward passes that record units and stop as soon as they have them
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenActivations:
    """One text's pieces and the unit's output at each (the max over a merged piece's tokens)."""

    text: str
    tokens: list[str]
    values: list[float]

    @property
    def peak(self) -> int:
        """Index of the piece where the unit's output is highest."""
        return max(range(len(self.values)), key=self.values.__getitem__)


def _piece_values(pieces: list[Piece], values: torch.Tensor) -> list[float]:
    return [float(values[p.start : p.stop].max()) for p in pieces]


def _units_on_texts(
    model: nn.Module,
    tokenizer: Tokenizer,
    texts: list[str],
    units: Sequence[tuple[str, int]],
    max_tokens: int,
    runner: Runner,
) -> list[list[TokenActivations]]:
    """For each unit, its activations on every text (one forward pass, stopped after the last unit's layer)."""
    token_ids = tokenize_texts(tokenizer, texts, max_tokens)
    input_ids, attention = pad_right(token_ids, tokenizer.pad_token_id, next(model.parameters()).device)
    by_module: dict[str, list[int]] = {}
    for module, unit in units:
        by_module.setdefault(module, []).append(unit)
    seen: dict[str, torch.Tensor] = {}

    def recorder(module: str) -> Recorder:
        def record(hidden: torch.Tensor) -> None:
            seen[module] = hidden[..., by_module[module]].float().cpu()

        return record

    runner.run(
        partial(forward_until_recorded, model, input_ids, attention, {m: recorder(m) for m in by_module}),
        priority="interactive",
    )
    pieces = [text_pieces(tokenizer, ids) for ids in token_ids]
    results = []
    for module, unit in units:
        column = by_module[module].index(unit)
        results.append(
            [
                TokenActivations(
                    texts[row], [p.text for p in pieces[row]], _piece_values(pieces[row], seen[module][row, :, column])
                )
                for row in range(len(texts))
            ]
        )
    return results


def token_activations(
    model: nn.Module,
    tokenizer: Tokenizer,
    texts: list[str],
    module_name: str,
    unit: int,
    *,
    max_tokens: int = MAX_TOKENS,
    runner: Runner = INLINE,
) -> list[TokenActivations]:
    """The unit's output at every piece of each text (same tokenisation as collection)."""
    _module(model, module_name, unit)
    return _units_on_texts(model, tokenizer, texts, [(module_name, unit)], max_tokens, runner)[0]


def _module(model: nn.Module, module_name: str, unit: int) -> nn.Module:
    modules = dict(model.named_modules())
    if module_name not in modules:
        raise UnitPatternError(f"no module {module_name!r} in this model")
    width = unit_width(modules[module_name])
    if not 0 <= unit < width:
        raise UnitPatternError(f"unit {unit} is out of range: {module_name} has {width} units")
    module: nn.Module = modules[module_name]
    return module


# --------------------------------------------------------------------------------------------
# What a unit writes into the vocabulary
# --------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class TokenEffect:
    """One vocabulary entry, readable, and how much the unit's direction moves its logit."""

    token: str
    kind: str
    logit: float
    token_id: int


@dataclass(frozen=True)
class VocabularyEffect:
    """Tokens whose logits the unit's output direction raises (promoted) and lowers (suppressed)."""

    promoted: list[TokenEffect]
    suppressed: list[TokenEffect]
    direction: str


def vocabulary_effect(model: nn.Module, tokenizer: Tokenizer, module_name: str, unit: int, k: int = 12) -> VocabularyEffect:
    """Project the unit's output direction through the final norm's scale and the unembedding."""
    direction, how = output_direction(model, module_name, unit)
    with torch.no_grad():
        unembed = output_embedding(model).detach().float().cpu()
        norm = final_norm_scale(model)
        if norm is not None:
            direction = direction * norm
        logits = unembed @ direction
    k = min(k, logits.numel())
    top = torch.topk(logits, k)
    bottom = torch.topk(-logits, k)

    def effect(index: int, value: float) -> TokenEffect:
        readable = readable_token(tokenizer, index)
        return TokenEffect(readable.text, readable.kind, value, index)

    return VocabularyEffect(
        promoted=[effect(i, v) for v, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)],
        suppressed=[effect(i, -v) for v, i in zip(bottom.values.tolist(), bottom.indices.tolist(), strict=True)],
        direction=how,
    )


# --------------------------------------------------------------------------------------------
# One unit in full
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitSummary:
    """A unit's place and score: where it is, its AUROC and AurA's α for it."""

    module: str
    unit: int
    layer: int
    kind: str
    auroc: float
    alpha: float

    @property
    def ref(self) -> str:
        return unit_ref(self.module, self.unit)


@dataclass(frozen=True)
class TopText:
    """A concept text that drives the unit: its label, pooled response, and pieces (with the partner's values)."""

    index: int
    label: int
    response: float
    activations: TokenActivations
    partner_values: list[float] | None = None

    def as_dict(self) -> dict[str, object]:
        acts = self.activations
        return {
            "label": "toxic" if self.label == 1 else "non-toxic",
            "index": self.index,
            "response": self.response,
            "peak_token": acts.tokens[acts.peak] if acts.tokens else "",
            "text": acts.text,
            "tokens": acts.tokens,
            "values": acts.values,
            **({"partner_values": self.partner_values} if self.partner_values is not None else {}),
        }


@dataclass(frozen=True)
class UnitDetail:
    """Everything the unit page and ``neurons show`` say about one unit."""

    unit: UnitSummary
    partner: UnitSummary | None
    threshold: float | None
    top_texts: list[TopText]
    vocabulary: VocabularyEffect | None
    vocabulary_unavailable: str
    density: UnitDensity | None
    partner_density: UnitDensity | None

    def texts_of(self, label: int) -> list[TopText]:
        return [t for t in self.top_texts if t.label == label]

    def as_dict(self) -> dict[str, object]:
        """Plain data for JSON: readable tokens, both classes' top texts, the density and its rule."""
        vocabulary: dict[str, object] | None = None
        if self.vocabulary is not None:
            vocabulary = {
                "direction": self.vocabulary.direction,
                "promoted": [asdict(t) for t in self.vocabulary.promoted],
                "suppressed": [asdict(t) for t in self.vocabulary.suppressed],
                "note": VOCABULARY_NOTE,
            }
        return {
            "ref": self.unit.ref,
            **asdict(self.unit),
            "partner": {"ref": self.partner.ref, **asdict(self.partner)} if self.partner else None,
            "threshold": self.threshold,
            "density": self.density.as_dict() if self.density else None,
            "partner_density": self.partner_density.as_dict() if self.partner_density else None,
            "density_rule": DENSITY_RULE,
            "top_texts": {
                "toxic": [t.as_dict() for t in self.texts_of(1)],
                "non-toxic": [t.as_dict() for t in self.texts_of(0)],
            },
            "vocabulary": vocabulary,
            "vocabulary_unavailable": self.vocabulary_unavailable or None,
        }


def _summary(intervention: Intervention, module: str, unit: int) -> UnitSummary:
    """Where the unit is, its AUROC, and AurA's α for it (whatever method the intervention was saved with)."""
    auroc = intervention.auroc[module][unit : unit + 1]
    alpha = Intervention({module: auroc}, "aura").alphas()[module]
    return UnitSummary(module, unit, layer_of(module), module_kind(module), float(auroc[0]), float(alpha[0]))


def _top_rows(values: torch.Tensor, labels: torch.Tensor, label: int, n: int) -> list[int]:
    rows = torch.nonzero(labels == label).squeeze(1)
    order = torch.argsort(values[rows], descending=True, stable=True)[:n]
    return rows[order].tolist()


def unit_detail(
    model: nn.Module,
    tokenizer: Tokenizer,
    intervention: Intervention,
    module: str,
    unit: int,
    *,
    responses: Responses | None = None,
    texts: list[str] | None = None,
    profile: ActivationProfile | None = None,
    per_class: int = 5,
    max_tokens: int | None = None,
    vocabulary_k: int = 12,
    runner: Runner = INLINE,
) -> UnitDetail:
    """One unit in full: AUROC and α (and its gated partner's), top texts of both classes, τ, density, vocabulary.

    ``responses`` (pooled, one row per text of ``texts``) give the top texts and τ; ``profile``
    gives the density over its corpus. One forward pass, stopped after the unit's layer, reads
    the top texts token by token.

    >>> detail = unit_detail(model, tok, aura, "model.layers.5.mlp.gate_proj", 1343, responses=r, texts=data.texts)  # doctest: +SKIP
    >>> detail.unit.auroc, [t.label for t in detail.top_texts]                                                        # doctest: +SKIP
    (0.83, [1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    """
    widths = {name: t.numel() for name, t in intervention.auroc.items()}
    check_unit(widths, module, unit)
    partner_module = gated_partner(model, module)
    if partner_module not in widths:
        partner_module = None
    summary = _summary(intervention, module, unit)
    partner = _summary(intervention, partner_module, unit) if partner_module else None

    threshold: float | None = None
    top: list[TopText] = []
    if responses is not None:
        if module not in responses.per_module:
            raise InterventionError(f"the responses hold no module {module!r}")
        if texts is None or len(texts) != responses.labels.numel():
            raise DataError("the top texts need the concept texts the responses were collected on")
        values = responses.per_module[module][:, unit]
        labels = responses.labels
        if profile is not None and module in profile:
            threshold = float(profile.thresholds[module][unit])
        else:
            threshold = float(youden_thresholds(values.unsqueeze(1), labels)[0])
        rows = [*_top_rows(values, labels, 1, per_class), *_top_rows(values, labels, 0, per_class)]
        if rows:
            budget = max_tokens or int(responses.meta.get("max_tokens") or 64)
            asked = [(module, unit)] + ([(partner_module, unit)] if partner_module else [])
            acts = _units_on_texts(model, tokenizer, [texts[i] for i in rows], asked, budget, runner)
            for position, row in enumerate(rows):
                top.append(
                    TopText(
                        index=row,
                        label=int(labels[row]),
                        response=float(values[row]),
                        activations=acts[0][position],
                        partner_values=acts[1][position].values if partner_module else None,
                    )
                )
    elif profile is not None and module in profile:
        threshold = float(profile.thresholds[module][unit])

    vocabulary: VocabularyEffect | None = None
    unavailable = ""
    try:
        vocabulary = vocabulary_effect(model, tokenizer, module, unit, k=vocabulary_k)
    except UnitPatternError as err:
        unavailable = str(err)
    in_profile = profile is not None and module in profile
    return UnitDetail(
        unit=summary,
        partner=partner,
        threshold=threshold,
        top_texts=top,
        vocabulary=vocabulary,
        vocabulary_unavailable=unavailable,
        density=profile.density(module, unit) if profile is not None and in_profile else None,
        partner_density=profile.density(partner_module, unit)
        if profile is not None and partner_module and partner_module in profile
        else None,
    )
