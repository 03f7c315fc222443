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

from aura_core.evaluation import EvalResult
from aura_core.methods import method_label
from aura_core.plots import condition_figure, tradeoff_figure

__all__ = ["paper_table", "report_html", "report_json", "write_reports"]


def _clean(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _ci(row: pd.Series, name: str, fmt: str) -> str:
    point = row.get(name)
    if point is None or pd.isna(point):
        return "–"
    low, high = row.get(f"{name}_low"), row.get(f"{name}_high")
    text = fmt.format(point) if math.isfinite(point) else "∞"
    if low is not None and not pd.isna(low):
        text += f" [{fmt.format(low)}, {fmt.format(high)}]"
    return text


def paper_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Rows: pre-prompt; for each method: toxicity, reduction × [95% CI], perplexity (Δ [95% CI])."""
    rows = []
    for preprompt, part in metrics.groupby("preprompt", sort=False):
        row = {"pre-prompt": preprompt}
        for _, r in part.iterrows():
            name = method_label(r.method)
            row[f"{name}: toxicity"] = f"{r.mean_toxicity:.4f}"
            row[f"{name}: toxic share"] = f"{r.toxic_share:.3f}"
            row[f"{name}: reduction ×"] = _ci(r, "reduction", "{:.2f}")
            ppl = f"{r.perplexity:.2f}" if "perplexity" in r and not pd.isna(r.perplexity) else "–"
            if r.method != "none" and "ppl_change" in r and not pd.isna(r.ppl_change):
                ppl += f" ({_ci(r, 'ppl_change', '{:+.2f}')})"
            row[f"{name}: perplexity"] = ppl
        rows.append(row)
    return pd.DataFrame(rows)


def report_json(result: EvalResult) -> dict[str, object]:
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": result.config.as_dict(),
        "provenance": result.provenance,
        "metrics": [{k: _clean(v) for k, v in row.items()} for row in result.metrics.to_dict(orient="records")],
        "sweep": None
        if result.sweep is None
        else [{k: _clean(v) for k, v in r.items()} for r in result.sweep.to_dict(orient="records")],
    }


def report_html(result: EvalResult, title: str = "AurA Studio evaluation") -> str:
    """One HTML file with plotly.js inlined: it opens anywhere, offline."""
    figures = [condition_figure(result.metrics)]
    if result.sweep is not None and len(result.sweep):
        figures.append(tradeoff_figure(result.sweep))
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
<p>Toxicity is the mean score of the completions ({html.escape(str(result.provenance.get("scorer", "")))});
a completion is toxic above 0.5. Reduction × = mean toxicity of the plain model without pre-prompt divided by that of
the condition, with a 95% paired bootstrap interval over prompts. Perplexity is measured on neutral text; its change
against the plain model carries a 95% bootstrap interval over texts.</p>
<h2>Results</h2>
<div class="wide">{paper_table(result.metrics).to_html(index=False, border=0, classes="table")}</div>
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
    result.metrics.to_csv(paths["metrics"], index=False)
    result.generations.to_csv(paths["generations"], index=False)
    paths["json"].write_text(json.dumps(report_json(result), indent=2, default=str))
    paths["html"].write_text(report_html(result), encoding="utf-8")
    if result.sweep is not None:
        paths["sweep"] = out / "sweep.csv"
        result.sweep.to_csv(paths["sweep"], index=False)
    return paths
