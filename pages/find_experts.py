"""Find experts: run the model over labelled texts, score every unit by AUROC, see where experts sit."""

import streamlit as st

from aura_core import AuraError, CollectionCancelled, balanced_sample, load_concept_data, parse_concept_bytes, unit_table
from aura_core.analysis.collect import POOLINGS
from aura_core.analysis.experts import ExpertsRecipe
from aura_core.base.data import source_label
from aura_core.evaluation.plots import alpha_histogram, auroc_by_layer, experts_per_layer
from aura_core.model.architecture import family_in_layers, layer_count, unit_families, unit_family_label
from studio import settings
from studio.frame import ensure_frame
from studio.resources import experts_by_key, find_experts, get_server_config
from studio.state import (
    STARTER_LABEL,
    concept_data,
    model_choice,
    require_model,
    session_experts,
    set_concept_data,
    set_session_experts,
)
from studio.view import ProgressWithETA, follow_flight

ensure_frame()

st.title("Find experts")
st.write(
    "Every MLP unit is scored as a toxicity classifier: its response to a text is the max of its output over "
    "the text's tokens, and its **AUROC** says how well that response separates toxic from non-toxic texts."
)
loaded = require_model()
config = get_server_config()

sources = ["Starter set", "Upload CSV / JSONL"]
if config.allow_server_paths:
    sources.append("File on the server")
if config.allow_hub_ids:
    sources.append("Hugging Face dataset id")
source = st.radio(
    "Concept data",
    sources,
    horizontal=True,
    key="data_source",
    help="CSV with text,label (or the Kaggle Jigsaw layout, or two columns without header); JSONL with text and label.",
)
try:
    if source == "Starter set":
        if st.session_state.get("concept_label", STARTER_LABEL) != STARTER_LABEL:
            set_concept_data(load_concept_data("starter"), STARTER_LABEL)
    elif source == "Upload CSV / JSONL":
        upload = st.file_uploader(
            f"Concept file (up to {config.max_upload_mb} MB)", type=["csv", "jsonl", "json", "tsv", "txt"], key="concept_upload"
        )
        if upload is not None and st.session_state.get("_upload_id") != upload.file_id:
            if upload.size > config.max_upload_mb * 2**20:
                raise AuraError(
                    f"{upload.name} is {upload.size / 2**20:.1f} MB; this server takes up to {config.max_upload_mb} MB"
                )
            set_concept_data(parse_concept_bytes(upload.getvalue(), upload.name), f"upload: {upload.name}")
            st.session_state["_upload_id"] = upload.file_id
    elif source == "File on the server":
        path = st.text_input("Path", placeholder="../shared/data/jigsaw_balanced.csv", key="concept_path")
        if path and st.button("Read file"):
            set_concept_data(load_concept_data(path), source_label(path))
    else:
        dataset_id = st.text_input("Dataset id (needs the network)", key="concept_dataset")
        if dataset_id and st.button("Load dataset"):
            set_concept_data(load_concept_data(dataset_id), source_label(dataset_id))
except AuraError as err:
    st.error(f"That data cannot be used: {err}. The previous concept data is still active.")

data, label = concept_data()
counts = data.counts()
st.caption(f"Active: **{label}** · {counts[1]:,} toxic · {counts[0]:,} non-toxic" + "".join(f" · {n}" for n in data.notes))

unit_modes = ["auto (the paper's MLP layers)", "a family, in chosen layers"] + (["regex"] if config.allow_regex else [])
units_mode = st.radio("Units", unit_modes, horizontal=True, key="units_mode")
if units_mode not in unit_modes:  # a regex chosen before the server stopped allowing one
    units_mode = unit_modes[0]
