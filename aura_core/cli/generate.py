"""Seeded completions, plain and intervened, scored: ``python -m aura_core generate --intervention F --compare``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import aura_core.cli.common as common
from aura_core.errors import AuraError, DataError
from aura_core.evaluation.generation import SAMPLING_PRESETS
from aura_core.evaluation.scoring import DEFAULT_SCORER
from aura_core.method.registry import METHODS
from aura_core.runtime.runner import DECODE_ROWS


def add_to(sub: Any) -> None:
    """Add this command to the ``sub`` parsers of ``python -m aura_core``."""
    gen = sub.add_parser("generate", help="seeded completions, baseline and/or intervened, with toxicity scores")
    common.add_model_args(gen)
    gen.add_argument("--intervention", default=None, help="a file from `fit`")
    gen.add_argument("--method", choices=METHODS, default=None, help="override the file's method")
    gen.add_argument("--k", type=int, default=None, help="override k (det0/damp)")
    gen.add_argument("--strength", type=float, default=None, help="override λ")
    gen.add_argument("--compare", action="store_true", help="also run the baseline with the same seed")
    gen.add_argument("--baseline-only", action="store_true", help="no intervention")
    gen.add_argument("--prompt", action="append", help="a prompt (repeatable); otherwise --prompts")
    gen.add_argument("--prompts", default="starter", help="'starter' or a prompt file (JSONL/CSV/lines)")
    gen.add_argument("--kind", default=None, help="only prompts of this kind (e.g. provocative)")
    gen.add_argument("--n-prompts", type=int, default=None, help="sample this many prompts")
    gen.add_argument("--pre-prompt", default=None, help="text, or a starter name such as 'polite'")
    gen.add_argument("--preset", choices=list(SAMPLING_PRESETS), default="demo")
    gen.add_argument("--samples", type=int, default=None, help="completions per prompt")
    gen.add_argument("--max-new-tokens", type=int, default=None)
    gen.add_argument("--temperature", type=float, default=None)
    gen.add_argument("--top-p", type=float, default=None)
    gen.add_argument("--repetition-penalty", type=float, default=None)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--batch-size", type=int, default=DECODE_ROWS, help="completions decoding at once")
    gen.add_argument("--scorer", default=DEFAULT_SCORER, help=f"toxicity scorer (default {DEFAULT_SCORER}) or an HF model id")
    gen.add_argument("--format", choices=["json", "csv"], default="json")
    gen.add_argument("--out", default=None)
    gen.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from aura_core.base.data import load_prompts, resolve_preprompt
    from aura_core.evaluation.comparison import summarise_sides
    from aura_core.evaluation.generation import SAMPLING_PRESETS, generate
    from aura_core.evaluation.scoring import load_scorer
    from aura_core.method.intervention import Intervention
    from aura_core.runtime.inline import Inline

    settings = SAMPLING_PRESETS[args.preset]
    changes = {
        key: value
        for key, value in {
            "max_new_tokens": args.max_new_tokens,
            "num_return_sequences": args.samples,
            "temperature": args.temperature,
            "top_p": args.top_p,
            "repetition_penalty": args.repetition_penalty,
        }.items()
        if value is not None
    }
    common.check_counts(args, "n_prompts", "samples", "max_new_tokens", "batch_size")
    common.check_outputs({"--out": args.out})
    for number, text in enumerate(args.prompt or [], start=1):
        if not text.strip():
            raise DataError(f"--prompt number {number} is empty; give the text to complete")
    settings = settings.with_(**changes)
    if args.prompt:
        prompts = list(args.prompt)
    else:
        common.note_fewer_prompts(args)
        prompts = [p.text for p in load_prompts(args.prompts, n=args.n_prompts, seed=args.seed, kind=args.kind)]
    intervention = None
    if args.intervention:
        intervention = Intervention.load(args.intervention, strength=args.strength, method=args.method, k=args.k)
    elif not args.baseline_only:
        raise AuraError("give --intervention FILE (from `fit`), or --baseline-only")
    loaded = common.load(args)
    if intervention is not None and not intervention.fitted_on(loaded.collector):
        print("warning: the intervention was fitted on a model with other weights", file=sys.stderr)
    scorer = load_scorer(args.scorer)
    pre_prompt = resolve_preprompt(args.pre_prompt) if args.pre_prompt else None
    conditions: list[tuple[str, Intervention | None]] = [("baseline", None)] if (args.compare or args.baseline_only) else []
    if intervention is not None:
        conditions.append((intervention.method, intervention))
    rows: list[dict[str, Any]] = []
    for condition, iv in conditions:
        update, close = common.progress_bar(condition, "completion")
        try:
            outs = generate(
                loaded.model,
                loaded.tokenizer,
                prompts,
                pre_prompt=pre_prompt,
                settings=settings,
                seed=args.seed,
                intervention=iv,
                runner=Inline(max_rows=args.batch_size),
                progress=update,
            )
        finally:
            close()
        scores = scorer.score([g.completion for g in outs])
        for g, score in zip(outs, scores, strict=False):
            rows.append({"condition": condition, **g.as_dict(), "toxicity": round(float(score), 6)})
    common.emit(rows, args.format, args.out)
    per_side = {name: np.array([r["toxicity"] for r in rows if r["condition"] == name]) for name, _ in conditions}
    summary = summarise_sides(per_side, seed=args.seed)
    for side in summary.sides:
        print(side.describe(), file=sys.stderr)
    if summary.ratio is not None:
        factor, low, high = summary.ratio
        first, second = (side.side for side in summary.sides[:2])
        print(f"{first} ÷ {second} mean toxicity: {factor:.2f}× [{low:.2f}, {high:.2f}], paired", file=sys.stderr)
    return 0
