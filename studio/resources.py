"""Server-wide resources: models, their engines, scorers and fitted experts, loaded once per process.

Everything here is shared by every browser session of the server. Nothing returned is ever
changed: interventions are plans carried by each call, and every forward pass of a model
goes through that model's one engine, which batches all sessions' requests together.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import streamlit as st

from aura_core import (
    DEFAULT_MODEL,
    ConceptData,
    Intervention,
    LoadedModel,
    Responses,
    collect_responses,
    discover_units,
    fit_intervention,
    load_model,
    load_scorer,
)
from aura_core.engine import Engine, engine_for
from aura_core.flights import Flight, Flights
from aura_core.models import model_fingerprint
from aura_core.responses import responses_cache_key
from aura_core.scoring import ToxicityScorer


def default_model_name() -> str:
    """``AURA_STUDIO_MODEL`` picks the model a fresh session opens on (tests use a tiny one)."""
    return os.environ.get("AURA_STUDIO_MODEL", DEFAULT_MODEL)


@dataclass(frozen=True)
class ModelChoice:
    name: str
    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False


@st.cache_resource(show_spinner=False, max_entries=3)
def get_model(choice: ModelChoice) -> LoadedModel:
    return load_model(choice.name, dtype=choice.dtype, device=choice.device, trust_remote_code=choice.trust_remote_code)


_STARTED_ENGINES: dict[ModelChoice, Engine] = {}


def get_engine(choice: ModelChoice) -> Engine:
    """The one engine that runs every forward pass of this model, for all sessions."""
    engine = engine_for(get_model(choice).model)
    _STARTED_ENGINES[choice] = engine
    return engine


def engine_load(choice: ModelChoice) -> dict[str, float] | None:
    """What the model's engine is doing now, if it has started (never loads a model)."""
    engine = _STARTED_ENGINES.get(choice)
    return engine.load() if engine is not None else None


@st.cache_resource(show_spinner=False, max_entries=3)
def model_print(choice: ModelChoice) -> str:
    return model_fingerprint(get_model(choice).model)


@st.cache_resource(show_spinner=False)
def get_scorer(name: str) -> ToxicityScorer:
    return load_scorer(name)


@dataclass(frozen=True)
class ExpertsSpec:
    """Everything that decides a Find-experts result; equal specs share one result."""

    model: ModelChoice
    data_hash: str
    data_label: str
    n_texts: int
    max_tokens: int
    pooling: str
    units: str | None


@dataclass
class Experts:
    spec: ExpertsSpec
    data: ConceptData
    responses: Responses
    intervention: Intervention


@st.cache_resource(show_spinner=False)
def _experts_store() -> tuple[dict[ExpertsSpec, Experts], threading.Lock]:
    return {}, threading.Lock()


def cached_experts(spec: ExpertsSpec | None) -> Experts | None:
    if spec is None:
        return None
    store, lock = _experts_store()
    with lock:
        return store.get(spec)


def remember_experts(spec: ExpertsSpec, experts: Experts) -> Experts:
    """Keep ``experts`` under ``spec`` too (another session's equal computation answered it)."""
    store, lock = _experts_store()
    with lock:
        if spec not in store:
            store[spec] = Experts(spec, experts.data, experts.responses, experts.intervention)
        return store[spec]


@st.cache_resource(show_spinner=False)
def _flights() -> Flights:
    return Flights()


def experts_key(spec: ExpertsSpec) -> str:
    """The on-disk cache key of the responses behind ``spec``: equal keys compute once."""
    loaded = get_model(spec.model)
    units = discover_units(loaded.model, spec.units)
    return responses_cache_key(model_print(spec.model), spec.data_hash, units, spec.pooling, spec.max_tokens)


def find_experts(spec: ExpertsSpec, data: ConceptData, batch_size: int = 32) -> Flight[Experts]:
    """Join the computation of these experts (or start it): collect on the model's engine and fit AurA.

    Sessions that ask for the same experts share one flight and see its progress; the work
    stops early only when every one of them has left.
    """

    def work(flight: Flight[Experts]) -> Experts:
        existing = cached_experts(spec)
        if existing is not None:
            return existing
        loaded = get_model(spec.model)
        responses = collect_responses(
            loaded.model,
            loaded.tokenizer,
            data,
            discover_units(loaded.model, spec.units),
            pooling=spec.pooling,
            max_tokens=spec.max_tokens,
            batch_size=batch_size,
            progress=flight.progress,
            should_stop=flight.should_stop,
            model_name=spec.model.name,
            runner=get_engine(spec.model),
        )
        experts = Experts(spec, data, responses, fit_intervention(responses, "aura"))
        store, lock = _experts_store()
        with lock:
            store[spec] = experts
        return experts

    return _flights().join(experts_key(spec), work)
