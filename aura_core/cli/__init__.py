"""``python -m aura_core``: the AurA pipeline from the command line, one module per command.

    python -m aura_core models
    python -m aura_core collect --data starter --n-per-class 200 --out runs/responses.safetensors
    python -m aura_core fit --responses runs/responses.safetensors --out runs/aura.safetensors
    python -m aura_core generate --intervention runs/aura.safetensors --compare --kind provocative
    python -m aura_core export --intervention runs/aura.safetensors --out runs/smollm2-aura
    python -m aura_core evaluate --intervention runs/aura.safetensors --sweep --out runs/evaluation
    python -m aura_core bench all --json --markdown BENCHMARKS.md

Bad input ends with one line on stderr and exit code 2.

>>> build_parser().parse_args(["models"]).command
'models'
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aura_core.cli import bench, collect, evaluate, export, fit, generate, models, neurons, prepare
from aura_core.errors import AuraError

__all__ = ["build_parser", "main"]

# In the order `python -m aura_core -h` lists them.
COMMANDS = (models, collect, fit, generate, evaluate, bench, prepare, export, neurons)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m aura_core", description="AurA: find and dampen the units of a language model that express a concept."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_to(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except AuraError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished chunks are cached; run the same command again to resume", file=sys.stderr)
        return 130
