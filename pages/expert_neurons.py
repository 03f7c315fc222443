"""Expert neurons: browse the units by AUROC, open one (table, search or ``?unit=module:index``), see it in full."""

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from aura_core import AuraError, load_neutral_texts, unit_table
from aura_core.analysis.neurons import (
    VOCABULARY_NOTE,
    TokenActivations,
    UnitDetail,
    check_unit,
    parse_unit,
    unit_detail,
    unit_ref,
    unit_widths,
)
from aura_core.analysis.unit_profile import DENSITY_RULE, ActivationProfile
from aura_core.evaluation.plots import activation_histogram, unit_classifier_figure
from aura_core.model.architecture import layer_of, module_kind
from studio import settings
from studio.frame import ensure_frame
from studio.resources import SessionExperts, activation_profile_of, get_engine, get_server_config
from studio.state import model_choice, require_experts, require_model
from studio.view import (
    ProgressWithETA,
    expert_baselines,
    follow_flight,
    inline_html,
    token_highlight_html,
    vocabulary_word,
    word_at,
)

ensure_frame()

st.title("Expert neurons")
loaded = require_model()


def follow_link(widths: dict[str, int]) -> None:
    """Open the unit a link names (``?unit=module:index``) when it is new; a bad one only says why."""
    asked = st.query_params.get("unit")
    if asked is None or asked == st.session_state.get("neuron_url_synced"):
        return
    st.session_state["neuron_url_synced"] = asked
    try:
        module, index = parse_unit(asked)
        check_unit(widths, module, index)
    except AuraError as err:
        st.session_state["neuron_link_error"] = f"The link asks for unit `{asked}`, which cannot be opened here: {err}."
        settings.put("unit", None)
        return
    open_unit(module, index)


def open_unit(module: str, index: int) -> None:
    settings.put("unit", unit_ref(module, index))
    st.session_state.pop("neuron_link_error", None)


follow_link(unit_widths(loaded.model))
link_error = st.empty()
if st.session_state.get("neuron_link_error"):
    link_error.error(st.session_state["neuron_link_error"] + " Open a unit from the search or the table below.")
experts = require_experts("this page inspects them one by one.")
widths = {name: t.numel() for name, t in experts.intervention.auroc.items()}


@st.cache_resource(show_spinner=False, max_entries=4)
def table_of(key: str, _experts: SessionExperts) -> pd.DataFrame:
    return unit_table(_experts.intervention)


table = table_of(experts.key, experts)

with st.form("unit_search", border=True):
    st.markdown("**Open a unit**")
    cols = list(st.columns([1, 1, 1, 1]))
    search_layer = cols[0].selectbox("Layer", sorted(table.layer.unique()), key="search_layer")
    search_kind = cols[1].selectbox("Kind", sorted(table.kind.unique()), key="search_kind")
    search_index = cols[2].number_input("Index", 0, max(widths.values()) - 1, 0, key="search_index")
    cols[3].write("")
    if cols[3].form_submit_button("Open unit", type="primary"):
        found = [name for name in widths if layer_of(name) == search_layer and module_kind(name) == search_kind]
        try:
            if not found:
                raise AuraError(f"layer {search_layer} has no {search_kind} module")
            check_unit(widths, found[0], int(search_index))
            open_unit(found[0], int(search_index))
        except AuraError as err:
            st.error(f"Cannot open that unit: {err}")

jump = st.empty()
with st.container(border=True):
    cols = list(st.columns([1, 1, 2, 1]))
    kinds = cols[0].multiselect("Module kind", sorted(table.kind.unique()), key="neuron_kinds")
    layers = sorted(table.layer.unique())
    layer_range = cols[1].select_slider("Layers", options=layers, value=(layers[0], layers[-1]), key="neuron_layers")
    min_auroc = cols[2].slider("Minimum AUROC", 0.0, 1.0, 0.5, 0.01, key="neuron_min_auroc")
    top_n = cols[3].number_input("Rows", 10, 5000, 200, step=50, key="neuron_rows")
filtered = table[(table.layer >= layer_range[0]) & (table.layer <= layer_range[1]) & (table.auroc >= min_auroc)]
if kinds:
    filtered = filtered[filtered.kind.isin(kinds)]
shown = filtered.head(int(top_n)).reset_index(drop=True)
st.session_state["neuron_rows_shown"] = list(zip(shown.module, shown.unit.astype(int), strict=True))


def pick_row() -> None:
    rows = st.session_state["neuron_table"].selection.rows
    if rows:
        open_unit(*st.session_state["neuron_rows_shown"][rows[0]])


