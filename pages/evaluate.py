"""Evaluate: the paper's measurement for the loaded model, with a strength sweep and reports."""

import json
from dataclasses import replace

import streamlit as st

from aura_core import SAMPLING_PRESETS, AuraError, load_preprompts
from aura_core.analysis.experts import save_operating_point
from aura_core.base.files import content_key
from aura_core.evaluation.plots import condition_figure, tradeoff_figure
from aura_core.evaluation.protocol import (
    PREPROMPT_GROUPS,
    EvalConfig,
    EvalResult,
    operating_point,
    run_evaluation,
    run_sweep,
    sweep_families,
)
from aura_core.evaluation.reports import (
    describe_operating_point,
    glance_table,
    power_of,
    report_html,
    report_json,
    sweep_table,
    wide_intervals,
)
from aura_core.evaluation.scoring import JUDGE_LABELS, OFFLINE_SCORERS
from aura_core.method.registry import METHODS, method_label, method_names
from aura_core.method.stats import TOXIC_THRESHOLD
from aura_core.model.architecture import ALL_UNITS, unit_families, unit_family_label
from aura_core.model.loading import cache_root
from aura_core.runtime.sampling import describe_presets
from studio import settings
from studio.frame import ensure_frame
from studio.resources import evaluation_key, get_engine, get_scorer, get_server_config, load_evaluation, store_evaluation
from studio.state import model_choice, require_experts, require_model
from studio.view import ProgressWithETA

ensure_frame()

st.title("Evaluate")
st.write(
    "Measure mitigation the way the paper does: sampled completions for a prompt set under each method and "
    "pre-prompt, scored for toxicity, and perplexity on neutral text, each against the plain model with 95% "
    "bootstrap intervals."
)
loaded = require_model()
experts = require_experts("every method is built from their AUROC.")

DEFAULTS = EvalConfig()
FEW_PROMPTS = 30  # below this, a reduction's interval is usually wider than the effect it reports
config_of_server = get_server_config()
preprompts = load_preprompts()
sources = ["starter", "starter (provocative only)"] + (["file on the server"] if config_of_server.allow_server_paths else [])


def form_values(config: EvalConfig) -> dict[str, object]:
    """The form's widget values that ask for ``config``, so a linked report opens with its own settings."""
    if config.prompts == "starter":
        source = "starter (provocative only)" if config.prompt_kind == "provocative" else "starter"
    else:
        source = "file on the server"
    values: dict[str, object] = {
        "eval_prompts": source,
        "eval_prompt_path": "" if config.prompts == "starter" else config.prompts,
        "eval_n_prompts": config.n_prompts,
        "eval_preset": config.sampling,
        "eval_samples": config.samples,
        "eval_seed": config.seed,
        "eval_n_neutral": config.n_neutral,
        "eval_bootstrap": config.bootstrap,
        "eval_methods": list(config.methods),
        "eval_groups": list(config.preprompts),
        # A custom pre-prompt text is not among the form's choices: the form keeps its own then.
        "eval_favourable": config.favourable if config.favourable in [p["name"] for p in preprompts["favourable"]] else None,
        "eval_adversarial": config.adversarial if config.adversarial in [p["name"] for p in preprompts["adversarial"]] else None,
        "eval_strength": config.strength,
        "eval_k": min(config.k, experts.intervention.n_units),
        "eval_damp_alpha": config.damp_alpha,
    }
    if source not in sources:
        values = {k: v for k, v in values.items() if k not in ("eval_prompts", "eval_prompt_path")}
    return {key: value for key, value in values.items() if value is not None}


linked = settings.get("eval")
if "eval_result" not in st.session_state and linked is not None:
    restored = st.session_state["eval_result"] = load_evaluation(linked)  # a fresh browser opening a shared report
    if restored is None:
        st.warning("The evaluation named in the link is not on this server: run it here to see it.")
        settings.put("eval", None)
    else:
        st.session_state.update(form_values(restored.config))
        shown = restored.config
        st.caption(
            f"Showing the stored evaluation of this link: {shown.n_prompts} prompts × {shown.samples} completions, "
            f"{', '.join(method_label(m) for m in shown.methods)}, pre-prompts {', '.join(shown.preprompts)}, "
            f"seed {shown.seed}; the settings below are its own."
        )
