"""One unit in detail, or which experts fire on a text: ``python -m aura_core neurons show --unit M:I``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import aura_core.cli.common as common
from aura_core.analysis.experts import N_PER_CLASS
from aura_core.errors import DataError

if TYPE_CHECKING:
    from aura_core.method.responses import Responses
    from aura_core.model.loaded import LoadedModel


def add_to(sub: Any) -> None:
    """Add this command to the ``sub`` parsers of ``python -m aura_core``."""
    neurons = sub.add_parser("neurons", help="one unit in detail (show), or which experts fire on a text (fire)")
    neurons_sub = neurons.add_subparsers(dest="neurons_command", required=True)
    show = neurons_sub.add_parser("show", help="a unit's AUROC, α, top texts of both classes, density and vocabulary")
    fire = neurons_sub.add_parser("fire", help="per token of a text, the experts that fire there")
    for part in (show, fire):
        common.add_model_args(part)
        part.add_argument("--intervention", required=True, help="a file from `fit` (its AUROC says how expert each unit is)")
        part.add_argument("--responses", default=None, help="a file from `collect` (otherwise the units are collected on --data)")
        part.add_argument("--data", default=None, help="concept data for τ, p and top texts: 'starter' (default) or a CSV/JSONL")
        part.add_argument(
            "--n-per-class", type=int, default=None, help=f"texts per label (default {N_PER_CLASS}, or the responses' own)"
        )
        part.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
        part.add_argument("--max-tokens", type=int, default=None, help="token budget per text (default: the intervention's)")
        part.add_argument("--json", action="store_true", help="print JSON (default: a few readable lines)")
    show.add_argument("--unit", required=True, help="MODULE:INDEX, e.g. model.layers.5.mlp.gate_proj:1343")
    show.add_argument("--top-texts", type=int, default=5, help="top texts per class (default 5)")
    show.add_argument(
        "--neutral", default="starter", help="corpus for the density: 'starter' (data/neutral.txt), .txt, CSV or JSONL"
    )
    show.add_argument("--vocab", type=int, default=12, help="promoted and suppressed tokens to list (default 12)")
    show.set_defaults(func=run_show)
    fire.add_argument("--text", required=True, help="the text to read")
    fire.add_argument("--top", type=int, default=5, help="experts per token (default 5)")
    fire.set_defaults(func=run_fire)


def _neurons_unit(text: str) -> tuple[str, int]:
    from aura_core.analysis.neurons import parse_unit

    return parse_unit(text)


def _neurons_evidence(
    args: argparse.Namespace, loaded: LoadedModel, modules: list[str], *, need_texts: bool
) -> tuple[Responses, list[str] | None, str]:
    """Pooled responses of ``modules`` (and the concept texts behind them) for τ, p and the top texts.

    ``--responses`` reads a file from `collect` (its texts are rebuilt from ``--data``, ``--n-per-class``
    and ``--seed``, by default those it records, and checked against its hash); otherwise the
    modules are collected on ``--data`` (cached on disk like `collect`).
    """
    from aura_core.analysis.collect import collect_responses
    from aura_core.base.data import balanced_sample, load_concept_data
    from aura_core.method.responses import Responses

    if args.responses:
        responses = Responses.load(args.responses)
        missing = [m for m in modules if m not in responses.per_module]
        if missing:
            raise DataError(f"{args.responses}: holds no responses of {missing[0]!r}")
        if not need_texts:
            return responses, None, str(responses.meta.get("data_source") or args.responses)
        source = args.data or str(responses.meta.get("data_source") or "starter")
        n_texts = int(responses.labels.numel())
        data = balanced_sample(load_concept_data(source), args.n_per_class or n_texts // 2, seed=args.seed)
        if len(data) != n_texts or data.content_hash() != responses.meta.get("data_hash", data.content_hash()):
            raise DataError(
                f"{args.responses}: the texts behind it cannot be rebuilt from {source}; "
                "give --data, --n-per-class and --seed as used to collect it"
            )
        return responses, data.texts, source
    source = args.data or "starter"
    data = balanced_sample(load_concept_data(source), args.n_per_class or N_PER_CLASS, seed=args.seed)
    responses = collect_responses(
        loaded.collector, loaded.tokenizer, data, modules, max_tokens=args.max_tokens, model_name=args.model
    )
    return responses, data.texts, source


def _neurons_intervention(args: argparse.Namespace) -> Any:
    """The intervention file, with --max-tokens defaulting to the token budget it was fitted with."""
    from aura_core.method.intervention import Intervention

    common.check_counts(args, "n_per_class", "max_tokens")
    intervention = Intervention.load(args.intervention)
    if args.max_tokens is None:
        budget = intervention.meta.get("max_tokens")
        args.max_tokens = budget if isinstance(budget, int) and budget > 0 else 64
    return intervention


def run_show(args: argparse.Namespace) -> int:
    """One unit in full: AUROC, α, gated partner, top texts of both classes, density on neutral text, vocabulary."""
    from aura_core.analysis.firing import unit_baselines
    from aura_core.analysis.neurons import check_unit, gated_partner, unit_detail
    from aura_core.analysis.unit_profile import activation_profile
    from aura_core.base.data import load_neutral_texts
    from aura_core.method.responses import Responses

    common.check_counts(args, "top_texts", "vocab")
    module, unit = _neurons_unit(args.unit)
    intervention = _neurons_intervention(args)
    widths = {name: t.numel() for name, t in intervention.auroc.items()}
    check_unit(widths, module, unit)
    neutral = load_neutral_texts(args.neutral)
    loaded = common.load(args)
    intervention.check_fits(loaded.model)
    partner = gated_partner(loaded.model, module)
    modules = [module] + ([partner] if partner and partner in widths else [])
    responses, texts, source = _neurons_evidence(args, loaded, modules, need_texts=True)
    thresholds = unit_baselines(Responses({m: responses.per_module[m] for m in modules}, responses.labels)).thresholds
    profile = activation_profile(
        loaded.model,
        loaded.tokenizer,
        neutral,
        thresholds,
        corpus="data/neutral.txt" if args.neutral == "starter" else str(args.neutral),
        max_tokens=args.max_tokens,
    )
    detail = unit_detail(
        loaded.model,
        loaded.tokenizer,
        intervention,
        module,
        unit,
        responses=responses,
        texts=texts,
        profile=profile,
        per_class=args.top_texts,
        max_tokens=args.max_tokens,
        vocabulary_k=args.vocab,
    )
    result = {**detail.as_dict(), "concept_data": source}
    if args.json:
        common.emit(result, "json", None)
        return 0
    print(_neurons_show_text(detail))
    return 0


def _neurons_show_text(detail: Any) -> str:
    """A few readable lines for a terminal (``--json`` gives everything)."""
    from aura_core.analysis.token_text import visible_whitespace

    lines = [
        f"{detail.unit.ref}  layer {detail.unit.layer} · {detail.unit.kind} · AUROC {detail.unit.auroc:.4f} · α {detail.unit.alpha:.3f}"
    ]
    if detail.partner:
        lines.append(f"  gated with {detail.partner.ref}: AUROC {detail.partner.auroc:.4f} · α {detail.partner.alpha:.3f}")
    if detail.density:
        d = detail.density
        lines.append(f"  fires above τ = {d.threshold:.3f} on {d.density:.2%} of {d.n_tokens:,} tokens of {d.corpus}")
        lines.append("  quantiles: " + ", ".join(f"{q}: {v:.3f}" for q, v in d.quantiles.items()))
    for label, name in ((1, "toxic"), (0, "non-toxic")):
        for top in detail.texts_of(label):
            acts = top.activations
            peak = visible_whitespace(acts.tokens[acts.peak]) if acts.tokens else ""
            lines.append(f"  {name:>9} {top.response:8.3f} at {peak!r}: {acts.text[:90]!r}")
    if detail.vocabulary:
        lines.append("  promotes: " + " ".join(t.token for t in detail.vocabulary.promoted))
        lines.append("  suppresses: " + " ".join(t.token for t in detail.vocabulary.suppressed))
    return "\n".join(lines)


def run_fire(args: argparse.Namespace) -> int:
    """Per token of ``--text``: its score and the experts that fire most there."""
    from aura_core.analysis.firing import experts_firing, unit_baselines

    common.check_counts(args, "top")
    if not args.text.strip():
        raise DataError("--text is empty: give the text for the experts to read")
    intervention = _neurons_intervention(args)
    loaded = common.load(args)
    intervention.check_fits(loaded.model)
    responses, _, source = _neurons_evidence(args, loaded, list(intervention.auroc), need_texts=False)
    firing = experts_firing(
        loaded.model, loaded.tokenizer, intervention, args.text, baselines=unit_baselines(responses), top_k=args.top
    )
    if args.json:
        common.emit({**firing.as_dict(), "concept_data": source}, "json", None)
        return 0
    for token in firing.tokens:
        experts = ", ".join(f"{e.ref} ({e.score:.2f})" for e in token.experts[:3])
        print(f"{token.as_dict()['shown']!s:>16}  {token.score:8.2f}  {experts}")
    return 0
