"""AurA Studio: the frame. Navigation and the shared sidebar; each page lives in pages/."""

import streamlit as st

from studio.state import concept_data, init_session, model_choice, session_experts

st.set_page_config(page_title="AurA Studio", page_icon="🧯", layout="wide")
init_session()

navigation = st.navigation(
    [
        st.Page("pages/model.py", title="Model", icon=":material/memory:", default=True),
        st.Page("pages/find_experts.py", title="Find experts", icon=":material/search:"),
        st.Page("pages/expert_neurons.py", title="Expert neurons", icon=":material/neurology:"),
        st.Page("pages/generate.py", title="Generate side by side", icon=":material/compare:"),
        st.Page("pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
        st.Page("pages/learn.py", title="Learn", icon=":material/school:"),
    ]
)


def draw_sidebar() -> None:
    """Status of this session; pages that change it rerun the app so this stays current."""
    with st.sidebar:
        st.markdown("### AurA Studio")
        choice = model_choice()
        st.caption("Model")
        st.markdown(f"`{choice.name}` · {choice.dtype} · {choice.device}")
        data, label = concept_data()
        counts = data.counts()
        st.caption("Concept data")
        st.markdown(f"{label}  \n{counts[1]:,} toxic · {counts[0]:,} non-toxic")
        experts = session_experts()
        st.caption("Experts")
        if experts is None:
            st.markdown("not computed yet: see **Find experts**")
        else:
            st.markdown(f"{experts.responses.n_units:,} units · best AUROC {experts.intervention.auroc_max():.3f}")


draw_sidebar()
navigation.run()
