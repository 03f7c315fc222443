"""``python -m aura_core bench …`` runs ``python -m benchmarks …`` from the checkout."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from aura_core.errors import AuraError


def add_to(sub: Any) -> None:
    """Add this command to the ``sub`` parsers of ``python -m aura_core``."""
    # No options of its own: everything after `bench`, -h included, goes to python -m benchmarks as it is.
    bench = sub.add_parser("bench", help="benchmarks, as python -m benchmarks (see bench -h)", prefix_chars="+", add_help=False)
    bench.add_argument("bench_args", nargs="*", help="benchmark names and options")
    bench.set_defaults(func=run)


# The benchmarks are tooling beside the library, never imported by it: `bench` runs them as a program.
BENCHMARKS_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


def run(args: argparse.Namespace) -> int:
    """Runs ``python -m benchmarks`` with the same arguments, from the repository root."""
    if not (BENCHMARKS_DIR / "__main__.py").is_file():
        raise AuraError(f"the benchmarks are not here ({BENCHMARKS_DIR}): run this from a checkout of the repository")
    command = [sys.executable, "-m", "benchmarks", *args.bench_args]
    return subprocess.run(command, cwd=BENCHMARKS_DIR.parent, check=False).returncode
