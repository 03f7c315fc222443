"""Experts in a generation: which expert units carry each token, and what the intervention took away.

It reads only the session's stored generation and settings, so the Generate page draws it after
its own results, on every run.
"""

from __future__ import annotations

import streamlit as st

from aura_core import METHODS, AuraError
from aura_core.analysis.firing import WEIGHTING, generation_activity
from aura_core.evaluation.generation import compose_prompt
from studio import settings
from studio.resources import get_engine
from studio.state import model_choice, require_experts, require_model
from studio.view import expert_baselines, shaded_strip_html, side_title

__all__ = ["draw_expert_activity"]


def draw_expert_activity() -> None:
    """Under the last generation, when asked: the expert activity per token of each side's first sample."""
    shown = st.session_state.get("last_generation")
    if shown is None or not st.toggle("Show the experts in these completions", key="gen_expert_activity", help=WEIGHTING):
        return
    served, choice, experts_now = require_model(), model_choice(), require_experts("their AUROC scores each token.")
    samples = shown["samples"]
    firsts = samples[samples["sample"] == 0].drop_duplicates("side").set_index("side")
    sides_shown = list(firsts.index)
    method_name = str(shown["method"])
    applied = experts_now.intervention.with_settings(
        method=method_name,
        strength=float(shown["strength"]),
        k=int(settings.get("k")) if METHODS[method_name].uses_k else None,
        damp_alpha=float(settings.get("damp_alpha")),
    )
    cache_key = (shown.get("key"), experts_now.key, applied.key())
    cached = st.session_state.get("_gen_activity")
    if cached is None or cached[0] != cache_key:
        prompt_text = compose_prompt(str(shown["prompt"]), str(shown["pre_prompt"]))
        try:
            activity = {
                side: generation_activity(
                    served.model,
                    served.tokenizer,
                    experts_now.intervention,
                    prompt_text,
                    str(firsts.loc[side, "completion"]),
                    baselines=expert_baselines(experts_now),
                    applied=None if side == "baseline" else applied,
                    runner=get_engine(choice),
                )
                for side in sides_shown
            }
        except AuraError as err:
            st.error(str(err))
            return
        st.session_state["_gen_activity"] = cached = (cache_key, activity)
    activity = cached[1]
    baseline = activity.get("baseline", [])
    changed = [side for side in sides_shown if side != "baseline"]
    removed = activity[changed[0]] if changed else []
    scale = max([p.expert for p in baseline] + [p.reduced for p in removed] + [1e-6])
    st.caption(
        f"Sample 1 of each side, read back by the plain model and under {applied.label}. A token's expert activity sums "
        "the scores of the expert units firing there, as on **Which experts fire** (that page says how); hover or "
        "tap a token for its value."
    )
    left, right = st.columns(2)
    with left, st.container(border=True):
        st.markdown(f"**Baseline: expert activity per token** · total {sum(p.expert for p in baseline):.1f}")
        st.markdown(shaded_strip_html([(p.text, p.expert) for p in baseline], scale, "hot"), unsafe_allow_html=True)
    if changed:
        with right, st.container(border=True):
            total_left = sum(p.expert for p in removed)
            total_removed = sum(p.reduced for p in removed)
            st.markdown(
                f"**{side_title(changed[0], float(shown['strength']))}: what the intervention removed per token** · "
                f"removed {total_removed:.1f}, left {total_left:.1f}"
            )
            st.markdown(shaded_strip_html([(p.text, p.reduced) for p in removed], scale, "cool"), unsafe_allow_html=True)
