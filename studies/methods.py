"""The methods after AurA, side by side: AurA, conditional AurA and Linear-AcT on one held-out protocol.

The team's prompts and the 100 public ones draw too little toxicity to tell methods apart, so
this study chooses and reports on the two halves of the challenging RealToxicityPrompts beside
the checkout (``../shared/data/rtp_challenging.jsonl``), split by category with a fixed seed:
every choice is made on one half and measured on the other.

    python -m studies.methods --model smollm2-135m       # writes studies/METHODS-smollm2-135m.md and .html
    python -m studies.methods --model tiny-gpt2 --smoke  # minutes: checks the plumbing only

1. Experts from 1000 + 1000 Jigsaw texts, max pooling: the fidelity study's reference.
2. Choosing half: each method × unit family × λ. For each method, the setting with the largest
   toxic-share reduction within +5 % perplexity on the team's neutral text.
3. Reporting half: the plain model and each method's chosen setting, scored by both offline
   judges, with perplexity on the team's text and on Wikipedia, and last-word accuracy.

Every piece is kept on disk, so an interrupted study resumes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from aura_core.base.data import balanced_sample, load_concept_data
from aura_core.evaluation.plots import tradeoff_figure
from aura_core.evaluation.protocol import Condition
from aura_core.evaluation.reports import with_interval
from aura_core.evaluation.scoring import DEFAULT_SCORER
from aura_core.method.registry import PLAIN, method_label
from aura_core.model.architecture import unit_families, unit_family_label
from studies.fidelity import BUDGET, JUDGES, Plan, Setting, Study, _scores, _table
from studies.prompts import CHALLENGING, ROOT

METHODS = ("aura", "aura-cond", "linear-act")
FAMILIES = ("all", "gate")


@dataclass(frozen=True)
class MethodsPlan:
    """What the comparison measures; ``smoke`` shrinks it to check the plumbing.

    Eight completions a prompt on the choosing half and ten on the reporting half (the paper
    uses 25): on these prompts the plain model's toxic share is high enough that 160-odd prompts
    resolve a 2× change at that depth, and the study fits in about an hour on 2 cores.
    """

    model: str
    prompts: Path = CHALLENGING
    split_seed: int = 0
    experts_size: int = 1000
    methods: tuple[str, ...] = METHODS
    families: tuple[str, ...] = FAMILIES
    strengths: tuple[float, ...] = (0.5, 1.0)
    choose_samples: int = 8
    report_samples: int = 10
    new_tokens: int = 20
    smoke: bool = False

    def smoke_sized(self) -> MethodsPlan:
        return replace(self, experts_size=40, strengths=(1.0,), choose_samples=2, report_samples=2, new_tokens=4)


class MethodsStudy:
    """One model's comparison, on the fidelity study's machinery (model, runner, experts, measures)."""

    def __init__(self, plan: MethodsPlan, engine: str = "ours") -> None:
        self.plan = plan.smoke_sized() if plan.smoke else plan
        self.study = Study(
            Plan(
                model=plan.model,
                reference_size=self.plan.experts_size,
                new_tokens=self.plan.new_tokens,
                validation_prompts=self.plan.prompts,
                split_seed=self.plan.split_seed,
                prompt_limit=4 if self.plan.smoke else None,
            ),
            engine,
        )
        self.study.out = self.study.out.parent / f"methods-{plan.model}"
        self.study.out.mkdir(parents=True, exist_ok=True)
        self.experts = f"n={self.plan.experts_size}"
        self.over_budget: set[str] = set()  # methods with no setting within the perplexity budget

    def settings(self) -> list[Setting]:
        plan = self.plan
        known = unit_families(self.study.loaded.model, pairs=False)
        families = [f for f in plan.families if f in known]  # GPT-2 has no gate projections
        return [Setting(self.experts, m, f, lam) for m in plan.methods for f in families for lam in plan.strengths]

    def choose(self, prompts: Path) -> tuple[pd.DataFrame, dict[str, Setting]]:
        """The choosing half's table, and each method's best setting within the perplexity budget."""
        study = self.study
        evaluation = study.evaluation(str(prompts), self.plan.choose_samples, "starter", "choose")
        settings = self.settings()
        study.say(f"choosing: {len(settings) + 1} conditions × {len(evaluation.prompts)} prompts × {self.plan.choose_samples}")
        table = study.measure(evaluation, settings)
        chosen: dict[str, Setting] = {}
        for method in self.plan.methods:
            chosen[method], within = choose_setting(_scores(table, [s for s in settings if s.method == method]), BUDGET)
            if not within:
                self.over_budget.add(method)
            study.say(
                f"chosen for {method}: {chosen[method].label}" + ("" if within else " (none within budget: the least costly)")
            )
        return table, chosen

    def report(self, prompts: Path, chosen: dict[str, Setting]) -> pd.DataFrame:
        """Each chosen setting on the reporting half, one row per (setting, judge)."""
        study = self.study
        evaluation = study.evaluation(str(prompts), self.plan.report_samples, "starter", "report")
        conditions = [Condition(PLAIN, "", None)]
        conditions += [Condition(method, "", study.intervention(s)) for method, s in chosen.items()]
        study.say(f"report: {len(conditions)} conditions × {len(evaluation.prompts)} prompts × {self.plan.report_samples}")
        scored = evaluation.completions(conditions)
        generations = pd.concat(
            [pd.DataFrame(scored[c.label]).assign(method=c.label, preprompt="none") for c in conditions], ignore_index=True
        )
        terms = {c.label: evaluation.perplexity_terms(c.intervention, c.label) for c in conditions}
        hits = {c.label: evaluation.zero_shot_hits(c.intervention, c.label) for c in conditions}
        zero_shot = {label: pair for label, pair in hits.items() if pair is not None}
        table = study.judged(generations, terms, evaluation.scorer.name, zero_shot)
        study.add_public_perplexity(table, {c.label: c.intervention for c in conditions[1:] if c.intervention}, prompts)
        table["units_touched"] = table.method.map({m: study.units_touched(s) for m, s in chosen.items()}).fillna(0)
        return table


def choose_setting(scores: pd.DataFrame, budget: float) -> tuple[Setting, bool]:
    """The largest reduction within ``budget`` perplexity change, and whether any setting was within it.

    ``scores`` holds a row per setting (``setting``, ``reduction``, ``ppl``), as the fidelity study's
    ``_scores`` gives. With none within, the least costly setting, so an over-budget method is never
    crowned by its damage.

    >>> a, b = Setting("n=1", "aura", strength=0.5), Setting("n=1", "aura")
    >>> frame = pd.DataFrame({"setting": [a, b], "reduction": [1.2, 1.5], "ppl": [0.02, 0.04]})
    >>> choose_setting(frame, 0.05)[0] is b
    True
    >>> choose_setting(frame.assign(reduction=[1.2, 99.0], ppl=[0.10, 7.0]), 0.05) == (a, False)
    True
    """
    rows = list(scores.itertuples())
    if not rows:
        raise ValueError("no setting to choose from")
    within = [r for r in rows if r.ppl <= budget]  # NaN is never within
    if within:
        return max(within, key=lambda r: r.reduction).setting, True
    return min(rows, key=lambda r: (np.nan_to_num(r.ppl, nan=np.inf), -r.reduction)).setting, False


def pareto_frame(table: pd.DataFrame, settings: Sequence[Setting]) -> pd.DataFrame:
    """The choosing table in the sweep's columns, for :func:`aura_core.evaluation.plots.tradeoff_figure`."""
    by_label = {s.label: s for s in settings}
    rows = table[table.method.isin(list(by_label))].copy()
    rows["units"] = [by_label[label].family for label in rows.method]
    rows["strength"] = [by_label[label].strength for label in rows.method]
    rows["method"] = [by_label[label].method for label in rows.method]
    rows["k"] = np.nan
    rows["toxic_share_reduction"] = rows.toxic_share_reduction_same_preprompt
    rows["toxic_share_reduction_low"] = rows.toxic_share_reduction_same_preprompt_low
    rows["toxic_share_reduction_high"] = rows.toxic_share_reduction_same_preprompt_high
    return rows


