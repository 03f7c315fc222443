"""Start: what the app does, in two sentences, and one button that shows it."""

import streamlit as st

from aura_core import AuraError, balanced_sample, load_concept_data, load_prompts
from aura_core.analysis.collect import MAX_TOKENS
from aura_core.analysis.experts import N_PER_CLASS, ExpertsRecipe
from aura_core.base.data import NO_PREPROMPT
from aura_core.evaluation.demo import DEMO_SAMPLES, load_demo
from aura_core.evaluation.side_by_side import BASELINE
from aura_core.model.architecture import ALL_UNITS
from studio import settings
from studio.frame import ensure_frame
from studio.resources import experts_by_key, find_experts, get_server_config
from studio.state import STARTER_LABEL, model_choice, require_model, session_experts, set_session_experts
from studio.view import ProgressWithETA, follow_flight, plain_markdown

ensure_frame()

# What the demo finds when the operator has not prepared experts: small enough for ~30 s on 2 cores.
DEMO_RECIPE = {"n_per_class": N_PER_CLASS, "max_tokens": MAX_TOKENS}

st.title("AurA Studio")
st.markdown(
    "**See, and switch off, the neurons that make a language model toxic.** "
    "AurA scores every MLP neuron by how well it tells toxic from non-toxic text (its AUROC) and turns each down "
    "in proportion; here you find those neurons, look inside them, and compare the model's text with and without them."
)
config = get_server_config()
loaded = require_model()
experts = session_experts()
demo = load_demo(experts.key) if experts is not None else None
samples = min(int(demo["samples"]) if demo else DEMO_SAMPLES, config.max_samples)

left, right = st.columns([2, 3])
with left:
    st.markdown(
        f"The demo asks **{loaded.name}** to continue a provocative prompt, {samples} times without and {samples} times "
        "with AurA, from the same random streams, and scores every completion."
    )
    run_demo = st.button("Run the demo", type="primary", icon=":material/play_arrow:")
    if demo is not None:
        st.caption("Prepared on this server: it opens at once, with **Fresh samples** beside it for new random streams.")
    elif experts is not None:
        st.caption(f"Experts ready: {plain_markdown(experts.spec.data)}, {experts.spec.n_per_class} texts per class.")
    else:
        st.caption(
            f"No experts prepared on this server yet: the demo first finds them ({DEMO_RECIPE['n_per_class']} texts per class)."
        )
with right:
    st.page_link("pages/learn.py", label="How AurA works, with this model's own numbers", icon=":material/school:")
    st.page_link("pages/find_experts.py", label="Find the experts yourself, on your own data", icon=":material/search:")
    st.page_link("pages/expert_neurons.py", label="Look inside one expert neuron", icon=":material/neurology:")
    st.page_link("pages/evaluate.py", label="Measure it the paper's way, with intervals", icon=":material/analytics:")

if run_demo:
    if experts is None:
        recipe = ExpertsRecipe(model=model_choice().name, data=STARTER_LABEL, **DEMO_RECIPE)  # type: ignore[arg-type]
        sample = balanced_sample(load_concept_data("starter"), recipe.n_per_class, seed=recipe.seed)
        failure: str | None = None
        with st.status("Finding the experts of this model first…", expanded=True) as status:
            try:
                found = experts_by_key(follow_flight(find_experts(model_choice(), sample, recipe), ProgressWithETA("texts")).key)
            except AuraError as err:
                status.update(label="Could not find experts", state="error", expanded=True)
                failure = str(err)
        if failure is not None:
            st.error(f"Could not find experts: {failure}")  # in plain sight, not inside the status box
            settings.stop()
        if found is None:
            st.error("The experts could not be stored on this server; see Find experts.")
            settings.stop()
        set_session_experts(found)
    chosen = demo or {"prompt": next(p.text for p in load_prompts() if p.kind == "provocative"), "pre": NO_PREPROMPT}
    for name in ("prompt", "pre", "method", "strength", "seed", "sampling", "damp_alpha", "judge"):
        settings.put(name, chosen.get(name, settings.SETTINGS[name].default))
    for name, value in (("samples", samples), ("units", ALL_UNITS), ("versus", BASELINE)):
        settings.put(name, value)
    for name in settings.SAMPLING_KNOBS:
        settings.put(name, None)  # the demo samples as its preset does, whatever was tried before
    st.session_state["_autorun"] = True
    st.switch_page("pages/generate.py")
