"""Generate side by side: the same prompt and random streams, without and with the intervention."""

import io
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import streamlit as st

from aura_core import METHODS, SAMPLING_PRESETS, AuraError, SamplingSettings, load_preprompts, load_prompts, method_label
from aura_core.analysis.experts import load_operating_point
from aura_core.base.data import NO_PREPROMPT, PREPROMPT_GROUPS, resolve_preprompt
from aura_core.evaluation.comparison import scored_sides, summarise_sides
from aura_core.evaluation.generation import side_by_side_rows
from aura_core.evaluation.plots import ratio_words
from aura_core.evaluation.reports import describe_operating_point
from aura_core.method.registry import method_names
from aura_core.method.stats import TOXIC_THRESHOLD
from aura_core.model.architecture import ALL_UNITS, discover_units, unit_families, unit_family_label
from aura_core.model.loading import cache_root
from aura_core.runtime.folding import export_model
from studio import settings
from studio.expert_activity import draw_expert_activity
from studio.frame import ensure_frame
from studio.resources import generation_key, get_engine, get_scorer, get_server_config, load_generation, store_generation
from studio.state import model_choice, require_experts, require_model
from studio.view import inline_html, plain_markdown, side_title, toxicity_badge, word_diff_html

ensure_frame()

REQUEST_TIMEOUT_S = 300.0
SCORER = "profanity-check"

st.title("Generate side by side")
loaded = require_model()
experts = require_experts("the intervention is built from their AUROC.")
config = get_server_config()

prompts = load_prompts()
preprompts = load_preprompts()
PRE_OPTIONS = (
    [NO_PREPROMPT] + [f"{group}:{p['name']}" for group in PREPROMPT_GROUPS for p in preprompts[group]] + ["custom"]
)
if settings.get("prompt") is None:
    settings.put("prompt", next(p.text for p in prompts if p.kind == "provocative"))
if settings.get("pre") not in PRE_OPTIONS:
    settings.put("pre", NO_PREPROMPT)
settings.put("samples", min(int(settings.get("samples")), config.max_samples))
settings.put("k", min(int(settings.get("k")), experts.intervention.n_units))


def _use_preset() -> None:
    settings.put("prompt", st.session_state["prompt_preset"])


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
    prompt = settings.keep("prompt", st.text_area("Prompt", key=settings.bind("prompt"), height=80, max_chars=2000))
    pre_choice = settings.keep(
        "pre",
        st.selectbox(
            "Pre-prompt",
            PRE_OPTIONS,
            key=settings.bind("pre"),
            help="Text put before the prompt; it never appears in the output.",
        ),
    )
    if pre_choice == "custom":
        pre_prompt = settings.keep("pre_text", st.text_input("Custom pre-prompt", key=settings.bind("pre_text"), max_chars=500))
    else:
        pre_prompt = "" if pre_choice == NO_PREPROMPT else resolve_preprompt(pre_choice)
        if pre_prompt:
            st.caption(f"“{plain_markdown(pre_prompt)}”")
operating = load_operating_point(experts.key)


def _use_operating_point() -> None:
    assert operating is not None
    settings.put("method", operating["method"])
    settings.put("strength", float(operating["strength"]))
    settings.put("units", str(operating.get("units") or ALL_UNITS))  # the family the sweep found, too


families = list(unit_families(loaded.model))
if settings.get("units") not in families:
    settings.put("units", ALL_UNITS)


with right:
    if operating is not None:
        st.button(
            f"Use the operating point: {method_label(operating['method'])} on "
            f"{unit_family_label(str(operating.get('units') or ALL_UNITS))}, λ = {float(operating['strength']):g}",
            on_click=_use_operating_point,
            help=f"Measured on Evaluate: {describe_operating_point(operating)}.",
        )
    method = settings.keep(
        "method",
        st.radio(
            "Method",
            method_names(),
            horizontal=True,
            key=settings.bind("method"),
            format_func=method_label,
            help="\n".join(f"**{m.label}**: {m.summary}" for m in METHODS.values()),
        ),
    )
    strength = settings.keep(
        "strength",
        st.slider(
            "Strength λ", 0.0, 1.0, step=0.05, key=settings.bind("strength"), help="0 is the plain model; 1 is the full method."
        ),
    )
    k = settings.keep(
        "k",
        st.number_input(
            "k (top units)", 1, experts.intervention.n_units, key=settings.bind("k"), disabled=not METHODS[method].uses_k
        ),
    )
    units = settings.keep(
        "units",
        st.selectbox(
            "Units",
            families,
            key=settings.bind("units"),
            format_func=unit_family_label,
            help="The unit family the method acts on; every other unit keeps its output (all: the paper's rule).",
        ),
    )
    damp_alpha = settings.keep(
        "damp_alpha",
        st.slider("Damp α", 0.0, 1.0, step=0.05, key=settings.bind("damp_alpha"), disabled=not METHODS[method].uses_damp_alpha),
    )