blocks = layer_count(loaded.model)
with st.form("experts_form"):
    cols = st.columns(4)
    smaller_class = max(1, min(counts.values()))
    limit = min(smaller_class, config.max_texts_per_class)
    if settings.get("n_per_class") > limit:
        settings.put("n_per_class", limit)  # a link's or the last data's count, brought within this data and server
    n_per_class = settings.keep(
        "n_per_class",
        cols[0].number_input(
            "Texts per class",
            1,
            None,  # over the limit is refused below by name, not a silently red field
            key=settings.bind("n_per_class"),
            help=f"At most {limit} here.",
        ),
    )
    max_tokens = settings.keep(
        "max_tokens",
        cols[1].number_input(
            "Token budget per text",
            4,
            512,
            step=8,
            key=settings.bind("max_tokens"),
            help=f"At most {config.max_token_budget} on this server.",
        ),
    )
    pooling = settings.keep(
        "pooling",
        cols[2].selectbox("Pooling", list(POOLINGS), key=settings.bind("pooling"), help="The paper uses max over tokens."),
    )
    seed = settings.keep("data_seed", cols[3].number_input("Sampling seed", 0, 10_000, key=settings.bind("data_seed")))
    regex = ""
    if units_mode == "regex":
        regex = st.text_input(
            "Regex over module names (re.fullmatch)", placeholder=r".*layers\.\d+\.mlp\.up_proj", key="units_regex"
        )
    elif units_mode == unit_modes[1]:
        family_col, layers_col = st.columns(2)
        family = family_col.selectbox(
            "Unit family", list(unit_families(loaded.model)), format_func=unit_family_label, key="units_family"
        )
        first, last = layers_col.slider("Layers", 0, max(blocks - 1, 1), (0, max(blocks - 1, 1)), key="units_layers")
        whole = (first, last) == (0, blocks - 1)
        regex = family if whole else family_in_layers(loaded.model, family, int(first), int(last))
    run = st.form_submit_button("Find experts", type="primary")
too_much = [
    note
    for note in (
        config.over_cap("max_texts_per_class", int(n_per_class), "texts per class"),
        config.over_cap("max_token_budget", int(max_tokens), "tokens per text"),
        None
        if int(n_per_class) <= smaller_class
        else f"Asked for {int(n_per_class):,} texts per class: this data holds {smaller_class:,} of its smaller class.",
    )
    if note is not None
]
for note in too_much:
    st.error(f"{note} Lower it to run.")
run = run and not too_much

sample = balanced_sample(data, int(n_per_class), seed=int(seed))
recipe = ExpertsRecipe(
    model=model_choice().name,
    data=label,
    n_per_class=int(n_per_class),
    seed=int(seed),
    max_tokens=int(max_tokens),
    pooling=str(pooling),
    units=regex.strip() or None,
)
if st.session_state.get("cancel_experts"):
    st.warning("Cancelled. Every finished batch of 32 texts is kept on disk: press **Find experts** again to resume from there.")
failure = None
if run:
    status = st.status(f"Running {loaded.name} over {len(sample)} texts…", expanded=True)
    with status:
        st.button("Cancel", key="cancel_experts", help="Every finished batch of 32 texts stays on disk: run again to resume.")
        progress = ProgressWithETA("texts")
        try:
            flight = find_experts(model_choice(), sample, recipe)
            settings.sync_url()  # before the wait: a reload during it must open these settings
            if flight.waiters > 1:
                st.caption("Another session is computing exactly these experts: following its progress.")
            found = experts_by_key(follow_flight(flight, progress).key)
            if found is not None:
                set_session_experts(found)
            st.rerun()  # redraw the sidebar and the results
        except CollectionCancelled as err:
            status.update(label=str(err), state="error")
        except AuraError as err:
            status.update(label="Could not find experts", state="error", expanded=True)
            failure = str(err)
if failure is not None:
    st.error(f"Could not find experts: {failure}")  # in plain sight, not inside the status box

experts = session_experts()
if experts is None:
    st.info(
        "Set the options and press **Find experts**. Results are kept on disk: reopening them, or a link to them, is instant."
    )
    settings.stop()
shown = experts.spec
if (shown.data, shown.n_per_class, shown.seed, shown.max_tokens, shown.pooling, shown.units) != (
    recipe.data,
    recipe.n_per_class,
    recipe.seed,
    recipe.max_tokens,
    recipe.pooling,
    recipe.units,
):
    st.caption(
        f"Showing experts found from **{shown.data}**, {shown.n_per_class} texts per class, {shown.max_tokens} tokens, "
        f"{shown.pooling} pooling; press **Find experts** to compute the current settings."
    )

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
