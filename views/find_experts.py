"""Find experts: run the model over labelled texts, score every unit by AUROC, see where experts sit."""

import streamlit as st

from aura_core import AuraError, CollectionCancelled, balanced_sample, load_concept_data, parse_concept_bytes, unit_table
from aura_core.plots import alpha_histogram, auroc_by_layer, experts_per_layer
from studio.resources import ExpertsSpec, cached_experts, find_experts, remember_experts
from studio.state import concept_data, model_choice, require_model, session_experts, set_concept_data
from studio.view import ProgressWithETA, follow_flight

st.title("Find experts")
st.write(
    "Every MLP unit is scored as a toxicity classifier: its response to a text is the max of its output over "
    "the text's tokens, and its **AUROC** says how well that response separates toxic from non-toxic texts."
)
loaded = require_model()

source = st.radio(
    "Concept data",
    ["Starter set", "Upload CSV / JSONL", "File on the server", "Hugging Face dataset id"],
    horizontal=True,
    key="data_source",
    help="CSV with text,label (or the Kaggle Jigsaw layout, or two columns without header); JSONL with text and label.",
)
try:
    if source == "Starter set":
        if not st.session_state.get("concept_label", "").startswith("starter"):
            set_concept_data(load_concept_data("starter"), "starter set (data/concept_starter.csv)")
    elif source == "Upload CSV / JSONL":
        upload = st.file_uploader("Concept file", type=["csv", "jsonl", "json", "tsv", "txt"], key="concept_upload")
        if upload is not None and st.session_state.get("_upload_id") != upload.file_id:
            set_concept_data(parse_concept_bytes(upload.getvalue(), upload.name), f"upload: {upload.name}")
            st.session_state["_upload_id"] = upload.file_id
    elif source == "File on the server":
        path = st.text_input("Path", placeholder="../shared/data/jigsaw_balanced.csv", key="concept_path")
        if path and st.button("Read file"):
            set_concept_data(load_concept_data(path), f"file: {path}")
    else:
        dataset_id = st.text_input("Dataset id (needs the network)", key="concept_dataset")
        if dataset_id and st.button("Load dataset"):
            set_concept_data(load_concept_data(dataset_id), f"dataset: {dataset_id}")
except AuraError as err:
    st.error(f"That data cannot be used: {err}. The previous concept data is still active.")

data, label = concept_data()
counts = data.counts()
st.caption(f"Active: **{label}** · {counts[1]:,} toxic · {counts[0]:,} non-toxic" + "".join(f" · {n}" for n in data.notes))

with st.form("experts_form"):
    cols = st.columns(4)
    limit = max(1, min(counts.values()))
    n_per_class = cols[0].number_input("Texts per class", 1, limit, min(200, limit), key="n_per_class")
    max_tokens = cols[1].number_input("Token budget per text", 4, 512, 64, step=8, key="max_tokens")
    pooling = cols[2].selectbox("Pooling", ["max", "mean"], key="pooling", help="The paper uses max over tokens.")
    seed = cols[3].number_input("Sampling seed", 0, 10_000, 0, key="data_seed")
    units_mode = st.radio("Units", ["auto (the paper's MLP layers)", "regex"], horizontal=True, key="units_mode")
    regex = st.text_input("Regex over module names (re.fullmatch)", placeholder=r".*layers\.\d+\.mlp\.up_proj", key="units_regex")
    run = st.form_submit_button("Find experts", type="primary")

sample = balanced_sample(data, int(n_per_class), seed=int(seed))
spec = ExpertsSpec(
    model=model_choice(),
    data_hash=sample.content_hash(),
    data_label=label,
    n_texts=len(sample),
    max_tokens=int(max_tokens),
    pooling=pooling,
    units=regex.strip() if units_mode == "regex" and regex.strip() else None,
)
if st.session_state.get("cancel_experts"):
    st.warning("Cancelled. Finished chunks of 256 texts are kept on disk: press **Find experts** again to resume from there.")
if run:
    status = st.status(f"Running {loaded.name} over {len(sample)} texts…", expanded=True)
    with status:
        st.button("Cancel", key="cancel_experts", help="Finished chunks of 256 texts stay on disk: run again to resume.")
        progress = ProgressWithETA("texts")
        flight = find_experts(spec, sample)
        if flight.waiters > 1:
            st.caption("Another session is computing exactly these experts: following its progress.")
        try:
            remember_experts(spec, follow_flight(flight, progress))
            st.session_state["experts_spec"] = spec
            st.rerun()  # redraw the sidebar and the results from the cache
        except CollectionCancelled as err:
            status.update(label=str(err), state="error")
        except AuraError as err:
            status.update(label="Could not find experts", state="error")
            st.error(str(err))

experts = cached_experts(spec) or session_experts()
if experts is None:
    st.info("Set the options and press **Find experts**. Results are cached on disk: reopening them is instant.")
    st.stop()
if experts.spec != spec:
    st.caption("Showing the last result; press **Find experts** to compute the current settings.")
st.session_state["experts_spec"] = experts.spec

table = unit_table(experts.intervention)
best = table.iloc[0]
cols = st.columns(4)
cols[0].metric("Units analysed", f"{len(table):,}")
cols[1].metric("Experts (AUROC > 0.75)", f"{int((table.auroc > 0.75).sum()):,}")
cols[2].metric("Dampened by AurA (AUROC > 0.5)", f"{int((table.auroc > 0.5).sum()):,}")
cols[3].metric(f"Strongest: layer {best.layer} {best.kind} #{best.unit}", f"{best.auroc:.3f}", help="AUROC of the best unit")

style = st.segmented_control("Distribution", ["box", "violin"], default="box", key="dist_style") or "box"
st.plotly_chart(auroc_by_layer(table, style=style), width="stretch")
left, right = st.columns(2)
left.plotly_chart(experts_per_layer(table), width="stretch")
right.plotly_chart(alpha_histogram(table), width="stretch")

left, right = st.columns(2)
left.download_button("AUROC table (CSV)", table.to_csv(index=False).encode(), "aura_units.csv", "text/csv")
right.download_button("Intervention file (safetensors)", experts.intervention.to_bytes(), "aura_intervention.safetensors")