def _use_sampling_preset() -> None:
    for name in settings.SAMPLING_KNOBS:
        settings.put(name, None)  # a new preset brings its own values


has_custom_sampling = any(settings.get(name) is not None for name in settings.SAMPLING_KNOBS)
with st.expander("Sampling", expanded=has_custom_sampling):
    cols = list(st.columns(6))
    preset_name = settings.keep(
        "sampling",
        cols[0].selectbox("Preset", list(SAMPLING_PRESETS), key=settings.bind("sampling"), on_change=_use_sampling_preset),
    )
    base = SAMPLING_PRESETS[preset_name]
    # Each knob kept as none while it equals the preset's value, so a link names only what was changed.
    preset_new = min(base.max_new_tokens, config.max_new_tokens)
    max_new = settings.keep(
        "max_new",
        cols[1].number_input(
            "New tokens",
            1,
            None,  # over the server's cap is refused below by name, not a silently red field
            key=settings.bind("max_new", preset_new),
            help=f"At most {config.max_new_tokens} on this server.",
        ),
        preset_new,
    )
    temperature = settings.keep(
        "temperature",
        cols[2].number_input("Temperature", 0.05, 3.0, step=0.05, key=settings.bind("temperature", base.temperature)),
        base.temperature,
    )
    top_p = settings.keep(
        "top_p", cols[3].number_input("top_p", 0.05, 1.0, step=0.05, key=settings.bind("top_p", base.top_p)), base.top_p
    )
    repetition = settings.keep(
        "repetition",
        cols[4].number_input("Repetition penalty", 1.0, 2.0, step=0.05, key=settings.bind("repetition", base.repetition_penalty)),
        base.repetition_penalty,
    )
    seed = settings.keep("seed", cols[5].number_input("Seed", 0, 2**31 - 1, key=settings.bind("seed")))
too_long = config.over_cap("max_new_tokens", int(max_new), "new tokens per completion")
if too_long is not None:
    st.error(f"{too_long} Lower the new tokens to generate.")
samples = settings.keep(
    "samples",
    st.slider(
        "Samples per side",
        1,
        config.max_samples,
        key=settings.bind("samples"),
        help="One completion can be lucky or unlucky; the means of several, with their intervals, are the comparison.",
    ),
)

try:
    acting = experts.intervention if units == ALL_UNITS else experts.intervention.restricted(discover_units(loaded.model, units))
    intervention = acting.with_settings(
        method=method, strength=strength, k=int(k) if METHODS[method].uses_k else None, damp_alpha=damp_alpha
    )
    sampling = SamplingSettings(
        max_new_tokens=int(max_new),
        temperature=temperature,
        top_p=top_p,
        repetition_penalty=repetition,
        do_sample=base.do_sample,
        num_return_sequences=int(samples),
    )
except AuraError as err:
    st.error(f"Settings cannot be used: {err}")
    settings.stop()
scorer = get_scorer(SCORER)
result_key = [loaded.name, experts.key, prompt, pre_prompt, intervention.settings(), asdict(sampling), int(seed), SCORER]
result_key += [] if units == ALL_UNITS else [units]  # earlier results (every unit) keep their keys

