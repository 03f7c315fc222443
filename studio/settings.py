"""Settings that outlive a page: kept per session outside widget keys, mirrored into the address bar.

Streamlit forgets a widget's value when its page is not drawn, so every setting a person
chooses lives in one store here; a widget is bound to it (``bind``) and writes its value
back (``keep``). At the end of every run the address bar is made to match the store, so a
copied link opens the same view, and a reload restores it. A page that ends early calls
:func:`stop`, not ``st.stop``: after ``st.stop`` nothing more reaches the browser. URL values
are untrusted: each one is parsed and checked, and a bad one is dropped with a note.

>>> parse_unit("model.layers.5.mlp.gate_proj:1343")
('model.layers.5.mlp.gate_proj', 1343)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import streamlit as st

from aura_core import METHODS, SAMPLING_PRESETS
from aura_core.analysis import neurons
from aura_core.analysis.collect import MAX_TOKENS, POOLINGS
from aura_core.analysis.experts import N_PER_CLASS, is_experts_key
from aura_core.base.data import NO_PREPROMPT
from aura_core.errors import UnitPatternError
from aura_core.evaluation.scoring import DEFAULT_SCORER, OFFLINE_SCORERS
from aura_core.evaluation.side_by_side import BASELINE
from aura_core.model.architecture import ALL_UNITS, unit_family_roles
from studio.resources import is_evaluation_key

__all__ = ["SETTINGS", "Setting", "bind", "from_link", "get", "keep", "load_from_url", "parse_unit", "put", "stop", "sync_url"]

_STORE = "_settings"
SAMPLING_KNOBS = ("max_new", "temperature", "top_p", "repetition")
"""The sampling settings a preset brings; each is none while it follows the preset's value."""


def parse_unit(text: str) -> tuple[str, int]:
    """``module:index`` → ``(module, index)`` by the library's one rule; a ValueError for anything else."""
    try:
        return neurons.parse_unit(text)
    except UnitPatternError as err:
        raise ValueError(str(err)) from None


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"{text!r} is not one of {', '.join(options)}")
        return text

    return parse


def _number(kind: type, low: float, high: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if not low <= value <= high:
            raise ValueError(f"{text} is outside [{low}, {high}]")
        return value

    return parse


def _text(limit: int) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if len(text) > limit:
            raise ValueError(f"longer than {limit} characters")
        return text

    return parse


def _key(text: str) -> str:
    if not is_experts_key(text):
        raise ValueError(f"{text[:40]!r} is not an experts key")
    return text


def _unit_family(text: str) -> str:
    if unit_family_roles(text) is None:
        raise ValueError(f"{text[:40]!r} is not a unit family")
    return text


def _run_key(text: str) -> str:
    if not is_evaluation_key(text):
        raise ValueError(f"{text[:40]!r} is not an evaluation key")
    return text


@dataclass(frozen=True)
class Setting:
    """A setting kept across pages and reloads; ``url`` names it in the address bar."""

    name: str
    url: str
    default: Any
    parse: Callable[[str], Any]


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("model", "model", None, _text(300)),  # checked against the server's offer by the caller
        Setting("experts", "experts", None, _key),
        Setting("unit", "unit", None, lambda t: ":".join(map(str, parse_unit(t)))),
        Setting("n_per_class", "n", N_PER_CLASS, _number(int, 1, 1_000_000)),
        Setting("max_tokens", "tokens", MAX_TOKENS, _number(int, 4, 512)),
        Setting("pooling", "pooling", POOLINGS[0], _choice(POOLINGS)),
        Setting("data_seed", "data_seed", 0, _number(int, 0, 10_000)),
        Setting("prompt", "prompt", None, _text(2000)),
        Setting("pre", "pre", NO_PREPROMPT, _text(200)),
        Setting("pre_text", "pre_text", "", _text(500)),
        Setting("method", "method", "aura", _choice(tuple(METHODS))),
        Setting("versus", "versus", BASELINE, _choice((BASELINE, *METHODS))),  # what the method is compared with
        Setting("judge", "judge", DEFAULT_SCORER, _choice(OFFLINE_SCORERS)),  # what scores a generation
        Setting("strength", "strength", 1.0, _number(float, 0.0, 1.0)),
        Setting("k", "k", 200, _number(int, 1, 10_000_000)),
        Setting("damp_alpha", "damp_alpha", 0.5, _number(float, 0.0, 1.0)),
        Setting("units", "units", ALL_UNITS, _unit_family),
        Setting("seed", "seed", 0, _number(int, 0, 2**31 - 1)),
        Setting("sampling", "sampling", "paper", _choice(tuple(SAMPLING_PRESETS))),
        Setting("samples", "samples", 8, _number(int, 1, 1000)),
        # None: the sampling preset's own value, so a link names only what was changed.
        Setting("max_new", "new_tokens", None, _number(int, 1, 4096)),
        Setting("temperature", "temperature", None, _number(float, 0.05, 3.0)),
        Setting("top_p", "top_p", None, _number(float, 0.05, 1.0)),
        Setting("repetition", "repetition", None, _number(float, 1.0, 2.0)),
        Setting("eval", "eval", None, _run_key),
    )
}


