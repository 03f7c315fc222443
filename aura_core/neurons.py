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

import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache, partial

import numpy as np
import torch
from torch import nn

from aura_core.architecture import (
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
from aura_core.batching import Tokenizer, length_sorted_batches, pad_right, tokenize_texts
from aura_core.errors import DataError, InterventionError, UnitPatternError
from aura_core.hooks import CallPlan, call_plan
from aura_core.interventions import Intervention
from aura_core.responses import Responses
from aura_core.runner import INLINE, Runner

__all__ = [
    "DENSITY_RULE",
    "VOCABULARY_NOTE",
    "ActivationProfile",
    "Piece",
    "ReadableToken",
    "TokenActivations",
    "TokenEffect",
    "TopText",
    "UnitDensity",
    "UnitDetail",
    "UnitSummary",
    "VocabularyEffect",
    "activation_profile",
    "check_unit",
    "forward_until_recorded",
    "gated_partner",
    "output_direction",
    "parse_unit",
    "readable_token",
    "text_pieces",
    "token_activations",
    "unit_detail",
    "unit_ref",
    "unit_widths",
    "visible_whitespace",
    "vocabulary_effect",
    "youden_thresholds",
]

DENSITY_RULE = (
    "A unit fires on a token when its output there is above τ, the cut on its max-over-tokens response that best "
    "separates the toxic from the non-toxic concept texts (the highest true-positive rate minus false-positive rate "
    "on its ROC curve). Its activation density is the share of the corpus's tokens on which it fires: how often it "
    "would raise its toxicity alarm on that text."
)
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
    """
    module, sep, index = text.strip().rpartition(":")
    if not sep or not module or not index.strip().isdigit():
        raise UnitPatternError(f"unit {text!r} is not MODULE:INDEX (e.g. model.layers.5.mlp.gate_proj:1343)")
    return module.strip(), int(index)


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
# Tokens as people read them
# --------------------------------------------------------------------------------------------


@cache
def _byte_decoder() -> dict[str, int]:
    """The inverse of byte-level BPE's byte → printable character table (GPT-2 and its descendants)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _token_bytes(tokenizer: Tokenizer, token_id: int) -> bytes | None:
    """The raw bytes a token stands for, when the tokenizer's vocabulary shows them."""
    to_tokens = getattr(tokenizer, "convert_ids_to_tokens", None)
    piece = to_tokens(int(token_id)) if callable(to_tokens) else None
    if not isinstance(piece, str):
        return None
    byte = re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", piece)  # SentencePiece's byte fallback
    if byte:
        return bytes([int(byte.group(1), 16)])
    table = _byte_decoder()
    if all(ch in table for ch in piece):
        return bytes(table[ch] for ch in piece)
    return piece.replace("▁", " ").encode("utf-8")


_WHITESPACE = {" ": "␣", "\n": "⏎", "\t": "⇥", "\r": "␍"}


def visible_whitespace(text: str) -> str:
    """Spaces, line breaks, tabs and invisible characters made visible.

    >>> visible_whitespace(" gil\\n")
    '␣gil⏎'
    >>> visible_whitespace("a\\u200bb")
    'a⟨U+200B⟩b'
    """
    out = []
    for ch in text:
        if ch in _WHITESPACE:
            out.append(_WHITESPACE[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zs", "Zl", "Zp", "Co", "Cn"):
            out.append(f"⟨U+{ord(ch):04X}⟩")
        else:
            out.append(ch)
    return "".join(out)


@dataclass(frozen=True)
class ReadableToken:
    """One vocabulary entry as people read it: ``text`` with visible whitespace, and what kind of piece it is.

    Kinds: ``word start`` (after a space), ``word piece`` (continues a word), ``symbol``,
    ``special`` (a control token), ``byte fragment`` (part of one character's bytes, shown as hex).
    """

    token_id: int
    text: str
    kind: str


def readable_token(tokenizer: Tokenizer, token_id: int) -> ReadableToken:
    """How one token reads: ``' gil'`` → ``␣gil`` (word start), a lone UTF-8 byte → ``⟨e2 80⟩`` (byte fragment).

    >>> from aura_core.tiny import byte_tokenizer
    >>> tok = byte_tokenizer()
    >>> readable_token(tok, tok.convert_tokens_to_ids("Ã")).text
    '⟨c3⟩'
    """
    token_id = int(token_id)
    decoded = str(tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False))
    specials = set(getattr(tokenizer, "all_special_ids", ()) or ())
    if token_id in specials:
        return ReadableToken(token_id, visible_whitespace(decoded), "special")
    if "\ufffd" in decoded:
        raw = _token_bytes(tokenizer, token_id)
        try:
            if raw is None:
                raise UnicodeDecodeError("utf-8", b"", 0, 1, "unknown bytes")
            decoded = raw.decode("utf-8")
        except UnicodeDecodeError:
            shown = " ".join(f"{b:02x}" for b in raw) if raw else "?"
            return ReadableToken(token_id, f"⟨{shown}⟩", "byte fragment")
    stripped = decoded.lstrip()
    if stripped and stripped[0].isalnum():
        kind = "word start" if stripped != decoded else "word piece"
    else:
        kind = "symbol"
    return ReadableToken(token_id, visible_whitespace(decoded), kind)


@dataclass(frozen=True)
class Piece:
    """Tokens ``start:stop`` of a text shown as one piece: one token, or the byte fragments of one character."""

    text: str
    start: int
    stop: int


# The most tokens one character's bytes are ever split into (UTF-8 holds at most 4 bytes).
_MAX_FRAGMENTS = 4


def text_pieces(tokenizer: Tokenizer, token_ids: Sequence[int]) -> list[Piece]:
    """The text of ``token_ids`` cut at token boundaries, with byte fragments merged into whole characters.

    Decoding grows one token at a time, as streaming detokenisers do: a prefix that ends inside
    a character (``�``) waits for the tokens that complete it.

    >>> from aura_core.tiny import byte_tokenizer
    >>> tok = byte_tokenizer()
    >>> [p.text for p in text_pieces(tok, tok("é!")["input_ids"])]
    ['é', '!']
    """
    pieces: list[Piece] = []
    shown = ""
    start = 0
    ids = [int(i) for i in token_ids]
    for stop in range(1, len(ids) + 1):
        text = str(tokenizer.decode(ids[:stop], skip_special_tokens=False, clean_up_tokenization_spaces=False))
        if text.endswith("\ufffd") and stop < len(ids) and stop - start < _MAX_FRAGMENTS:
            continue
        if text.startswith(shown):
            piece = text[len(shown) :]
        else:  # a normaliser rewrote earlier text: fall back to this run's own decoding
            piece = str(tokenizer.decode(ids[start:stop], skip_special_tokens=False, clean_up_tokenization_spaces=False))
        pieces.append(Piece(piece, start, stop))
        shown, start = text, stop
    return pieces


# --------------------------------------------------------------------------------------------
# Forward passes that record units and stop as soon as they have them
# --------------------------------------------------------------------------------------------


class _Recorded(Exception):
    """Raised inside a forward pass once every recorder has run: later layers are not needed."""


Recorder = Callable[[torch.Tensor], None]


def forward_until_recorded(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    record: Mapping[str, Recorder],
    *,
    record_raw: Mapping[str, Recorder] | None = None,
    scale: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Run ``model`` on a batch with these recorders (and factors), stopping after the last recorded module.

    A unit in layer 3 needs layers 0 to 3 only: the rest of the model, and the unembedding,
    are skipped. Call it from the work a runner runs.
    """
    pending = set(record)

    def finishing(name: str, recorder: Recorder) -> Recorder:
        def wrapped(hidden: torch.Tensor) -> None:
            recorder(hidden)
            pending.discard(name)
            if not pending:
                raise _Recorded

        return wrapped

    plan = CallPlan(
        scale=dict(scale or {}),
        record={name: finishing(name, recorder) for name, recorder in record.items()},
        record_raw=dict(record_raw or {}),
    )
    try:
        with call_plan(model, plan), torch.inference_mode():
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _Recorded:
        pass


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
    max_tokens: int = 64,
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
# When a unit fires, and how often on ordinary text
# --------------------------------------------------------------------------------------------


def youden_thresholds(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per unit (column), the cut on its responses that best separates label 1 from label 0 (max TPR − FPR).

    The cut lies halfway between the lowest response flagged and the next one below, so a
    response above it is flagged. A unit that separates nothing gets its highest response.

    >>> youden_thresholds(torch.tensor([[3.0], [2.0], [1.0], [0.0]]), torch.tensor([1, 1, 0, 0])).tolist()
    [1.5]
    """
    flags = labels.to(torch.bool).numpy()
    positives, negatives = int(flags.sum()), int((~flags).sum())
    if positives == 0 or negatives == 0:
        raise DataError("a firing threshold needs texts of both labels")
    # One row per unit, sorted in NumPy: far faster than torch's sort along a strided axis.
    scores = np.ascontiguousarray(values.reshape(values.shape[0], -1).to(torch.float32).numpy().T)
    order = np.argsort(-scores, axis=1)
    ranked = np.take_along_axis(scores, order, axis=1)
    flagged = flags[order]
    gain = np.cumsum(flagged, axis=1) / positives - np.cumsum(~flagged, axis=1) / negatives
    gain[:, :-1][ranked[:, :-1] <= ranked[:, 1:]] = -np.inf  # a cut inside a run of ties is not a cut
    best = gain.argmax(axis=1)
    rows = np.arange(len(best))
    upper = ranked[rows, best]
    lower = ranked[rows, np.minimum(best + 1, ranked.shape[1] - 1)]
    cut = np.where(best + 1 < ranked.shape[1], (upper + lower) / 2, upper - 1.0)
    useless = gain[rows, best] <= 0
    return torch.from_numpy(np.where(useless, ranked[:, 0], cut).astype(np.float32))


# Histogram bins are even in y = sign(x)·log(1 + |x|/c): about 0.02 wide near zero and 7 % of
# the value for large outputs, so one fixed set of bins serves units whose outputs span 0.1 or
# 1,000 (|x| up to about 3,300; beyond that the end bins hold them).
_C = 0.25
_LIMIT = 9.5
_BINS = 256
_PER_UNIT = _BINS / (2 * _LIMIT)
_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999)


def _from_y(y: float) -> float:
    return math.copysign(_C * math.expm1(abs(y)), y)


def _bin_edges(first: int, last: int) -> list[float]:
    """The activation values at the edges of bins ``first`` to ``last`` (inclusive)."""
    return [_from_y(index / _PER_UNIT - _LIMIT) for index in range(first, last + 2)]


@dataclass(frozen=True)
class UnitDensity:
    """One unit's outputs over a corpus's tokens: τ, how often it is above it, quantiles and a histogram.

    ``edges`` (one more than ``counts``) span the unit's own range; quantiles are read from the
    histogram, so they are exact to within one bin (about 6 % of the value away from zero).
    """

    corpus: str
    n_tokens: int
    threshold: float
    above: int
    minimum: float
    maximum: float
    mean: float
    quantiles: dict[str, float]
    edges: list[float]
    counts: list[int]

    @property
    def density(self) -> float:
        return self.above / self.n_tokens if self.n_tokens else 0.0

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "density": self.density}


@dataclass
class ActivationProfile:
    """Every unit's outputs over a corpus's tokens, summarised: a histogram, min, max, mean, tokens above τ."""

    corpus: str
    n_texts: int
    n_tokens: int
    thresholds: dict[str, torch.Tensor]
    counts: dict[str, torch.Tensor] = field(repr=False)
    above: dict[str, torch.Tensor] = field(repr=False)
    low: dict[str, torch.Tensor] = field(repr=False)
    high: dict[str, torch.Tensor] = field(repr=False)
    total: dict[str, torch.Tensor] = field(repr=False)

    def __contains__(self, module: object) -> bool:
        return module in self.counts

    def density(self, module: str, unit: int) -> UnitDensity:
        """The summary of one unit (``module`` must be one the profile measured)."""
        if module not in self.counts:
            raise UnitPatternError(f"the activation profile did not measure {module!r}")
        counts = self.counts[module][unit].to(torch.int64)
        low, high = float(self.low[module][unit]), float(self.high[module][unit])
        cumulative = counts.cumsum(0)
        quantiles = {f"{q:g}": self._quantile(counts, cumulative, q, low, high) for q in _QUANTILES}
        used = torch.nonzero(counts).squeeze(1)
        first, last = (int(used[0]), int(used[-1])) if used.numel() else (0, 0)
        edges = _bin_edges(first, last)
        edges[0], edges[-1] = min(edges[1], low), max(edges[-2], high)
        return UnitDensity(
            corpus=self.corpus,
            n_tokens=self.n_tokens,
            threshold=float(self.thresholds[module][unit]),
            above=int(self.above[module][unit]),
            minimum=low,
            maximum=high,
            mean=float(self.total[module][unit]) / max(1, self.n_tokens),
            quantiles=quantiles,
            edges=edges,
            counts=counts[first : last + 1].tolist(),
        )

    def _quantile(self, counts: torch.Tensor, cumulative: torch.Tensor, q: float, low: float, high: float) -> float:
        target = q * self.n_tokens
        index = int(torch.searchsorted(cumulative, torch.tensor(target, dtype=cumulative.dtype)).clamp(max=_BINS - 1))
        before = float(cumulative[index - 1]) if index else 0.0
        inside = (target - before) / max(1.0, float(counts[index]))
        y = (index + min(1.0, max(0.0, inside))) / _PER_UNIT - _LIMIT
        return min(high, max(low, _from_y(y)))


class _ProfileRecorder:
    """Per-module recorders that fold each batch's real tokens into the running summaries."""

    def __init__(self, thresholds: Mapping[str, torch.Tensor], widths: Mapping[str, int], count_dtype: torch.dtype) -> None:
        self.thresholds = {name: t.to(torch.float32).cpu() for name, t in thresholds.items()}
        self.counts = {name: torch.zeros((widths[name], _BINS), dtype=count_dtype) for name in thresholds}
        self.above = {name: torch.zeros(widths[name], dtype=torch.int64) for name in thresholds}
        self.low = {name: torch.full((widths[name],), float("inf")) for name in thresholds}
        self.high = {name: torch.full((widths[name],), float("-inf")) for name in thresholds}
        self.total = {name: torch.zeros(widths[name], dtype=torch.float64) for name in thresholds}
        self.offsets = {name: torch.arange(widths[name]) * _BINS for name in thresholds}
        self.mask = torch.zeros((0, 0), dtype=torch.bool)

    def recorder(self, name: str) -> Recorder:
        def record(hidden: torch.Tensor) -> None:
            values = hidden[self.mask.to(hidden.device)].float().cpu()  # (real tokens, units)
            y = torch.log1p(values.abs().mul_(1 / _C)).copysign_(values)
            bins = y.add_(_LIMIT).mul_(_PER_UNIT).clamp_(0, _BINS - 1).long()  # long() truncates: y ≥ 0 here
            counts = self.counts[name]
            flat = (bins + self.offsets[name]).view(-1)
            counts.view(-1).index_add_(0, flat, torch.ones(flat.numel(), dtype=counts.dtype))
            self.above[name] += (values > self.thresholds[name]).sum(0)
            self.low[name] = torch.minimum(self.low[name], values.amin(0))
            self.high[name] = torch.maximum(self.high[name], values.amax(0))
            self.total[name] += values.sum(0, dtype=torch.float64)

        return record


def activation_profile(
    model: nn.Module,
    tokenizer: Tokenizer,
    texts: list[str],
    thresholds: Mapping[str, torch.Tensor],
    *,
    corpus: str = "corpus",
    max_tokens: int = 64,
    max_total_tokens: int = 32_000,
    batch_size: int = 8,
    runner: Runner = INLINE,
    progress: Callable[[int, int], None] | None = None,
) -> ActivationProfile:
    """Summarise every unit of the modules in ``thresholds`` (τ per unit) over the tokens of ``texts``.

    Texts keep the collection's token budget ``max_tokens``; texts past ``max_total_tokens``
    tokens in all are left out. Batches of ``batch_size`` texts run on ``runner`` (bulk), each
    stopping after the last module asked for.

    >>> profile = activation_profile(model, tok, load_neutral_texts(), {"model.layers.5.mlp.up_proj": tau})  # doctest: +SKIP
    >>> profile.density("model.layers.5.mlp.up_proj", 1343).density                                         # doctest: +SKIP
    0.0042
    """
    if not texts:
        raise DataError(f"{corpus}: no texts to measure the units on")
    widths = {name: unit_width(module) for name, module in model.named_modules() if name in thresholds}
    missing = sorted(set(thresholds) - set(widths))
    if missing:
        raise UnitPatternError(f"no module {missing[0]!r} in this model")
    token_ids = tokenize_texts(tokenizer, texts, max_tokens)
    kept, total = 0, 0
    for ids in token_ids:
        if total + len(ids) > max_total_tokens and kept:
            break
        total += len(ids)
        kept += 1
    token_ids = token_ids[:kept]
    summaries = _ProfileRecorder(thresholds, widths, torch.int16 if total < 2**15 else torch.int32)
    recorders = {name: summaries.recorder(name) for name in thresholds}
    device = next(model.parameters()).device
    batches = length_sorted_batches([len(ids) for ids in token_ids], batch_size)

    def forward(batch: list[int]) -> None:
        input_ids, attention = pad_right([token_ids[i] for i in batch], tokenizer.pad_token_id, device)
        summaries.mask = attention.bool().cpu()
        forward_until_recorded(model, input_ids, attention, recorders)

    done = 0
    for batch in batches:
        runner.run(partial(forward, batch), priority="bulk")
        done += len(batch)
        if progress:
            progress(done, kept)
    return ActivationProfile(
        corpus=corpus,
        n_texts=kept,
        n_tokens=total,
        thresholds={name: t.to(torch.float32).cpu() for name, t in thresholds.items()},
        counts=summaries.counts,
        above=summaries.above,
        low=summaries.low,
        high=summaries.high,
        total=summaries.total,
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
