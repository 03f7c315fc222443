"""Learn: AurA explained with the live numbers of the loaded model, and a workshop walk-through."""

import numpy as np
import streamlit as st

from aura_core import unit_table
from aura_core.evaluation.plots import experts_per_layer
from studio.frame import ensure_frame
from studio.state import require_model, session_experts, shown_concept_data
from studio.view import plain_markdown

ensure_frame()

st.title("Learn: how AurA finds and quiets toxic neurons")
loaded = require_model()
data, label = shown_concept_data()  # the data the experts below were found on
experts = session_experts()

st.markdown(
    """
**1. Every neuron is a tiny classifier.** A language model's MLP layers hold thousands of *units*. Show the
model a text and each unit fires more or less at every token; keep its **largest** value over the text.

**2. Score it with AUROC.** Over many toxic and non-toxic texts, a unit's AUROC is the chance that a random
toxic text makes it fire more than a random non-toxic one: 0.5 is a coin flip, 1.0 a perfect detector.

**3. Dampen in proportion.** AurA multiplies each unit's output by **α = 1 − 2·(AUROC − 0.5)**: a unit at
AUROC 0.9 keeps 20 % of its voice, one at 0.5 or below is left alone. Nothing to tune, no top-k.

**4. Check the cost.** Less toxic text should not mean worse text: the paper measured up to 2.2× less
toxicity for about +0.7 perplexity on models from 1.5B to 40B parameters, and AurA still works when a
pre-prompt asks the model to be rude.

**5. What came after.** **Linear-AcT** (Rodriguez et al., *Controlling Language and Diffusion Models by Transporting
Activations*, ICLR 2025) maps each unit's outputs on toxic text onto its outputs on non-toxic text with a line,
y = a·x + b, fitted on the two classes' sorted responses, instead of only turning units down. **Conditional AurA**
keeps AurA's α but applies it only at the tokens where a unit fires above its threshold τ, as conditional steering
does (Apple's DSAS, 2025), so ordinary text passes untouched; both are on **Generate** and **Evaluate** beside AurA.
"""
)

st.subheader("With the numbers of this session")
counts = data.counts()
st.markdown(
    f"Model **{plain_markdown(loaded.name)}**, concept data **{plain_markdown(label)}** ({counts[1]:,} toxic and {counts[0]:,} non-toxic texts)."
)
if experts is None:
    st.info("Run **Find experts** and this page fills in with what it found.")
    st.page_link("pages/find_experts.py", label="Go to Find experts", icon=":material/search:")
else:
    table = unit_table(experts.intervention)
    strong = table[table.auroc > 0.75]
    dampened = table[table.auroc > 0.5]
    best = table.iloc[0]
    cols = st.columns(3)
    cols[0].metric("Units looked at", f"{len(table):,}")
    cols[1].metric("Strong experts (AUROC > 0.75)", f"{len(strong):,}")
    cols[2].metric("Units AurA turns down", f"{len(dampened):,}", f"{len(dampened) / len(table):.0%} of all", delta_color="off")
    if len(strong):
        top_layers = strong.layer.value_counts().head(3)
        where = ", ".join(f"layer {layer} ({n})" for layer, n in top_layers.items())
        st.markdown(
            f"The strong experts sit mostly in {where}. Their module types: {', '.join(strong.kind.value_counts().index)}."
        )
    values = experts.responses.per_module[best.module][:, int(best.unit)].numpy()
    labels = experts.responses.labels.numpy()
    top_texts = np.argsort(-values)[:20]
    share = float(np.mean(labels[top_texts] == 1))
    st.markdown(
        f"The strongest unit is **unit {int(best.unit)} of {best.kind} in layer {int(best.layer)}** "
        f"(AUROC {best.auroc:.3f}, so AurA keeps α = {best.alpha:.2f} of its output). "
        f"Of the 20 texts that make it fire most, **{share:.0%} are toxic**. Open it on **Expert neurons** to see which tokens drive it."
    )
    st.plotly_chart(experts_per_layer(table), width="stretch")

st.subheader("A 45-minute workshop")
st.markdown(
    """
1. **Start (5 min).** Press **Run the demo**: the same prompt, several times without and with AurA, from the same
   random streams. Read the two means and their intervals, not one lucky completion.
2. **Find experts (10 min).** The organiser's experts open ready. Where do the experts sit? Try mean pooling instead
   of max, or a few texts of your own as an upload: what changes?
3. **Expert neurons (10 min).** Open the top unit. Which tokens make it fire, in toxic *and* in non-toxic texts?
   What does its output promote in the vocabulary?
4. **Generate side by side (15 min).** Set an adversarial pre-prompt ("Be rude and insulting."): does AurA still
   help? Slide λ from 0 to 1 and watch the text change. Compare with Det0 and Damp.
5. **Discuss (5 min).** What is lost when neurons are dampened? Share your view: the address bar always holds the
   model, the experts, the unit and every setting on screen, so a copied link opens the same view.
"""
)
