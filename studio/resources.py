"""Server-wide resources: models, scorers and fitted experts, loaded once per process.

Everything here is shared by every browser session of the server, so nothing returned may
be changed outside ``aura_core``'s lock-guarded intervention scopes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
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


def cached_experts(spec: ExpertsSpec) -> Experts | None:
    store, lock = _experts_store()
    with lock:
        return store.get(spec)


def find_experts(
    spec: ExpertsSpec,
    data: ConceptData,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    batch_size: int = 32,
) -> Experts:
    """Collect (from the on-disk cache when it exists) and fit AurA; kept for every session."""
    existing = cached_experts(spec)
    if existing is not None:
        return existing
    loaded = get_model(spec.model)
    units = discover_units(loaded.model, spec.units)
    responses = collect_responses(
        loaded.model,
        loaded.tokenizer,
        data,
        units,
        pooling=spec.pooling,
        max_tokens=spec.max_tokens,
        batch_size=batch_size,
        progress=progress,
        should_stop=should_stop,
        model_name=spec.model.name,
    )
    experts = Experts(spec, data, responses, fit_intervention(responses, "aura"))
    store, lock = _experts_store()
    with lock:
        store[spec] = experts
    return experts
