"""Server-wide resources: models, their engines, scorers and fitted experts, loaded once per process.

Everything here is shared by every browser session of the server. Nothing returned is ever
changed: interventions are plans carried by each call, and every forward pass of a model
goes through that model's one engine, which batches all sessions' requests together.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch

from aura_core import AuraError, ConceptData, Intervention, LoadedModel, Responses, load_model, load_scorer
from aura_core.analysis.experts import Experts, ExpertsRecipe, compute_experts, experts_key, load_experts
from aura_core.analysis.unit_profile import ActivationProfile, activation_profile
from aura_core.base.files import atomic_write, content_key
from aura_core.base.store import enforce_budget, mark_used, store_usage
from aura_core.evaluation import side_by_side
from aura_core.evaluation.comparison import scored_sides
from aura_core.evaluation.protocol import EvalConfig, EvalResult
from aura_core.evaluation.scoring import ToxicityScorer
from aura_core.model.loading import cache_root
from aura_core.runtime.decoding import DecodeRow
from aura_core.runtime.engine import Engine, engine_for
from aura_core.runtime.flights import Flight, Flights
from studio.server import ServerConfig, server_config

GENERATION_TIMEOUT_S = 300.0
REJOIN_GRACE_S = 10.0  # a generation whose last page left decodes this long more, so a reload picks it up


@st.cache_resource(show_spinner=False)
def get_server_config() -> ServerConfig:
    """The operator's settings, read once per server process."""
    return server_config()


@dataclass(frozen=True)
class ModelChoice:
    name: str
    dtype: str = "auto"
    device: str = "auto"


@st.cache_resource(show_spinner=False, max_entries=3)
def get_model(choice: ModelChoice) -> LoadedModel:
    # Running a model repository's own code is the operator's decision, never a browser's.
    remote_code = get_server_config().allow_remote_code
    return load_model(choice.name, dtype=choice.dtype, device=choice.device, trust_remote_code=remote_code)


# Weak: an engine lives as long as its model, which the cache above may evict.
_STARTED_ENGINES: weakref.WeakValueDictionary[ModelChoice, Engine] = weakref.WeakValueDictionary()


def get_engine(choice: ModelChoice) -> Engine:
    """The one engine that runs every forward pass of this model, for all sessions."""
    engine = engine_for(get_model(choice).model)
    _STARTED_ENGINES[choice] = engine
    return engine


def engine_load(choice: ModelChoice) -> dict[str, float] | None:
    """What the model's engine is doing now, if it has started (never loads a model)."""
    engine = _STARTED_ENGINES.get(choice)
    return engine.load() if engine is not None else None


@st.cache_resource(show_spinner=False)
def get_scorer(name: str) -> ToxicityScorer:
    return load_scorer(name)


class SessionExperts:
    """Experts as the views use them: the stored record, with its responses loaded only when asked for."""

    def __init__(self, record: Experts) -> None:
        self.record = record

    @property
    def key(self) -> str:
        return self.record.key

    @property
    def spec(self) -> ExpertsRecipe:
        return self.record.recipe

    @property
    def data(self) -> ConceptData:
        return self.record.data

    @property
    def intervention(self) -> Intervention:
        return self.record.intervention

    @property
    def responses(self) -> Responses:
        return _responses(self.key)


@st.cache_resource(show_spinner=False, max_entries=2)
def _responses(key: str) -> Responses:
    # Responses are large (units × texts); only the last two asked for stay in memory.
    return load_experts(key).responses()


@st.cache_resource(show_spinner=False, max_entries=8)
def _experts(key: str) -> SessionExperts:
    return SessionExperts(load_experts(key))


def experts_by_key(key: str | None) -> SessionExperts | None:
    """The experts stored under ``key`` (a link's ``?experts=``), or None when there are none."""
    if key is None:
        return None
    try:
        return _experts(key)
    except AuraError:
        return None


@st.cache_resource(show_spinner=False)
def _flights() -> Flights:
    return Flights()


