"""``python -m aura_core``: the AurA pipeline from the command line.

    python -m aura_core models
    python -m aura_core collect --data starter --n-per-class 200 --out runs/responses.safetensors
    python -m aura_core fit --responses runs/responses.safetensors --out runs/aura.safetensors
    python -m aura_core generate --intervention runs/aura.safetensors --compare --kind provocative
    python -m aura_core export --intervention runs/aura.safetensors --out runs/smollm2-aura
    python -m aura_core evaluate --intervention runs/aura.safetensors --sweep --out runs/evaluation
    python -m aura_core bench all --json --markdown BENCHMARKS.md

Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aura_core.analysis.collect import MAX_TOKENS, POOLINGS
from aura_core.analysis.experts import N_PER_CLASS
from aura_core.base.files import atomic_write
from aura_core.errors import AuraError, DataError
from aura_core.method.registry import PLAIN
from aura_core.runtime.sampling import describe_presets

if TYPE_CHECKING:
    from aura_core.base.data import ConceptData
    from aura_core.method.responses import Responses
    from aura_core.model.loaded import LoadedModel

__all__ = ["build_parser", "main"]


def _progress_bar(desc: str, unit: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A tqdm bar on stderr driven by ``progress(done, total)`` callbacks."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar.close


def _emit(rows: list[dict[str, Any]] | dict[str, Any], fmt: str, out: str | None) -> None:
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


def _check_counts(args: argparse.Namespace, *names: str, minimum: int = 1) -> None:
    """Refuse a count option below ``minimum`` before any work.

    >>> _check_counts(argparse.Namespace(n_prompts=-1), "n_prompts")
    Traceback (most recent call last):
    ...
    aura_core.errors.AuraError: --n-prompts must be at least 1, not -1
    """
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < minimum:
            raise AuraError(f"--{name.replace('_', '-')} must be at least {minimum}, not {value}")


def _check_outputs(outputs: dict[str, str | None], *, folder: bool = False) -> None:
    """Refuse output paths (option → path) that cannot be written, before any work or write.

    Missing parent folders are fine: every output makes its own when it is written.
    ``folder=True`` checks paths that name folders rather than files.

    >>> _check_outputs({"--out": "runs/a.json", "--table": "runs/a.json"})
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


def _note_fewer_prompts(args: argparse.Namespace) -> None:
    """Check the prompt file before the model loads, and say so when ``--n-prompts`` asks for more than it has."""
    from aura_core.base.data import load_prompts

    available = len(load_prompts(args.prompts, kind=args.kind))
    if args.n_prompts is not None and args.n_prompts > available:
        kind = f" of kind {args.kind!r}" if args.kind else ""
        print(
            f"note: --n-prompts {args.n_prompts} is more than the {available} prompts{kind} in {args.prompts}; using all {available}",
            file=sys.stderr,
        )


def _add_model_args(parser: argparse.ArgumentParser) -> None:
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


def _add_collect_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("concept data and responses")
    group.add_argument("--data", default="starter", help="'starter', a CSV/JSONL file or a dataset id (default starter)")
    group.add_argument("--n-per-class", type=int, default=300, help="texts per label, balanced (default 300)")
    group.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    group.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help=f"token budget per text (default {MAX_TOKENS})")
    group.add_argument("--pooling", choices=POOLINGS, default=POOLINGS[0], help=f"pooling over tokens (default {POOLINGS[0]})")
    group.add_argument("--units", default=None, help="regex over module names (default: the architecture's MLP layers)")
    group.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    group.add_argument("--no-cache", action="store_true", help="recompute even if cached")


def _load(args: argparse.Namespace) -> LoadedModel:
    from aura_core.model.loading import load_model

    return load_model(
        args.model,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        device_map=args.device_map,
    )


def _collect(args: argparse.Namespace, loaded: LoadedModel | None = None) -> tuple[Responses, ConceptData]:
    from aura_core.analysis.collect import collect_responses
    from aura_core.base.data import balanced_sample, load_concept_data
    from aura_core.model.architecture import discover_units

    data = balanced_sample(load_concept_data(args.data), args.n_per_class, seed=args.seed)
    loaded = loaded or _load(args)
    units = discover_units(loaded.collector, args.units)
    update, close = _progress_bar("collect", "text")
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


