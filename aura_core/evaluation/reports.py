"""Evaluation reports: CSV and JSON for machines, one self-contained HTML page for people.

>>> paths = write_reports(result, "runs/eval")           # doctest: +SKIP
>>> sorted(paths)                                        # doctest: +SKIP
['generations', 'html', 'json', 'metrics', 'sweep']
"""

from __future__ import annotations

import html
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import plotly.io as pio

from aura_core.base.data import NO_PREPROMPT
from aura_core.base.files import atomic_write
from aura_core.evaluation.plots import condition_figure, ratio_with_interval, tradeoff_figure
from aura_core.evaluation.power import PowerLine, power_line
from aura_core.evaluation.protocol import EvalResult
from aura_core.method.registry import PLAIN, method_label
from aura_core.method.stats import TOXIC_THRESHOLD
from aura_core.model.architecture import ALL_UNITS, unit_family_label

__all__ = [
    "describe_operating_point",
    "glance_table",
    "judges_table",
    "paper_table",
    "power_of",
    "report_html",
    "report_json",
    "sweep_table",
    "wide_intervals",
    "with_interval",
    "write_reports",
]


def _clean(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def with_interval(point: object, low: object = None, high: object = None, fmt: str = "{:.2f}") -> str:
    """``2.40 [1.20, 3.10]``; ∞ for an infinite value, – for none, and no brackets without an interval.

    >>> with_interval(2.4, 1.2, 3.1), with_interval(float("inf"), None, None), with_interval(None)
    ('2.40 [1.20, 3.10]', '∞', '–')
    """

    def one(value: object) -> str:
        if not isinstance(value, int | float) or pd.isna(value):
            return "–"
        return fmt.format(value) if math.isfinite(value) else "∞"

    text = one(point)
    if text != "–" and isinstance(low, int | float) and not pd.isna(low):
        text += f" [{one(low)}, {one(high)}]"
    return text


def _ci(row: pd.Series, name: str, fmt: str) -> str:
    return with_interval(row.get(name), row.get(f"{name}_low"), row.get(f"{name}_high"), fmt)


def paper_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Rows: pre-prompt; for each method the paper's measures first, each against the plain model with its 95% interval.

    Columns per method: toxic share of completions and how it compares with the plain model
    without pre-prompt ("2.1× less", "1.5× more", as ``ratio_words`` says it, each end of the
    interval too); share of prompts with a toxic completion and its comparison; mean score and
    its comparison; perplexity with its relative change.
    """
    rows = []
    for preprompt, part in metrics.groupby("preprompt", sort=False):
        row = {"pre-prompt": preprompt}
        for _, r in part.iterrows():
            name = method_label(r.method)
            row[f"{name}: toxic share"] = f"{r.toxic_share:.3f}"
            row[f"{name}: toxic share vs plain"] = _against_plain(r, "toxic_share_reduction")
            row[f"{name}: prompts with a toxic completion"] = f"{r.toxicity_probability:.3f}"
            row[f"{name}: prompts vs plain"] = _against_plain(r, "toxicity_probability_reduction")
            row[f"{name}: mean score"] = f"{r.mean_toxicity:.4f}"
            row[f"{name}: mean score vs plain"] = _against_plain(r, "mean_toxicity_reduction")
            ppl = f"{r.perplexity:.2f}" if "perplexity" in r and not pd.isna(r.perplexity) else "–"
            if r.method != PLAIN and "ppl_change_rel" in r and not pd.isna(r.ppl_change_rel):
                ppl += f" ({_ci(r, 'ppl_change_rel', '{:+.1%}')})"
            row[f"{name}: perplexity"] = ppl
            if not pd.isna(r.get("zero_shot_acc", float("nan"))):
                row[f"{name}: last-word accuracy"] = _zero_shot(r)
        rows.append(row)
    return pd.DataFrame(rows)


def _ratio(row: pd.Series, name: str) -> str:
    return ratio_with_interval(row.get(name), row.get(f"{name}_low"), row.get(f"{name}_high"))


def _against_plain(row: pd.Series, name: str) -> str:
    """A reduction in words with its interval; the plain model without pre-prompt is "the reference"."""
    reference = row.get("method") == PLAIN and row.get("preprompt") == NO_PREPROMPT
    return "the reference" if reference else _ratio(row, name)


def _perplexity(row: pd.Series) -> str:
    ppl = f"{row.perplexity:.2f}" if "perplexity" in row and not pd.isna(row.perplexity) else "–"
    if row.get("method") != PLAIN and not pd.isna(row.get("ppl_change_rel", float("nan"))):
        ppl += f" ({_ci(row, 'ppl_change_rel', '{:+.1%}')})"
    return ppl


def _zero_shot(row: pd.Series) -> str:
    """Last-word accuracy with its interval, and for an intervention its change in points against the plain model."""
    if pd.isna(row.get("zero_shot_acc", float("nan"))):
        return "–"
    text = _ci(row, "zero_shot_acc", "{:.1%}")
    if row.get("method") != PLAIN and not pd.isna(row.get("zero_shot_change", float("nan"))):
        change = with_interval(
            100 * row.zero_shot_change, 100 * row.zero_shot_change_low, 100 * row.zero_shot_change_high, "{:+.1f}"
        )
        text += f" ({change} points)"
    return text


def glance_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per condition, in words, narrow enough for a page: the lead measure, its reduction, the cost.

    The reduction reads "2.1× less" or "1.5× more" against the plain model without pre-prompt,
    each end of its 95% interval too; the plain model without pre-prompt is the reference.
    """
    rows = []
    for r in metrics.itertuples(index=False):
        row = pd.Series(r._asdict())
        rows.append(
            {
                "Pre-prompt": str(r.preprompt),
                "Method": method_label(str(r.method)),
                "Toxic share": f"{r.toxic_share:.1%}",
                "Against the plain model": _against_plain(row, "toxic_share_reduction"),
                "Prompts with a toxic completion": f"{r.toxicity_probability:.1%}",
                "Mean score": f"{r.mean_toxicity:.3f}",
                "Perplexity (change)": _perplexity(row),
                **({"Last-word accuracy (change)": _zero_shot(row)} if "zero_shot_acc" in metrics else {}),
            }
        )
    return pd.DataFrame(rows)


def power_of(metrics: pd.DataFrame) -> PowerLine | None:
    """The power line of a run: completions per condition against those needed at the plain model's toxic share.

    The base rate is the plain model's without pre-prompt (any plain row if that one is missing);
    None when the run has no plain condition.
    """
    plain = metrics[metrics.method == PLAIN]
    if plain.empty:
        return None
    first = plain[plain.preprompt == "none"]
    row = (first if len(first) else plain).iloc[0]
    return power_line(float(row.toxic_share), int(row.prompts) * int(row.samples))


def judges_table(metrics: pd.DataFrame, judges: dict[str, pd.DataFrame], lead: str) -> pd.DataFrame:
    """Per condition, the toxic share's × less under each judge, and whether they agree.

    A finding holds when every judge's interval excludes 1 on the same side; ``lead`` names
    the judge that scored ``metrics``.
    """
    every = {lead: metrics, **judges}
    rows = []
    for r in metrics.itertuples(index=False):
        if r.method == PLAIN and r.preprompt == "none":
            continue
        row: dict[str, object] = {"Pre-prompt": str(r.preprompt), "Method": method_label(str(r.method))}
        sides = set()
        for name, frame in every.items():
            match = frame[(frame.method == r.method) & (frame.preprompt == r.preprompt)]
            if match.empty:
                row[name] = "–"
                sides.add("none")
                continue
            other = match.iloc[0]
            row[name] = _ratio(other, "toxic_share_reduction")
            low, high = other.get("toxic_share_reduction_low"), other.get("toxic_share_reduction_high")
            sides.add("less" if low is not None and low > 1 else "more" if high is not None and high < 1 else "none")
        row["Both judges"] = f"agree: {sides.pop()}" if len(sides) == 1 and "none" not in sides else "no finding"
        rows.append(row)
    return pd.DataFrame(rows)


def sweep_table(sweep: pd.DataFrame) -> pd.DataFrame:
    """A strength sweep in words: method, unit family, λ, k where it applies, toxic share, its reduction and the perplexity cost."""
    rows = []
    for r in sweep.itertuples(index=False):
        row = pd.Series(r._asdict())
        rows.append(
            {
                "Method": method_label(str(r.method)),
                "Units": unit_family_label(str(getattr(r, "units", ALL_UNITS))),
                "Strength λ": f"{r.strength:g}",
                "k": "–" if pd.isna(r.k) else f"{int(r.k):,}",
                "Toxic share": f"{r.toxic_share:.1%}",
                "Against the plain model": "the reference" if r.strength == 0 else _ratio(row, "toxic_share_reduction"),
                "Perplexity (change)": _perplexity(row),
            }
        )
    return pd.DataFrame(rows)


def wide_intervals(metrics: pd.DataFrame, measure: str = "toxic_share") -> list[str]:
    """The conditions whose reduction interval includes 1: the data cannot tell them from no change."""
    name = f"{measure}_reduction"
    if f"{name}_low" not in metrics:
        return []
    wide = metrics[(metrics.method != PLAIN) & (metrics[f"{name}_low"] <= 1.0) & (metrics[f"{name}_high"] >= 1.0)]
    return [f"{method_label(r.method)} with pre-prompt {r.preprompt}" for r in wide.itertuples()]


def report_json(result: EvalResult) -> dict[str, object]:
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": result.config.as_dict(),
        "provenance": result.provenance,
        "metrics": [{k: _clean(v) for k, v in row.items()} for row in result.metrics.to_dict(orient="records")],
        "operating_point": result.operating_point,
        "power": None if (power := power_of(result.metrics)) is None else {**power.as_dict(), "text": power.text()},
        "judges": {
            name: [{k: _clean(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]
            for name, frame in result.judges.items()
        },
        "sweep": None
        if result.sweep is None
        else [{k: _clean(v) for k, v in r.items()} for r in result.sweep.to_dict(orient="records")],
    }


def describe_operating_point(point: dict[str, object]) -> str:
    """One sentence: which method and λ, how much less toxic share (with its interval), at what perplexity cost."""
    reduction = ratio_with_interval(
        point.get("toxic_share_reduction"), point.get("toxic_share_reduction_low"), point.get("toxic_share_reduction_high")
    )
    cost = with_interval(
        point.get("ppl_change_rel"), point.get("ppl_change_rel_low"), point.get("ppl_change_rel_high"), "{:+.1%}"
    )
    return (
        f"{method_label(str(point.get('method')))} on {unit_family_label(str(point.get('units') or ALL_UNITS))} "
        f"at λ = {point.get('strength')}: {reduction} toxic share of completions, "
        f"perplexity {cost} (budget +{float(point.get('ppl_budget') or 0):.0%})"  # type: ignore[arg-type]
    )


def _operating_html(result: EvalResult) -> str:
    point = result.operating_point
    if not point:
        return ""
    return f"<p><b>Operating point</b>: {html.escape(describe_operating_point(point))}</p>"


def _power_html(result: EvalResult) -> str:
    power = power_of(result.metrics)
    if power is None:
        return ""
    warning = power.warning()
    note = f" <b>{html.escape(warning)}</b>" if warning else ""
    return f"<p>{html.escape(power.text())}.{note}</p>"


def _judges_html(result: EvalResult) -> str:
    if not result.judges:
        return ""
    table = judges_table(result.metrics, result.judges, str(result.provenance.get("scorer", "")))
    return f'<h2>Both judges</h2>\n<div class="wide">{table.to_html(index=False, border=0, classes="table")}</div>'


def report_html(result: EvalResult, title: str = "AurA Studio evaluation") -> str:
    """One HTML file with plotly.js inlined: it opens anywhere, offline."""
    figures = [condition_figure(result.metrics)]
    if result.sweep is not None and len(result.sweep):
        figures.append(tradeoff_figure(result.sweep, result.operating_point))
    for fig in figures:
        fig.update_layout(template="plotly_white")  # a file has no theme of its own; the app's follows light or dark
    charts = [pio.to_html(fig, full_html=False, include_plotlyjs="inline" if i == 0 else False) for i, fig in enumerate(figures)]
    settings = json.dumps(result.config.as_dict(), indent=2, default=str)
    provenance = json.dumps(result.provenance, indent=2, default=str)
    detail = result.metrics.round(4).to_html(index=False, border=0, classes="table")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #1f2a24; }}
table {{ border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }}
th, td {{ padding: 0.35rem 0.7rem; border-bottom: 1px solid #ddd; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
.wide {{ overflow-x: auto; }}
pre {{ background: #f3f6f4; padding: 1rem; overflow-x: auto; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Completions are scored by {html.escape(str(result.provenance.get("scorer", "")))}; a completion is toxic above
{TOXIC_THRESHOLD}. As in the paper, the lead measure is the <b>toxic share of completions</b>; "2.1× less" (or "1.5× more") compares that share for
the plain model without pre-prompt with the condition's, with a 95% paired bootstrap interval that resamples prompts and
the completions of each prompt. The share of prompts with at least one toxic completion, and the mean score, follow
with their own ×. Perplexity is measured on neutral text; its relative change against the plain model carries a 95%
bootstrap interval over texts.</p>{_operating_html(result)}{_power_html(result)}
<h2>Results</h2>
<div class="wide">{glance_table(result.metrics).to_html(index=False, border=0, classes="table")}</div>
{_judges_html(result)}
{"".join(charts)}
<h2>All figures</h2>
<div class="wide">{detail}</div>
<h2>Settings (repeat the run with these)</h2>
<pre>{html.escape(settings)}</pre>
<h2>Provenance</h2>
<pre>{html.escape(provenance)}</pre>
</body></html>
"""


def write_reports(result: EvalResult, out_dir: str | Path) -> dict[str, Path]:
    """metrics.csv, generations.csv, sweep.csv (when swept), report.json and report.html."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out / "metrics.csv",
        "generations": out / "generations.csv",
        "json": out / "report.json",
        "html": out / "report.html",
    }
    atomic_write(paths["metrics"], result.metrics.to_csv(index=False))
    atomic_write(paths["generations"], result.generations.to_csv(index=False))
    atomic_write(paths["json"], json.dumps(report_json(result), indent=2, default=str))
    atomic_write(paths["html"], report_html(result))
    for name, frame in result.judges.items():
        paths[f"metrics_{name}"] = out / f"metrics-{name}.csv"
        atomic_write(paths[f"metrics_{name}"], frame.to_csv(index=False))
    if result.sweep is not None:
        paths["sweep"] = out / "sweep.csv"
        atomic_write(paths["sweep"], result.sweep.to_csv(index=False))
    return paths