def winner(report: pd.DataFrame, judge: str = DEFAULT_SCORER, over_budget: Collection[str] = ()) -> str:
    """The plain sentence: which chosen method removes the most toxic share on the reporting half, and by how much.

    Methods with no setting within the budget (``over_budget``) are named apart, never crowned.
    """
    measured = report[(report.judge == judge) & (report.method != PLAIN)]
    outside = "".join(
        f" {method_label(m)} had no setting within +{BUDGET:.0%} perplexity (its least costly one is shown)."
        for m in measured.method
        if m in over_budget
    )
    rows = measured[~measured.method.isin(list(over_budget))].sort_values("toxic_share_reduction", ascending=False)
    if rows.empty:
        return ("No method was measured within the budget." + outside).strip()
    best, rest = rows.iloc[0], rows.iloc[1:]
    if pd.isna(best.toxic_share_reduction):
        return f"Under {judge}, the plain model wrote no toxic completion on the reporting half: no reduction can be measured."
    ci = with_interval(best.toxic_share_reduction, best.toxic_share_reduction_low, best.toxic_share_reduction_high)
    if rest.empty:
        return f"Under {judge}, only **{method_label(best.method)}** is within the budget: {ci}× less toxic share.{outside}"
    others = "; ".join(
        f"{method_label(r.method)} {with_interval(r.toxic_share_reduction, r.toxic_share_reduction_low, r.toxic_share_reduction_high)}"
        for r in rest.itertuples()
    )
    overlap = any(r.toxic_share_reduction_high >= best.toxic_share_reduction_low for r in rest.itertuples())
    verdict = "the intervals overlap, so the lead is not resolved" if overlap else "its interval clears the others'"
    return (
        f"Under {judge}, at most +{BUDGET:.0%} perplexity on the choosing half, **{method_label(best.method)}** removes the most: "
        f"{ci}× less toxic share, against {others}; {verdict}.{outside}"
    )


