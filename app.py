"""AurA Studio: the frame. Navigation and the shared sidebar; each page lives in pages/.

Every page runs inside this frame: ``ensure_frame`` (here and atop each page) reruns a page that a
fresh server started from the pages/ folder on its own.
"""

import streamlit as st

from aura_core.model.loading import loaded_model
from aura_core.model.precision import describe_precision
from studio import settings
from studio.frame import ensure_frame
from studio.resources import engine_load, store_line
from studio.state import init_session, model_choice, session_experts, show_notes, shown_concept_data
from studio.theme import draw_theme

ensure_frame()
st.set_page_config(page_title="AurA Studio", page_icon="🧯", layout="wide")
draw_theme()
init_session()

navigation = st.navigation(
    [
        st.Page("pages/start.py", title="Start", icon=":material/play_circle:", default=True),
        st.Page("pages/learn.py", title="Learn", icon=":material/school:"),
        st.Page("pages/model.py", title="Model", icon=":material/memory:"),
        st.Page("pages/find_experts.py", title="Find experts", icon=":material/search:"),
        st.Page("pages/expert_neurons.py", title="Expert neurons", icon=":material/neurology:"),
        st.Page("pages/firing.py", title="Which experts fire", icon=":material/bolt:"),
        st.Page("pages/generate.py", title="Generate side by side", icon=":material/compare:"),
        st.Page("pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
    ]
)


LIVE_EVERY_S = 3.0  # how often the sidebar's model and server lines are redrawn, without rerunning the page


@st.fragment(run_every=LIVE_EVERY_S)
def draw_live_status() -> None:
    """The model and the server's load, as they are now: a page run loads the model, other sessions come and go."""
    choice = model_choice()
    st.caption("Model")
    loaded = loaded_model(choice.name, choice.dtype, choice.device)  # never loads one
    if loaded is None:
        st.markdown(f"`{choice.name}` (loads on first use)")
    else:
        st.markdown(f"`{choice.name}` · {loaded.device.type} · {describe_precision(loaded)}")
    load = engine_load(choice)
    if load is not None:
        st.caption("Server (all sessions)")
        st.markdown(
            f"{load['rows_decoding']:.0f} completions decoding · {load['requests_waiting']:.0f} requests waiting"
            + (f" · {load['units_waiting']:.0f} batches of longer jobs queued" if load["units_waiting"] else "")
        )
        total = int(load["requests_total"])
        st.caption(f"{total:,} generation {'request' if total == 1 else 'requests'} computed since the server started")


def draw_sidebar() -> None:
    """Status of this session; pages that change it rerun the app so this stays current."""
    with st.sidebar:
        st.markdown("### AurA Studio")
        draw_live_status()
        experts = session_experts()
        data, label = shown_concept_data()  # the experts' own data when experts are shown
        counts = data.counts()
        st.caption("Concept data" if experts is None else "Concept data of these experts")
        st.markdown(f"{label}  \n{counts[1]:,} toxic · {counts[0]:,} non-toxic")
        st.caption("Experts")
        if experts is None:
            st.markdown("not computed yet: see **Find experts**")
        else:
            st.markdown(f"{experts.intervention.n_units:,} units · best AUROC {experts.intervention.auroc_max():.3f}")
        st.caption(store_line())


draw_sidebar()
show_notes()
try:
    navigation.run()
finally:
    settings.sync_url()  # the address bar always shows what is on screen, whatever the page did
