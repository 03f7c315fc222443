"""``python -m benchmarks``: run benchmarks, print their results, optionally write BENCHMARKS.md.

    python -m benchmarks auroc --json
    python -m benchmarks collect memory --data ../shared/data/jigsaw_balanced.csv
    python -m benchmarks all --json --markdown BENCHMARKS.md

Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from aura_core.errors import AuraError
from benchmarks.registry import BENCHMARKS, run_benchmarks
from benchmarks.report import markdown_report, merged_results
from benchmarks.settings import DEFAULT_MODEL, BenchmarkError, Settings, default_data
from benchmarks.timing import machine_description

__all__ = ["build_parser", "main"]


def build_parser(prog: str = "python -m benchmarks") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Benchmarks: fast paths beside their reference paths.")
    parser.add_argument("names", nargs="+", help=f"{', '.join(BENCHMARKS)}, or all")
    parser.add_argument("--json", action="store_true", help="one JSON object per benchmark")
    parser.add_argument("--markdown", default=None, help="also write the results as this Markdown file (BENCHMARKS.md)")
    parser.add_argument(
        "--update", action="store_true", help="with --markdown: replace only these benchmarks' sections in the existing file"
    )
    parser.add_argument(
        "--data",
        default=None,
        help="concept data for collect and memory: a CSV/JSONL file or 'starter' "
        "(default ../shared/data/jigsaw_balanced.csv beside the checkout if present, else starter)",
    )
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"model for collect, generate and memory (default {DEFAULT_MODEL})"
    )
    parser.add_argument("--device", default="cpu", help="device for the serve benchmark: cpu (default) or cuda")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per benchmark (default: each benchmark's own)")
    parser.add_argument("--min-seconds", type=float, default=0.0, help="keep timing rounds until this many seconds have passed")
    return parser


def _print_text(results: list[dict[str, object]]) -> None:
    for result in results:
        print(f"\n{result['name']}")
        for key, value in result.items():
            if key not in ("name", "conditions"):
                print(f"  {key:<28} {value}")


def main(argv: Sequence[str] | None = None, prog: str = "python -m benchmarks") -> int:
    """Parse ``argv``, run, print; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog).parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        print("error: --repeats must be at least 1", file=sys.stderr)
        return 2
    settings = Settings(
        data=args.data or default_data(), model=args.model, repeats=args.repeats, min_seconds=args.min_seconds, device=args.device
    )
    try:
        results = run_benchmarks(args.names, settings, progress=lambda name: print(f"benchmark {name}…", file=sys.stderr))
    except (BenchmarkError, AuraError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        for result in results:
            print(json.dumps(result))
    else:
        _print_text(results)
    if args.markdown:
        command = shlex.join(["python", "-m", "benchmarks", *argv])
        target = Path(args.markdown)
        if args.update and target.is_file():
            results, earlier = merged_results(target.read_text(encoding="utf-8"), results)
            command = f"{earlier}`, then `{command}" if earlier else command
        target.write_text(markdown_report(results, machine_description(), command), encoding="utf-8")
        print(f"wrote {args.markdown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