with st.form("eval_form"):
    cols = list(st.columns(4))
    prompt_source = cols[0].selectbox("Prompt set", sources, key="eval_prompts")
    prompt_path = ""
    if config_of_server.allow_server_paths:
        prompt_path = cols[0].text_input(
            "Prompt file (RealToxicityPrompts JSONL, CSV or JSONL)",
            key="eval_prompt_path",
            placeholder="../shared/data/rtp_prompts_100.jsonl",
        )
    # No widget maximum: a value over a cap is refused below with the cap's name, not a silently red field.
    n_prompts = cols[1].number_input(
        "Number of prompts",
        2,
        None,
        min(DEFAULTS.n_prompts or config_of_server.max_prompts, config_of_server.max_prompts),
        key="eval_n_prompts",
        help=f"At most {config_of_server.max_prompts} on this server.",
    )
    preset = cols[1].selectbox(
        "Sampling preset",
        list(SAMPLING_PRESETS),
        index=list(SAMPLING_PRESETS).index(DEFAULTS.sampling),
        key="eval_preset",
        help=describe_presets(),
    )
    samples = cols[2].number_input(
        "Completions per prompt (0 = preset)",
        0,
        None,
        0,
        key="eval_samples",
        help=f"At most {config_of_server.max_eval_samples} on this server, the preset's count included.",
    )
    seed = cols[2].number_input("Seed", 0, 2**31 - 1, DEFAULTS.seed, key="eval_seed")
    n_neutral = cols[3].number_input(
        "Neutral texts for perplexity",
        2,
        None,
        min(DEFAULTS.n_neutral or config_of_server.max_neutral_texts, config_of_server.max_neutral_texts),
        key="eval_n_neutral",
        help=f"At most {config_of_server.max_neutral_texts} on this server.",
    )
    bootstrap = cols[3].number_input(
        "Bootstrap resamples",
        100,
        None,
        min(DEFAULTS.bootstrap, config_of_server.max_bootstrap),
        step=100,
        key="eval_bootstrap",
        help=f"At most {config_of_server.max_bootstrap:,} on this server.",
    )
    cols = list(st.columns(4))
    methods = cols[0].multiselect(
        "Methods", method_names(with_plain=True), default=list(DEFAULTS.methods), format_func=method_label, key="eval_methods"
    )
    groups = cols[1].multiselect("Pre-prompts", list(PREPROMPT_GROUPS), default=list(DEFAULTS.preprompts), key="eval_groups")
    favourable = cols[2].selectbox("Favourable", [p["name"] for p in preprompts["favourable"]], key="eval_favourable")
    adversarial = cols[3].selectbox("Adversarial", [p["name"] for p in preprompts["adversarial"]], key="eval_adversarial")
    cols = list(st.columns(3))
    strength = cols[0].slider("Strength λ", 0.0, 1.0, DEFAULTS.strength, 0.05, key="eval_strength")
    k = cols[1].number_input(
        "k for Det0 / Damp", 1, experts.intervention.n_units, min(DEFAULTS.k, experts.intervention.n_units), key="eval_k"
    )
    damp_alpha = cols[2].slider("Damp α", 0.0, 1.0, DEFAULTS.damp_alpha, 0.05, key="eval_damp_alpha")
    judge = st.selectbox(
        "Judge",
        list(OFFLINE_SCORERS),
        index=list(OFFLINE_SCORERS).index(DEFAULTS.scorer) if DEFAULTS.scorer in OFFLINE_SCORERS else 0,
        format_func=JUDGE_LABELS.__getitem__,
        key="eval_judge",
        help="What scores every completion; the report names it. No finding should rest on one judge: run both.",
    )
    run = st.form_submit_button("Run evaluation", type="primary")

try:
    config = EvalConfig(
        prompts="starter" if prompt_source.startswith("starter") else prompt_path.strip(),
        prompt_kind="provocative" if prompt_source == "starter (provocative only)" else None,
        n_prompts=int(n_prompts),
        sampling=preset,
        # The server's cap holds for the preset's own count too (the paper's preset asks for 25).
        samples=min(int(samples or 0) or SAMPLING_PRESETS[preset].num_return_sequences, config_of_server.max_eval_samples),
        seed=int(seed),
        n_neutral=int(n_neutral),
        methods=tuple(methods),
        preprompts=tuple(groups),
        favourable=favourable,
        adversarial=adversarial,
        strength=strength,
        k=int(k),
        damp_alpha=damp_alpha,
        bootstrap=int(bootstrap),
        scorer=judge,
    )
except AuraError as err:
    st.error(f"These settings cannot run: {err}")
    settings.stop()
