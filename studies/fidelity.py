"""Where the perplexity goes: the fidelity study behind the README's figures, one command per model.

Every default is chosen on one half of the challenging RealToxicityPrompts (split by category
with a fixed seed, see :mod:`studies.prompts`), with perplexity on the team's neutral text
(``data/neutral.txt``), never on the prompts reported. The chosen operating point is then
measured the paper's way (25 completions × 20 tokens per prompt) on the other half, with
perplexity on two neutral corpora, against, beside and stacked with pre-prompts, under both
offline judges; the 100 public prompts and the team's prompts are further rows. Every step is
kept on disk, so an interrupted study resumes.

    python -m studies.fidelity --model smollm2-135m            # writes studies/FIDELITY-smollm2-135m.md
    python -m studies.fidelity --model tiny-gpt2 --smoke       # minutes: checks the plumbing only

Stages (each a table in the report):
1. Noise floor and data size: AurA and AurA-beyond-chance at λ = 1, experts from 250 to
   6000 Jigsaw texts per class.
2. Pooling and length: max against mean, and classes matched in token length.
3. Unit families: gate, up and down projections alone and together.
4. Strength: λ for the two best settings so far.
5. Pre-prompt form: plain text against the chat template's system message.
6. Report: the operating point (largest toxic-share reduction within +5 % perplexity on
   validation), the paper's AurA, and both pre-prompts, on the reporting half; then on the
   public prompts and the team's.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

from aura_core.analysis.collect import MAX_TOKENS
from aura_core.analysis.experts import Experts, ExpertsRecipe, compute_experts
from aura_core.base.batching import tokenize_texts
from aura_core.base.data import ConceptData, balanced_sample, load_concept_data, source_label
from aura_core.evaluation.power import power_line
from aura_core.evaluation.protocol import Condition, EvalConfig, Evaluation, summarise
from aura_core.evaluation.reports import with_interval
from aura_core.evaluation.scoring import OFFLINE_SCORERS, load_scorer
from aura_core.method.intervention import Intervention
from aura_core.method.registry import method_label
from aura_core.method.stats import bootstrap_ppl_change, perplexity_of
from aura_core.model.architecture import ALL_UNITS, discover_units, unit_families
from aura_core.model.loaded import LoadedModel
from aura_core.model.loading import cache_root, load_model
from aura_core.runtime.inline import Inline
from aura_core.runtime.runner import Runner
from aura_core.runtime.vllm_runner import VllmRunner, auto_engine
from studies.ledger import WorkLedger
from studies.prompts import CHALLENGING, ROOT, SHARED, write_halves

BUDGET = 0.05
JUDGES = OFFLINE_SCORERS  # every headline reduction under both offline judges: a finding holds when both agree


@dataclass(frozen=True)
class Plan:
    """What one study run measures; ``smoke`` shrinks everything to check the plumbing."""

    model: str
    data: Path = SHARED / "jigsaw_balanced.csv"
    validation_prompts: Path = CHALLENGING  # halved: choices on one half, the report on the other
    split_seed: int = 0
    prompt_limit: int | None = None  # the first prompts of each half only (a smoke run)
    report_prompts: Path = SHARED / "rtp_prompts_100.jsonl"  # public prompts: a further row
    public_neutral: Path = SHARED / "wikipedia_sentences.csv"
    sizes: tuple[int, ...] = (250, 1000, 3000, 6000)
    reference_size: int = 1000
    max_tokens: int = MAX_TOKENS
    validation_samples: int = 8
    report_samples: int = 25
    new_tokens: int = 20
    strengths: tuple[float, ...] = (0.25, 0.5, 0.75)
    pooling_stage: bool = True
    smoke: bool = False

    def smoke_sized(self) -> Plan:
        return replace(
            self,
            sizes=(20, 40) if self.pooling_stage else (40,),
            reference_size=40,
            validation_samples=2,
            report_samples=2,
            prompt_limit=4,
            new_tokens=4,
            strengths=(0.5,),
        )

    def compact(self) -> Plan:
        """A second model's plan: one data size, no pooling stage, two strengths; the report as in full.

        The variables it drops were settled on the first model; this keeps a 270M model's study
        within about half the full plan's time on 2 cores.
        """
        return replace(self, sizes=(self.reference_size,), strengths=(0.5, 0.75), pooling_stage=False)


@dataclass(frozen=True)
class Setting:
    """One way of building the intervention: which experts, which method, which units, which λ."""

    experts: str
    method: str
    family: str = "all"
    strength: float = 1.0

    @property
    def label(self) -> str:
        return f"{self.experts} · {self.method} · {self.family} · λ={self.strength:g}"


def length_matched(data: ConceptData, loaded: LoadedModel, max_tokens: int, seed: int = 0) -> ConceptData:
    """Texts of both classes with the same distribution of token lengths (within the budget).

    Jigsaw's non-toxic comments are longer than its toxic ones, and a max over more tokens is
    larger: without matching, AUROC partly measures length.
    """
    lengths = [len(ids) for ids in tokenize_texts(loaded.tokenizer, data.texts, max_tokens)]
    by_bin: dict[tuple[int, int], list[int]] = {}
    for index, (length, label) in enumerate(zip(lengths, data.labels, strict=True)):
        by_bin.setdefault((min(length, max_tokens) // 4, label), []).append(index)
    rng = random.Random(seed)
    chosen: list[int] = []
    for bin_ in sorted({b for b, _ in by_bin}):
        toxic, plain = by_bin.get((bin_, 1), []), by_bin.get((bin_, 0), [])
        take = min(len(toxic), len(plain))
        chosen += rng.sample(toxic, take) + rng.sample(plain, take)
    chosen.sort()
    return ConceptData([data.texts[i] for i in chosen], [data.labels[i] for i in chosen], f"{data.source} (length-matched)")


class Study:
    """One model's study: experts per data setting, validation conditions, and the public report."""

    def __init__(self, plan: Plan, engine: str = "auto") -> None:
        self.plan = plan.smoke_sized() if plan.smoke else plan
        self.loaded = load_model(plan.model)
        # Completions decode where --engine auto would decode them, unless the study is told otherwise.
        use_vllm = (auto_engine() if engine == "auto" else engine) == "vllm"
        self.runner: Runner = VllmRunner(tokenizer=self.loaded.tokenizer) if use_vllm else Inline()
        self.engine = "vllm" if use_vllm else "ours"
        self.dtype = str(next(self.loaded.model.parameters()).dtype).replace("torch.", "")
        self.out = cache_root() / "studies" / plan.model
        self.experts: dict[str, Experts] = {}
        self.log: list[str] = []
        self._last_progress: dict[str, int] = {}
        self.started = time.perf_counter()

    @cached_property
    def ledger(self) -> WorkLedger:
        """This study's working time across its runs (opened at first use: the methods study moves ``out``)."""
        plan = self.plan
        kind = "smoke" if plan.smoke or plan.prompt_limit else "full" if plan.pooling_stage else "compact"
        return WorkLedger(self.out / f"work-{kind}.json", self.engine, since=self.started)

    def say(self, text: str) -> None:
        stamp = f"[{time.perf_counter() - self.started:7.0f} s] {text}"
        print(stamp, file=sys.stderr, flush=True)
        self.log.append(stamp)
        self.ledger.book()

    @cached_property
    def halves(self) -> tuple[Path, Path]:
        """The choosing and reporting halves of the validation prompts, as prompt files of this study (written once)."""
        plan = self.plan
        return write_halves(self.out, plan.validation_prompts, plan.split_seed, plan.prompt_limit)

    # ----- experts -----

    def find(self, name: str, sample: ConceptData, pooling: str = "max") -> Experts:
        recipe = ExpertsRecipe(
            model=self.plan.model,
            data=source_label(str(self.plan.data)) + (" (length-matched)" if "matched" in name else ""),
            n_per_class=len(sample) // 2,
            max_tokens=self.plan.max_tokens,
            pooling=pooling,
        )
        self.say(f"experts {name}: {len(sample)} texts, {pooling} pooling")
        experts = compute_experts(
            self.loaded, sample, recipe, progress=lambda done, total: self.progress(f"collecting {name}", done, total)
        )
        self.experts[name] = experts
        return experts

    def collect_all(self) -> None:
        data = load_concept_data(self.plan.data)
        for size in self.plan.sizes:
            self.find(f"n={size}", balanced_sample(data, size, seed=0))
        if not self.plan.pooling_stage:
            return
        reference = balanced_sample(data, self.plan.reference_size, seed=0)
        self.find(f"n={self.plan.reference_size} mean", reference, pooling="mean")
        matched = length_matched(data, self.loaded, self.plan.max_tokens)
        self.find(f"n={self.plan.reference_size} length-matched", balanced_sample(matched, self.plan.reference_size, seed=0))

    def intervention(self, setting: Setting) -> Intervention:
        base = self.experts[setting.experts].intervention
        if setting.family != ALL_UNITS:  # the other modules keep their outputs, whatever the method
            base = base.restricted(discover_units(self.loaded.model, setting.family))
        return base.with_settings(method=setting.method, strength=setting.strength)

    # ----- measuring -----

    def evaluation(
        self, prompts: str, samples: int, neutral: str, stage: str, model: nn.Module | None = None, **config: object
    ) -> Evaluation:
        settings = EvalConfig(
            prompts=prompts,
            n_prompts=None,
            sampling="paper",
            samples=samples,
            max_new_tokens=self.plan.new_tokens,
            neutral=neutral,
            n_neutral=None,
            methods=("none",),
            preprompts=("none",),
            **config,  # type: ignore[arg-type]
        )
        return Evaluation(
            self.loaded.model if model is None else model,
            self.loaded.tokenizer,
            None,
            settings,
            out_dir=self.out / stage,
            runner=self.runner if model is None else Inline(),  # a precision check is of our engine
            progress=self.progress,
        )

    def progress(self, label: str, done: int, total: int) -> None:
        """A line on stderr about every 5 % of a long stage (not kept in the report's log)."""
        step = max(1, total // 20)
        if total > 1 and (done == total or done // step != self._last_progress.get(label, -1)):
            self._last_progress[label] = done // step
            elapsed = time.perf_counter() - self.started
            print(f"[{elapsed:7.0f} s]   {label}: {done:,} / {total:,}", file=sys.stderr, flush=True)
            self.ledger.book()

    def measure(self, evaluation: Evaluation, settings: list[Setting], pre_text: str = "", ppl: bool = True) -> pd.DataFrame:
        """Toxicity (against the plain model, same pre-prompt) and perplexity of each setting, in one decode."""
        conditions = [Condition("plain", pre_text, None)]
        conditions += [Condition(s.label, pre_text, self.intervention(s)) for s in settings]
        scored = evaluation.completions(conditions)
        frames = [
            pd.DataFrame(scored[c.label]).assign(method=c.label if c.intervention is not None else "none", preprompt="none")
            for c in conditions
        ]
        terms = {"none": evaluation.perplexity_terms(None, "plain")}
        if ppl:
            for c in conditions[1:]:
                terms[c.label] = evaluation.perplexity_terms(c.intervention, c.label)
        metrics = summarise(pd.concat(frames, ignore_index=True), terms, n_boot=1000, seed=0)
        units = {s.label: self.units_touched(s) for s in settings}
        metrics["units_touched"] = metrics.method.map(units)
        return metrics

    def judged(
        self,
        generations: pd.DataFrame,
        terms: Mapping[str, tuple[np.ndarray, np.ndarray]],
        scored_by: str,
        zero_shot: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> pd.DataFrame:
        """The same completions summarised under every offline judge: one block of rows per judge (column ``judge``).

        ``generations`` carry the toxicity ``scored_by`` gave them; each other judge scores the texts again.
        """
        frames = []
        for judge in JUDGES:
            if judge != scored_by:
                self.say(f"scoring again with {judge}")
                generations = generations.assign(
                    toxicity=load_scorer(judge).score(generations["completion"].astype(str).tolist())
                )
            metrics = summarise(generations, dict(terms), n_boot=1000, seed=0, zero_shot=dict(zero_shot or {}) or None)
            frames.append(metrics.assign(judge=judge))
        return pd.concat(frames, ignore_index=True)

    def units_touched(self, setting: Setting) -> int:
        return int(sum(int((f != 1.0).sum()) for f in self.intervention(setting).factors().values()))

    # ----- the study -----

    def validate(self) -> tuple[dict[str, pd.DataFrame], Setting]:
        """Each stage's table by its heading, and the operating point chosen from all of them."""
        plan = self.plan
        evaluation = self.evaluation(str(self.halves[0]), plan.validation_samples, "starter", "validation")
        tables: dict[str, pd.DataFrame] = {}
        self.say("stage 1: noise floor × data size")
        stage1 = [Setting(f"n={n}", m) for n in plan.sizes for m in ("aura", "aura-null")]
        tables["1. Noise floor × concept data size (λ = 1)"] = self.measure(evaluation, stage1)
        stage2: list[Setting] = []
        if plan.pooling_stage:
            reference = f"n={plan.reference_size}"
            self.say("stage 2: pooling and length")
            stage2 = [
                Setting(name, m) for name in (f"{reference} mean", f"{reference} length-matched") for m in ("aura", "aura-null")
            ]
            tables["2. Pooling and length"] = self.measure(evaluation, stage2)
        best_so_far = _best(pd.concat(tables.values()), [*stage1, *stage2], budget=None)
        self.say(f"stage 3: unit families on {best_so_far.experts} · {best_so_far.method}")
        roles = [f for f in unit_families(self.loaded.model, pairs=False) if f != ALL_UNITS]  # GPT-2 has no gate
        stage3 = [replace(best_so_far, family=f) for f in roles]
        tables["3. Unit families"] = self.measure(evaluation, stage3)
        candidates = [*stage1, *stage2, *stage3]
        ranked = _ranked(pd.concat(tables.values()), candidates)
        self.say("stage 4: strength")
        stage4 = [replace(s, strength=lam) for s in ranked[:2] for lam in plan.strengths]
        tables["4. Strength λ"] = self.measure(evaluation, stage4)
        choice = _best(pd.concat(tables.values()), [*candidates, *stage4], budget=BUDGET)
        self.say(f"operating point on validation: {choice.label}")
        return tables, choice

    def preprompt_forms(self, choice: Setting) -> pd.DataFrame:
        """The favourable pre-prompt as text and as a system message, with and without the operating point."""
        rows = []
        for form in ("text", "system"):
            evaluation = self.evaluation(
                str(self.halves[0]), self.plan.validation_samples, "starter", f"forms-{form}", preprompt_form=form
            )
            favourable = EvalConfig().preprompt_text("favourable")
            try:
                table = self.measure(evaluation, [choice], pre_text=favourable, ppl=False)
            except Exception as err:  # a tokenizer without a chat template: say so in the report
                self.say(f"pre-prompt form {form}: {err}")
                continue
            rows.append(table.assign(form=form))
        return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()

    def precision(self, choice: Setting) -> pd.DataFrame:
        """Perplexity on the team's neutral text with float32 weights and with the bfloat16 copy collection uses.

        Empty where this machine keeps no bfloat16 copy (no native bfloat16): then everything ran in float32.
        """
        if self.loaded.bulk is None:
            return pd.DataFrame()
        self.say("precision: perplexity in float32 and bfloat16")
        rows = []
        settings = {
            "plain": None,
            "operating point": self.intervention(choice),
            "AurA (λ = 1)": self.intervention(Setting(choice.experts, "aura")),
        }
        for dtype, model in (("float32", self.loaded.model), ("bfloat16", self.loaded.bulk)):
            evaluation = self.evaluation("starter", 1, "starter", f"precision-{dtype}", model=model)
            for name, intervention in settings.items():
                nll, count = evaluation.perplexity_terms(intervention, name)
                rows.append({"setting": name, "dtype": dtype, "perplexity": perplexity_of(nll, count)})
        table = pd.DataFrame(rows).pivot(index="setting", columns="dtype", values="perplexity").reindex(list(settings))
        table["difference"] = table["bfloat16"] / table["float32"] - 1.0
        return table.reset_index()

    def report(self, choice: Setting, form: str) -> pd.DataFrame:
        """The paper's protocol on the reporting half: plain, the operating point and the paper's AurA, × pre-prompts.

        One table, a block of rows per judge: ``reduction`` columns compare with the plain model
        without pre-prompt (so the favourable rows show AurA stacked with it), ``_same_preprompt``
        ones with the plain model under the same pre-prompt (so the adversarial rows show AurA
        against it). Perplexity is measured on the team's neutral text and on public Wikipedia passages.
        """
        settings = self.reported(choice)
        evaluation = self.evaluation(str(self.halves[1]), self.plan.report_samples, "starter", "report", preprompt_form=form)
        conditions = []
        for group in ("none", "favourable", "adversarial"):
            pre = evaluation.config.preprompt_text(group)
            conditions.append(Condition(f"none|{group}", pre, None))
            conditions += [Condition(f"{name}|{group}", pre, self.intervention(s)) for name, s in settings.items()]
        self.say(
            f"report: {len(conditions)} conditions × {len(evaluation.prompts)} prompts × {self.plan.report_samples} completions"
        )
        scored = evaluation.completions(conditions)
        frames = []
        for c in conditions:
            method, group = c.label.split("|")
            frames.append(pd.DataFrame(scored[c.label]).assign(method=method, preprompt=group))
        interventions = {"none": None, **{name: self.intervention(s) for name, s in settings.items()}}
        terms = {name: evaluation.perplexity_terms(i, name) for name, i in interventions.items()}
        hits = {name: evaluation.zero_shot_hits(i, f"{name} · last-word accuracy") for name, i in interventions.items()}
        zero_shot = {name: pair for name, pair in hits.items() if pair is not None}
        metrics = self.judged(pd.concat(frames, ignore_index=True), terms, evaluation.scorer.name, zero_shot)
        self.add_public_perplexity(
            metrics, {name: i for name, i in interventions.items() if i is not None}, self.plan.report_prompts
        )
        metrics["units_touched"] = metrics.method.map({name: self.units_touched(s) for name, s in settings.items()})
        return metrics

    @staticmethod
    def reported(choice: Setting) -> dict[str, Setting]:
        """What the report measures beside the plain model: the operating point and the paper's AurA (all units, λ = 1)."""
        return {"op": choice, "paper": Setting(choice.experts, "aura")}

    def further(self, choice: Setting) -> pd.DataFrame:
        """The reported settings on further prompts, without pre-prompt and under both judges (column ``prompt_set``).

        The 100 public prompts (the paper's protocol) and the team's prompts draw little toxicity:
        their power lines say how far they can resolve a change.
        """
        sets = (
            ("public", str(self.plan.report_prompts), self.plan.report_samples),
            ("team", "starter", self.plan.validation_samples),
        )
        frames = []
        for name, prompts, samples in sets:
            evaluation = self.evaluation(prompts, samples, "starter", f"further-{name}")
            conditions = [Condition("none", "", None)]
            conditions += [Condition(label, "", self.intervention(s)) for label, s in self.reported(choice).items()]
            self.say(f"further prompts ({name}): {len(conditions)} conditions × {len(evaluation.prompts)} prompts × {samples}")
            scored = evaluation.completions(conditions)
            generations = pd.concat(
                [pd.DataFrame(scored[c.label]).assign(method=c.label, preprompt="none") for c in conditions], ignore_index=True
            )
            terms = {"none": evaluation.perplexity_terms(None, "plain")}
            frames.append(self.judged(generations, terms, evaluation.scorer.name).assign(prompt_set=name))
        return pd.concat(frames, ignore_index=True)

    def add_public_perplexity(self, metrics: pd.DataFrame, interventions: Mapping[str, Intervention], prompts: Path) -> None:
        """Each intervention's relative perplexity change on the public neutral passages, with its interval, on its rows.

        The columns are ``public_ppl_change_rel`` and its ``_low`` and ``_high``; rows are matched by ``method``.
        """
        public = self.evaluation(str(prompts), 1, str(self.plan.public_neutral), "report-public")
        plain = public.perplexity_terms(None, "plain")
        for name, intervention in interventions.items():
            change, low, high = bootstrap_ppl_change(plain, public.perplexity_terms(intervention, name), relative=True, seed=0)
            rows = metrics.method == name
            metrics.loc[rows, "public_ppl_change_rel"] = change
            metrics.loc[rows, "public_ppl_change_rel_low"] = low
            metrics.loc[rows, "public_ppl_change_rel_high"] = high


def _scores(metrics: pd.DataFrame, settings: Sequence[Setting]) -> pd.DataFrame:
    by = metrics.drop_duplicates("method").set_index("method")
    return pd.DataFrame(
        [
            {
                "setting": s,
                "reduction": by.loc[s.label, "toxic_share_reduction_same_preprompt"],
                "ppl": by.loc[s.label, "ppl_change_rel"],
            }
            for s in settings
            if s.label in by.index
        ]
    )


def _ranked(metrics: pd.DataFrame, settings: Sequence[Setting]) -> list[Setting]:
    scores = _scores(metrics, settings)
    # Reduction per unit of perplexity cost: the settings that buy the most for the least.
    scores["value"] = scores.reduction / (1.0 + scores.ppl.clip(lower=0))
    return list(scores.sort_values("value", ascending=False).setting)


def _best(metrics: pd.DataFrame, settings: Sequence[Setting], budget: float | None) -> Setting:
    scores = _scores(metrics, settings)
    if budget is not None:
        within = scores[scores.ppl <= budget]
        if not within.empty:
            return within.sort_values("reduction", ascending=False).iloc[0].setting  # type: ignore[no-any-return]
    return _ranked(metrics, settings)[0]


def _table(metrics: pd.DataFrame) -> str:
    rows = [
        "| setting | toxic share | × less toxic share [95% CI] | × less (prompts) | perplexity change [95% CI] | units touched |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in metrics.itertuples():
        if r.method == "none":
            rows.append(f"| plain model | {r.toxic_share:.3f} | – | – | – | 0 |")
            continue
        reduction = with_interval(
            r.toxic_share_reduction_same_preprompt,
            r.toxic_share_reduction_same_preprompt_low,
            r.toxic_share_reduction_same_preprompt_high,
        )
        prompts = with_interval(
            r.toxicity_probability_reduction_same_preprompt,
            r.toxicity_probability_reduction_same_preprompt_low,
            r.toxicity_probability_reduction_same_preprompt_high,
        )
        ppl = with_interval(
            getattr(r, "ppl_change_rel", None),
            getattr(r, "ppl_change_rel_low", None),
            getattr(r, "ppl_change_rel_high", None),
            "{:+.1%}",
        )
        rows.append(f"| {r.method} | {r.toxic_share:.3f} | {reduction} | {prompts} | {ppl} | {int(r.units_touched or 0):,} |")
    return "\n".join(rows)


_NAMES = {"none": "plain", "op": "operating point", "paper": "AurA as in the paper (λ = 1)"}
_FURTHER = {"public": "public prompts (`{public}`)", "team": "the team's prompts (`data/prompts.jsonl`)"}


def _power_lines(metrics: pd.DataFrame, where: str) -> list[str]:
    """Per judge: the completions a 2× reduction needs at the plain model's measured toxic share, against those used."""
    plain = metrics[(metrics.method == "none") & (metrics.preprompt == "none")]
    return [
        f"Power ({where}, {r.judge}): {power_line(float(r.toxic_share), int(r.prompts * r.samples)).text().removeprefix('power: ')}"
        for r in plain.itertuples()
    ]


def _further_section(further: pd.DataFrame, plan: Plan) -> list[str]:
    lines = [
        "## Further prompts, no pre-prompt, both judges",
        "",
        f"The public prompts at {plan.report_samples} completions and the team's at {plan.validation_samples}, "
        f"× {plan.new_tokens} tokens each. They draw little toxicity: their power lines say what they can resolve.",
        "",
    ]
    for name, part in further.groupby("prompt_set", sort=False) if not further.empty else []:
        where = _FURTHER[str(name)].format(public=plan.report_prompts.name)
        lines += [f"### {where[0].upper()}{where[1:]}", "", *_power_lines(part, where), ""]
        lines += [
            "| model | judge | toxic share | × less toxic share [95% CI] | × less (prompts) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in part.itertuples():
            plain = r.method == "none"
            share = with_interval(r.toxic_share_reduction, r.toxic_share_reduction_low, r.toxic_share_reduction_high)
            prompts = with_interval(
                r.toxicity_probability_reduction, r.toxicity_probability_reduction_low, r.toxicity_probability_reduction_high
            )
            lines.append(
                f"| {_NAMES[r.method]} | {r.judge} | {r.toxic_share:.3f} | {'–' if plain else share} | {'–' if plain else prompts} |"
            )
        lines.append("")
    return lines


def write_report(
    study: Study,
    tables: dict[str, pd.DataFrame],
    choice: Setting,
    forms: pd.DataFrame,
    form: str,
    report: pd.DataFrame,
    further: pd.DataFrame,
    precision: pd.DataFrame,
    folder: Path = ROOT / "studies",
) -> Path:
    plan = study.plan
    choose, reporting = (len(path.read_text(encoding="utf-8").splitlines()) for path in study.halves)
    command = f"python -m studies.fidelity --model {plan.model}" + (" --compact" if not plan.pooling_stage else "")
    lines = [
        f"# Fidelity study: {plan.model}",
        "",
        f"Generated by `{command}` ({study.dtype} weights, "
        f"{time.strftime('%Y-%m-%d')}, {study.ledger.summary()}, on this machine). "
        "Do not edit by hand: run the command again.",
        "",
        "Choices are scored by profanity-check; every reported reduction is given under both offline judges "
        f"({', '.join(JUDGES)}): a finding holds when both agree. A completion is toxic above 0.5. The lead measure is "
        "the paper's: the toxic share of completions; × less is the plain model's share divided by the setting's (same "
        "pre-prompt), with a 95% paired bootstrap interval over prompts and completions. Perplexity change is relative "
        "to the plain model, with a 95% bootstrap interval over texts.",
        "",
        f"Prompts: `{plan.validation_prompts.name}`, split by category with seed {plan.split_seed} into a choosing half "
        f"({choose} prompts) and a reporting half ({reporting}).",
        "",
        f"## Validation (choices are made here): the choosing half, {plan.validation_samples} completions × "
        f"{plan.new_tokens} tokens each, perplexity on `data/neutral.txt`",
        "",
    ]
    if not plan.pooling_stage:
        lines += [
            f"The compact plan: experts from {plan.reference_size} texts per class only, no pooling-and-length "
            f"stage, λ in {', '.join(f'{lam:g}' for lam in plan.strengths)}. The full plan drops `--compact`.",
            "",
        ]
    for name, table in tables.items():
        lines += [f"### {name}", "", _table(table), ""]
    lines += [
        f"**Operating point** (largest toxic-share reduction within +{BUDGET:.0%} perplexity on validation): "
        f"{choice.experts}, {method_label(choice.method)}, units: {choice.family}, λ = {choice.strength:g}.",
        "",
        "### 5. Pre-prompt form (favourable pre-prompt, validation prompts)",
        "",
    ]
    for form_name, part in forms.groupby("form", sort=False) if not forms.empty else []:
        plain = part[part.method == "none"].toxic_share.iloc[0]
        lines.append(f"- **{form_name}**: plain model with the pre-prompt, toxic share {plain:.3f}")
    lines += ["", f"The report uses the **{form}** form.", ""]
    lines += [
        f"## Report: the reporting half, {plan.report_samples} completions × {plan.new_tokens} tokens each, both judges",
        "",
        *_power_lines(report, "the reporting half"),
        "",
        "| model | pre-prompt | judge | toxic share | × less toxic share vs plain, no pre-prompt | × less vs plain, same "
        "pre-prompt | × less (prompts), same pre-prompt | perplexity, team text | perplexity, Wikipedia | "
        "last-word accuracy (change) | units touched |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report.itertuples():

        def ci(name: str, fmt: str = "{:.2f}", row: object = r) -> str:
            return with_interval(
                getattr(row, name, None), getattr(row, f"{name}_low", None), getattr(row, f"{name}_high", None), fmt
            )

        plain = r.method == "none"
        lines.append(
            f"| {_NAMES[r.method]} | {r.preprompt} | {r.judge} | {r.toxic_share:.3f} | "
            f"{'–' if plain and r.preprompt == 'none' else ci('toxic_share_reduction')} | "
            f"{'–' if plain else ci('toxic_share_reduction_same_preprompt')} | "
            f"{'–' if plain else ci('toxicity_probability_reduction_same_preprompt')} | "
            f"{'–' if plain or r.preprompt != 'none' else ci('ppl_change_rel', '{:+.1%}')} | "
            f"{'–' if plain or r.preprompt != 'none' else ci('public_ppl_change_rel', '{:+.1%}')} | "
            f"{'–' if r.preprompt != 'none' else ci('zero_shot_acc', '{:.1%}') if plain else ci('zero_shot_change', '{:+.1%}')} | "
            f"{0 if plain else int(r.units_touched):,} |"
        )
    lines.append("")
    lines += _further_section(further, plan)
    lines += ["## Precision: perplexity on the team's neutral text, float32 weights against bfloat16", ""]
    if precision.empty:
        lines += ["This machine has no native bfloat16: everything ran in float32.", ""]
    else:
        lines += [
            "Generation and perplexity use float32 (a completion must not depend on its batch); collection "
            "uses a bfloat16 copy where the CPU runs it natively. This is what bfloat16 would cost in perplexity.",
            "",
            "| setting | float32 | bfloat16 | difference |",
            "| --- | --- | --- | --- |",
            *[f"| {r.setting} | {r.float32:.2f} | {r.bfloat16:.2f} | {r.difference:+.2%} |" for r in precision.itertuples()],
            "",
        ]
    lines += ["## Log", "", "```", *study.log, "```", ""]
    path = folder / f"FIDELITY-{plan.model}.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    (study.out / "choice.json").write_text(json.dumps(choice.__dict__))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.fidelity", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--smoke", action="store_true", help="tiny settings: checks the plumbing in minutes")
    parser.add_argument(
        "--compact", action="store_true", help="a second model's plan: one data size, no pooling stage (about half the time)"
    )
    parser.add_argument("--out-dir", type=Path, default=ROOT / "studies", help="where the report goes (default: studies/)")
    parser.add_argument(
        "--engine",
        choices=["auto", "ours", "vllm"],
        default="auto",
        help="where completions decode (auto: as evaluate --engine auto; ours for --smoke)",
    )
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)  # now, not after hours of work
    plan = Plan(model=args.model, smoke=args.smoke)
    # A smoke run checks the plumbing on a tiny model, whose 8-wide heads vLLM's CPU attention refuses.
    engine = "ours" if args.smoke and args.engine == "auto" else args.engine
    study = Study(plan.compact() if args.compact else plan, engine=engine)
    study.ledger.follow_suspension()  # Ctrl-Z and fg: the suspended minutes are not the study's work
    try:
        study.collect_all()
        tables, choice = study.validate()
        forms = study.preprompt_forms(choice)
        form = "text"
        if not forms.empty and set(forms.form) == {"text", "system"}:
            plain = forms[forms.method == "none"].set_index("form").toxic_share
            form = "system" if plain["system"] < plain["text"] else "text"
        report = study.report(choice, form)
        further = study.further(choice)
        precision = study.precision(choice)
    finally:
        close = getattr(study.runner, "close", None)
        if callable(close):
            close()
    path = write_report(study, tables, choice, forms, form, report, further, precision, args.out_dir)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
