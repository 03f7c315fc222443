"""Generate side by side: the same prompt and random streams, without and with the intervention."""

import io
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

import streamlit as st

from aura_core import METHODS, SAMPLING_PRESETS, AuraError, Intervention, load_preprompts, load_prompts, method_label
from aura_core.analysis.experts import load_operating_point
from aura_core.base.data import NO_PREPROMPT, PREPROMPT_GROUPS, resolve_preprompt
from aura_core.evaluation.comparison import summarise_sides
from aura_core.evaluation.demo import describe_choice, load_demo
from aura_core.evaluation.generation import side_by_side_rows
from aura_core.evaluation.plots import ratio_words
from aura_core.evaluation.reports import describe_operating_point
from aura_core.evaluation.scoring import JUDGE_LABELS, OFFLINE_SCORERS, ProfanityCheckScorer
from aura_core.evaluation.side_by_side import BASELINE, key_parts, sampling_for
from aura_core.method.registry import method_names
from aura_core.method.stats import TOXIC_THRESHOLD
from aura_core.model.architecture import ALL_UNITS, discover_units, unit_families, unit_family_label
from aura_core.model.loading import cache_root
from aura_core.runtime.flights import Flight
from aura_core.runtime.folding import export_model
from studio import settings
from studio.expert_activity import draw_expert_activity
from studio.frame import ensure_frame
from studio.pairs import draw_pairs
from studio.resources import (
    REJOIN_GRACE_S,
    generate_sides,
    get_scorer,
    get_server_config,
    load_generation,
    running_generation,
)
from studio.state import model_choice, require_experts, require_model
from studio.view import inline_html, plain_markdown, side_title

ensure_frame()

with st.container(key="aura-title"):
    st.title("Generate side by side")
loaded = require_model()
experts = require_experts("the intervention is built from their AUROC.")
config = get_server_config()

prompts = load_prompts()
preprompts = load_preprompts()
PRE_OPTIONS = [NO_PREPROMPT] + [f"{group}:{p['name']}" for group in PREPROMPT_GROUPS for p in preprompts[group]] + ["custom"]
if settings.get("prompt") is None:
    settings.put("prompt", next(p.text for p in prompts if p.kind == "provocative"))
if settings.get("pre") not in PRE_OPTIONS:
    settings.put("pre", NO_PREPROMPT)