st.caption(f"{len(filtered):,} units match; the table shows the top {len(shown):,} by AUROC. Click a row to open the unit.")
st.dataframe(
    shown[["layer", "kind", "unit", "auroc", "alpha", "module"]],
    hide_index=True,
    width="stretch",
    height=560,
    on_select=pick_row,
    selection_mode="single-row",
    key="neuron_table",
    column_config={"auroc": st.column_config.NumberColumn(format="%.4f"), "alpha": st.column_config.NumberColumn(format="%.3f")},
)

if st.session_state.get("neuron_link_error"):
    settings.stop()  # nothing opens until a unit is chosen here
link_error.empty()
if settings.get("unit") is None:
    if shown.empty:
        st.warning("No unit matches these filters.")
        settings.stop()
    open_unit(str(shown.module[0]), int(shown.unit[0]))
module, index = parse_unit(settings.get("unit"))
st.session_state["neuron_url_synced"] = settings.get("unit")
try:
    check_unit(widths, module, index)
except AuraError as err:
    st.error(f"These experts do not score unit `{settings.get('unit')}`: {err}")
    settings.stop()


def profile_of(texts: list[str], corpus: str) -> ActivationProfile:
    """Every unit of these experts on ``texts``, shared by every session of this server."""
    found = activation_profile_of(model_choice(), experts, texts, corpus, expert_baselines(experts).thresholds)
    if isinstance(found, ActivationProfile):
        return found
    return follow_flight(found, ProgressWithETA(f"Measuring every unit on {corpus} (once per server)"))


def corpus_choice() -> tuple[list[str], str]:
    options = ["Neutral text (data/neutral.txt)", "The concept texts of these experts", "Upload a corpus"]
    choice = st.radio("Corpus for the activation density", options, horizontal=True, key="density_corpus")
    if choice == options[1]:
        return experts.data.texts, "the concept texts"
    if choice == options[2]:
        server = get_server_config()
        upload = st.file_uploader(
            "A .txt (one text a line), or a CSV / JSONL with a text column",
            type=["txt", "csv", "jsonl"],
            help=f"Up to {server.max_upload_mb} MB and {server.max_upload_lines:,} texts on this server.",
        )
        if upload is not None and upload.size <= server.max_upload_mb * 2**20:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / f"corpus{Path(upload.name).suffix.lower()}"
                path.write_bytes(upload.getvalue())
                try:
                    texts = load_neutral_texts(path)
                except AuraError as err:
                    st.error(f"{upload.name}: {err}")
                else:
                    too_many = server.over_cap("max_upload_lines", len(texts), "texts")
                    if too_many is None:
                        return texts, f"upload {upload.name}"
                    st.error(f"{upload.name}: {too_many}")
        elif upload is not None:
            st.error(
                f"{upload.name} is {upload.size / 2**20:.1f} MB: this server takes up to {server.max_upload_mb} MB "
                "(its cap max_upload_mb)."
            )
        st.caption("Until a corpus is uploaded, the neutral text is used.")
    return load_neutral_texts(), "data/neutral.txt"


def draw_texts(detail: UnitDetail, label: int, title: str) -> None:
    st.markdown(f"**{title}**")
    tops = detail.texts_of(label)
    if not tops:
        st.caption("none")
    partner = detail.partner
    for top in tops:
        acts = top.activations
        scale = max(max(acts.values), max(top.partner_values or [0.0]), 1e-6)
        peak = inline_html(word_at(acts.tokens, acts.peak)) if acts.tokens else ""  # the whole word, not a piece of it
        html = f"<small>{'toxic' if label == 1 else 'non-toxic'} · max {top.response:.2f} at “{peak}”</small>"
        html += token_highlight_html(acts, scale)
        if partner is not None and top.partner_values is not None:
            partner_acts = TokenActivations(acts.text, acts.tokens, top.partner_values)
            html += f"<small style='color:var(--aura-muted)'>{partner.kind} {partner.unit} on the same text:</small>"
            html += token_highlight_html(partner_acts, scale)
        st.markdown(html, unsafe_allow_html=True)


# Sections in reading order; each section's own controls sit in it, read before the unit is computed.
heading, texts_section, density_section = st.container(), st.container(), st.container()
with texts_section:
    st.markdown("#### Texts that activate it most, from both classes")
    per_class = st.slider("Top texts per class", 1, 10, 4, key="neuron_top_texts")
