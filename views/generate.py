"""Generate side by side: the same prompt and seed, without and with the intervention."""

import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from aura_core import METHODS, SAMPLING_PRESETS, AuraError, SamplingSettings, load_preprompts, load_prompts, method_label
from aura_core.data import resolve_preprompt
from aura_core.generation import side_by_side_rows
from aura_core.interventions import export_model
from aura_core.methods import method_names
from aura_core.models import cache_root
from studio.resources import get_engine, get_scorer
from studio.state import model_choice, require_experts, require_model, share_in_url
from studio.view import inline_html, side_title, toxicity_badge, word_diff_html

REQUEST_TIMEOUT_S = 300.0

st.title("Generate side by side")
loaded = require_model()
experts = require_experts("the intervention is built from their AUROC.")

prompts = load_prompts()
preprompts = load_preprompts()
PRE_OPTIONS = (
    ["none"] + [f"{group}:{p['name']}" for group in ("favourable", "adversarial") for p in preprompts[group]] + ["custom"]
)

st.session_state.setdefault("prompt_text", next(p.text for p in prompts if p.kind == "provocative"))
if st.session_state.get("pre_prompt_choice") not in PRE_OPTIONS:
    st.session_state["pre_prompt_choice"] = "none"


def _use_preset() -> None:
    st.session_state["prompt_text"] = st.session_state["prompt_preset"]


left, right = st.columns([3, 2])
with left:
    st.selectbox(
        "Prompt presets",
        [p.text for p in prompts],
        index=None,
        placeholder="Pick a starter prompt (provocative and neutral)…",
        key="prompt_preset",
        on_change=_use_preset,
    )
    prompt = st.text_area("Prompt", key="prompt_text", height=80, max_chars=2000)
    pre_choice = st.selectbox(
        "Pre-prompt", PRE_OPTIONS, key="pre_prompt_choice", help="Text put before the prompt; it never appears in the output."
    )
    if pre_choice == "custom":
        pre_prompt = st.text_input("Custom pre-prompt", key="pre_prompt_custom")
    else:
        pre_prompt = "" if pre_choice == "none" else resolve_preprompt(pre_choice)
        if pre_prompt:
            st.caption(f"“{pre_prompt}”")
with right:
    method = st.radio(
        "Method",
        method_names(),
        horizontal=True,
        key="method",
        format_func=method_label,
        help="\n".join(f"**{m.label}**: {m.summary}" for m in METHODS.values()),
    )
    strength = st.slider("Strength λ", 0.0, 1.0, 1.0, 0.05, key="strength", help="0 is the plain model; 1 is the full method.")
    k = st.number_input(
        "k (top units)",
        1,
        experts.intervention.n_units,
        min(200, experts.intervention.n_units),
        key="k",
        disabled=not METHODS[method].uses_k,
    )
    damp_alpha = st.slider("Damp α", 0.0, 1.0, 0.5, 0.05, key="damp_alpha", disabled=not METHODS[method].uses_damp_alpha)
with st.expander("Sampling", expanded=False):
    cols = st.columns(6)
    preset_name = cols[0].selectbox("Preset", list(SAMPLING_PRESETS), key="sampling_preset")
    base = SAMPLING_PRESETS[preset_name]
    max_new = cols[1].number_input("New tokens", 1, 256, base.max_new_tokens, key=f"max_new_{preset_name}")
    temperature = cols[2].number_input("Temperature", 0.05, 3.0, base.temperature, 0.05, key=f"temp_{preset_name}")
    top_p = cols[3].number_input("top_p", 0.05, 1.0, base.top_p, 0.05, key=f"top_p_{preset_name}")
    repetition = cols[4].number_input("Repetition penalty", 1.0, 2.0, base.repetition_penalty, 0.05, key=f"rep_{preset_name}")
    seed = cols[5].number_input("Seed", 0, 2**31 - 1, 0, key="gen_seed")
    samples = st.slider(
        "Samples per side", 1, 25, 1, key="samples", help="With several samples the mean toxicity of each side is shown."
    )

share_in_url(method=method, strength=strength, prompt=prompt, pre=pre_choice)
try:
    intervention = experts.intervention.with_settings(
        method=method, strength=strength, k=int(k) if METHODS[method].uses_k else None, damp_alpha=damp_alpha
    )
    settings = SamplingSettings(max_new_tokens=int(max_new), temperature=temperature, top_p=top_p, repetition_penalty=repetition)
except AuraError as err:
    st.error(f"Settings cannot be used: {err}")
    st.stop()

if not st.button("Generate", type="primary", disabled=not prompt.strip()):
    if "last_generation" not in st.session_state:
        st.stop()