autorun = st.session_state.pop("_autorun", False)  # the Start page's demo button
can_generate = bool(prompt.strip()) and too_long is None
if st.button("Generate", type="primary", disabled=not can_generate) or (autorun and can_generate):
    try:
        sides = side_by_side_rows(
            loaded.tokenizer,
            prompt,
            {"baseline": None, method: intervention},
            pre_prompt=pre_prompt,
            settings=sampling,
            seed=int(seed),
        )
        request = get_engine(model_choice()).submit([row for rows in sides.values() for row in rows])
    except AuraError as err:
        st.error(str(err))
        settings.stop()
    live = st.empty()  # the streaming view; the stored result replaces it in this same run
    with live.container():
        note = st.empty()
        columns = list(st.columns(2))
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
        settings.stop()
    finally:
        if not request.finished.is_set():
            request.cancel()  # the page went away (cancel, refresh): free this request's rows
    frame = scored_sides(loaded.tokenizer, sides, scorer)
    st.session_state["last_generation"] = store_generation(
        result_key,
        {"prompt": prompt, "pre_prompt": pre_prompt, "method": method, "strength": strength, "seed": int(seed), "samples": frame},
    )
    live.empty()

result = st.session_state.get("last_generation")
if result is None or result["key"] != generation_key(result_key):
    stored = load_generation(result_key)  # a shared link, or anyone's earlier run with these very settings
    if stored is not None:
        result = st.session_state["last_generation"] = stored
if result is None:
    st.info(f"Press **Generate**: {int(samples)} completions per side, with the same random streams on both sides.")
    settings.stop()

frame = result["samples"]
side_names = list(dict.fromkeys(frame.side))
first = frame[frame["sample"] == 0].set_index("side")
st.caption(
    f"Prompt “{plain_markdown(result['prompt'])}” · pre-prompt: {plain_markdown(result['pre_prompt'] or 'none')} · "
    f"seed {result['seed']} · "
    f"sample 1 of {int((frame.side == side_names[0]).sum())} per side, same random stream on both sides"
)
scores = [float(first.loc[side, "toxicity"]) for side in side_names]
bodies = word_diff_html(str(first.loc[side_names[0], "completion"]), str(first.loc[side_names[1], "completion"]), *scores)
columns = list(st.columns(2))
for column, side, score, body in zip(columns, side_names, scores, bodies, strict=True):
    with column, st.container(border=True):
        st.markdown(f"**{side_title(side, result['strength'])}** · {toxicity_badge(score)}", unsafe_allow_html=True)
        st.markdown(f"<span style='color:#888'>{inline_html(result['prompt'])}</span>{body}", unsafe_allow_html=True)

per_side = {side: frame[frame.side == side].sort_values("sample").toxicity.to_numpy() for side in side_names}
summary = summarise_sides(per_side, seed=int(result["seed"]))
cols = list(st.columns(3))
for col, side_summary in zip(cols, summary.sides, strict=False):
    col.metric(
        f"{side_title(side_summary.side, result['strength'])}: mean toxicity",
        f"{side_summary.mean:.3f}",
        help="95% bootstrap interval over the samples",
    )
    col.caption(
        f"[{side_summary.low:.3f}, {side_summary.high:.3f}] · {side_summary.toxic} of {side_summary.n} "
        f"completions toxic (score > {TOXIC_THRESHOLD})"
    )
if summary.ratio is not None:
    factor, low, high = summary.ratio
    cols[2].metric("Intervened against baseline: mean toxicity", ratio_words(factor))
    cols[2].caption(
        f"95% interval: from {ratio_words(low)} to {ratio_words(high)}, paired by sample"
        + (" · wider than the effect: add samples" if low < 1 < high else "")
    )
st.caption(f"Scored by {scorer.description}.")
st.dataframe(frame, hide_index=True, width="stretch")
st.download_button(
    "Generations (CSV)",
    frame.assign(prompt=result["prompt"], pre_prompt=result["pre_prompt"]).to_csv(index=False).encode(),
    "generations.csv",
    "text/csv",
)

if not config.workshop:
    with st.expander("Export the intervened model as a checkpoint"):
        st.write("Writes an ordinary `transformers` folder with the intervention folded into the weights.")
        if st.button("Export", key="export_button"):
            family = "" if units == ALL_UNITS else f"-{units.replace('+', '-')}"  # earlier exports keep their names
            target = cache_root() / "exports" / f"{Path(loaded.name).name}-{method}-{strength:.2f}{family}-{experts.key[:8]}"
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


draw_expert_activity()
