"""Per-session state: the active model, concept data and experts, seeded from a shared link.

A teacher can share ``?model=smollm2-135m&experts=KEY&prompt=...&pre=adversarial:rude`` and
every student opens the same view, without computing anything the server already has.
"""

from __future__ import annotations

import streamlit as st

from aura_core import AuraError, ConceptData, LoadedModel, load_concept_data
from aura_core.analysis.experts import prepared_experts
from aura_core.base.data import source_label
from studio import settings
from studio.resources import ModelChoice, SessionExperts, experts_by_key, get_model, get_server_config

STARTER_LABEL = source_label("starter")


def init_session() -> None:
    """Seed this session's state once: the link's settings (checked), then the server's defaults."""
    if st.session_state.get("_initialised"):
        return
    config = get_server_config()
    notes = settings.load_from_url()
    model = settings.get("model") or config.default_model
    if not config.offers(model):
        notes.append(f"This server does not offer the model `{model}` named in the link; opened `{config.default_model}`.")
        model = config.default_model
    settings.put("model", model)
    st.session_state["model_choice"] = ModelChoice(model)
    key = settings.get("experts")
    if key is not None and experts_by_key(key) is None:
        notes.append("The experts named in the link are not on this server; find them again on **Find experts**.")
        settings.put("experts", None)
    if settings.get("experts") is None:
        settings.put("experts", prepared_experts().get(model, {}).get("default"))
    experts = _experts_of(model)
    if experts is not None and not settings.from_link("experts"):
        _adopt_recipe(experts, keep_link=True)  # the server's default experts: the link's own settings win
    elif experts is not None:
        _adopt_recipe(experts)
    st.session_state["_notes"] = notes
    st.session_state["_initialised"] = True


def _adopt_recipe(experts: SessionExperts, *, keep_link: bool = False) -> None:
    """Show the settings the experts were found with, so the page and the link agree."""
    recipe = experts.spec
    for name, value in (
        ("n_per_class", recipe.n_per_class),
        ("max_tokens", recipe.max_tokens),
        ("pooling", recipe.pooling),
        ("data_seed", recipe.seed),
    ):
        if not (keep_link and settings.from_link(name)):
            settings.put(name, value)


def show_notes() -> None:
    """Say once what a link asked for that this server would not do."""
    for note in st.session_state.pop("_notes", []):
        st.warning(note)


def model_choice() -> ModelChoice:
    init_session()
    choice: ModelChoice = st.session_state["model_choice"]
    return choice


def set_model_choice(choice: ModelChoice) -> None:
    st.session_state["model_choice"] = choice
    settings.put("model", choice.name)
    settings.put("experts", prepared_experts().get(choice.name, {}).get("default"))


def require_model() -> LoadedModel:
    """The session's model, loaded once per server; on failure an in-page error and stop."""
    choice = model_choice()
    try:
        with st.spinner(f"Loading {choice.name}… (the first load of a preset converts it once, ~30 s)"):
            return get_model(choice)
    except AuraError as err:
        st.error(f"Could not load **{choice.name}**: {err}")
        st.info("Pick another model on the **Model** page.")
        settings.stop()


def concept_data() -> tuple[ConceptData, str]:
    """The session's active concept data and its label (the starter set until changed)."""
    if "concept" not in st.session_state:
        st.session_state["concept"] = load_concept_data("starter")
        st.session_state["concept_label"] = STARTER_LABEL
    data: ConceptData = st.session_state["concept"]
    label: str = st.session_state["concept_label"]
    return data, label


def shown_concept_data() -> tuple[ConceptData, str]:
    """The concept data behind the numbers on screen: the shown experts' own texts and recipe, else the active data.

    A link can open experts found on other data than this session's active set (Jigsaw, say);
    their numbers must be named with their data, not the starter set.
    """
    experts = session_experts()
    if experts is not None:
        return experts.data, experts.spec.data
    return concept_data()


def set_concept_data(data: ConceptData, label: str) -> None:
    st.session_state["concept"] = data
    st.session_state["concept_label"] = label


def session_experts() -> SessionExperts | None:
    """The experts this session shows (found here, opened from a link, or the server's prepared ones)."""
    return _experts_of(model_choice().name)


def _experts_of(model: str) -> SessionExperts | None:
    experts = experts_by_key(settings.get("experts"))
    return experts if experts is not None and experts.spec.model == model else None


def set_session_experts(experts: SessionExperts) -> None:
    settings.put("experts", experts.key)
    _adopt_recipe(experts)


def require_experts(why: str) -> SessionExperts:
    """This session's experts, or a pointer to Find experts and a stop."""
    experts = session_experts()
    if experts is None:
        st.info(f"Find the experts of this model first: {why}")
        st.page_link("pages/find_experts.py", label="Go to Find experts", icon=":material/search:")
        settings.stop()
    return experts
