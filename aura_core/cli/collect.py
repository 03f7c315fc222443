"""Pooled unit responses to concept texts, cached: ``python -m aura_core collect --out r.safetensors``."""

from __future__ import annotations

import argparse
from typing import Any

import aura_core.cli.common as common


def add_to(sub: Any) -> None:
    """Add this command to the ``sub`` parsers of ``python -m aura_core``."""
    collect = sub.add_parser("collect", help="pooled unit responses to concept texts (cached)")
    common.add_model_args(collect)
    common.add_collect_args(collect)
    collect.add_argument("--out", default=None, help="also save the responses to this .safetensors file")
    collect.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    common.check_counts(args, "n_per_class", "max_tokens", "batch_size")
    common.check_outputs({"--out": args.out})
    responses, data = common.collect(args)
    if args.out:
        responses.save(args.out)
    summary = {
        "texts": len(data),
        "per_class": data.counts(),
        "unit_modules": len(responses.per_module),
        "units": responses.n_units,
        "from_cache": bool(responses.meta.get("from_cache")),
        "cache_key": responses.meta.get("cache_key"),
        "out": args.out,
        "notes": data.notes,
    }
    common.emit(summary, "json", None)
    return 0
