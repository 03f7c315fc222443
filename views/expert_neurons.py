"""Expert neurons: the top units, and for one of them what it responds to and what it writes."""

import numpy as np
import pandas as pd
import streamlit as st

from aura_core import AuraError, unit_table
from aura_core.neurons import token_activations, vocabulary_effect
from aura_core.plots import response_distributions, roc_figure
from studio.resources import get_engine
from studio.state import model_choice, require_experts, require_model
from studio.view import token_highlight_html

st.title("Expert neurons")
loaded = require_model()
experts = require_experts("this page inspects them one by one.")

table = unit_table(experts.intervention)
with st.container(border=True):
    cols = st.columns([1, 1, 2, 1])
    kinds = cols[0].multiselect("Module kind", sorted(table.kind.unique()), key="neuron_kinds")
    layers = sorted(table.layer.unique())
    layer_range = cols[1].select_slider("Layers", options=layers, value=(layers[0], layers[-1]), key="neuron_layers")
    min_auroc = cols[2].slider("Minimum AUROC", 0.0, 1.0, 0.5, 0.01, key="neuron_min_auroc")
    top_n = cols[3].number_input("Rows", 10, 5000, 200, step=50, key="neuron_rows")
filtered = table[(table.layer >= layer_range[0]) & (table.layer <= layer_range[1]) & (table.auroc >= min_auroc)]
if kinds:
    filtered = filtered[filtered.kind.isin(kinds)]
shown = filtered.head(int(top_n)).reset_index(drop=True)
st.caption(f"{len(filtered):,} units match; the table shows the top {len(shown):,} by AUROC. Click a row to inspect the unit.")
selection = st.dataframe(
    shown[["layer", "kind", "unit", "auroc", "alpha", "module"]],
    hide_index=True,
    width="stretch",
    height=300,
    on_select="rerun",
    selection_mode="single-row",
    key="neuron_table",
    column_config={"auroc": st.column_config.NumberColumn(format="%.4f"), "alpha": st.column_config.NumberColumn(format="%.3f")},
)
if shown.empty:
    st.warning("No unit matches these filters.")
    st.stop()
rows = selection.selection.rows if selection is not None else []
unit_row = shown.iloc[rows[0] if rows else 0]
module, unit = str(unit_row.module), int(unit_row.unit)
st.subheader(f"Layer {unit_row.layer} · {unit_row.kind} · unit {unit}")
st.caption(f"`{module}` · AUROC {unit_row.auroc:.4f} · AurA multiplies its output by α = {unit_row.alpha:.3f}")

values = experts.responses.per_module[module][:, unit].numpy()
labels = experts.responses.labels.numpy()
left, right = st.columns(2)
left.plotly_chart(response_distributions(values, labels, "Its response to toxic and non-toxic texts"), width="stretch")
right.plotly_chart(roc_figure(values, labels, float(unit_row.auroc)), width="stretch")

st.markdown("#### Texts that activate it most")
n_texts = st.slider("Texts", 3, 20, 6, key="neuron_top_texts")
order = np.argsort(-values)[:n_texts]
texts = [experts.data.texts[i] for i in order]
try:
    acts = token_activations(
        loaded.model,
        loaded.tokenizer,
        texts,
        module,
        unit,
        max_tokens=experts.spec.max_tokens,
        runner=get_engine(model_choice()),
    )
except AuraError as err:
    st.error(str(err))
    st.stop()
scale = max(max(a.values) for a in acts)
for index, act in zip(order, acts, strict=True):
    tag = "toxic" if labels[index] == 1 else "non-toxic"
    st.markdown(
        f"<small>{tag} · max {max(act.values):.2f} at “{act.tokens[act.peak].strip()}”</small>"
        + token_highlight_html(act, scale),
        unsafe_allow_html=True,
    )

st.markdown("#### What it writes into the vocabulary")
try:
    effect = vocabulary_effect(loaded.model, loaded.tokenizer, module, unit)
except AuraError as err:
    st.info(f"Not available for this unit: {err}")
else:
    st.caption(f"Output direction: {effect.direction}, through the final norm and the unembedding.")
    left, right = st.columns(2)
    left.markdown("**Promoted tokens**")
    left.dataframe(pd.DataFrame(effect.promoted, columns=["token", "logit"]), hide_index=True, width="stretch")
    right.markdown("**Suppressed tokens**")
    right.dataframe(pd.DataFrame(effect.suppressed, columns=["token", "logit"]), hide_index=True, width="stretch")
