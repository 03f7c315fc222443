"""Which experts fire: a typed text, token by token, with the expert units that fire at each and links to them."""

import hashlib

import pandas as pd
import streamlit as st

from aura_core import AuraError
from aura_core.analysis.firing import WEIGHTING, Firing, experts_firing
from aura_core.analysis.token_text import visible_whitespace
from aura_core.model.architecture import layer_of, module_kind
from studio import settings
from studio.frame import ensure_frame
from studio.resources import get_engine
from studio.state import model_choice, require_experts, require_model
from studio.view import expert_baselines, inline_html, token_strip

ensure_frame()

EXAMPLE = "Thanks for the quick reply. Honestly though, you are a stupid idiot and nobody wants you here."

st.title("Which experts fire?")
loaded = require_model()
experts = require_experts("their AUROC says how expert each unit is.")
st.caption(WEIGHTING)


def read(text: str) -> Firing | None:
    try:
        return experts_firing(
            loaded.model,
            loaded.tokenizer,
            experts.intervention,
            text,
            baselines=expert_baselines(experts),
            top_k=8,
            max_tokens=256,
            runner=get_engine(model_choice()),
        )
    except AuraError as err:
        st.error(str(err))
        return None


with st.form("firing_form"):
    text = st.text_area("Text", EXAMPLE, key="firing_text", height=100, max_chars=2000)
    submitted = st.form_submit_button("Show the experts that fire", type="primary")
stored = st.session_state.get("firing")
if submitted or stored is None or stored[0] != experts.key:
    firing = read(text)
    if firing is None:
        settings.stop()
    st.session_state["firing"] = stored = (experts.key, firing)
firing = stored[1]

scores = [token.score for token in firing.tokens]
if len("".join(token.text for token in firing.tokens)) < len(firing.text.strip()):
    st.caption("The experts read the first 256 tokens of the text.")
st.markdown("**Each token shaded by its score.** Click a token to list the experts that fire there.")
chosen = token_strip(
    [token.text for token in firing.tokens],
    scores,
    max(range(len(scores)), key=scores.__getitem__),
    key="firing_strip_" + hashlib.sha256(firing.text.encode()).hexdigest()[:16],
)
token = firing.tokens[chosen]
st.markdown(f"#### Experts firing at “{inline_html(visible_whitespace(token.text))}”", unsafe_allow_html=True)
if not token.experts:
    st.caption("No expert unit is above its firing threshold here.")
else:
    st.caption(f"Token score {token.score:.2f}: the sum over every unit. The experts with the highest scores, each a link:")
for expert in token.experts:
    st.page_link(
        "pages/expert_neurons.py",
        label=(
            f"Layer {layer_of(expert.module)} · {module_kind(expert.module)} · unit {expert.unit} · score {expert.score:.2f} "
            f"(activation {expert.activation:.2f}, τ {expert.threshold:.2f}, p {expert.peak:.2f}, AUROC {expert.auroc:.3f})"
        ),
        query_params={"unit": expert.ref},
        icon=":material/neurology:",
    )

with st.expander("Every token"):
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "token": visible_whitespace(t.text),
                    "score": t.score,
                    "top expert": t.experts[0].ref if t.experts else "",
                    "its score": t.experts[0].score if t.experts else 0.0,
                }
                for t in firing.tokens
            ]
        ),
        hide_index=True,
        width="stretch",
        column_config={
            "score": st.column_config.NumberColumn(format="%.2f"),
            "its score": st.column_config.NumberColumn(format="%.2f"),
        },
    )