with density_section:
    st.markdown("#### How often it fires on ordinary text")
    st.caption(DENSITY_RULE)
    texts, corpus = corpus_choice()
    try:
        profile = profile_of(texts, corpus)
        detail = unit_detail(
            loaded.model,
            loaded.tokenizer,
            experts.intervention,
            module,
            index,
            responses=experts.responses,
            texts=experts.data.texts,
            profile=profile,
            per_class=per_class,
            max_tokens=experts.spec.max_tokens,
            runner=get_engine(model_choice()),
        )
    except AuraError as err:
        st.error(str(err))
        settings.stop()

unit = detail.unit
jump.markdown(f"Showing **[layer {unit.layer} · {unit.kind} · unit {unit.unit}](#unit)** below the table.")
with heading:
    st.subheader(f"Layer {unit.layer} · {unit.kind} · unit {unit.unit}", anchor="unit")
    st.caption(
        f"`{unit.module}` · AUROC {unit.auroc:.4f} · AurA multiplies its output by α = {unit.alpha:.3f} · "
        f"link to this unit: `?unit={unit.ref}`"
    )
    if detail.partner is not None:
        partner = detail.partner
        st.markdown(
            f"**Gated neuron.** This model's MLP neurons output act(gate) × up, so {partner.kind} {partner.unit} is the "
            f"other half of neuron {unit.unit}: both are shown, here and on every text below."
        )
        cols = list(st.columns(2))
        for col, half in zip(cols, (unit, partner) if unit.kind < partner.kind else (partner, unit), strict=True):
            col.metric(f"{half.kind} {half.unit}", f"AUROC {half.auroc:.4f}", f"α = {half.alpha:.3f}", "off", delta_arrow="off")
        if st.button(f"Open {partner.kind} {partner.unit}", key="open_partner"):
            open_unit(partner.module, partner.unit)
            st.rerun()
    values = experts.responses.per_module[module][:, index].numpy()
    labels = experts.responses.labels.numpy()
    st.plotly_chart(unit_classifier_figure(values, labels, unit.auroc, detail.threshold), width="stretch")

with texts_section:
    st.caption("Each token is shaded by the unit's output there (the strongest is outlined); hover or tap a token for its value.")
    left, right = st.columns(2)
    with left:
        draw_texts(detail, 1, "Toxic texts")
    with right:
        draw_texts(detail, 0, "Non-toxic texts")

density = detail.density
if density is not None:
    with density_section:
        cols = list(st.columns(4))
        cols[0].metric(
            "Activation density",
            f"{density.density:.2%}",
            f"{density.above:,} of {density.n_tokens:,} tokens",
            "off",
            delta_arrow="off",
        )
        cols[1].metric("Threshold τ", f"{density.threshold:.3f}")
        cols[2].metric("Median", f"{density.quantiles['0.5']:.3f}")
        cols[3].metric("99th percentile", f"{density.quantiles['0.99']:.3f}")
        st.caption(
            "Quantiles (to within one histogram bin): "
            + " · ".join(f"{float(q):.1%}: {v:.3f}" for q, v in density.quantiles.items())
            + f" · min {density.minimum:.3f} · max {density.maximum:.3f} · mean {density.mean:.3f}"
        )
        other = detail.partner_density
        overlay = (
            (f"{detail.partner.kind} {detail.partner.unit}", other.edges, other.counts) if other and detail.partner else None
        )
        title = f"Its output at each of {density.n_tokens:,} tokens of {density.corpus}"
        st.plotly_chart(activation_histogram(density.edges, density.counts, density.threshold, title, overlay), width="stretch")

st.markdown("#### What it writes into the vocabulary")
if detail.vocabulary is None:
    st.info(f"Not available for this unit: {detail.vocabulary_unavailable}")
else:
    st.caption(
        f"{VOCABULARY_NOTE} Output direction: {detail.vocabulary.direction}. Tokens are shown as read: “taxpay…” starts a "
        "longer word and “…ardships” ends one, ⏎ is a line break, ⟨e2 80⟩ part of one character's bytes."
    )
    left, right = st.columns(2)
    for col, title, effects in (
        (left, "Promoted tokens", detail.vocabulary.promoted),
        (right, "Suppressed tokens", detail.vocabulary.suppressed),
    ):
        col.markdown(f"**{title}**")
        col.dataframe(
            pd.DataFrame([{"token": vocabulary_word(e.token, e.kind), "kind": e.kind, "logit": e.logit} for e in effects]),
            hide_index=True,
            width="stretch",
            column_config={"logit": st.column_config.NumberColumn(format="%.3f")},
        )