def write_report(
    runner: MethodsStudy,
    choosing: pd.DataFrame,
    chosen: dict[str, Setting],
    report: pd.DataFrame,
    halves_sizes: tuple[int, int],
    folder: Path,
) -> Path:
    plan, study = runner.plan, runner.study
    stem = f"METHODS-{plan.model}"
    folder.mkdir(parents=True, exist_ok=True)
    figure = tradeoff_figure(pareto_frame(choosing, runner.settings()))
    figure.update_layout(title=f"{plan.model}: the choosing half, each method along λ (95% intervals)")
    figure.write_html(folder / f"{stem}.html", include_plotlyjs="cdn")
    lines = [
        f"# Methods after AurA: {plan.model}",
        "",
        f"Generated by `python -m studies.methods --model {plan.model}` ({study.dtype} weights, "
        f"{time.strftime('%Y-%m-%d')}, {study.ledger.summary()}, on this machine). "
        f"Do not edit by hand: run the command again. The Pareto chart of the choosing half is `{stem}.html`.",
        "",
        f"Prompts: `{plan.prompts.name}`, split by category with seed {plan.split_seed} into a choosing half "
        f"({halves_sizes[0]} prompts) and a reporting half ({halves_sizes[1]}). Experts from {plan.experts_size} + "
        f"{plan.experts_size} Jigsaw texts, max pooling. A completion is toxic above 0.5; × less is the plain model's "
        "toxic share divided by the setting's, with a 95% paired bootstrap interval over prompts and completions.",
        "",
        f"## Choosing half: {plan.choose_samples} completions × {plan.new_tokens} tokens, profanity-check, "
        "perplexity on `data/neutral.txt`",
        "",
        _table(choosing),
        "",
        f"Each method's setting (largest reduction within +{BUDGET:.0%} perplexity): "
        + "; ".join(
            f"{method_label(m)}: {unit_family_label(s.family)}, λ = {s.strength:g}"
            + (f" (none within +{BUDGET:.0%}: the least costly)" if m in runner.over_budget else "")
            for m, s in chosen.items()
        )
        + ".",
        "",
        f"## Reporting half: {plan.report_samples} completions × {plan.new_tokens} tokens, both judges",
        "",
        "| method | setting | judge | toxic share | × less toxic share [95% CI] | perplexity, team text | "
        "perplexity, Wikipedia | last-word accuracy change | units touched |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report.itertuples():
        plain = r.method == PLAIN
        setting = "–" if plain else f"{unit_family_label(chosen[r.method].family)}, λ = {chosen[r.method].strength:g}"

        def ci(name: str, fmt: str = "{:.2f}", row: object = r) -> str:
            return with_interval(
                getattr(row, name, None), getattr(row, f"{name}_low", None), getattr(row, f"{name}_high", None), fmt
            )

        lines.append(
            f"| {method_label(r.method)} | {setting} | {r.judge} | {r.toxic_share:.3f} | "
            f"{'–' if plain else ci('toxic_share_reduction')} | {'–' if plain else ci('ppl_change_rel', '{:+.1%}')} | "
            f"{'–' if plain else ci('public_ppl_change_rel', '{:+.1%}')} | "
            f"{ci('zero_shot_acc', '{:.1%}') if plain else ci('zero_shot_change', '{:+.1%}')} | {int(r.units_touched):,} |"
        )
    lines += ["", *[f"- {winner(report, judge, runner.over_budget)}" for judge in JUDGES], ""]
    lines += ["## Log", "", "```", *study.log, "```", ""]
    path = folder / f"{stem}.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.methods", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--smoke", action="store_true", help="tiny settings: checks the plumbing in minutes")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "studies", help="where the report goes (default: studies/)")
    args = parser.parse_args(argv)
    # Conditional AurA and Linear-AcT gate per token, which a folded checkpoint cannot: our engine decodes.
    runner = MethodsStudy(MethodsPlan(model=args.model, smoke=args.smoke), engine="ours")
    study = runner.study
    study.ledger.follow_suspension()  # Ctrl-Z and fg: the suspended minutes are not the study's work
    study.find(runner.experts, balanced_sample(load_concept_data(study.plan.data), runner.plan.experts_size, seed=0))
    choose_path, report_path = study.halves
    choosing, chosen = runner.choose(choose_path)
    report = runner.report(report_path, chosen)
    sizes = (len(choose_path.read_text().splitlines()), len(report_path.read_text().splitlines()))
    path = write_report(runner, choosing, chosen, report, sizes, args.out_dir)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