def find_experts(choice: ModelChoice, sample: ConceptData, recipe: ExpertsRecipe) -> Flight[Experts]:
    """Join the computation of these experts (or start it): collect on the model's engine and fit AurA.

    Sessions that ask for the same experts share one flight and see its progress; the work
    stops early only when every one of them has left. Found experts are kept on disk.
    """
    loaded = get_model(choice)

    def work(flight: Flight[Experts]) -> Experts:
        return compute_experts(
            loaded,
            sample,
            recipe,
            runner=get_engine(choice),
            progress=flight.progress,
            should_stop=flight.should_stop,
        )

    return _flights().join(experts_key(loaded, sample, recipe), work)


PROFILES_KEPT = 3
"""Activation profiles kept per server: each holds every unit's quantiles on one corpus."""


@st.cache_resource(show_spinner=False)
def _profiles() -> tuple[OrderedDict[tuple[str, str], ActivationProfile], Flights, threading.Lock]:
    return OrderedDict(), Flights(), threading.Lock()


def activation_profile_of(
    choice: ModelChoice, experts: SessionExperts, texts: list[str], corpus: str, thresholds: dict[str, torch.Tensor]
) -> ActivationProfile | Flight[ActivationProfile]:
    """Every unit of these experts on ``texts``: computed once per server and shared, the last few kept.

    Returns the profile when it is at hand, else the flight computing it (follow it for progress).
    """
    store, flights, lock = _profiles()
    key = (experts.key, content_key(texts, length=64))
    with lock:
        found = store.get(key)
        if found is not None:
            store.move_to_end(key)
            return found
    loaded = get_model(choice)

    def work(flight: Flight[ActivationProfile]) -> ActivationProfile:
        profile = activation_profile(
            loaded.model,
            loaded.tokenizer,
            texts,
            thresholds,
            corpus=corpus,
            max_tokens=experts.spec.max_tokens,
            runner=get_engine(choice),
            progress=flight.progress,
        )
        with lock:
            store[key] = profile
            while len(store) > PROFILES_KEPT:
                store.popitem(last=False)
        return profile

    return flights.join(key, work)


EVALUATION_KEY = re.compile(r"[0-9a-f]{24}")


def is_evaluation_key(text: object) -> bool:
    """Whether ``text`` has the shape of an evaluation's key (24 hex digits): anything else is refused unread.

    >>> is_evaluation_key("0123456789abcdef01234567"), is_evaluation_key("../../etc/passwd")
    (True, False)
    """
    return isinstance(text, str) and EVALUATION_KEY.fullmatch(text) is not None


def evaluation_key(model: str, experts: str, config: EvalConfig) -> str:
    """The key of an evaluation's report: the model, the experts and every setting of the run."""
    return content_key([model, experts, config.as_dict()], length=24)


def _evaluation_path(key: str) -> Path:
    return cache_root() / "evaluations" / "reports" / f"{key}.json"


def store_evaluation(key: str, result: EvalResult) -> None:
    """Keep an evaluation's report on disk (its tables as JSON), so a link to its key opens it again."""
    stored = {
        "config": asdict(result.config),
        "generations": result.generations.to_dict(orient="records"),
        "metrics": result.metrics.to_dict(orient="records"),
        "perplexity_terms": {name: [nll.tolist(), count.tolist()] for name, (nll, count) in result.perplexity_terms.items()},
        "provenance": result.provenance,
        "sweep": None if result.sweep is None else result.sweep.to_dict(orient="records"),
        "operating_point": result.operating_point,
    }
    path = _evaluation_path(key)
    unsaved = _store(path, lambda: atomic_write(path, json.dumps(stored, default=str)), "evaluation")
    if unsaved is not None:
        st.warning(unsaved)


def load_evaluation(key: str) -> EvalResult | None:
    """The evaluation stored under ``key``, or None when this server has none (or cannot read it)."""
    if not is_evaluation_key(key):
        return None
    try:
        stored = json.loads(_evaluation_path(key).read_text())
        mark_used(_evaluation_path(key))
        return EvalResult(
            config=EvalConfig(**stored["config"]),
            generations=pd.DataFrame(stored["generations"]),
            metrics=pd.DataFrame(stored["metrics"]),
            perplexity_terms={
                name: (np.array(nll), np.array(count)) for name, (nll, count) in stored["perplexity_terms"].items()
            },
            provenance=stored["provenance"],
            sweep=None if stored["sweep"] is None else pd.DataFrame(stored["sweep"]),
            operating_point=stored["operating_point"],
        )
    except (OSError, ValueError, KeyError, TypeError, AuraError):
        return None


