"""What the commands share: model and collection options, checks before any work, output and progress.

>>> csv_list("a, b,,c")
('a', 'b', 'c')
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aura_core.analysis.collect import MAX_TOKENS, POOLINGS
from aura_core.base.files import atomic_write
from aura_core.errors import AuraError

if TYPE_CHECKING:
    from aura_core.base.data import ConceptData
    from aura_core.method.responses import Responses
    from aura_core.model.loaded import LoadedModel


def progress_bar(desc: str, unit: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A tqdm bar on stderr driven by ``progress(done, total)`` callbacks."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar.close


def emit(rows: list[dict[str, Any]] | dict[str, Any], fmt: str, out: str | None) -> None:
    if fmt == "csv":
        table = rows if isinstance(rows, list) else [rows]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(table[0]) if table else [])
        writer.writeheader()
        writer.writerows(table)
        text = buffer.getvalue()
    else:
        text = json.dumps(rows, indent=2, default=str) + "\n"
    if out:
        try:
            atomic_write(out, text)
        except OSError as err:
            raise AuraError(f"{out}: cannot be written ({err.strerror or err})") from None
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def check_counts(args: argparse.Namespace, *names: str, minimum: int = 1) -> None:
    """Refuse a count option below ``minimum`` before any work.

    >>> check_counts(argparse.Namespace(n_prompts=-1), "n_prompts")
    Traceback (most recent call last):
    ...
    aura_core.errors.AuraError: --n-prompts must be at least 1, not -1
    """
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < minimum:
            raise AuraError(f"--{name.replace('_', '-')} must be at least {minimum}, not {value}")


def check_outputs(outputs: dict[str, str | None], *, folder: bool = False) -> None:
    """Refuse output paths (option → path) that cannot be written, before any work or write.

    Missing parent folders are fine: every output makes its own when it is written.
    ``folder=True`` checks paths that name folders rather than files.

    >>> check_outputs({"--out": "runs/a.json", "--table": "runs/a.json"})
    Traceback (most recent call last):
    ...
    aura_core.errors.AuraError: --out and --table name the same file runs/a.json; give two paths
    """
    seen: dict[Path, str] = {}
    for option, value in outputs.items():
        if not value:
            continue
        path = Path(value).expanduser().absolute()
        if path in seen:
            raise AuraError(f"{seen[path]} and {option} name the same file {value}; give two paths")
        seen[path] = option
        if path.exists():
            if folder and not path.is_dir():
                raise AuraError(f"{option} {value}: is a file; give a folder")
            if not folder and path.is_dir():
                raise AuraError(f"{option} {value}: is a folder; give a file name")
            if not os.access(path, os.W_OK):
                raise AuraError(f"{option} {value}: not writable; choose another path")
            continue
        ancestor = next(parent for parent in path.parents if parent.exists())
        if not ancestor.is_dir():
            raise AuraError(f"{option} {value}: cannot be made, because {ancestor} is a file, not a folder")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise AuraError(f"{option} {value}: no permission to write in {ancestor}; choose another path")


def note_fewer_prompts(args: argparse.Namespace) -> None:
    """Check the prompt file before the model loads, and say so when ``--n-prompts`` asks for more than it has."""
    from aura_core.base.data import load_prompts

    available = len(load_prompts(args.prompts, kind=args.kind))
    if args.n_prompts is not None and args.n_prompts > available:
        kind = f" of kind {args.kind!r}" if args.kind else ""
        print(
            f"note: --n-prompts {args.n_prompts} is more than the {available} prompts{kind} in {args.prompts}; using all {available}",
            file=sys.stderr,
        )


def add_model_args(parser: argparse.ArgumentParser) -> None:
    from aura_core.model.loading import DEFAULT_MODEL

    group = parser.add_argument_group("model")
    group.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"preset, Hugging Face id or local folder (default {DEFAULT_MODEL})"
    )
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    group.add_argument(
        "--dtype",
        default="auto",
        help="auto (bfloat16 where the CPU or GPU computes it natively, else float32), float32, bfloat16 "
        "(with float32 residual stream, norms and massive-activation blocks) or float16 (default auto)",
    )
    group.add_argument("--device-map", default=None, help="'auto' spreads a large model over all devices")
    group.add_argument("--trust-remote-code", action="store_true", help="run the model repository's own code (off by default)")


def add_collect_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("concept data and responses")
    group.add_argument("--data", default="starter", help="'starter', a CSV/JSONL file or a dataset id (default starter)")
    group.add_argument("--n-per-class", type=int, default=300, help="texts per label, balanced (default 300)")
    group.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    group.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help=f"token budget per text (default {MAX_TOKENS})")
    group.add_argument("--pooling", choices=POOLINGS, default=POOLINGS[0], help=f"pooling over tokens (default {POOLINGS[0]})")
    group.add_argument(
        "--units",
        default=None,
        help="a unit family (gate, up, down, all, or roles joined by +, e.g. gate+up) or a regex over module names "
        "(default: all, the architecture's MLP layers)",
    )
    group.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    group.add_argument("--no-cache", action="store_true", help="recompute even if cached")


def load(args: argparse.Namespace) -> LoadedModel:
    from aura_core.model.loading import load_model

    return load_model(
        args.model,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        device_map=args.device_map,
    )


def collect(args: argparse.Namespace, loaded: LoadedModel | None = None) -> tuple[Responses, ConceptData]:
    from aura_core.analysis.collect import collect_responses
    from aura_core.base.data import balanced_sample, load_concept_data
    from aura_core.model.architecture import discover_units

    data = balanced_sample(load_concept_data(args.data), args.n_per_class, seed=args.seed)
    loaded = loaded or load(args)
    units = discover_units(loaded.collector, args.units)
    update, close = progress_bar("collect", "text")
    try:
        responses = collect_responses(
            loaded.collector,
            loaded.tokenizer,
            data,
            units,
            pooling=args.pooling,
            max_tokens=args.max_tokens,
            batch_size=args.batch_size,
            progress=update,
            use_cache=not args.no_cache,
            model_name=args.model,
        )
    finally:
        close()
    return responses, data


def csv_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def stage_progress() -> tuple[Callable[[str, int, int], None], Callable[[], None]]:
    """One tqdm bar per stage (condition) of a long run."""
    label_now: list[str] = []
    bars: list[tuple[Callable[[int, int], None], Callable[[], None]]] = []

    def update(label: str, done: int, total: int) -> None:
        if label_now[-1:] != [label]:
            close()
            bars.append(progress_bar(label, "item"))
            label_now.append(label)
        bars[-1][0](done, total)

    def close() -> None:
        if bars:
            bars[-1][1]()

    return update, close


def numbers(option: str, text: str, kind: type[int] | type[float]) -> tuple[int | float, ...]:
    """The comma list ``text`` of option ``option`` as numbers of type ``kind``, or a clear error."""
    values = []
    for part in csv_list(text):
        try:
            values.append(kind(part))
        except ValueError:
            raise AuraError(f"{option}: {part!r} is not a {'whole number' if kind is int else 'number'}") from None
    if not values:
        raise AuraError(f"{option}: give at least one value")
    return tuple(values)


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    """Where a long run's completions are decoded: our engine, or vLLM in its own environment."""
    group = parser.add_argument_group("engine")
    group.add_argument(
        "--engine",
        choices=["auto", "ours", "vllm"],
        default="auto",
        help="decode completions on vLLM or on our engine (auto: vLLM where `bash scripts/setup.sh --vllm` installed it "
        "and the hardware computes bfloat16, a GPU or a CPU with AVX-512-BF16 or AMX; else ours)",
    )
    group.add_argument(
        "--vllm-dtype",
        default=None,
        help="vLLM's dtype (default: bfloat16 where the hardware computes it, a GPU or a CPU with AVX-512-BF16, else float32)",
    )
    group.add_argument("--tensor-parallel-size", type=int, default=1, help="GPUs per vLLM engine (default 1)")
    group.add_argument(
        "--vllm-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other vllm.LLM setting, e.g. distributed_executor_backend=ray or pipeline_parallel_size=2 (repeatable)",
    )


