"""Find experts once and register them for the app: ``python -m aura_core prepare``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import quote

import aura_core.cli.common as common
from aura_core.analysis.experts import N_PER_CLASS


def add_to(sub: Any) -> None:
    """Add this command to the ``sub`` parsers of ``python -m aura_core``."""
    prepare = sub.add_parser("prepare", help="find experts once and make them the app's default (or a named preset)")
    common.add_model_args(prepare)
    common.add_collect_args(prepare)
    prepare.set_defaults(n_per_class=N_PER_CLASS)
    prepare.add_argument("--name", default="default", help="'default' (what the app opens on) or a preset name")
    prepare.add_argument(
        "--no-demo", action="store_true", help="skip choosing and storing the Start page's demo (a minute on 2 cores)"
    )
    prepare.add_argument("--json", action="store_true", help="print one line of JSON: experts key and link query")
    prepare.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Find (or reuse) experts and register them, so the app opens on them and links can name them."""
    from aura_core.analysis.experts import ExpertsRecipe, compute_experts, register_prepared
    from aura_core.base.data import balanced_sample, load_concept_data, source_label

    common.check_counts(args, "n_per_class", "max_tokens", "batch_size")
    recipe = ExpertsRecipe(
        model=args.model,
        data=source_label(args.data),
        n_per_class=args.n_per_class,
        seed=args.seed,
        max_tokens=args.max_tokens,
        pooling=args.pooling,
        units=args.units,
    )
    sample = balanced_sample(load_concept_data(args.data), args.n_per_class, seed=args.seed)
    loaded = common.load(args)
    update, close = common.progress_bar("prepare", "text")
    try:
        experts = compute_experts(loaded, sample, recipe, progress=update, batch_size=args.batch_size)
    finally:
        close()
    register_prepared(args.model, experts.key, args.name)
    demo = None if args.no_demo else _prepare_demo(loaded, experts)
    query = f"model={quote(args.model)}&experts={experts.key}"
    summary = {
        "experts": experts.key,
        "query": query,
        "model": args.model,
        "name": args.name,
        "texts": len(sample),
        "units": experts.intervention.n_units,
        "best_auroc": round(experts.intervention.auroc_max(), 4),
        "demo": None if demo is None else {name: demo[name] for name in ("prompt", "pre", "samples", "key")},
    }
    if args.json:
        print(json.dumps(summary))
    else:
        common.emit(summary, "json", None)
        print(f"open the app with ?{query} (or plainly: it opens on the default experts)", file=sys.stderr)
    return 0


def _prepare_demo(loaded: Any, experts: Any) -> dict[str, Any]:
    """Choose the Start page's demo by its rule and store its result, so Run the demo opens it at once."""
    from aura_core import load_preprompts, load_prompts, load_scorer
    from aura_core.evaluation.demo import demo_candidates, prepare_demo
    from aura_core.runtime.engine import engine_for

    update, close = common.stage_progress()
    try:
        return prepare_demo(
            engine_for(loaded.model),
            loaded.tokenizer,
            loaded.name,
            experts.key,
            experts.intervention,
            load_scorer(),
            demo_candidates(load_prompts(), load_preprompts()),
            progress=update,
        )
    finally:
        close()