def generation_key(parts: list[object]) -> str:
    """The key of a side-by-side result: everything that decides its text and scores (see ``key_parts``)."""
    return side_by_side.result_key(parts)


def store_generation(parts: list[object], result: dict[str, Any]) -> dict[str, Any]:
    """Keep a side-by-side result on disk (small JSON), so a link to these settings shows it again.

    The result comes back with its ``key``, and an ``unsaved`` note when the store could not keep it.
    """
    key = generation_key(parts)
    unsaved = _store(
        side_by_side.result_path(cache_root(), key),
        lambda: side_by_side.store_result(cache_root(), key, result),
        "generation",
    )
    return {**result, "key": key} if unsaved is None else {**result, "key": key, "unsaved": unsaved}


def load_generation(parts: list[object]) -> dict[str, Any] | None:
    """A side-by-side result computed earlier with exactly these settings, or None."""
    return side_by_side.load_result(cache_root(), generation_key(parts))


def running_generation(parts: list[object]) -> Flight[dict[str, Any]] | None:
    """The generation of these settings some session has under way, joined to follow it (leave when done), or None."""
    return _flights().follow(("generation", generation_key(parts)))


def generate_sides(
    choice: ModelChoice,
    parts: list[object],
    sides: dict[str, list[DecodeRow]],
    scorer: ToxicityScorer,
    result: dict[str, Any],
) -> Flight[dict[str, Any]]:
    """Decode ``sides`` once for everyone who asks for these settings (a button, a link or the demo).

    Every session asking for the same key joins one flight and follows its stream: the
    flight's ``snapshot`` is the engine's latest state of the rows. When the last follower
    leaves (cancel, refresh), the rows are freed. The scored result is stored, and returned
    even when the store cannot keep it.
    """
    engine, tokenizer = get_engine(choice), get_model(choice).tokenizer  # here, on the page's thread
    rows = [row for side in sides.values() for row in side]
    total = len(rows) * max((row.settings.max_new_tokens for row in rows), default=0)

    def work(flight: Flight[dict[str, Any]]) -> dict[str, Any]:
        request = engine.submit(rows)
        try:
            for state in request.states(poll_s=0.1, timeout_s=GENERATION_TIMEOUT_S):
                flight.snapshot = state
                flight.progress(sum(len(tokens) for tokens in state.tokens), total)
                if flight.should_stop():
                    request.cancel()
                    raise AuraError("every session following this generation left")
        finally:
            if not request.finished.is_set():
                request.cancel()
        frame = scored_sides(tokenizer, sides, scorer)
        return store_generation(parts, {**result, "samples": frame})

    return _flights().join(("generation", generation_key(parts)), work)


def _store(path: Path, write: Callable[[], object], what: str) -> str | None:
    """Write a finished result to the store, then keep the store in its budget; a failed write is a note, not a loss.

    Returns None when stored, or the note shown beside the result (which the caller still shows).
    Safe off the page's thread: nothing is drawn here.
    """
    try:
        write()
    except (AuraError, OSError) as err:
        reason = str(err).removeprefix(f"{path}: ")  # the server's path is no visitor's business
        return f"This {what} is shown but was not saved, so a link to it will not open it: {reason}"
    try:
        enforce_budget(cache_root(), keep=[path])
    except (AuraError, OSError) as err:  # a malformed budget is the operator's to fix; the result is stored
        logging.getLogger(__name__).warning("the store's budget could not be applied: %s", err)
    return None


@st.cache_data(ttl=30, show_spinner=False)
def store_line() -> str:
    """The store's size against its budget, for the sidebar (measured at most every 30 s)."""
    try:
        return store_usage(cache_root()).describe()
    except (AuraError, OSError) as err:
        return f"store: {err}"