def cmd_models(args: argparse.Namespace) -> int:
    from aura_core.model.architecture import discover_units, module_kind, unit_width
    from aura_core.model.loading import PRESETS, preset_status
    from aura_core.model.precision import precision_of

    if args.show:
        loaded = _load(args)
        modules = dict(loaded.model.named_modules())
        units = discover_units(loaded.model, args.units)
        per_kind: dict[str, int] = {}
        for name in units:
            per_kind[module_kind(name)] = per_kind.get(module_kind(name), 0) + unit_width(modules[name])
        config: Any = loaded.model.config
        precision = precision_of(loaded.collector)
        _emit(
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
            },
            args.format,
            args.out,
        )
        return 0
    rows = [
        {"name": p.name, "status": preset_status(p.name), "description": p.description, "install": p.install}
        for p in PRESETS.values()
    ]
    _emit(rows, args.format, args.out)
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    _check_counts(args, "n_per_class", "max_tokens", "batch_size")
    _check_outputs({"--out": args.out})
    responses, data = _collect(args)
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
    _emit(summary, "json", None)
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from aura_core.method.fit import fit_intervention
    from aura_core.method.intervention import unit_table
    from aura_core.method.responses import Responses

    _check_counts(args, "n_per_class", "max_tokens", "batch_size")
    _check_counts(args, "top", minimum=0)
    _check_outputs({"--out": args.out, "--table": args.table})
    responses = Responses.load(args.responses) if args.responses else _collect(args)[0]
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
    _emit(
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


def cmd_generate(args: argparse.Namespace) -> int:
    import numpy as np

    from aura_core.base.data import load_prompts, resolve_preprompt
    from aura_core.evaluation.comparison import summarise_sides
    from aura_core.evaluation.generation import SAMPLING_PRESETS, generate
    from aura_core.evaluation.scoring import load_scorer
    from aura_core.method.intervention import Intervention
    from aura_core.runtime.inline import Inline

    settings = SAMPLING_PRESETS[args.preset]
    changes = {
        key: value
        for key, value in {
            "max_new_tokens": args.max_new_tokens,
            "num_return_sequences": args.samples,
            "temperature": args.temperature,
            "top_p": args.top_p,
            "repetition_penalty": args.repetition_penalty,
        }.items()
        if value is not None
    }
    _check_counts(args, "n_prompts", "samples", "max_new_tokens", "batch_size")
    _check_outputs({"--out": args.out})
    for number, text in enumerate(args.prompt or [], start=1):
        if not text.strip():
            raise DataError(f"--prompt number {number} is empty; give the text to complete")
    settings = settings.with_(**changes)
    if args.prompt:
        prompts = list(args.prompt)
    else:
        _note_fewer_prompts(args)
        prompts = [p.text for p in load_prompts(args.prompts, n=args.n_prompts, seed=args.seed, kind=args.kind)]
    intervention = None
    if args.intervention:
        intervention = Intervention.load(args.intervention, strength=args.strength, method=args.method, k=args.k)
    elif not args.baseline_only:
        raise AuraError("give --intervention FILE (from `fit`), or --baseline-only")
    loaded = _load(args)
    if intervention is not None and not intervention.fitted_on(loaded.collector):
        print("warning: the intervention was fitted on a model with other weights", file=sys.stderr)
    scorer = load_scorer(args.scorer)
    pre_prompt = resolve_preprompt(args.pre_prompt) if args.pre_prompt else None
    conditions: list[tuple[str, Intervention | None]] = [("baseline", None)] if (args.compare or args.baseline_only) else []
    if intervention is not None:
        conditions.append((intervention.method, intervention))
    rows: list[dict[str, Any]] = []
    for condition, iv in conditions:
        update, close = _progress_bar(condition, "completion")
        try:
            outs = generate(
                loaded.model,
                loaded.tokenizer,
                prompts,
                pre_prompt=pre_prompt,
                settings=settings,
                seed=args.seed,
                intervention=iv,
                runner=Inline(max_rows=args.batch_size),
                progress=update,
            )
        finally:
            close()
        scores = scorer.score([g.completion for g in outs])
        for g, score in zip(outs, scores, strict=False):
            rows.append({"condition": condition, **g.as_dict(), "toxicity": round(float(score), 6)})
    _emit(rows, args.format, args.out)
    per_side = {name: np.array([r["toxicity"] for r in rows if r["condition"] == name]) for name, _ in conditions}
    summary = summarise_sides(per_side, seed=args.seed)
    for side in summary.sides:
        print(side.describe(), file=sys.stderr)
    if summary.ratio is not None:
        factor, low, high = summary.ratio
        first, second = (side.side for side in summary.sides[:2])
        print(f"{first} ÷ {second} mean toxicity: {factor:.2f}× [{low:.2f}, {high:.2f}], paired", file=sys.stderr)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Find (or reuse) experts and register them, so the app opens on them and links can name them."""
    from aura_core.analysis.experts import ExpertsRecipe, compute_experts, register_prepared
    from aura_core.base.data import balanced_sample, load_concept_data, source_label

    _check_counts(args, "n_per_class", "max_tokens", "batch_size")
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
    loaded = _load(args)
    update, close = _progress_bar("prepare", "text")
    try:
        experts = compute_experts(loaded, sample, recipe, progress=update, batch_size=args.batch_size)
    finally:
        close()
    register_prepared(args.model, experts.key, args.name)
    query = f"model={quote(args.model)}&experts={experts.key}"
    summary = {
        "experts": experts.key,
        "query": query,
        "model": args.model,
        "name": args.name,
        "texts": len(sample),
        "units": experts.intervention.n_units,
        "best_auroc": round(experts.intervention.auroc_max(), 4),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        _emit(summary, "json", None)
        print(f"open the app with ?{query} (or plainly: it opens on the default experts)", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from aura_core.method.intervention import Intervention
    from aura_core.runtime.folding import export_model

    intervention = Intervention.load(args.intervention, strength=args.strength)
    loaded = _load(args)
    folder = export_model(loaded.model, loaded.tokenizer, intervention, args.out)
    _emit({"out": str(folder), "method": intervention.method, "strength": intervention.strength}, "json", None)
    return 0


def _csv_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _stage_progress() -> tuple[Callable[[str, int, int], None], Callable[[], None]]:
    """One tqdm bar per stage (condition) of a long run."""
    label_now: list[str] = []
    bars: list[tuple[Callable[[int, int], None], Callable[[], None]]] = []

    def update(label: str, done: int, total: int) -> None:
        if label_now[-1:] != [label]:
            close()
            bars.append(_progress_bar(label, "item"))
            label_now.append(label)
        bars[-1][0](done, total)

    def close() -> None:
        if bars:
            bars[-1][1]()

    return update, close


def _numbers(option: str, text: str, kind: type[int] | type[float]) -> tuple[int | float, ...]:
    """The comma list ``text`` of option ``option`` as numbers of type ``kind``, or a clear error."""
    values = []
    for part in _csv_list(text):
        try:
            values.append(kind(part))
        except ValueError:
            raise AuraError(f"{option}: {part!r} is not a {'whole number' if kind is int else 'number'}") from None
    if not values:
        raise AuraError(f"{option}: give at least one value")
    return tuple(values)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from aura_core.base.data import load_neutral_texts
    from aura_core.evaluation.protocol import EvalConfig, operating_point, run_evaluation, run_sweep
    from aura_core.evaluation.reports import describe_operating_point, paper_table, wide_intervals, write_reports
    from aura_core.method.intervention import Intervention
    from aura_core.method.registry import METHODS

    _check_counts(args, "n_prompts", "n_neutral", "samples", "max_new_tokens", "batch_size")
    _check_outputs({"--out": args.out}, folder=True)
    strengths = _numbers("--sweep-strengths", args.sweep_strengths, float) if args.sweep else ()
    ks = tuple(int(k) for k in _numbers("--sweep-ks", args.sweep_ks, int)) if args.sweep and args.sweep_ks else None
    sweep_methods = _csv_list(args.sweep_methods)
    unknown = [m for m in sweep_methods if m not in METHODS]
    if unknown or not sweep_methods:
        raise AuraError(f"--sweep-methods: {', '.join(unknown) or 'none given'}; use {', '.join(METHODS)}")
    if args.ppl_budget is not None and (args.ppl_budget <= 0 or not args.sweep):
        raise AuraError("--ppl-budget needs --sweep and a positive budget, e.g. 0.05 for +5 %")
    _note_fewer_prompts(args)
    neutral = len(load_neutral_texts(args.neutral))
    if args.n_neutral is not None and args.n_neutral > neutral:
        print(
            f"note: --n-neutral {args.n_neutral} is more than the {neutral} texts in {args.neutral}; using all {neutral}",
            file=sys.stderr,
        )
    config = EvalConfig(
        prompts=args.prompts,
        n_prompts=args.n_prompts,
        prompt_kind=args.kind,
        sampling=args.preset,
        samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        prompt_seed=args.prompt_seed,
        scorer=args.scorer,
        neutral=args.neutral,
        n_neutral=args.n_neutral,
        methods=_csv_list(args.methods),
        preprompts=_csv_list(args.preprompts),
        favourable=args.favourable,
        adversarial=args.adversarial,
        preprompt_form=args.preprompt_form,
        strength=args.strength,
        k=args.k,
        damp_alpha=args.damp_alpha,
        bootstrap=args.bootstrap,
        batch_size=args.batch_size,
    )
    intervention = Intervention.load(args.intervention) if args.intervention else None
    if intervention is None and (args.sweep or any(m != PLAIN for m in config.methods)):
        raise AuraError("give --intervention FILE (from `fit`), or --methods none without --sweep")
    loaded = _load(args)
    update, close = _stage_progress()
    try:
        result = run_evaluation(loaded.model, loaded.tokenizer, intervention, config, out_dir=args.out, progress=update)
        if args.sweep and intervention is not None:
            result.sweep = run_sweep(
                loaded.model,
                loaded.tokenizer,
                intervention,
                config,
                method=sweep_methods,
                strengths=strengths,
                ks=ks,
                out_dir=args.out,
                progress=update,
            )
            if args.ppl_budget is not None:
                result.operating_point = operating_point(result.sweep, args.ppl_budget)
    finally:
        close()
    result.provenance["model"] = args.model
    paths = write_reports(result, args.out)
    print(paper_table(result.metrics).to_string(index=False), file=sys.stderr)
    for condition in wide_intervals(result.metrics):
        print(f"warning: the toxic-share interval of {condition} includes 1: more prompts or samples needed", file=sys.stderr)
    point = result.operating_point
    if args.ppl_budget is not None:
        if point is None:
            print(
                f"no strength keeps perplexity within +{args.ppl_budget:.0%}; widen --ppl-budget or add small λ", file=sys.stderr
            )
        else:
            print(f"operating point: {describe_operating_point(point)}", file=sys.stderr)
    summary = {"reports": {k: str(v) for k, v in paths.items()}, "operating_point": point}
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        _emit({**summary, "metrics": result.metrics.to_dict(orient="records")}, "json", None)
    return 0


# The benchmarks are tooling beside the library, never imported by it: `bench` runs them as a program.
BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def cmd_bench(args: argparse.Namespace) -> int:
    """Runs ``python -m benchmarks`` with the same arguments, from the repository root."""
    if not (BENCHMARKS_DIR / "__main__.py").is_file():
        raise AuraError(f"the benchmarks are not here ({BENCHMARKS_DIR}): run this from a checkout of the repository")
    command = [sys.executable, "-m", "benchmarks", *args.bench_args]
    return subprocess.run(command, cwd=BENCHMARKS_DIR.parent, check=False).returncode


def _neurons_unit(text: str) -> tuple[str, int]:
    from aura_core.analysis.neurons import parse_unit

    return parse_unit(text)


def _neurons_evidence(
    args: argparse.Namespace, loaded: LoadedModel, modules: list[str], *, need_texts: bool
) -> tuple[Responses, list[str] | None, str]:
    """Pooled responses of ``modules`` (and the concept texts behind them) for τ, p and the top texts.

    ``--responses`` reads a file from `collect` (its texts are rebuilt from ``--data``, ``--n-per-class``
    and ``--seed``, by default those it records, and checked against its hash); otherwise the
    modules are collected on ``--data`` (cached on disk like `collect`).
    """
    from aura_core.analysis.collect import collect_responses
    from aura_core.base.data import balanced_sample, load_concept_data
    from aura_core.method.responses import Responses

    if args.responses:
        responses = Responses.load(args.responses)
        missing = [m for m in modules if m not in responses.per_module]
        if missing:
            raise DataError(f"{args.responses}: holds no responses of {missing[0]!r}")
        if not need_texts:
            return responses, None, str(responses.meta.get("data_source") or args.responses)
        source = args.data or str(responses.meta.get("data_source") or "starter")
        n_texts = int(responses.labels.numel())
        data = balanced_sample(load_concept_data(source), args.n_per_class or n_texts // 2, seed=args.seed)
        if len(data) != n_texts or data.content_hash() != responses.meta.get("data_hash", data.content_hash()):
            raise DataError(
                f"{args.responses}: the texts behind it cannot be rebuilt from {source}; "
                "give --data, --n-per-class and --seed as used to collect it"
            )
        return responses, data.texts, source
    source = args.data or "starter"
    data = balanced_sample(load_concept_data(source), args.n_per_class or N_PER_CLASS, seed=args.seed)
    responses = collect_responses(
        loaded.collector, loaded.tokenizer, data, modules, max_tokens=args.max_tokens, model_name=args.model
    )
    return responses, data.texts, source


def _neurons_intervention(args: argparse.Namespace) -> Any:
    """The intervention file, with --max-tokens defaulting to the token budget it was fitted with."""
    from aura_core.method.intervention import Intervention

    _check_counts(args, "n_per_class", "max_tokens")
    intervention = Intervention.load(args.intervention)
    if args.max_tokens is None:
        budget = intervention.meta.get("max_tokens")
        args.max_tokens = budget if isinstance(budget, int) and budget > 0 else 64
    return intervention


def cmd_neurons_show(args: argparse.Namespace) -> int:
    """One unit in full: AUROC, α, gated partner, top texts of both classes, density on neutral text, vocabulary."""
    from aura_core.analysis.firing import unit_baselines
    from aura_core.analysis.neurons import check_unit, gated_partner, unit_detail
    from aura_core.analysis.unit_profile import activation_profile
    from aura_core.base.data import load_neutral_texts
    from aura_core.method.responses import Responses

    _check_counts(args, "top_texts", "vocab")
    module, unit = _neurons_unit(args.unit)
    intervention = _neurons_intervention(args)
    widths = {name: t.numel() for name, t in intervention.auroc.items()}
    check_unit(widths, module, unit)
    neutral = load_neutral_texts(args.neutral)
    loaded = _load(args)
    intervention.check_fits(loaded.model)
    partner = gated_partner(loaded.model, module)
    modules = [module] + ([partner] if partner and partner in widths else [])
    responses, texts, source = _neurons_evidence(args, loaded, modules, need_texts=True)
    thresholds = unit_baselines(Responses({m: responses.per_module[m] for m in modules}, responses.labels)).thresholds
    profile = activation_profile(
        loaded.model,
        loaded.tokenizer,
        neutral,
        thresholds,
        corpus="data/neutral.txt" if args.neutral == "starter" else str(args.neutral),
        max_tokens=args.max_tokens,
    )
    detail = unit_detail(
        loaded.model,
        loaded.tokenizer,
        intervention,
        module,
        unit,
        responses=responses,
        texts=texts,
        profile=profile,
        per_class=args.top_texts,
        max_tokens=args.max_tokens,
        vocabulary_k=args.vocab,
    )
    result = {**detail.as_dict(), "concept_data": source}
    if args.json:
        _emit(result, "json", None)
        return 0
    print(_neurons_show_text(detail))
    return 0


def _neurons_show_text(detail: Any) -> str:
    """A few readable lines for a terminal (``--json`` gives everything)."""
    from aura_core.analysis.token_text import visible_whitespace

    lines = [
        f"{detail.unit.ref}  layer {detail.unit.layer} · {detail.unit.kind} · AUROC {detail.unit.auroc:.4f} · α {detail.unit.alpha:.3f}"
    ]
    if detail.partner:
        lines.append(f"  gated with {detail.partner.ref}: AUROC {detail.partner.auroc:.4f} · α {detail.partner.alpha:.3f}")
    if detail.density:
        d = detail.density
        lines.append(f"  fires above τ = {d.threshold:.3f} on {d.density:.2%} of {d.n_tokens:,} tokens of {d.corpus}")
        lines.append("  quantiles: " + ", ".join(f"{q}: {v:.3f}" for q, v in d.quantiles.items()))
    for label, name in ((1, "toxic"), (0, "non-toxic")):
        for top in detail.texts_of(label):
            acts = top.activations
            peak = visible_whitespace(acts.tokens[acts.peak]) if acts.tokens else ""
            lines.append(f"  {name:>9} {top.response:8.3f} at {peak!r}: {acts.text[:90]!r}")
    if detail.vocabulary:
        lines.append("  promotes: " + " ".join(t.token for t in detail.vocabulary.promoted))
        lines.append("  suppresses: " + " ".join(t.token for t in detail.vocabulary.suppressed))
    return "\n".join(lines)


def cmd_neurons_fire(args: argparse.Namespace) -> int:
    """Per token of ``--text``: its score and the experts that fire most there."""
    from aura_core.analysis.firing import experts_firing, unit_baselines

    _check_counts(args, "top")
    if not args.text.strip():
        raise DataError("--text is empty: give the text for the experts to read")
    intervention = _neurons_intervention(args)
    loaded = _load(args)
    intervention.check_fits(loaded.model)
    responses, _, source = _neurons_evidence(args, loaded, list(intervention.auroc), need_texts=False)
    firing = experts_firing(
        loaded.model, loaded.tokenizer, intervention, args.text, baselines=unit_baselines(responses), top_k=args.top
    )
    if args.json:
        _emit({**firing.as_dict(), "concept_data": source}, "json", None)
        return 0
    for token in firing.tokens:
        experts = ", ".join(f"{e.ref} ({e.score:.2f})" for e in token.experts[:3])
        print(f"{token.as_dict()['shown']!s:>16}  {token.score:8.2f}  {experts}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from aura_core.evaluation.generation import SAMPLING_PRESETS
    from aura_core.evaluation.protocol import PREPROMPT_GROUPS, EvalConfig
    from aura_core.evaluation.scoring import DEFAULT_SCORER
    from aura_core.method.registry import METHODS, method_names

    parser = argparse.ArgumentParser(
        prog="python -m aura_core", description="AurA: find and dampen the units of a language model that express a concept."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="list model presets, or inspect one model's units")
    _add_model_args(models)
    models.add_argument("--show", action="store_true", help="load --model and describe its units")
    models.add_argument("--units", default=None, help="regex over module names (with --show)")
    models.add_argument("--format", choices=["json", "csv"], default="json")
    models.add_argument("--out", default=None, help="write to this file instead of stdout")
    models.set_defaults(func=cmd_models)

    collect = sub.add_parser("collect", help="pooled unit responses to concept texts (cached)")
    _add_model_args(collect)
    _add_collect_args(collect)
    collect.add_argument("--out", default=None, help="also save the responses to this .safetensors file")
    collect.set_defaults(func=cmd_collect)

    fit = sub.add_parser("fit", help="per-unit AUROC and an intervention file")
    _add_model_args(fit)
    _add_collect_args(fit)
    fit.add_argument("--responses", default=None, help="a file from `collect --out` (otherwise collect first)")
    fit.add_argument("--method", choices=METHODS, default="aura")
    fit.add_argument("--k", type=int, default=None, help="units acted on by det0/damp")
    fit.add_argument("--damp-alpha", type=float, default=0.5, help="constant factor for damp (default 0.5)")
    fit.add_argument("--strength", type=float, default=1.0, help="λ in [0, 1] (default 1)")
    fit.add_argument("--out", required=True, help="intervention file to write (.safetensors)")
    fit.add_argument("--table", default=None, help="write the per-unit AUROC table to this CSV")
    fit.add_argument("--top", type=int, default=10, help="top units to print (default 10)")
    fit.add_argument("--format", choices=["json", "csv"], default="json")
    fit.set_defaults(func=cmd_fit)

    gen = sub.add_parser("generate", help="seeded completions, baseline and/or intervened, with toxicity scores")
    _add_model_args(gen)
    gen.add_argument("--intervention", default=None, help="a file from `fit`")
    gen.add_argument("--method", choices=METHODS, default=None, help="override the file's method")
    gen.add_argument("--k", type=int, default=None, help="override k (det0/damp)")
    gen.add_argument("--strength", type=float, default=None, help="override λ")
    gen.add_argument("--compare", action="store_true", help="also run the baseline with the same seed")
    gen.add_argument("--baseline-only", action="store_true", help="no intervention")
    gen.add_argument("--prompt", action="append", help="a prompt (repeatable); otherwise --prompts")
    gen.add_argument("--prompts", default="starter", help="'starter' or a prompt file (JSONL/CSV/lines)")
    gen.add_argument("--kind", default=None, help="only prompts of this kind (e.g. provocative)")
    gen.add_argument("--n-prompts", type=int, default=None, help="sample this many prompts")
    gen.add_argument("--pre-prompt", default=None, help="text, or a starter name such as 'polite'")
    gen.add_argument("--preset", choices=list(SAMPLING_PRESETS), default="demo")
    gen.add_argument("--samples", type=int, default=None, help="completions per prompt")
    gen.add_argument("--max-new-tokens", type=int, default=None)
    gen.add_argument("--temperature", type=float, default=None)
    gen.add_argument("--top-p", type=float, default=None)
    gen.add_argument("--repetition-penalty", type=float, default=None)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--batch-size", type=int, default=32)
    gen.add_argument("--scorer", default=DEFAULT_SCORER, help=f"toxicity scorer (default {DEFAULT_SCORER}) or an HF model id")
    gen.add_argument("--format", choices=["json", "csv"], default="json")
    gen.add_argument("--out", default=None)
    gen.set_defaults(func=cmd_generate)

    evaluate = sub.add_parser("evaluate", help="toxicity and perplexity per method × pre-prompt, with reports")
    _add_model_args(evaluate)
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
    evaluate.add_argument("--scorer", default=defaults.scorer)
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
    evaluate.add_argument("--out", default="runs/evaluation", help="run folder: reports, and finished pieces for resuming")
    evaluate.set_defaults(func=cmd_evaluate)

    # No options of its own: everything after `bench`, -h included, goes to python -m benchmarks as it is.
    bench = sub.add_parser("bench", help="benchmarks, as python -m benchmarks (see bench -h)", prefix_chars="+", add_help=False)
    bench.add_argument("bench_args", nargs="*", help="benchmark names and options")
    bench.set_defaults(func=cmd_bench)

    prepare = sub.add_parser("prepare", help="find experts once and make them the app's default (or a named preset)")
    _add_model_args(prepare)
    _add_collect_args(prepare)
    prepare.set_defaults(n_per_class=N_PER_CLASS)
    prepare.add_argument("--name", default="default", help="'default' (what the app opens on) or a preset name")
    prepare.add_argument("--json", action="store_true", help="print one line of JSON: experts key and link query")
    prepare.set_defaults(func=cmd_prepare)

    export = sub.add_parser("export", help="save the intervened model as an ordinary checkpoint folder")
    _add_model_args(export)
    export.add_argument("--intervention", required=True)
    export.add_argument("--strength", type=float, default=None, help="override λ")
    export.add_argument("--out", required=True, help="new folder to write")
    export.set_defaults(func=cmd_export)

    neurons = sub.add_parser("neurons", help="one unit in detail (show), or which experts fire on a text (fire)")
    neurons_sub = neurons.add_subparsers(dest="neurons_command", required=True)
    show = neurons_sub.add_parser("show", help="a unit's AUROC, α, top texts of both classes, density and vocabulary")
    fire = neurons_sub.add_parser("fire", help="per token of a text, the experts that fire there")
    for part in (show, fire):
        _add_model_args(part)
        part.add_argument("--intervention", required=True, help="a file from `fit` (its AUROC says how expert each unit is)")
        part.add_argument("--responses", default=None, help="a file from `collect` (otherwise the units are collected on --data)")
        part.add_argument("--data", default=None, help="concept data for τ, p and top texts: 'starter' (default) or a CSV/JSONL")
        part.add_argument(
            "--n-per-class", type=int, default=None, help=f"texts per label (default {N_PER_CLASS}, or the responses' own)"
        )
        part.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
        part.add_argument("--max-tokens", type=int, default=None, help="token budget per text (default: the intervention's)")
        part.add_argument("--json", action="store_true", help="print JSON (default: a few readable lines)")
    show.add_argument("--unit", required=True, help="MODULE:INDEX, e.g. model.layers.5.mlp.gate_proj:1343")
    show.add_argument("--top-texts", type=int, default=5, help="top texts per class (default 5)")
    show.add_argument(
        "--neutral", default="starter", help="corpus for the density: 'starter' (data/neutral.txt), .txt, CSV or JSONL"
    )
    show.add_argument("--vocab", type=int, default=12, help="promoted and suppressed tokens to list (default 12)")
    show.set_defaults(func=cmd_neurons_show)
    fire.add_argument("--text", required=True, help="the text to read")
    fire.add_argument("--top", type=int, default=5, help="experts per token (default 5)")
    fire.set_defaults(func=cmd_neurons_fire)
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
