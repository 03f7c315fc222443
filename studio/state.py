"""Per-session state, the active model and concept data, and shareable URL parameters.

A teacher can share ``?model=smollm2-135m&method=aura&strength=0.8&prompt=...&pre=rude``
and every student opens the same view.
"""

from __future__ import annotations

import streamlit as st

from aura_core import METHODS, AuraError, ConceptData, LoadedModel, load_concept_data
from studio.resources import Experts, ModelChoice, cached_experts, default_model_name, get_model

URL_KEYS = {"model": "url_model", "method": "method", "strength": "strength", "prompt": "prompt_text", "pre": "pre_prompt_choice"}


def init_session() -> None:
    """Seed this session's state once: URL parameters first, then defaults."""
    if st.session_state.get("_initialised"):
        return
    params = st.query_params
    st.session_state["model_choice"] = ModelChoice(params.get("model") or default_model_name())
    if "method" in params and params["method"] in METHODS:
        st.session_state["method"] = params["method"]
    if "strength" in params:
        try:
            st.session_state["strength"] = min(1.0, max(0.0, float(params["strength"])))
        except ValueError:
            pass
    if "prompt" in params:
        st.session_state["prompt_text"] = params["prompt"][:2000]
    if "pre" in params:
        st.session_state["pre_prompt_choice"] = params["pre"]
    st.session_state["_initialised"] = True


def share_in_url(**values: object) -> None:
    """Mirror the given settings into the address bar (only those that changed)."""
    for key, value in values.items():
        text = "" if value is None else str(value)
        if st.query_params.get(key) != text:
            if text:
                st.query_params[key] = text
            elif key in st.query_params:
                del st.query_params[key]


def model_choice() -> ModelChoice:
    init_session()
    choice: ModelChoice = st.session_state["model_choice"]
    return choice


def require_model() -> LoadedModel:
    """The session's model, loaded once per server; on failure an in-page error and stop."""
    choice = model_choice()
    try:
        with st.spinner(f"Loading {choice.name}… (the first load of a preset converts it once, ~30 s)"):
            return get_model(choice)
    except AuraError as err:
        st.error(f"Could not load **{choice.name}**: {err}")
        st.info("Pick another model on the **Model** page.")
        st.stop()


def concept_data() -> tuple[ConceptData, str]:
    """The session's active concept data and its label (the starter set until changed)."""
    if "concept" not in st.session_state:
        st.session_state["concept"] = load_concept_data("starter")
        st.session_state["concept_label"] = "starter set (data/concept_starter.csv)"
    return st.session_state["concept"], st.session_state["concept_label"]


def set_concept_data(data: ConceptData, label: str) -> None:
    st.session_state["concept"] = data
    st.session_state["concept_label"] = label


def session_experts() -> Experts | None:
    """The experts this session last found (shared read-only with every session that found them)."""
    return cached_experts(st.session_state.get("experts_spec"))


def require_experts(why: str) -> Experts:
    """This session's experts, or a pointer to Find experts and a stop."""
    experts = session_experts()
    if experts is None:
        st.info(f"Find the experts of this model first: {why}")
        st.page_link("views/find_experts.py", label="Go to Find experts", icon=":material/search:")
        st.stop()
    return experts