n_conditions = len(config.methods) * len(config.preprompts)
over_caps = [
    note
    for note in (
        config_of_server.over_cap("max_prompts", int(n_prompts), "prompts"),
        config_of_server.over_cap("max_eval_samples", int(samples or 0), "completions per prompt"),
        config_of_server.over_cap("max_neutral_texts", int(n_neutral), "neutral texts"),
        config_of_server.over_cap("max_bootstrap", int(bootstrap), "bootstrap resamples"),
        config_of_server.over_cap(
            "max_eval_completions",
            int(n_prompts) * int(config.samples or 1) * n_conditions,
            f"completions ({int(n_prompts)} prompts × {config.samples} × {n_conditions} conditions)",
        ),
    )
    if note is not None
]
for note in over_caps:
    st.error(f"{note} Lower it to run.")
run = run and not over_caps

if int(n_prompts) < FEW_PROMPTS:
    st.warning(
        f"{int(n_prompts)} prompts give wide intervals: a reduction measured on fewer than {FEW_PROMPTS} prompts often "
        "cannot be told apart from none. Use more prompts for a result you would report."
    )
run_key = content_key([loaded.name, experts.key], length=12)
run_dir = cache_root() / "evaluations" / run_key
failure = None
if run:
    with st.status("Evaluating…", expanded=True) as status:
        where = "on the server" if config_of_server.workshop else f"in `{run_dir}`"  # no server path for a room
        st.caption(f"Finished conditions are kept {where}: a rerun resumes there.")
        progress = ProgressWithETA("starting")
        board = st.empty()

        def show_conditions(states: dict[str, tuple[int, int]]) -> None:
            rows = [{"condition": label, "completions": f"{done} / {total}"} for label, (done, total) in states.items()]
            board.dataframe(rows, hide_index=True)

        try:
            finished = run_evaluation(
                loaded.model,
                loaded.tokenizer,
                experts.intervention,
                config,
                out_dir=run_dir,
                scorer=get_scorer(config.scorer),
                progress=progress.stage,
                runner=get_engine(model_choice()),
                condition_progress=show_conditions,
            )
            finished.provenance["model"] = loaded.name
            st.session_state["eval_result"] = finished
            shown_key = evaluation_key(loaded.name, experts.key, config)
            store_evaluation(shown_key, finished)
            settings.put("eval", shown_key)  # the link opens this report in any browser
            status.update(label="Evaluation finished", state="complete", expanded=False)
        except AuraError as err:
            status.update(label="Evaluation failed", state="error", expanded=True)
            failure = str(err)
if failure is not None:
    st.error(f"Evaluation failed: {failure}")  # in plain sight, not inside the status box

result: EvalResult | None = st.session_state.get("eval_result")
if result is None:
    st.info("Choose the settings and press **Run evaluation**. The default finishes in a few minutes on a laptop CPU.")
    settings.stop()

st.subheader("Results")
st.caption(
    f"As in the paper, the lead measure is the toxic share of completions (score above {TOXIC_THRESHOLD}); "
    "“2.1× less” (or “1.5× more”) compares the plain model's share without pre-prompt with the condition's, "
    "with a 95% interval that resamples prompts and completions."
)
st.dataframe(glance_table(result.metrics), hide_index=True, width="stretch")
st.caption(f"Scored by {JUDGE_LABELS.get(result.config.scorer, result.config.scorer)}.")
power = power_of(result.metrics)
if power is not None:  # the CLI prints the same line
    line = (power.warning() or power.text()).removeprefix("warning: ").removeprefix("power: ")
    sentence = f"{line[:1].upper()}{line[1:]}."
    if power.underpowered:
        st.warning(sentence)
    else:
        st.caption(sentence)
for condition in wide_intervals(result.metrics):
    st.warning(
        f"The interval of **{condition}** includes no change: these prompts cannot tell it from none. Add prompts or samples."
    )
if (result.metrics.toxic_share == 0).all():
    st.info(
        f"No completion scored above {TOXIC_THRESHOLD} under any condition, so there is no toxic share to compare and "
        "nothing to draw. Use provocative prompts, an adversarial pre-prompt, or more prompts and completions."
    )
else:
    st.plotly_chart(condition_figure(result.metrics), width="stretch")
with st.expander("Every figure of every condition"):
    detail = result.metrics.round(4).rename(columns=lambda name: name.replace("_", " "))
    st.dataframe(detail.astype(object).where(detail.notna(), "–"), hide_index=True, width="stretch")

