"""The paper's measurement: toxicity of seeded completions and perplexity, per method × pre-prompt.

Each condition's scored completions and each method's per-text perplexity terms are saved in
the run folder as soon as they exist, so an interrupted evaluation resumes where it stopped.

>>> config = EvalConfig(n_prompts=20)                                              # doctest: +SKIP
>>> result = run_evaluation(loaded.model, loaded.tokenizer, aura, config, out_dir="runs/eval")   # doctest: +SKIP
>>> result.metrics[["method", "preprompt", "mean_toxicity", "reduction"]]          # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

from aura_core.base.batching import Tokenizer
from aura_core.base.data import NO_PREPROMPT, load_neutral_texts, load_preprompts, load_prompts, resolve_preprompt
from aura_core.base.data import PREPROMPT_GROUPS as STARTER_GROUPS
from aura_core.base.files import atomic_write, content_key
from aura_core.base.numbers import check_finite
from aura_core.base.store import ensure_free_space
from aura_core.errors import AuraError
from aura_core.evaluation.generation import PREPROMPT_FORMS, SAMPLING_PRESETS, Generation, SamplingSettings, completion_rows
from aura_core.evaluation.scoring import DEFAULT_SCORER, ToxicityScorer, load_scorer, text_nll
from aura_core.evaluation.zeroshot import accuracy_change, last_word_hits, last_word_items
from aura_core.method.intervention import Intervention
from aura_core.method.registry import METHODS, PLAIN, method_names
from aura_core.method.stats import MEASURES, bootstrap_ppl_change, paired_reduction, perplexity_of, toxicity_metrics
from aura_core.model.architecture import ALL_UNITS, discover_units, unit_families
from aura_core.model.loading import model_fingerprint
from aura_core.runtime.decoding import DecodeRow
from aura_core.runtime.inline import Inline
from aura_core.runtime.runner import DECODE_ROWS, Runner

__all__ = [
    "PREPROMPT_GROUPS",
    "Condition",
    "EvalConfig",
    "EvalResult",
    "Evaluation",
    "evaluate_args",
    "judged_by",
    "operating_point",
    "run_evaluation",
    "run_sweep",
    "summarise",
    "sweep_families",
]

PREPROMPT_GROUPS = (NO_PREPROMPT, *STARTER_GROUPS)
Progress = Callable[[str, int, int], None]
ConditionProgress = Callable[[dict[str, tuple[int, int]]], None]


@dataclass
class EvalConfig:
    """Every setting of an evaluation; recorded in each report so a run can be repeated exactly."""

    prompts: str = "starter"
    n_prompts: int | None = 50
    prompt_kind: str | None = None
    sampling: str = "paper"
    samples: int | None = None
    max_new_tokens: int | None = None
    seed: int = 0
    prompt_seed: int = 0
    scorer: str = DEFAULT_SCORER
    neutral: str = "starter"
    n_neutral: int | None = 60
    ppl_max_tokens: int = 128
    zero_shot: bool = True  # last-word accuracy on the neutral texts, beside perplexity
    methods: tuple[str, ...] = (PLAIN, "aura")
    preprompts: tuple[str, ...] = PREPROMPT_GROUPS
    favourable: str | None = None
    adversarial: str | None = None
    preprompt_form: str = "text"
    strength: float = 1.0
    k: int = 200
    damp_alpha: float = 0.5
    units: str = ALL_UNITS
    bootstrap: int = 1000
    batch_size: int = DECODE_ROWS  # completions decoding at once (inline); no result depends on it

    def __post_init__(self) -> None:
        check_finite(self)
        if self.sampling not in SAMPLING_PRESETS:
            raise AuraError(f"unknown sampling preset {self.sampling!r}: one of {', '.join(SAMPLING_PRESETS)}")
        if self.preprompt_form not in PREPROMPT_FORMS:
            raise AuraError(f"pre-prompt form must be one of {', '.join(PREPROMPT_FORMS)}, not {self.preprompt_form!r}")
        allowed = method_names(with_plain=True)
        bad = [m for m in self.methods if m not in allowed]
        if bad or not self.methods:
            raise AuraError(f"methods must be among {', '.join(allowed)} (got {', '.join(bad) or 'none at all'})")
        bad = [p for p in self.preprompts if p not in PREPROMPT_GROUPS]
        if bad or not self.preprompts:
            raise AuraError(f"pre-prompts must be among {', '.join(PREPROMPT_GROUPS)} (got {', '.join(bad) or 'none at all'})")
        if self.bootstrap < 100:
            raise AuraError("bootstrap needs at least 100 resamples")
        self.methods = tuple(self.methods)
        self.preprompts = tuple(self.preprompts)

    def sampling_settings(self) -> SamplingSettings:
        settings = SAMPLING_PRESETS[self.sampling]
        changes = {"num_return_sequences": self.samples, "max_new_tokens": self.max_new_tokens}
        return settings.with_(**{k: v for k, v in changes.items() if v is not None})

    def preprompt_text(self, group: str) -> str:
        if group == NO_PREPROMPT:
            return ""
        wanted = self.favourable if group == "favourable" else self.adversarial
        if wanted is None:
            return load_preprompts()[group][0]["text"]
        return resolve_preprompt(wanted, group)  # a starter name, or a custom text as given

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "sampling_settings": asdict(self.sampling_settings())}


@dataclass
class EvalResult:
    config: EvalConfig
    generations: pd.DataFrame
    metrics: pd.DataFrame
    perplexity_terms: dict[str, tuple[np.ndarray, np.ndarray]]
    provenance: dict[str, object] = field(default_factory=dict)
    sweep: pd.DataFrame | None = None
    operating_point: dict[str, object] | None = None
    zero_shot: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # per method: hits, passage of each item
    judges: dict[str, pd.DataFrame] = field(default_factory=dict)  # metrics of the same completions under other judges


def _score_matrix(frame: pd.DataFrame) -> np.ndarray:
    matrix: np.ndarray = frame.pivot(index="prompt_index", columns="sample", values="toxicity").sort_index().to_numpy()
    return matrix


def summarise(
    generations: pd.DataFrame,
    ppl_terms: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    zero_shot: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> pd.DataFrame:
    """One row per condition: toxicity measures, perplexity, and the change against the baselines.

    For each measure of :data:`aura_core.stats.MEASURES` (toxic share first, as the paper),
    ``<measure>_reduction`` compares with the plain model without pre-prompt (the paper's
    reference) and ``<measure>_reduction_same_preprompt`` with the plain model under the same
    pre-prompt, each with a paired bootstrap interval (``_low``, ``_high``). With ``zero_shot``
    (per method: last-word hits and each item's passage), ``zero_shot_acc`` and its change in
    accuracy against the plain model (``zero_shot_change``) carry intervals over passages too.
    """
    conditions = generations[["method", "preprompt"]].drop_duplicates().itertuples(index=False)
    per_prompt = {
        (m, p): _score_matrix(generations[(generations.method == m) & (generations.preprompt == p)]) for m, p in conditions
    }
    plain_key = (PLAIN, NO_PREPROMPT)
    rows = []
    for (method, preprompt), scores in per_prompt.items():
        row: dict[str, object] = {
            "method": method,
            "preprompt": preprompt,
            "prompts": scores.shape[0],
            "samples": scores.shape[1],
        }
        row.update(toxicity_metrics(scores))
        for suffix, reference in (("", plain_key), ("_same_preprompt", (PLAIN, preprompt))):
            if reference not in per_prompt or per_prompt[reference].shape != scores.shape:
                continue
            for measure in MEASURES:
                point, low, high = paired_reduction(per_prompt[reference], scores, measure, n_boot=n_boot, seed=seed)
                name = f"{measure}_reduction{suffix}"
                row.update({name: point, f"{name}_low": low, f"{name}_high": high})
        if method in ppl_terms:
            row["perplexity"] = perplexity_of(*ppl_terms[method])
            if PLAIN in ppl_terms:
                for name, relative in (("ppl_change", False), ("ppl_change_rel", True)):
                    change, low, high = bootstrap_ppl_change(
                        ppl_terms[PLAIN], ppl_terms[method], relative=relative, n_boot=n_boot, seed=seed
                    )
                    row.update({name: change, f"{name}_low": low, f"{name}_high": high})
        if zero_shot and method in zero_shot:
            hits, groups = zero_shot[method]
            accuracy, low, high = accuracy_change(None, hits, groups, n_boot=n_boot, seed=seed)
            row.update({"zero_shot_acc": accuracy, "zero_shot_acc_low": low, "zero_shot_acc_high": high})
            if PLAIN in zero_shot:
                change, low, high = accuracy_change(zero_shot[PLAIN][0], hits, groups, n_boot=n_boot, seed=seed)
                row.update({"zero_shot_change": change, "zero_shot_change_low": low, "zero_shot_change_high": high})
        rows.append(row)
    return pd.DataFrame(rows)


def judged_by(result: EvalResult, scorer: ToxicityScorer) -> pd.DataFrame:
    """The result's metrics with its completions scored again by another judge (the same completions, the same prompts)."""
    rescored = result.generations.assign(toxicity=scorer.score(result.generations["completion"].astype(str).tolist()))
    config = result.config
    return summarise(rescored, result.perplexity_terms, n_boot=config.bootstrap, seed=config.seed, zero_shot=result.zero_shot)


def _hash(*parts: object) -> str:
    return content_key(parts)


class _RunFolder:
    """Where finished pieces of a run are kept (JSON files written atomically)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        if folder is not None:
            ensure_free_space(folder, what="this evaluation")  # before any completion is decoded
            (folder / "pieces").mkdir(parents=True, exist_ok=True)

    def load(self, key: str) -> object | None:
        if self.folder is None:
            return None
        path = self.folder / "pieces" / f"{key}.json"
        if not path.is_file():
            return None
        try:
            piece: object = json.loads(path.read_text())
        except json.JSONDecodeError:  # a piece cut short by a crash is recomputed
            return None
        return piece

    def save(self, key: str, value: object) -> None:
        if self.folder is not None:
            atomic_write(self.folder / "pieces" / f"{key}.json", json.dumps(value))


@dataclass(frozen=True)
class Condition:
    """One set of completions to produce: a label, the pre-prompt text and the intervention."""

    label: str
    pre_text: str
    intervention: Intervention | None


class Evaluation:
    """One evaluation: a model, its prompts and neutral texts, where finished pieces are kept, where work runs.

    ``runner`` is a server's shared engine, or (by default) inline with ``config.batch_size``
    rows decoding at once. Every finished piece (a condition's scored completions, a method's
    perplexity terms) is kept in ``out_dir`` at once, so a rerun resumes.

    >>> evaluation = Evaluation(model, tok, aura, EvalConfig(n_prompts=20), out_dir="runs/eval")   # doctest: +SKIP
    >>> result = evaluation.run()                                                                   # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Tokenizer,
        intervention: Intervention | None,
        config: EvalConfig,
        *,
        out_dir: str | Path | None = None,
        scorer: ToxicityScorer | None = None,
        progress: Progress | None = None,
        runner: Runner | None = None,
        condition_progress: ConditionProgress | None = None,
    ) -> None:
        if intervention is not None:
            intervention.check_fits(model)  # before any work: a mismatch is an error, not a late crash
        self.model, self.tokenizer, self.intervention, self.config = model, tokenizer, intervention, config
        # The prompt subsample has its own seed, so sampling seeds can be compared on the same prompts.
        self.prompts = load_prompts(config.prompts, n=config.n_prompts, seed=config.prompt_seed, kind=config.prompt_kind)
        neutral = load_neutral_texts(config.neutral)
        self.neutral = neutral if config.n_neutral is None else neutral[: config.n_neutral]
        self.scorer = scorer or load_scorer(config.scorer)
        self.settings = config.sampling_settings()
        self.pieces = _RunFolder(Path(out_dir) if out_dir else None)
        self.progress = progress
        self.condition_progress = condition_progress
        self.runner = runner or Inline(max_rows=config.batch_size)
        self.fingerprint = model_fingerprint(model)
        self._families: dict[str, Intervention] = {}
        if intervention is not None:
            self.restricted(config.units)  # an unknown family is an error before any work

    def restricted(self, units: str) -> Intervention:
        """The fitted intervention on one unit family's modules (``all``: every module it holds).

        ``units`` is a family name or a regex over module names (see :func:`discover_units`).
        """
        if self.intervention is None:
            raise AuraError("unit families need an intervention (fit one first)")
        if units == ALL_UNITS:
            return self.intervention
        if units not in self._families:
            try:
                self._families[units] = self.intervention.restricted(discover_units(self.model, units))
            except AuraError as err:
                raise AuraError(f"units {units!r}: {err}") from None
        return self._families[units]

    def intervention_for(
        self, method: str, *, strength: float | None = None, k: int | None = None, units: str | None = None
    ) -> Intervention | None:
        """The fitted intervention with ``method``, on ``units`` (default the config's), with its settings (None for the plain model)."""
        if method == PLAIN:
            return None
        if self.intervention is None:
            raise AuraError(f"method {method} needs an intervention (fit one first)")
        return self.restricted(self.config.units if units is None else units).with_settings(
            method=method,
            strength=self.config.strength if strength is None else strength,
            k=(k or self.config.k) if METHODS[method].uses_k else None,
            damp_alpha=self.config.damp_alpha,
        )

    def _stage(self, label: str, done: int, total: int) -> None:
        if self.progress:
            self.progress(label, done, total)

    def completions(self, conditions: list[Condition]) -> dict[str, list[dict[str, object]]]:
        """Scored completions of every condition; those not already kept are decoded in one go.

        All conditions' rows go to the runner together, so they share batches (across prompts
        and conditions); each condition is scored and kept as soon as all of its rows are done.
        """
        texts = [p.text for p in self.prompts]

        def key_of(condition: Condition) -> str:
            intervention = PLAIN if condition.intervention is None else condition.intervention.key()
            settings = asdict(self.settings)
            # The pre-prompt's form joins the key only when it is not plain text, so earlier runs stay valid.
            pre = condition.pre_text if self.config.preprompt_form == "text" else [condition.pre_text, self.config.preprompt_form]
            parts: list[object] = [
                "gen",
                self.fingerprint,
                intervention,
                texts,
                pre,
                settings,
                self.config.seed,
                self.scorer.name,
            ]
            engine = getattr(self.runner, "completion_key", None)  # another engine's completions are other pieces
            return _hash(*parts, engine) if engine else _hash(*parts)

        results: dict[str, list[dict[str, object]]] = {}
        todo: dict[str, tuple[Condition, list[DecodeRow]]] = {}
        for condition in conditions:
            cached = self.pieces.load(key_of(condition))
            if isinstance(cached, list):
                results[condition.label] = cached
                continue
            rows = completion_rows(
                self.tokenizer,
                texts,
                pre_prompt=condition.pre_text or None,
                settings=self.settings,
                seed=self.config.seed,
                intervention=condition.intervention,
                preprompt_form=self.config.preprompt_form,
            )
            todo[condition.label] = (condition, rows)

        def finish(label: str) -> None:
            condition, rows = todo.pop(label)
            completions = self.tokenizer.batch_decode([row.tokens for row in rows], skip_special_tokens=True)
            scores = self.scorer.score(completions)
            samples = self.settings.num_return_sequences
            scored = [
                {
                    **Generation(i // samples, i % samples, texts[i // samples], condition.pre_text, text).as_dict(),
                    "toxicity": float(score),
                }
                for i, (text, score) in enumerate(zip(completions, scores, strict=True))
            ]
            self.pieces.save(key_of(condition), scored)
            results[label] = scored

        every = [row for _, rows in todo.values() for row in rows]
        stage = f"generating {len(every):,} completions ({len(todo)} conditions)"

        sizes = {c.label: len(texts) * self.settings.num_return_sequences for c in conditions}

        def report() -> None:
            if self.condition_progress:
                running = {label: sum(row.done for row in rows) for label, (_, rows) in todo.items()}
                self.condition_progress({label: (running.get(label, size), size) for label, size in sizes.items()})

        def on_progress(done: int, total: int) -> None:
            report()
            for label in [label for label, (_, rows) in todo.items() if all(row.done for row in rows)]:
                finish(label)
            self._stage(stage, done, total)

        report()
        if every:
            self._stage(stage, 0, len(every))
            self.runner.decode(self.model, every, priority="bulk", progress=on_progress)
            for label in list(todo):
                finish(label)
        return results

    def perplexity_terms(self, intervention: Intervention | None, label: str) -> tuple[np.ndarray, np.ndarray]:
        """Per neutral text: summed NLL and token count under ``intervention`` (kept for a rerun)."""
        intervention_key = PLAIN if intervention is None else intervention.key()
        key = _hash("ppl", self.fingerprint, intervention_key, self.neutral, self.config.ppl_max_tokens)
        cached = self.pieces.load(key)
        if not isinstance(cached, dict):
            self._stage(label, 0, 1)
            sums, counts = text_nll(
                self.model,
                self.tokenizer,
                self.neutral,
                max_tokens=self.config.ppl_max_tokens,
                intervention=intervention,
                runner=self.runner,
            )
            cached = {"nll": sums.tolist(), "count": counts.tolist()}
            self.pieces.save(key, cached)
        self._stage(label, 1, 1)
        return np.array(cached["nll"]), np.array(cached["count"])

    def zero_shot_hits(self, intervention: Intervention | None, label: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Last-word hits on the neutral texts under ``intervention``, and each item's text (kept for a rerun).

        None when the neutral texts hold no sentence long enough to make an item.
        """
        items = last_word_items(self.neutral)
        if not items:
            return None
        intervention_key = PLAIN if intervention is None else intervention.key()
        words = [(item.text_index, item.word) for item in items]  # the items themselves, so another recipe is another piece
        key = _hash("zeroshot", self.fingerprint, intervention_key, self.neutral, words, self.config.ppl_max_tokens)
        cached = self.pieces.load(key)
        if not isinstance(cached, list):
            self._stage(label, 0, 1)
            hits = last_word_hits(
                self.model,
                self.tokenizer,
                items,
                max_tokens=self.config.ppl_max_tokens,
                intervention=intervention,
                runner=self.runner,
            )
            cached = [bool(hit) for hit in hits]
            self.pieces.save(key, cached)
        self._stage(label, 1, 1)
        return np.array(cached, dtype=bool), np.array([item.text_index for item in items])

    def provenance(self) -> dict[str, object]:
        provenance: dict[str, object] = {
            "model_fingerprint": self.fingerprint,
            "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
            "scorer": self.scorer.name,
            "n_prompts": len(self.prompts),
            "n_neutral": len(self.neutral),
        }
        describe = getattr(self.runner, "describe", None)
        provenance["engine"] = describe() if callable(describe) else "aura"  # who decoded the completions
        if self.intervention is not None:
            provenance["intervention"] = {
                "fitted_on": self.intervention.meta,
                "auroc_hash": self.intervention.with_strength(1.0).key(),
            }
        return provenance

    def run(self) -> EvalResult:
        """Generate, score and measure every method × pre-prompt condition of the config."""
        config = self.config
        cells = [(method, group) for method in config.methods for group in config.preprompts]
        labels = {cell: f"{cell[0]} · pre-prompt {cell[1]}" for cell in cells}
        conditions = [Condition(labels[(m, g)], config.preprompt_text(g), self.intervention_for(m)) for m, g in cells]
        scored = self.completions(conditions)
        generations = pd.concat(
            [pd.DataFrame(scored[labels[(m, g)]]).assign(method=m, preprompt=g) for m, g in cells], ignore_index=True
        )
        ppl = {
            method: self.perplexity_terms(self.intervention_for(method), f"{method} · perplexity") for method in config.methods
        }
        zero_shot = {}
        for method in config.methods if config.zero_shot else ():
            hits = self.zero_shot_hits(self.intervention_for(method), f"{method} · last-word accuracy")
            if hits is not None:
                zero_shot[method] = hits
        metrics = summarise(generations, ppl, n_boot=config.bootstrap, seed=config.seed, zero_shot=zero_shot)
        return EvalResult(config, generations, metrics, ppl, self.provenance(), zero_shot=zero_shot)

    def sweep(
        self,
        methods: tuple[str, ...] | str = "aura",
        strengths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0),
        ks: tuple[int, ...] | None = None,
        units: tuple[str, ...] = (ALL_UNITS,),
    ) -> pd.DataFrame:
        """Toxicity and perplexity over a grid of methods × unit families × λ (× k for Det0/Damp), without pre-prompt.

        Every point has its reductions against the plain model, and its absolute and relative
        perplexity change, each with a paired bootstrap interval. ``units`` names unit families
        (``gate``, ``up``, ``down``, ``all``...): each point acts on that family's modules only,
        and ``units_changed`` counts the units whose output it changes.
        """
        if self.intervention is None:
            raise AuraError("a sweep needs an intervention (fit one first)")
        methods = (methods,) if isinstance(methods, str) else tuple(methods)
        units = tuple(dict.fromkeys(units))
        for family in units:
            self.restricted(family)  # every family checked before any work
        base_ppl = self.perplexity_terms(None, f"{PLAIN} · perplexity")
        grid = [
            (method, k, family, strength)
            for method in methods
            for k in (ks if (METHODS[method].uses_k and ks) else (self.config.k,))
            for family in units
            for strength in strengths
            if strength > 0
        ]

        def label_of(method: str, k: int, family: str, strength: float) -> str:
            label = f"{method} λ={strength:g}" + (f" k={k}" if METHODS[method].uses_k else "")
            return label if family == ALL_UNITS else f"{label} units={family}"

        interventions = {label_of(m, k, u, s): self.intervention_for(m, strength=s, k=k, units=u) for m, k, u, s in grid}
        conditions = [Condition("plain", "", None)] + [Condition(label, "", iv) for label, iv in interventions.items()]
        scored = self.completions(conditions)
        plain = _score_matrix(pd.DataFrame(scored["plain"]))
        n_boot, seed = self.config.bootstrap, self.config.seed
        rows = []
        for method, k, family, strength in [(m, self.config.k, u, 0.0) for m in methods for u in units] + grid:
            label = label_of(method, k, family, strength) if strength > 0 else "plain"
            intervention = interventions.get(label)
            terms = base_ppl if intervention is None else self.perplexity_terms(intervention, f"{label} · perplexity")
            scores = _score_matrix(pd.DataFrame(scored[label]))
            uses = METHODS[method]
            row: dict[str, object] = {
                "method": method,
                "units": family,
                "strength": strength,
                "k": k if uses.uses_k else None,
                "damp_alpha": self.config.damp_alpha if uses.uses_damp_alpha else None,
                "units_changed": 0 if intervention is None else _units_changed(intervention),
            }
            row.update(toxicity_metrics(scores))
            for measure in MEASURES:
                point, low, high = paired_reduction(plain, scores, measure, n_boot=n_boot, seed=seed)
                row.update({f"{measure}_reduction": point, f"{measure}_reduction_low": low, f"{measure}_reduction_high": high})
            row["perplexity"] = perplexity_of(*terms)
            for name, relative in (("ppl_change", False), ("ppl_change_rel", True)):
                change, low, high = bootstrap_ppl_change(base_ppl, terms, relative=relative, n_boot=n_boot, seed=seed)
                row.update({name: change, f"{name}_low": low, f"{name}_high": high})
            rows.append(row)
        return pd.DataFrame(rows)


def sweep_families(model: nn.Module, intervention: Intervention) -> tuple[str, ...]:
    """The unit families a sweep covers by default: each of the architecture's that holds some of the intervention's
    modules and not all of them, then ``all``.

    >>> import torch
    >>> from aura_core.model.tiny import load_tiny
    >>> model = load_tiny("tiny-llama").model
    >>> sweep_families(model, Intervention({n: torch.rand(32) for n in discover_units(model, "gate+up")}))
    ('gate', 'up', 'all')
    """
    held = set(intervention.auroc)
    families = [
        f
        for f in unit_families(model, pairs=False)
        if f != ALL_UNITS and 0 < len(held & set(discover_units(model, f))) < len(held)
    ]
    return (*families, ALL_UNITS)


def _units_changed(intervention: Intervention) -> int:
    return sum(int((factors != 1.0).sum()) for factors in intervention.factors().values())


def _plain(value: object) -> object:
    """A table cell as a plain Python value (NaN becomes None), for JSON and for people."""
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def operating_point(sweep: pd.DataFrame, ppl_budget: float, measure: str = "toxic_share") -> dict[str, object] | None:
    """The sweep point with the largest ``measure`` reduction whose relative perplexity change stays within budget.

    Ties go to the lighter touch: the smaller λ, then the fewer units changed. None when no
    point with an intervention fits. ``evaluate_args`` are the ``evaluate`` options that
    measure this very point again, on other prompts (see :func:`evaluate_args`).

    >>> sweep = pd.DataFrame({"method": ["aura"] * 3, "strength": [0.0, 0.5, 1.0], "k": [None] * 3,
    ...     "toxic_share_reduction": [1.0, 1.8, 2.4], "ppl_change_rel": [0.0, 0.04, 0.2]})
    >>> point = operating_point(sweep, 0.05)
    >>> point["strength"], point["units"], point["evaluate_args"]
    (0.5, 'all', ['--methods', 'none,aura', '--units', 'all', '--strength', '0.5'])
    """
    column = f"{measure}_reduction"
    fits = sweep[(sweep.strength > 0) & (sweep.ppl_change_rel <= ppl_budget) & sweep[column].notna()]
    if fits.empty:
        return None
    order = [name for name in (column, "strength", "units_changed") if name in fits]
    best = fits.sort_values(order, ascending=[False] + [True] * (len(order) - 1), kind="stable").iloc[0]
    point = {str(key): _plain(value) for key, value in best.items()}
    point.setdefault("units", ALL_UNITS)  # a sweep from before unit families acted on every unit
    point["ppl_budget"] = ppl_budget
    point["measure"] = measure
    point["evaluate_args"] = evaluate_args(point)
    return point


def evaluate_args(point: dict[str, object]) -> list[str]:
    """The ``python -m aura_core evaluate`` options that measure a sweep point again, beside the plain model.

    >>> evaluate_args({"method": "det0", "units": "gate", "strength": 1.0, "k": 50})
    ['--methods', 'none,det0', '--units', 'gate', '--strength', '1', '--k', '50']
    """
    args = ["--methods", f"{PLAIN},{point['method']}", "--units", str(point.get("units") or ALL_UNITS)]
    args += ["--strength", f"{float(point['strength']):g}"]  # type: ignore[arg-type]
    if point.get("k") is not None:
        args += ["--k", str(int(point["k"]))]  # type: ignore[call-overload]
    if point.get("damp_alpha") is not None:
        args += ["--damp-alpha", f"{float(point['damp_alpha']):g}"]  # type: ignore[arg-type]
    return args


def run_evaluation(
    model: nn.Module,
    tokenizer: Tokenizer,
    intervention: Intervention | None,
    config: EvalConfig,
    *,
    out_dir: str | Path | None = None,
    scorer: ToxicityScorer | None = None,
    progress: Progress | None = None,
    runner: Runner | None = None,
    condition_progress: ConditionProgress | None = None,
) -> EvalResult:
    """Generate, score and measure every method × pre-prompt condition of ``config`` (see :class:`Evaluation`).

    ``condition_progress`` receives ``{condition: (done, total)}`` from the start and after each step.
    """
    evaluation = Evaluation(
        model,
        tokenizer,
        intervention,
        config,
        out_dir=out_dir,
        scorer=scorer,
        progress=progress,
        runner=runner,
        condition_progress=condition_progress,
    )
    return evaluation.run()


def run_sweep(
    model: nn.Module,
    tokenizer: Tokenizer,
    intervention: Intervention,
    config: EvalConfig,
    *,
    method: str | tuple[str, ...] = "aura",
    strengths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0),
    ks: tuple[int, ...] | None = None,
    units: tuple[str, ...] = (ALL_UNITS,),
    out_dir: str | Path | None = None,
    scorer: ToxicityScorer | None = None,
    progress: Progress | None = None,
    runner: Runner | None = None,
) -> pd.DataFrame:
    """Toxicity and perplexity over a grid of methods × unit families × λ (and of k for Det0/Damp), without pre-prompt."""
    evaluation = Evaluation(
        model, tokenizer, intervention, config, out_dir=out_dir, scorer=scorer, progress=progress, runner=runner
    )
    return evaluation.sweep(method, strengths, ks, units)
