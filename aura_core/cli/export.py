"""The intervened model as an ordinary checkpoint folder: ``python -m aura_core export --out F``."""

from __future__ import annotations

import argparse
from typing import Any

import aura_core.cli.common as common


def add_to(sub: Any) -> None:
    """Add this command to the ``sub`` parsers of ``python -m aura_core``."""
    export = sub.add_parser("export", help="save the intervened model as an ordinary checkpoint folder")
    common.add_model_args(export)
    export.add_argument("--intervention", required=True)
    export.add_argument("--strength", type=float, default=None, help="override λ")
    export.add_argument("--out", required=True, help="new folder to write")
    export.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aura_core.method.intervention import Intervention
    from aura_core.runtime.folding import export_model

    intervention = Intervention.load(args.intervention, strength=args.strength)
    loaded = common.load(args)
    folder = export_model(loaded.model, loaded.tokenizer, intervention, args.out)
    common.emit({"out": str(folder), "method": intervention.method, "strength": intervention.strength}, "json", None)
    return 0