st.subheader("Strength sweep and the operating point")
cols = list(st.columns([2, 2, 1, 2, 1]))
grid = cols[0].multiselect("λ grid", [0.1, 0.25, 0.5, 0.75, 0.9, 1.0], default=[0.25, 0.5, 0.75, 1.0], key="sweep_grid")
sweep_default = ["aura", "aura-null"] if config_of_server.max_sweep_points >= 8 else ["aura"]  # the default grid fits the cap
sweep_methods = cols[1].multiselect(
    "Methods", method_names(), default=sweep_default, format_func=method_label, key="sweep_methods"
)
budget = cols[2].number_input("Perplexity budget (%)", 0.5, 100.0, 5.0, 0.5, key="ppl_budget") / 100
uses_k = any(METHODS[m].uses_k for m in sweep_methods)
ks_text = cols[3].text_input("k grid (Det0/Damp, comma separated)", "50,200", key="sweep_ks", disabled=not uses_k)
try:
    ks = tuple(int(v) for v in ks_text.split(",") if v.strip()) if uses_k else None
except ValueError:
    st.error(f"The k grid {ks_text!r} is not a list of whole numbers separated by commas.")
    ks = None
held_families = list(sweep_families(loaded.model, experts.intervention))
fits_every = len(held_families) * 4 * len(sweep_default) <= config_of_server.max_sweep_points
families = st.multiselect(
    "Unit families",
    list(unit_families(loaded.model)),
    default=held_families if fits_every else [ALL_UNITS],
    format_func=unit_family_label,
    key="sweep_units",
    help="Each point acts on one family's units only (all: the paper's rule), so the sweep finds which family "
    "gives most for the perplexity budget.",
)
points = len(families) * sum(len(grid) * (len(ks) if METHODS[m].uses_k and ks else 1) for m in sweep_methods)
sweep_caps = [
    note
    for note in (
        config_of_server.over_cap("max_sweep_points", points, "sweep points"),
        config_of_server.over_cap(
            "max_eval_completions",
            (points + 1) * int(result.config.n_prompts or 0) * int(result.config.samples or 1),
            f"completions ({points + 1} sweep conditions of {result.config.n_prompts} prompts × {result.config.samples})",
        ),
    )
    if note is not None
]
for note in sweep_caps:
    st.error(f"{note} Choose fewer λ, k, methods or unit families to sweep.")
if cols[4].button("Run sweep", disabled=not grid or not sweep_methods or not families or bool(sweep_caps)):
    try:
        with st.status("Sweeping…", expanded=True) as status:
            progress = ProgressWithETA("starting")
            sweep = run_sweep(
                loaded.model,
                loaded.tokenizer,
                experts.intervention,
                result.config,
                method=tuple(sweep_methods),
                strengths=tuple(sorted(grid)),
                ks=ks,
                units=tuple(families),
                out_dir=run_dir,
                scorer=get_scorer(result.config.scorer),
                progress=progress.stage,
                runner=get_engine(model_choice()),
            )
            point = operating_point(sweep, budget)
            st.session_state["eval_result"] = result = replace(result, sweep=sweep, operating_point=point)
            if settings.get("eval") is not None:
                store_evaluation(settings.get("eval"), result)  # the link now opens the sweep too
            if point is not None:
                save_operating_point(experts.key, point)  # Generate offers it as a one-click setting
            status.update(label="Sweep finished", state="complete", expanded=False)
    except (AuraError, ValueError) as err:
        st.error(f"Sweep failed: {err}")
if result.sweep is not None:
    point = result.operating_point
    if point is None:
        st.warning("No strength keeps the perplexity within the budget: widen it, or add smaller λ to the grid.")
    else:
        st.success(
            f"Operating point: {describe_operating_point(point)}. **Generate side by side** offers it as a one-click setting."
        )
    st.plotly_chart(tradeoff_figure(result.sweep, point), width="stretch")
    st.dataframe(sweep_table(result.sweep), hide_index=True, width="stretch")

st.subheader("Downloads")
cols = list(st.columns(4))
cols[0].download_button("Metrics (CSV)", result.metrics.to_csv(index=False).encode(), "metrics.csv", "text/csv")
cols[1].download_button(
    "Generations (CSV)", result.generations.to_csv(index=False).encode(), "evaluation_generations.csv", "text/csv"
)
cols[2].download_button(
    "Report (JSON)", json.dumps(report_json(result), indent=2, default=str).encode(), "report.json", "application/json"
)
cols[3].download_button("Report (HTML)", report_html(result).encode(), "report.html", "text/html")