def _store() -> dict[str, Any]:
    store: dict[str, Any] = st.session_state.setdefault(_STORE, {})
    return store


def get(name: str) -> Any:
    """The session's value of a setting (its default until set)."""
    return _store().get(name, SETTINGS[name].default)


def put(name: str, value: Any) -> None:
    _store()[name] = value
    st.session_state.pop(f"w:{name}", None)  # the bound widget picks the new value up on its next draw


def bind(name: str, fallback: Any = None) -> str:
    """The widget key for setting ``name``, seeded with the kept value (or ``fallback`` for none) when not drawn."""
    key = f"w:{name}"
    if key not in st.session_state:
        value = get(name)
        st.session_state[key] = fallback if value is None else value
    return key


def keep(name: str, value: Any, fallback: Any = None) -> Any:
    """Remember a bound widget's value (call after drawing it); returns the value.

    A value equal to ``fallback`` is kept as none, so the link leaves it out and it follows the fallback.
    """
    _store()[name] = None if fallback is not None and value == fallback else value
    return value


def load_from_url() -> list[str]:
    """Seed the store from the address bar once per session; returns a note for each value refused.

    The names the link set are remembered (``from_link``), so defaults never override them.
    """
    refused = []
    given: set[str] = set()
    for setting in SETTINGS.values():
        text = st.query_params.get(setting.url)
        if text is None:
            continue
        try:
            _store()[setting.name] = setting.parse(text)
            given.add(setting.name)
        except (ValueError, TypeError) as err:
            refused.append(f"`{setting.url}` in the link was ignored: {err}")
    st.session_state["_from_link"] = given
    return refused


def from_link(name: str) -> bool:
    """Whether this session's link set ``name`` (so nothing else should override it)."""
    return name in st.session_state.get("_from_link", set())


def sync_url() -> None:
    """Make the address bar show every setting that differs from its default, and nothing else.

    Sent on every run, even when ``st.query_params`` already holds these values: after a move
    to another page the server still holds the previous page's parameters while the browser
    shows none, and a reload would then lose the person's settings and experts. The browser
    changes its address only when the text differs, so this adds no history entries.
    """
    wanted = {}
    for setting in SETTINGS.values():
        value = get(setting.name)
        if value is not None and value != setting.default:
            wanted[setting.url] = str(value)
    st.query_params.from_dict(wanted)


def stop() -> NoReturn:
    """End this run here, as ``st.stop()`` does, with the address bar brought up to date first.

    After ``st.stop()`` Streamlit sends nothing more to the browser, so the frame's own update
    at the end of the run would be lost, and a reload would lose the page's settings.
    """
    sync_url()
    st.stop()
