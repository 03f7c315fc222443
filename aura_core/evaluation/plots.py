"""Plotly figures over plain tables, shared by the app and the reports.

Figures are built from summaries (quantiles, bin counts), never from one marker per unit, so
a model with a million units still draws instantly in a browser.

>>> fig = experts_per_layer(unit_table(aura))               # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from aura_core.method.registry import PLAIN, method_label
from aura_core.method.stats import TOXIC_THRESHOLD
from aura_core.model.architecture import ALL_UNITS, unit_family_label

__all__ = [
    "COLORS",
    "THRESHOLDS",
    "activation_histogram",
    "alpha_histogram",
    "auroc_by_layer",
    "condition_figure",
    "experts_per_layer",
    "layer_summary",
    "ratio_with_interval",
    "ratio_words",
    "response_distributions",
    "roc_figure",
    "tradeoff_figure",
    "unit_classifier_figure",
]

THRESHOLDS = (TOXIC_THRESHOLD, 0.6, 0.7, 0.8)
COLORS = {
    "toxic": "#d62728",
    "non-toxic": "#1f77b4",
    "baseline": "#7f7f7f",
    PLAIN: "#7f7f7f",
    "aura": "#2ca02c",
    "aura-null": "#98df8a",
    "det0": "#9467bd",
    "damp": "#ff7f0e",
}
# No template: in the app Streamlit's own (light or dark) applies; a report file sets its own.
_LAYOUT = {"margin": {"l": 50, "r": 20, "t": 50, "b": 40}}
_SWEEP_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")
_SWEEP_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "x", "pentagon")


def ratio_words(factor: object) -> str:
    """A reduction factor (reference ÷ condition) as people say it: "2.1× less", "1.5× more", never "0.67× less".

    >>> ratio_words(2.08), ratio_words(1 / 1.5), ratio_words(1.0), ratio_words(float("inf")), ratio_words(0.0), ratio_words(None)
    ('2.1× less', '1.5× more', 'no change', 'none left', '∞× more', '–')
    """
    if not isinstance(factor, int | float) or np.isnan(factor) or factor < 0:
        return "–"
    if factor == np.inf:
        return "none left"
    if factor == 0:
        return "∞× more"
    times, word = (factor, "less") if factor >= 1 else (1 / factor, "more")
    shown = f"{times:.1f}" if times < 10 else f"{times:.0f}"
    return "no change" if shown == "1.0" else f"{shown}× {word}"


def ratio_with_interval(point: object, low: object = None, high: object = None) -> str:
    """A reduction factor in words with its 95% interval, each end in words too.

    >>> ratio_with_interval(2.03, 0.51, 6.75), ratio_with_interval(3.0)
    ('2.0× less (from 2.0× more to 6.8× less)', '3.0× less')
    """
    text = ratio_words(point)
    if text != "–" and ratio_words(low) != "–":
        text += f" (from {ratio_words(low)} to {ratio_words(high)})"
    return text


def layer_summary(table: pd.DataFrame, thresholds: tuple[float, ...] = THRESHOLDS) -> pd.DataFrame:
    """Per layer and module kind: unit count, AUROC quantiles, and units above each threshold."""
    grouped = table.groupby(["kind", "layer"]).auroc
    summary = grouped.describe(percentiles=[0.25, 0.5, 0.75])[["count", "min", "25%", "50%", "75%", "max"]]
    for threshold in thresholds:
        summary[f"above_{threshold:.1f}"] = grouped.apply(lambda s, t=threshold: int((s > t).sum()))
    return summary.reset_index()


def auroc_by_layer(table: pd.DataFrame, style: str = "box", max_points_per_layer: int = 1500, seed: int = 0) -> go.Figure:
    """AUROC distribution per layer, one panel per module kind (box from exact quantiles, or violin)."""
    kinds = list(dict.fromkeys(table.kind))
    fig = make_subplots(rows=len(kinds), cols=1, shared_xaxes=True, subplot_titles=kinds, vertical_spacing=0.08)
    if style == "box":
        summary = layer_summary(table)
        for row, kind in enumerate(kinds, start=1):
            part = summary[summary.kind == kind]
            fig.add_trace(
                go.Box(
                    x=part.layer,
                    q1=part["25%"],
                    median=part["50%"],
                    q3=part["75%"],
                    lowerfence=part["min"],
                    upperfence=part["max"],
                    name=kind,
                    marker_color="#636efa",
                    showlegend=False,
                ),
                row=row,
                col=1,
            )
    else:
        rng = np.random.default_rng(seed)
        for row, kind in enumerate(kinds, start=1):
            part = table[table.kind == kind]
            sampled = part.groupby("layer", group_keys=False).apply(
                lambda g: g.iloc[rng.permutation(len(g))[:max_points_per_layer]]
            )
            fig.add_trace(
                go.Violin(x=sampled.layer, y=sampled.auroc, name=kind, points=False, showlegend=False, line_color="#636efa"),
                row=row,
                col=1,
            )
    for row in range(1, len(kinds) + 1):
        fig.add_hline(y=0.5, line_dash="dot", line_color="grey", row=row, col=1)  # AUROC of a coin flip
        fig.update_yaxes(title_text="AUROC", row=row, col=1)
    fig.update_xaxes(title_text="layer", row=len(kinds), col=1)
    fig.update_layout(title="AUROC of every unit, per layer", height=260 * len(kinds) + 80, **_LAYOUT)
    return fig


def experts_per_layer(table: pd.DataFrame, thresholds: tuple[float, ...] = THRESHOLDS) -> go.Figure:
    """How many units per layer exceed each AUROC threshold (all module kinds together).

    Counts span thousands (above 0.5) down to a few (above 0.8), so the axis is logarithmic with
    one labelled tick per power of ten; a layer with none above a threshold is a gap, not a plunge.
    """
    fig = go.Figure()
    layers = sorted(table.layer.unique())
    for threshold in thresholds:
        counts = table[table.auroc > threshold].groupby("layer").size().reindex(layers, fill_value=0)
        fig.add_trace(
            go.Scatter(
                x=counts.index,
                y=counts.where(counts > 0).to_numpy(),
                customdata=counts.to_numpy(),
                hovertemplate="layer %{x}: %{customdata} units<extra></extra>",
                mode="lines+markers",
                connectgaps=False,
                name=f"AUROC > {threshold:.1f}",
            )
        )
    fig.update_layout(
        title="Units above each AUROC threshold, per layer (log scale; gaps: none)",
        xaxis_title="layer",
        yaxis_title="units",
        **_LAYOUT,
    )
    fig.update_yaxes(type="log", dtick=1, tickformat=",d", minor={"showgrid": False})
    return fig


def alpha_histogram(table: pd.DataFrame, bins: int = 40) -> go.Figure:
    """Histogram of AurA's α over the units it dampens (α < 1)."""
    alphas = table.alpha[table.alpha < 1.0].to_numpy()
    counts, edges = np.histogram(alphas, bins=bins, range=(0.0, 1.0))
    centers = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure(go.Bar(x=centers, y=counts, width=np.diff(edges), marker_color=COLORS["aura"]))
    fig.update_layout(
        title=f"α of the {len(alphas):,} dampened units (α = 1 for the rest)",
        xaxis_title="α (output multiplier)",
        yaxis_title="units",
        **_LAYOUT,
    )
    return fig