# Clamp a linked value to what this server and these experts allow; put only then, as put resets
# the widget (a put on every run would undo every move of the slider).
for name, cap in (("samples", config.max_samples), ("k", experts.intervention.n_units)):
    if int(settings.get(name)) > cap:
        settings.put(name, cap)


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
    versus = settings.keep(
        "versus",
        st.selectbox(
            "Compared with",
            [BASELINE, *method_names()],
            key=settings.bind("versus"),
            format_func=lambda name: "the plain model" if name == BASELINE else method_label(name),
            help="The left side: the plain model, or another method at the same strength, units and random streams.",
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
count_col, judge_col = st.columns([3, 1])
samples = settings.keep(
    "samples",
    count_col.slider(
        "Samples per side",
        1,
        config.max_samples,
        key=settings.bind("samples"),
        help="One completion can be lucky or unlucky; the means of several, with their intervals, are the comparison.",
    ),
)
judge = settings.keep(
    "judge",
    judge_col.selectbox(
        "Judge",
        list(OFFLINE_SCORERS),
        key=settings.bind("judge"),
        format_func=JUDGE_LABELS.__getitem__,
        help="What scores each completion. No finding should rest on one judge: compare both.",
    ),
)

try:
    acting = experts.intervention if units == ALL_UNITS else experts.intervention.restricted(discover_units(loaded.model, units))

    def _method(name: str) -> Intervention:
        return acting.with_settings(
            method=name, strength=strength, k=int(k) if METHODS[name].uses_k else None, damp_alpha=damp_alpha
        )

    if versus == method:
        raise AuraError(f"{method_label(method)} is on both sides: compare it with the plain model or another method")
    intervention = _method(method)
    sides: dict[str, Intervention | None] = {versus: None if versus == BASELINE else _method(versus), method: intervention}
    sampling = sampling_for(
        preset_name, int(samples), max_new=int(max_new), temperature=temperature, top_p=top_p, repetition=repetition
    )
except AuraError as err:
    st.error(f"Settings cannot be used: {err}")
    settings.stop()
result_key = key_parts(loaded.name, experts.key, prompt, pre_prompt, sides, sampling, int(seed), scorer=judge, units=units)
stored = load_generation(result_key)  # a shared link, the prepared demo, or anyone's earlier run with these very settings
flight = running_generation(result_key)  # or someone's run of these very settings, under way now


def _fresh_samples() -> None:
    settings.put("seed", secrets.randbelow(2**31 - 1))  # new random streams on both sides
    st.session_state["_autorun"] = True


autorun = st.session_state.pop("_autorun", False)  # the Start page's demo button, or Fresh samples
can_generate = bool(prompt.strip()) and too_long is None
pressed = st.button("Generate", type="primary", disabled=not can_generate)
if can_generate and (pressed or autorun) and stored is None and flight is None:  # a stored result is never computed again
    try:
        rows = side_by_side_rows(loaded.tokenizer, prompt, sides, pre_prompt=pre_prompt, settings=sampling, seed=int(seed))
        flight = generate_sides(
            model_choice(),
            result_key,
            rows,
            scorer := get_scorer(judge),  # loaded only to score: a stored result opens without it
            {
                "prompt": prompt,
                "pre_prompt": pre_prompt,
                "method": method,
                "strength": strength,
                "seed": int(seed),
                "judged": scorer.description,
            },
        )
    except AuraError as err:
        st.error(str(err))
        settings.stop()


def _follow(flight: Flight[dict[str, Any]], names: list[str], n_per_side: int) -> dict[str, Any] | None:
    """Stream a running generation (this session's or another's with these settings) until its result is stored."""
    settings.sync_url()  # now, not at the run's end minutes away: a reload meanwhile must find this very run
    live = st.empty()  # the streaming view; the stored result replaces it in this same run
    with live.container():
        note = st.empty()
        slots = {}
        for column, side in zip(st.columns(2), names, strict=True):
            with column:
                st.markdown(f"#### {side_title(side, strength)}")
                slots[side] = st.empty()
    try:
        shown: dict[str, object] = {}
        for state in flight.watch(poll_s=0.25, heartbeat_s=1.0):
            if state is None:
                line = "waiting for the engine"
            else:
                line = state.describe() or (f"{flight.done_count:,} of {flight.total:,} tokens" if flight.total else "")
            if flight.waiters > 1:
                line += f" · {flight.waiters} sessions follow this very generation"
            note.caption(line)  # on every beat, changed or not: a run stops for a click only where it draws
            if state is None:
                continue
            # Redraw only the texts that changed: the server's cores decode, the browser shows.
            for index, side in enumerate(names):
                tokens = state.tokens[index * n_per_side]  # sample 1 of each side streams
                if shown.get(side) != tokens:
                    shown[side] = tokens
                    slots[side].markdown(
                        inline_html(loaded.tokenizer.decode(tokens, skip_special_tokens=True)), unsafe_allow_html=True
                    )
        return flight.result()
    except AuraError as err:
        st.error(str(err))
        return None
    finally:
        if not flight.finished.is_set():
            # The page went away (a stop, a reload, a closed tab): the last to leave frees the rows,
            # after a grace in which the reloaded page joins the same run.
            flight.leave(grace_s=REJOIN_GRACE_S)
        live.empty()


def _draw_result(result: dict[str, Any]) -> None:
    """The headline (both means, their interval and ratio), how it was made, every pair, and the downloads."""
    if result.get("unsaved"):
        st.warning(result["unsaved"])
    frame = result["samples"]
    side_names = list(dict.fromkeys(frame.side))
    n_per_side = int((frame.side == side_names[0]).sum())
    per_side = {side: frame[frame.side == side].sort_values("sample").toxicity.to_numpy() for side in side_names}
    summary = summarise_sides(per_side, seed=int(result["seed"]))
    titles = {side: side_title(side, result["strength"]) for side in side_names}
    cols = list(st.columns([2, 2, 3]))
    for col, side_summary in zip(cols, summary.sides, strict=False):
        col.metric(
            f"{titles[side_summary.side]}: mean toxicity",
            f"{side_summary.mean:.3f}",
            help="95% bootstrap interval over the samples",
        )
        col.caption(
            f"[{side_summary.low:.3f}, {side_summary.high:.3f}] · {side_summary.toxic} of {side_summary.n} "
            f"completions toxic (score > {TOXIC_THRESHOLD})"
        )
    if summary.ratio is not None:
        factor, low, high = summary.ratio
        cols[2].metric(f"{titles[side_names[1]]} against {titles[side_names[0]]}: mean toxicity", ratio_words(factor))
        cols[2].caption(
            f"95% interval: from {ratio_words(low)} to {ratio_words(high)}, paired by sample"
            + (" · wider than the effect: add samples" if low < 1 < high else "")
        )
    demo = load_demo(experts.key)
    top = st.columns([3, 1])
    top[0].caption(
        f"Prompt “{plain_markdown(result['prompt'])}” · pre-prompt: {plain_markdown(result['pre_prompt'] or 'none')} · "
        f"seed {result['seed']} · {n_per_side} samples per side, sample j drawn from the same random stream on both sides · "
        f"scored by {result.get('judged') or ProfanityCheckScorer.description}"  # results from before kept no judge
    )
    top[1].button(
        "Fresh samples", icon=":material/refresh:", on_click=_fresh_samples, help="The same settings on new random streams."
    )
    if demo is not None and demo.get("key") == result.get("key"):
        st.caption(f"**The prepared demo.** {describe_choice(demo)}")
    draw_pairs(frame, float(result["strength"]))
    with st.expander("Every completion as a table"):
        st.dataframe(frame, hide_index=True, width="stretch")
    st.download_button(
        "Generations (CSV)",
        frame.assign(prompt=result["prompt"], pre_prompt=result["pre_prompt"]).to_csv(index=False).encode(),
        "generations.csv",
        "text/csv",
    )


with st.container(key="aura-results"):  # on a narrow screen, above the settings (studio/theme.py)
    if flight is not None:
        stored = _follow(flight, list(sides), int(samples))
        if stored is None:
            settings.stop()
    if stored is None:
        st.info(f"Press **Generate**: {int(samples)} completions per side, with the same random streams on both sides.")
        settings.stop()
    st.session_state["last_generation"] = stored  # what this session shows (tests and downloads read it)
    _draw_result(stored)

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
