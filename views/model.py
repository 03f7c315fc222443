"""Model: pick a preset, a Hugging Face id or a local folder; see its architecture and units."""

import pandas as pd
import streamlit as st

from aura_core import PRESETS, AuraError, discover_units
from aura_core.architecture import layer_of, module_kind, unit_width
from aura_core.models import preset_status
from studio.resources import ModelChoice, get_model
from studio.state import model_choice, share_in_url

st.title("Model")
st.write("Choose the language model whose neurons you want to explore. Presets work offline.")

current = model_choice()
options = [*PRESETS, "Hugging Face id or local folder…"]
with st.form("model_form"):
    left, right = st.columns([2, 1])
    preset_index = options.index(current.name) if current.name in PRESETS else len(options) - 1
    picked = left.selectbox(
        "Model", options, index=preset_index, format_func=lambda n: f"{n}: {PRESETS[n].description}" if n in PRESETS else n
    )
    custom = left.text_input(
        "Hugging Face id or local folder",
        value="" if current.name in PRESETS else current.name,
        placeholder="e.g. HuggingFaceTB/SmolLM2-360M or /models/my-llama",
    )
    dtype = right.selectbox("dtype", ["auto", "float32", "bfloat16", "float16"], index=0)
    device = right.selectbox("device", ["auto", "cpu", "cuda", "mps"], index=0)
    trust = right.checkbox(
        "trust remote code",
        value=current.trust_remote_code,
        help="Runs code from the model's repository. Only for models you trust.",
    )
    submitted = st.form_submit_button("Load model", type="primary")

if submitted:
    name = custom.strip() if picked not in PRESETS else picked
    if not name:
        st.error("Type a Hugging Face id (owner/name) or the path of a local model folder.")
    else:
        st.session_state["model_choice"] = ModelChoice(name, dtype, device, trust)
        st.session_state.pop("experts_spec", None)
        st.rerun()  # the sidebar shows the new choice

share_in_url(model=current.name)
try:
    with st.spinner(f"Loading {current.name}… the first load of a preset converts it once (about 30 s)"):
        loaded = get_model(current)
except AuraError as err:
    st.error(f"Could not load **{current.name}**: {err}")
    st.stop()

config = loaded.model.config
layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
cols = st.columns(6)
cols[0].metric("Architecture", type(loaded.model).__name__.replace("ForCausalLM", "").replace("LMHeadModel", ""))
cols[1].metric("Layers", layers)
cols[2].metric("Parameters", f"{loaded.n_parameters / 1e6:,.1f} M")
cols[3].metric("Memory", f"{loaded.memory_bytes / 2**20:,.0f} MiB")
cols[4].metric("Device", loaded.device.type)
cols[5].metric("dtype", str(loaded.model.dtype).replace("torch.", ""))

try:
    units = discover_units(loaded.model)
except AuraError as err:
    st.warning(f"{err}. You can still give a regex on the Find experts page.")
    units = []
if units:
    modules = dict(loaded.model.named_modules())
    rows = pd.DataFrame(
        {
            "module": units,
            "layer": [layer_of(u) for u in units],
            "kind": [module_kind(u) for u in units],
            "units": [unit_width(modules[u]) for u in units],
        }
    )
    per_kind = (
        rows.groupby("kind", sort=False)
        .agg(modules=("module", "size"), units_per_layer=("units", "first"), units=("units", "sum"))
        .reset_index()
    )
    st.subheader(f"{rows.units.sum():,} units AurA can hook")
    st.dataframe(per_kind, hide_index=True, width="stretch")
    with st.expander("Every hooked module"):
        st.dataframe(rows, hide_index=True, width="stretch")
st.caption(f"Source: `{loaded.source}` · loaded in {loaded.load_seconds:.1f} s")
with st.expander("Presets"):
    st.dataframe(
        pd.DataFrame(
            [
                {"name": p.name, "status": preset_status(p.name), "description": p.description, "install": p.install}
                for p in PRESETS.values()
            ]
        ),
        hide_index=True,
        width="stretch",
    )