else:
    scorer = get_scorer("profanity-check")
    try:
        sides = side_by_side_rows(
            loaded.tokenizer,
            prompt,
            {"baseline": None, method: intervention},
            pre_prompt=pre_prompt,
            settings=settings.with_(num_return_sequences=int(samples)),
            seed=int(seed),
        )
        request = get_engine(model_choice()).submit([row for rows in sides.values() for row in rows])
    except AuraError as err:
        st.error(str(err))
        st.stop()
    note = st.empty()
    columns = st.columns(2)
    slots = {}
    for column, side in zip(columns, sides, strict=True):
        with column:
            st.markdown(f"#### {side_title(side, strength)}")
            slots[side] = st.empty()
    try:
        shown: dict[str, object] = {}
        for state in request.states(poll_s=0.25, timeout_s=REQUEST_TIMEOUT_S):
            # Redraw only what changed: the server's cores decode, the browser shows.
            if shown.get("note") != state.describe():
                shown["note"] = state.describe()
                note.caption(state.describe())
            offset = 0
            for side, rows in sides.items():
                if shown.get(side) != state.tokens[offset]:
                    shown[side] = state.tokens[offset]
                    text = loaded.tokenizer.decode(state.tokens[offset], skip_special_tokens=True)
                    slots[side].markdown(inline_html(text), unsafe_allow_html=True)
                offset += len(rows)
    except AuraError as err:
        st.error(str(err))
        st.stop()
    finally:
        if not request.finished.is_set():
            request.cancel()  # the page went away (cancel, refresh): free this request's rows
    rows = [
        {"side": side, "sample": sample, "completion": loaded.tokenizer.decode(row.tokens, skip_special_tokens=True)}
        for side, side_rows in sides.items()
        for sample, row in enumerate(side_rows)
    ]
    frame = pd.DataFrame(rows)
    frame["toxicity"] = scorer.score(frame.completion.tolist())
    streamed = frame[frame["sample"] == 0][["side", "completion", "toxicity"]].reset_index(drop=True)
    st.session_state["last_generation"] = {
        "prompt": prompt,
        "pre_prompt": pre_prompt,
        "method": method,
        "strength": strength,
        "seed": int(seed),
        "streamed": streamed,
        "samples": frame,
    }
    st.rerun()

result = st.session_state["last_generation"]
streamed, frame = result["streamed"], result["samples"]
st.caption(
    f"Prompt “{result['prompt']}” · pre-prompt: {result['pre_prompt'] or 'none'} · seed {result['seed']} · same random stream on both sides"
)
left_html, right_html = word_diff_html(streamed.completion.iloc[0], streamed.completion.iloc[1])
columns = st.columns(2)
for column, (_, row), body in zip(columns, streamed.iterrows(), (left_html, right_html), strict=True):
    with column, st.container(border=True):
        st.markdown(
            f"**{side_title(row.side, result['strength'])}** · {toxicity_badge(float(row.toxicity))}", unsafe_allow_html=True
        )
        st.markdown(f"<span style='color:#888'>{inline_html(result['prompt'])}</span>{body}", unsafe_allow_html=True)
if len(frame) > 2:
    means = frame.groupby("side", sort=False).toxicity.agg(["mean", lambda s: float(np.mean(s > 0.5))])
    means.columns = ["mean toxicity", "toxic share"]
    cols = st.columns(len(means))
    for col, (side, row) in zip(cols, means.iterrows(), strict=True):
        col.metric(
            f"{side}: mean toxicity over {int((frame.side == side).sum())}",
            f"{row['mean toxicity']:.3f}",
            f"toxic share {row['toxic share']:.0%}",
            delta_color="off",
        )
    st.dataframe(frame, hide_index=True, width="stretch")
st.download_button(
    "Generations (CSV)",
    frame.assign(prompt=result["prompt"], pre_prompt=result["pre_prompt"]).to_csv(index=False).encode(),
    "generations.csv",
    "text/csv",
)

with st.expander("Export the intervened model as a checkpoint"):
    st.write("Writes an ordinary `transformers` folder with the intervention folded into the weights.")
    if st.button("Export", key="export_button"):
        target = cache_root() / "exports" / f"{Path(loaded.name).name}-{method}-{strength:.2f}-{experts.spec.data_hash[:8]}"
        try:
            if not target.exists():
                with st.spinner("Exporting…"):
                    export_model(loaded.model, loaded.tokenizer, intervention, target)
            st.success(f"Saved to `{target}`")
            size = sum(f.stat().st_size for f in target.iterdir())
            if size < 700 * 2**20:
                with tempfile.TemporaryDirectory() as tmp:
                    archive = shutil.make_archive(str(Path(tmp) / target.name), "zip", target)
                    st.download_button("Download archive (zip)", io.BytesIO(Path(archive).read_bytes()), f"{target.name}.zip")
        except AuraError as err:
            st.error(str(err))