def vllm_engine_args(pairs: list[str], tensor_parallel_size: int) -> dict[str, Any]:
    """``KEY=VALUE`` settings for ``vllm.LLM``, each value read as JSON where it is JSON.

    >>> vllm_engine_args(["max_num_seqs=64", "distributed_executor_backend=ray"], 1)
    {'tensor_parallel_size': 1, 'max_num_seqs': 64, 'distributed_executor_backend': 'ray'}
    """
    settings: dict[str, Any] = {"tensor_parallel_size": tensor_parallel_size}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise AuraError(f"--vllm-arg {pair!r}: give KEY=VALUE, e.g. max_num_seqs=64")
        try:
            settings[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            settings[key.strip()] = value
    return settings


def engine_runner(args: argparse.Namespace, loaded: LoadedModel) -> Any:
    """The runner the run's completions decode on: a vLLM runner, or None for our engine."""
    from aura_core.runtime.vllm_runner import VllmRunner, auto_engine

    check_counts(args, "tensor_parallel_size")
    if (auto_engine() if args.engine == "auto" else args.engine) == "ours":
        return None
    engine_args = vllm_engine_args(args.vllm_arg, args.tensor_parallel_size)
    log = Path(args.out) / "vllm.log" if getattr(args, "out", None) else None  # else the runner's own, in the cache
    runner = VllmRunner(dtype=args.vllm_dtype, seed=args.seed, engine_args=engine_args, log=log, tokenizer=loaded.tokenizer)
    print(f"completions decode on vLLM ({runner.dtype}); its log: {runner.log_path}", file=sys.stderr)
    return runner