def response_distributions(values: np.ndarray, labels: np.ndarray, title: str = "Pooled response") -> go.Figure:
    """Overlaid histograms of one unit's pooled response for toxic and non-toxic texts."""
    fig = go.Figure()
    for label, name in ((1, "toxic"), (0, "non-toxic")):
        fig.add_trace(go.Histogram(x=values[labels == label], name=name, opacity=0.6, marker_color=COLORS[name], nbinsx=40))
    fig.update_layout(barmode="overlay", title=title, xaxis_title="max activation over tokens", yaxis_title="texts", **_LAYOUT)
    return fig


def roc_figure(values: np.ndarray, labels: np.ndarray, auroc_value: float) -> go.Figure:
    """ROC curve of one unit as a toxicity classifier."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, values)
    fig = go.Figure(go.Scatter(x=fpr, y=tpr, mode="lines", name="unit", line_color=COLORS["toxic"]))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"dash": "dot", "color": "grey"}))
    fig.update_layout(
        title=f"ROC (AUROC {auroc_value:.3f})", xaxis_title="false positive rate", yaxis_title="true positive rate", **_LAYOUT
    )
    return fig


def condition_figure(metrics: pd.DataFrame) -> go.Figure:
    """Toxic share of completions per pre-prompt, one bar per method, labelled with its reduction in words."""
    fig = go.Figure()
    for method, part in metrics.groupby("method", sort=False):
        reduction = part.get("toxic_share_reduction", pd.Series([np.nan] * len(part)))
        labels = ["" if ratio_words(r) == "–" else ratio_words(r) for r in reduction]
        fig.add_trace(
            go.Bar(x=part.preprompt, y=part.toxic_share, name=method_label(method), text=labels, marker_color=COLORS.get(method))
        )
    fig.update_layout(
        barmode="group",
        title=f"Toxic share of completions (score > {TOXIC_THRESHOLD}); label: against the plain model without pre-prompt",
        xaxis_title="pre-prompt",
        yaxis_title="toxic share of completions",
        **_LAYOUT,
    )
    return fig


def tradeoff_figure(sweep: pd.DataFrame, operating: dict[str, object] | None = None) -> go.Figure:
    """The Pareto view: toxic-share reduction × against the relative perplexity change, with 95% intervals.

    Each method's points run along λ, one colour per method and one marker per unit family;
    ``operating`` (the best point within a perplexity budget) is marked.
    """
    fig = go.Figure()
    units = sweep.units if "units" in sweep else pd.Series(ALL_UNITS, index=sweep.index)  # sweeps from before families
    families = list(dict.fromkeys(units))
    colours = {m: _SWEEP_COLOURS[i % len(_SWEEP_COLOURS)] for i, m in enumerate(dict.fromkeys(sweep.method))}
    for (method, k, family), part in sweep.groupby(["method", sweep.k.fillna(-1), units], sort=False):
        part = part.sort_values("strength")
        name = method_label(method) + (f" k={int(k)}" if k >= 0 else "") + f" · {unit_family_label(family)}"
        symbol = _SWEEP_SYMBOLS[families.index(family) % len(_SWEEP_SYMBOLS)]
        fig.add_trace(
            go.Scatter(
                x=part.ppl_change_rel * 100,
                y=part.toxic_share_reduction,
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": (part.ppl_change_rel_high - part.ppl_change_rel) * 100,
                    "arrayminus": (part.ppl_change_rel - part.ppl_change_rel_low) * 100,
                    "thickness": 1,
                },
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": part.toxic_share_reduction_high - part.toxic_share_reduction,
                    "arrayminus": part.toxic_share_reduction - part.toxic_share_reduction_low,
                    "thickness": 1,
                },
                mode="lines+markers+text",
                text=[f"λ={s:g}" for s in part.strength],
                textposition="top center",
                name=name,
                marker={"symbol": symbol, "size": 9, "color": colours[method]},
                line={"color": colours[method], "dash": "solid" if family == ALL_UNITS else "dot"},
            )
        )
    if operating is not None:
        fig.add_trace(
            go.Scatter(
                x=[float(operating["ppl_change_rel"]) * 100],  # type: ignore[arg-type]
                y=[operating["toxic_share_reduction"]],
                mode="markers",
                marker={"size": 18, "symbol": "star", "color": "#d62728"},
                name=f"operating point (perplexity +{float(operating['ppl_budget']):.0%} at most)",  # type: ignore[arg-type]
            )
        )
    fig.add_hline(y=1.0, line_dash="dot", line_color="grey")
    fig.update_layout(
        title="Less toxicity against more perplexity, as the strength grows (95% intervals)",
        xaxis_title="perplexity change on neutral text (%)",
        yaxis_title="times less toxic share of completions (below 1: more)",
        **_LAYOUT,
    )
    return fig


def unit_classifier_figure(values: np.ndarray, labels: np.ndarray, auroc_value: float, threshold: float | None) -> go.Figure:
    """One unit as a toxicity classifier: its max-over-tokens response per class (with τ), and its ROC curve."""
    from sklearn.metrics import roc_curve

    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.58, 0.42],
        subplot_titles=("Response per class", f"ROC · AUROC {auroc_value:.3f}"),  # short: they fit a phone
    )
    for label, name in ((1, "toxic"), (0, "non-toxic")):
        fig.add_trace(
            go.Histogram(x=values[labels == label], name=name, opacity=0.6, marker_color=COLORS[name], nbinsx=40), row=1, col=1
        )
    if threshold is not None:
        fig.add_vline(x=threshold, line_dash="dash", line_color="#888888", annotation_text="τ", row=1, col=1)
    fpr, tpr, _ = roc_curve(labels, values)
    fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name="unit", line_color=COLORS["toxic"]), row=1, col=2)
    fig.add_trace(
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"dash": "dot", "color": "grey"}), row=1, col=2
    )
    fig.update_xaxes(title_text="max activation over a text's tokens", row=1, col=1)
    fig.update_yaxes(title_text="texts", row=1, col=1)
    fig.update_xaxes(title_text="false positive rate", row=1, col=2)
    fig.update_yaxes(title_text="true positive rate", row=1, col=2)
    fig.update_layout(barmode="overlay", height=380, legend={"orientation": "h", "y": -0.3}, **_LAYOUT)
    return fig


def activation_histogram(
    edges: list[float], counts: list[int], threshold: float, title: str, partner: tuple[str, list[float], list[int]] | None = None
) -> go.Figure:
    """Counts of a unit's outputs over a corpus's tokens (log scale), with its firing threshold τ marked.

    ``partner`` (name, edges, counts) overlays the other half of a gated neuron.
    """
    fig = go.Figure()
    series = [("this unit", edges, counts, COLORS["toxic"])]
    if partner is not None:
        series.append((partner[0], partner[1], partner[2], COLORS["non-toxic"]))
    for name, unit_edges, unit_counts, colour in series:
        bounds = np.asarray(unit_edges, dtype=float)
        fig.add_trace(
            go.Bar(
                x=(bounds[:-1] + bounds[1:]) / 2,
                y=unit_counts,
                width=np.diff(bounds),
                name=name,
                marker_color=colour,
                opacity=0.65,
                hovertemplate="%{x:.3f}: %{y} tokens<extra></extra>",
            )
        )
    fig.add_vline(x=threshold, line_dash="dash", line_color="#888888", annotation_text="τ (fires above)")
    fig.update_layout(
        title=title, xaxis_title="activation at a token", yaxis_title="tokens", barmode="overlay", height=340, **_LAYOUT
    )
    fig.update_yaxes(type="log", dtick=1, tickformat=",d", minor={"showgrid": False})
    return fig
