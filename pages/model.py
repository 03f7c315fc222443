"""Model: pick a model the server offers (or, where the operator allows, a Hub id or a local folder)."""

from pathlib import Path

import pandas as pd
import streamlit as st

from aura_core import PRESETS, AuraError, discover_units
from aura_core.model.architecture import layer_of, module_kind, unit_width
from aura_core.model.devices import resolve_auto_dtype
from aura_core.model.loading import preset_status
from aura_core.model.precision import describe_precision, precision_of
from studio import settings
from studio.frame import ensure_frame
from studio.resources import ModelChoice, get_model, get_server_config
from studio.state import model_choice, set_model_choice

ensure_frame()

st.title("Model")
st.write("Choose the language model whose neurons you want to explore. Presets work offline.")

config = get_server_config()
current = model_choice()
offered = list(config.offered_models())
status = {name: preset_status(name) for name in offered if name in PRESETS}
CUSTOM = "Hugging Face id or local folder…"
options = offered + ([CUSTOM] if config.allow_hub_ids or config.allow_server_paths else [])


def describe(name: str) -> str:
    if name in PRESETS:
        note = "" if status[name] != "missing" else "  (not installed)"
        return f"{name}: {PRESETS[name].description}{note}"
    return name


with st.form("model_form"):
    left, right = st.columns([2, 1])
    index = options.index(current.name) if current.name in options else (len(options) - 1 if CUSTOM in options else 0)
    picked = left.selectbox("Model", options, index=index, format_func=describe)
    custom = ""
    if CUSTOM in options:
        what = " or ".join(
            w for w, ok in (("a Hugging Face id", config.allow_hub_ids), ("a local folder", config.allow_server_paths)) if ok
        )
        custom = left.text_input(
            f"Or type {what}",
            value="" if current.name in offered else current.name,
            placeholder="e.g. HuggingFaceTB/SmolLM2-360M or /models/my-llama",
        )
    dtypes = ["auto", "float32", "bfloat16", "float16"]
    dtype = right.selectbox(
        "dtype",
        dtypes,
        index=dtypes.index(current.dtype) if current.dtype in dtypes else 0,
        help="auto is bfloat16 where this server's CPU or GPU computes it natively, else float32. "
        "bfloat16 keeps the residual stream, the norms and the blocks with massive activations in float32.",
    )
    device = right.selectbox("device", ["auto", "cpu", "cuda", "mps"], index=0)
    submitted = st.form_submit_button("Load model", type="primary")

if config.allow_remote_code:
    st.caption("This server runs code from model repositories that ship their own (set by the operator).")
if submitted:
    name = custom.strip() if picked == CUSTOM else picked
    if not name:
        st.error("Type a Hugging Face id (owner/name) or the path of a local model folder.")
    elif name in PRESETS and status.get(name) == "missing":
        st.error(f"**{name}** is not installed on this server. Install it with `{PRESETS[name].install}`, then reload.")
    elif name not in offered and not config.allow_server_paths and (name.startswith((".", "/", "~")) or Path(name).exists()):
        st.error("This server does not load models from its own folders; pick one of the offered models.")
    elif name not in offered and not config.allow_hub_ids and not config.allow_server_paths:
        st.error(f"This server offers only {', '.join(offered)}.")
    else:
        set_model_choice(ModelChoice(name, dtype, device))
        st.rerun()  # the sidebar shows the new choice

try:
    with st.spinner(f"Loading {current.name}… the first load of a preset converts it once (about 30 s)"):
        loaded = get_model(current)
except AuraError as err:
    st.error(f"Could not load **{current.name}**: {err}")
    settings.stop()

config_of_model = loaded.model.config
layers = getattr(config_of_model, "num_hidden_layers", None) or getattr(config_of_model, "n_layer", None)
cols = st.columns(6)
cols[0].metric("Architecture", type(loaded.model).__name__.replace("ForCausalLM", "").replace("LMHeadModel", ""))
cols[1].metric("Layers", layers)
cols[2].metric("Parameters", f"{loaded.n_parameters / 1e6:,.1f} M")
cols[3].metric("Memory", f"{loaded.memory_bytes / 2**20:,.0f} MiB")
cols[4].metric("Device", loaded.device.type)
precision = precision_of(loaded.collector)
cols[5].metric(
    "dtype", describe_precision(loaded), help=f"auto here: {str(resolve_auto_dtype(loaded.device)).removeprefix('torch.')}"
)
if precision.float32_parts:
    blocks = ", ".join(f"`{block}`" for block in precision.float32_blocks)
    st.caption(
        f"Generation computes in {precision_of(loaded.model).name}, where a completion never depends on who shares its "
        f"batch. Collection (Find experts) computes in {precision.name}, over twice as fast; float32 for the "
        f"{precision.float32_parts}" + (f" (the blocks with massive activations: {blocks})." if blocks else ".")
    )

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
source = loaded.source if config.allow_server_paths else Path(loaded.source).name  # no server path for a room
st.caption(f"Source: `{source}` · loaded in {loaded.load_seconds:.1f} s")
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
