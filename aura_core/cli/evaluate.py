"""The paper's protocol per method × pre-prompt, with reports: ``python -m aura_core evaluate --intervention F``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import aura_core.cli.common as common
from aura_core.errors import AuraError
from aura_core.evaluation.generation import SAMPLING_PRESETS
from aura_core.evaluation.protocol import PREPROMPT_GROUPS, EvalConfig
from aura_core.evaluation.scoring import OFFLINE_SCORERS
from aura_core.method.registry import METHODS, PLAIN, method_names
from aura_core.model.architecture import UNIT_FAMILY_EXAMPLES, unit_family_roles
from aura_core.runtime.sampling import describe_presets


def add_to(sub: Any) -> None:
    """Add this command to the ``sub`` parsers of ``python -m aura_core``."""
    evaluate = sub.add_parser("evaluate", help="toxicity and perplexity per method × pre-prompt, with reports")
    common.add_model_args(evaluate)
    common.add_engine_args(evaluate)
    defaults = EvalConfig()  # the one place evaluation defaults live
    evaluate.add_argument("--intervention", default=None, help="a file from `fit` (its AUROC drives every method)")
    evaluate.add_argument(
        "--prompts", default=defaults.prompts, help="'starter', RealToxicityPrompts JSONL, or a CSV/JSONL of prompts"
    )
    evaluate.add_argument(
        "--n-prompts", type=int, default=defaults.n_prompts, help=f"prompts sampled with --seed (default {defaults.n_prompts})"
    )
    evaluate.add_argument("--kind", default=defaults.prompt_kind, help="only prompts of this kind (e.g. provocative)")
    evaluate.add_argument(
        "--preset",
        choices=list(SAMPLING_PRESETS),
        default=defaults.sampling,
        help=f"{describe_presets()}; default {defaults.sampling}",
    )
    evaluate.add_argument("--samples", type=int, default=defaults.samples, help="completions per prompt (overrides the preset)")
    evaluate.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    evaluate.add_argument("--seed", type=int, default=defaults.seed)
    evaluate.add_argument(
        "--scorer",
        default=defaults.scorer,
        help=f"toxicity judge: {', '.join(OFFLINE_SCORERS)} (offline) or a Hugging Face classifier; a comma list "
        "scores the same completions by each, the first leading (e.g. profanity-check,minilm)",
    )
    evaluate.add_argument(
        "--no-zero-shot", action="store_true", help="skip the last-word accuracy on the neutral texts beside perplexity"
    )
    evaluate.add_argument(
        "--neutral", default=defaults.neutral, help="neutral text for perplexity: 'starter', a .txt or a CSV with text"
    )
    evaluate.add_argument("--n-neutral", type=int, default=defaults.n_neutral)
    evaluate.add_argument(
        "--methods", default=",".join(defaults.methods), help=f"comma list of {', '.join(method_names(with_plain=True))}"
    )
    evaluate.add_argument(
        "--preprompts", default=",".join(defaults.preprompts), help=f"comma list of {', '.join(PREPROMPT_GROUPS)}"
    )
    evaluate.add_argument(
        "--favourable", default=defaults.favourable, help="starter pre-prompt name or text (default: the first)"
    )
    evaluate.add_argument(
        "--adversarial", default=defaults.adversarial, help="starter pre-prompt name or text (default: the first)"
    )
    evaluate.add_argument("--strength", type=float, default=defaults.strength)
    evaluate.add_argument("--k", type=int, default=defaults.k, help=f"units for det0/damp (default {defaults.k})")
    evaluate.add_argument("--damp-alpha", type=float, default=defaults.damp_alpha)
    evaluate.add_argument(
        "--units",
        default=defaults.units,
        help=f"the unit family every method acts on: {', '.join(UNIT_FAMILY_EXAMPLES)} (roles join with +), "
        f"or a regex over module names (default {defaults.units}: every unit of the intervention)",
    )
    evaluate.add_argument("--bootstrap", type=int, default=defaults.bootstrap, help="bootstrap resamples for the intervals")
    evaluate.add_argument("--batch-size", type=int, default=defaults.batch_size, help="completions decoding at once")
    evaluate.add_argument("--sweep", action="store_true", help="also sweep the strength λ")
    evaluate.add_argument(
        "--sweep-methods", default="aura", help=f"comma list of methods to sweep ({', '.join(METHODS)}); default aura"
    )
    evaluate.add_argument(
        "--ppl-budget",
        type=float,
        default=None,
        help="with --sweep: the largest relative perplexity increase allowed (0.05 = 5 %%); finds the operating point",
    )
    evaluate.add_argument(
        "--prompt-seed", type=int, default=defaults.prompt_seed, help="seed of the prompt subsample (default 0)"
    )
    evaluate.add_argument(
        "--preprompt-form",
        choices=["text", "system"],
        default=defaults.preprompt_form,
        help="the pre-prompt as text before the prompt, or as the chat template's system message (instruct models)",
    )
    evaluate.add_argument("--json", action="store_true", help="print one line of JSON: reports and the operating point")
    evaluate.add_argument("--sweep-strengths", default="0,0.25,0.5,0.75,1", help="comma list of λ")
    evaluate.add_argument("--sweep-ks", default=None, help="comma list of k (det0/damp)")
    evaluate.add_argument(
        "--sweep-units",
        default=None,
        help="comma list of unit families to sweep, e.g. gate,up,down,all or gate+up "
        "(default: each family of the architecture, and all)",
    )
    evaluate.add_argument("--out", default="runs/evaluation", help="run folder: reports, and finished pieces for resuming")
    evaluate.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aura_core.base.data import load_neutral_texts
    from aura_core.evaluation.protocol import EvalConfig, judged_by, operating_point, run_evaluation, run_sweep, sweep_families
    from aura_core.evaluation.reports import (
        describe_operating_point,
        judges_table,
        paper_table,
        power_of,
        wide_intervals,
        write_reports,
    )
    from aura_core.evaluation.scoring import load_scorer
    from aura_core.method.intervention import Intervention
    from aura_core.method.registry import METHODS

    common.check_counts(args, "n_prompts", "n_neutral", "samples", "max_new_tokens", "batch_size")
    common.check_outputs({"--out": args.out}, folder=True)
    strengths = common.numbers("--sweep-strengths", args.sweep_strengths, float) if args.sweep else ()
    ks = tuple(int(k) for k in common.numbers("--sweep-ks", args.sweep_ks, int)) if args.sweep and args.sweep_ks else None
    sweep_methods = common.csv_list(args.sweep_methods)
    unknown = [m for m in sweep_methods if m not in METHODS]
    if unknown or not sweep_methods:
        raise AuraError(f"--sweep-methods: {', '.join(unknown) or 'none given'}; use {', '.join(METHODS)}")
    sweep_units = common.csv_list(args.sweep_units) if args.sweep_units is not None else None
    odd = [repr(name) for name in sweep_units or () if unit_family_roles(name) is None]
    if odd or sweep_units == ():
        problem = f"{odd[0]} is not a unit family" if odd else "none given"
        raise AuraError(f"--sweep-units: {problem}; use {', '.join(UNIT_FAMILY_EXAMPLES)}")
    if args.ppl_budget is not None and (args.ppl_budget <= 0 or not args.sweep):
        raise AuraError("--ppl-budget needs --sweep and a positive budget, e.g. 0.05 for +5 %")
    common.note_fewer_prompts(args)
    neutral = len(load_neutral_texts(args.neutral))
    if args.n_neutral is not None and args.n_neutral > neutral:
        print(
            f"note: --n-neutral {args.n_neutral} is more than the {neutral} texts in {args.neutral}; using all {neutral}",
            file=sys.stderr,
        )
    judges = common.csv_list(args.scorer)
    if not judges or len(set(judges)) < len(judges):
        raise AuraError(f"--scorer: give one judge or a comma list of different ones, e.g. {','.join(OFFLINE_SCORERS)}")
    others = {name: load_scorer(name) for name in judges[1:]}  # a judge that cannot load fails before any work
    config = EvalConfig(
        prompts=args.prompts,
        n_prompts=args.n_prompts,
        prompt_kind=args.kind,
        sampling=args.preset,
        samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        prompt_seed=args.prompt_seed,
        scorer=judges[0],
        zero_shot=not args.no_zero_shot,
        neutral=args.neutral,
        n_neutral=args.n_neutral,
        methods=common.csv_list(args.methods),
        preprompts=common.csv_list(args.preprompts),
        favourable=args.favourable,
        adversarial=args.adversarial,
        preprompt_form=args.preprompt_form,
        strength=args.strength,
        k=args.k,
        damp_alpha=args.damp_alpha,
        units=args.units,
        bootstrap=args.bootstrap,
        batch_size=args.batch_size,
    )
    intervention = Intervention.load(args.intervention) if args.intervention else None
    if intervention is None and (args.sweep or any(m != PLAIN for m in config.methods)):
        raise AuraError("give --intervention FILE (from `fit`), or --methods none without --sweep")
    loaded = common.load(args)
    runner = common.engine_runner(args, loaded)
    update, close = common.stage_progress()
    try:
        result = run_evaluation(
            loaded.model, loaded.tokenizer, intervention, config, out_dir=args.out, progress=update, runner=runner
        )
        if args.sweep and intervention is not None:
            result.sweep = run_sweep(
                loaded.model,
                loaded.tokenizer,
                intervention,
                config,
                method=sweep_methods,
                strengths=strengths,
                ks=ks,
                units=sweep_units or sweep_families(loaded.model, intervention),
                out_dir=args.out,
                progress=update,
                runner=runner,
            )
            if args.ppl_budget is not None:
                result.operating_point = operating_point(result.sweep, args.ppl_budget)
    finally:
        close()
        if runner is not None:
            runner.close()
    result.provenance["model"] = args.model
    for name, judge in others.items():
        result.judges[name] = judged_by(result, judge)
    paths = write_reports(result, args.out)
    print(paper_table(result.metrics).to_string(index=False), file=sys.stderr)
    for condition in wide_intervals(result.metrics):
        print(f"warning: the toxic-share interval of {condition} includes 1: more prompts or samples needed", file=sys.stderr)
    if result.judges:
        print(judges_table(result.metrics, result.judges, judges[0]).to_string(index=False), file=sys.stderr)
    power = power_of(result.metrics)
    if power is not None:
        print(power.warning() or power.text(), file=sys.stderr)
    point = result.operating_point
    if args.ppl_budget is not None:
        if point is None:
            print(
                f"no strength keeps perplexity within +{args.ppl_budget:.0%}; widen --ppl-budget or add small λ", file=sys.stderr
            )
        else:
            print(f"operating point: {describe_operating_point(point)}", file=sys.stderr)
    summary = {
        "reports": {k: str(v) for k, v in paths.items()},
        "operating_point": point,
        "power": None if power is None else power.as_dict(),
    }
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        common.emit({**summary, "metrics": result.metrics.to_dict(orient="records")}, "json", None)
    return 0
