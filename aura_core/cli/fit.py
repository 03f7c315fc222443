"""Per-unit AUROC and an intervention file: ``python -m aura_core fit --out aura.safetensors``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import aura_core.cli.common as common
from aura_core.errors import AuraError
from aura_core.method.registry import METHODS


def add_to(sub: Any) -> None:
    """Add this command to the ``sub`` parsers of ``python -m aura_core``."""
    fit = sub.add_parser("fit", help="per-unit AUROC and an intervention file")
    common.add_model_args(fit)
    common.add_collect_args(fit)
    fit.add_argument("--responses", default=None, help="a file from `collect --out` (otherwise collect first)")
    fit.add_argument("--method", choices=METHODS, default="aura")
    fit.add_argument("--k", type=int, default=None, help="units acted on by det0/damp")
    fit.add_argument("--damp-alpha", type=float, default=0.5, help="constant factor for damp (default 0.5)")
    fit.add_argument("--strength", type=float, default=1.0, help="λ in [0, 1] (default 1)")
    fit.add_argument("--out", required=True, help="intervention file to write (.safetensors)")
    fit.add_argument("--table", default=None, help="write the per-unit AUROC table to this CSV")
    fit.add_argument("--top", type=int, default=10, help="top units to print (default 10)")
    fit.add_argument("--format", choices=["json", "csv"], default="json")
    fit.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aura_core.method.fit import fit_intervention
    from aura_core.method.intervention import unit_table
    from aura_core.method.responses import Responses

    common.check_counts(args, "n_per_class", "max_tokens", "batch_size")
    common.check_counts(args, "top", minimum=0)
    common.check_outputs({"--out": args.out, "--table": args.table})
    responses = Responses.load(args.responses) if args.responses else common.collect(args)[0]
    intervention = fit_intervention(responses, args.method, k=args.k, damp_alpha=args.damp_alpha, strength=args.strength)
    intervention.meta["model"] = intervention.meta.get("model") or args.model
    intervention.save(args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    table = unit_table(intervention)
    if args.table:
        try:
            Path(args.table).parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(args.table, index=False)
        except OSError as err:
            raise AuraError(f"--table {args.table}: cannot be written ({err.strerror or err})") from None
        print(f"wrote {args.table}", file=sys.stderr)
    top = table.head(args.top)
    common.emit(
        {
            "out": args.out,
            "method": args.method,
            "units": len(table),
            "units_auroc_above": {f"{t:.1f}": int((table.auroc > t).sum()) for t in (0.5, 0.6, 0.7, 0.8, 0.9)},
            "max_auroc": float(table.auroc.iloc[0]),
            "units_changed": int((table.factor != 1.0).sum()),
            "top_units": top[["module", "unit", "auroc", "alpha"]].to_dict(orient="records"),
        }
        if args.format == "json"
        else top.to_dict(orient="records"),
        args.format,
        None,
    )
    return 0
