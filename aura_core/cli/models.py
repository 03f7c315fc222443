"""List model presets, or describe one model's units: ``python -m aura_core models --show``; both report the store's size."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import aura_core.cli.common as common


def add_to(sub: Any) -> None:
    """Add this command to the ``sub`` parsers of ``python -m aura_core``."""
    models = sub.add_parser("models", help="list model presets, or inspect one model's units")
    common.add_model_args(models)
    models.add_argument("--show", action="store_true", help="load --model and describe its units")
    models.add_argument("--units", default=None, help="a unit family (gate, up, down, all, gate+up...) or a regex (with --show)")
    models.add_argument("--format", choices=["json", "csv"], default="json")
    models.add_argument("--out", default=None, help="write to this file instead of stdout")
    models.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aura_core.base.store import store_usage
    from aura_core.model.architecture import discover_units, module_kind, unit_width
    from aura_core.model.loading import PRESETS, cache_root, preset_status
    from aura_core.model.precision import precision_of

    store = store_usage(cache_root())
    if args.show:
        loaded = common.load(args)
        modules = dict(loaded.model.named_modules())
        units = discover_units(loaded.model, args.units)
        per_kind: dict[str, int] = {}
        for name in units:
            per_kind[module_kind(name)] = per_kind.get(module_kind(name), 0) + unit_width(modules[name])
        config: Any = loaded.model.config
        precision = precision_of(loaded.collector)
        common.emit(
            {
                "model": args.model,
                "architecture": type(loaded.model).__name__,
                "model_type": config.model_type,
                "layers": getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None),
                "parameters": loaded.n_parameters,
                "memory_mb": round(loaded.memory_bytes / 2**20, 1),
                "device": str(loaded.device),
                "dtype": precision_of(loaded.model).name,
                "collection_dtype": precision.name,
                "float32_parts": precision.float32_parts,
                "float32_blocks": list(precision.float32_blocks),
                "unit_modules": len(units),
                "units_per_kind": per_kind,
                "load_seconds": round(loaded.load_seconds, 2),
                "store": store.describe(),
                **store.as_dict(),
            },
            args.format,
            args.out,
        )
        return 0
    rows = [
        {"name": p.name, "status": preset_status(p.name), "description": p.description, "install": p.install}
        for p in PRESETS.values()
    ]
    common.emit(rows, args.format, args.out)
    print(store.describe(), file=sys.stderr)  # beside the table: stdout stays one table a program can read
    return 0
