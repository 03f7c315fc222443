"""Small view helpers: progress with an ETA, token highlights, word diffs."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import streamlit as st

from aura_core.analysis.firing import Baselines, unit_baselines
from aura_core.analysis.neurons import TokenActivations
from aura_core.method.registry import method_label
from aura_core.method.stats import TOXIC_THRESHOLD
from aura_core.runtime.flights import Flight
from studio.theme import css_var, shade

T = TypeVar("T")


class ProgressWithETA:
    """``st.progress`` driven by ``progress(done, total)`` callbacks, with rate and time left."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar = st.progress(0.0, text=label)
        self.started = time.perf_counter()
        self.first_done: int | None = None

    def stage(self, label: str, done: int, total: int) -> None:
        """For runs made of stages: ``progress(stage_label, done, total)`` callbacks."""
        if label != self.label:
            self.label = label
            self.first_done = None
        self(done, total)

    def __call__(self, done: int, total: int) -> None:
        if self.first_done is None:
            self.first_done = done  # work resumed from the cache does not count towards the rate
            self.started = time.perf_counter()
        elapsed = time.perf_counter() - self.started
        fresh = done - self.first_done
        if fresh > 0 and done < total:
            left = elapsed / fresh * (total - done)
            text = f"{self.label}: {done}/{total} · {fresh / elapsed:.1f}/s · about {left:.0f} s left"
        else:
            text = f"{self.label}: {done}/{total}"
        self.bar.progress(min(1.0, done / max(total, 1)), text=text)


def _joins(left: str, right: str) -> bool:
    """Whether piece ``right`` continues the word that ``left`` ends (no space between, letters on both sides)."""
    return bool(left) and bool(right) and left[-1].isalnum() and right[0].isalnum()


def word_at(pieces: Sequence[str], index: int) -> str:
    """The whole word that piece ``index`` is part of: sub-word pieces joined as the highlight shows them.

    >>> word_at(["You", " are", " an", " id", "iot", "!"], 4), word_at(["It", " is", " fine"], 2)
    ('idiot', 'fine')
    """
    start = stop = index
    while start > 0 and _joins(pieces[start - 1], pieces[start]):
        start -= 1
    while stop + 1 < len(pieces) and _joins(pieces[stop], pieces[stop + 1]):
        stop += 1
    return "".join(pieces[start : stop + 1]).strip() or pieces[index]  # a space or a line break stays itself


def vocabulary_word(text: str, kind: str) -> str:
    """A vocabulary entry as a reader takes it: a word's start or a piece of one, marked with "…" where the word goes on.

    A token is a single entry of the vocabulary, so it cannot be joined to neighbours; the mark
    says that "taxpay" begins a longer word and "ardships" ends one.

    >>> vocabulary_word("␣taxpay", "word start"), vocabulary_word("ardships", "word piece"), vocabulary_word("!", "symbol")
    ('taxpay…', '…ardships', '!')
    """
    word = text.removeprefix("␣")
    if kind == "word start":
        return f"{word}…"
    if kind == "word piece":
        return f"…{word}"
    return text


def token_highlight_html(acts: TokenActivations, scale: float) -> str:
    """The text with each token shaded by the unit's activation; the max token is outlined."""
    pieces = []
    peak = acts.peak
    for index, (token, value) in enumerate(zip(acts.tokens, acts.values, strict=True)):
        alpha = 0.0 if scale <= 0 else max(0.0, min(1.0, value / scale))
        style = f"background: {shade('hot', alpha)}; border-radius: 3px;"
        if index == peak:
            style += f" outline: 2px solid {css_var('toxic')};"
        pieces.append(
            f'<span class="aura-tip" tabindex="0" title="{value:.3f}" data-value="{value:.3f}" style="{style}">'
            f"{inline_html(token)}</span>"
        )
    return "<div style='line-height:1.9; font-family: monospace; white-space: pre-wrap'>" + "".join(pieces) + "</div>"


# Characters Streamlit's Markdown would read as syntax (emphasis, code, links, LaTeX, emoji
# short codes, headings, tables); as character references they are shown as they are.
_MARKDOWN_SYNTAX = {c: f"&#{ord(c)};" for c in "\\`*_{}[]()#+-!|~$:<>"}


def plain_markdown(text: str, limit: int = 300) -> str:
    """A visitor's text (a link value, a file name) shown as written inside Markdown: no links, images or maths.

    >>> print(plain_markdown("[x](http://a) $y$"))
    \\[x\\]\\(http\\://a\\) \\$y\\$
    """
    flat = " ".join(text[:limit].split())
    return _MARKDOWN_SPECIAL.sub(lambda found: "\\" + found.group(1), flat)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def inline_html(text: str) -> str:
    """Text shown exactly as written inside Markdown-rendered HTML, line breaks included.

    Markdown ends an HTML block at a blank line, so a raw newline would push the rest of a
    completion out of its element; ``**word**`` would turn bold and ``$x$`` into maths.

    >>> inline_html("a **b**\\n\\n<c>")
    'a &#42;&#42;b&#42;&#42;<br><br>&#60;c&#62;'
    """
    escaped = "".join(_MARKDOWN_SYNTAX.get(c, html.escape(c)) for c in text.replace("\r\n", "\n"))
    return escaped.replace("\n", "<br>")


def toxicity_badge(score: float) -> str:
    """The score in words, coloured by how toxic it is (the theme's colours)."""
    colour = css_var("toxic" if score > TOXIC_THRESHOLD else ("mild" if score > 0.2 else "clean"))
    return f"<span style='color:{colour}; font-weight:600'>toxicity {score:.3f}</span>"


def side_title(side: str, strength: float) -> str:
    """``Baseline``, or the method's display name with its strength."""
    if side == "baseline":
        return "Baseline"
    name = method_label(side)
    return f"{name} · λ = {strength:.2f}"


def follow_flight(flight: Flight[T], progress: ProgressWithETA, poll_s: float = 0.25) -> T:
    """Show a shared computation's progress until it ends; leaving the page (cancel, refresh) leaves it.

    The computation runs on its own thread: it stops only when every session following it
    has left.
    """
    try:
        while not flight.finished.wait(poll_s):
            progress(flight.done_count, flight.total)
        progress(flight.done_count, flight.total)
        return flight.result()
    finally:
        if not flight.finished.is_set():
            flight.leave()


def shaded_strip_html(pieces: Sequence[tuple[str, float]], scale: float, colour: str, css_class: str = "") -> str:
    """Text pieces shaded by their values (full ``colour``, a theme colour, at ``scale``); a hover or a tap shows each value.

    >>> print(shaded_strip_html([("<b>", 1.0)], 2.0, "hot"))  # doctest: +NORMALIZE_WHITESPACE
    <div class='' style='line-height:1.9; white-space: pre-wrap'><span class='aura-tip' tabindex='0' title='1.000'
    data-value='1.000' style='background: color-mix(in srgb, var(--aura-hot) 50%, transparent); border-radius:
    3px'>&#60;b&#62;</span></div>
    """
    spans = []
    for text, value in pieces:
        alpha = 0.0 if scale <= 0 else value / scale
        style = f"background: {shade(colour, alpha)}; border-radius: 3px"
        spans.append(
            f"<span class='aura-tip' tabindex='0' title='{value:.3f}' data-value='{value:.3f}' style='{style}'>"
            f"{inline_html(text)}</span>"
        )
    return (
        f"<div class='{html.escape(css_class, quote=True)}' style='line-height:1.9; white-space: pre-wrap'>{''.join(spans)}</div>"
    )


_STRIP_JS = """
export default function (component) {
  const { data, parentElement, setStateValue } = component;
  let strip = parentElement.querySelector(".aura-strip");
  if (!strip) {
    strip = document.createElement("div");
    strip.className = "aura-strip";
    parentElement.appendChild(strip);
  }
  strip.replaceChildren();
  const tokens = (data && data.tokens) || [];
  tokens.forEach((token, index) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "aura-token" + (index === data.selected ? " aura-selected" : "");
    button.textContent = token.text;  // text, never markup: whatever was typed stays text
    button.title = token.title;
    button.dataset.index = String(index);
    button.style.background = "color-mix(in srgb, var(--aura-hot) " + Math.round(Math.min(1, Math.max(0, token.alpha)) * 100) + "%, transparent)";
    button.addEventListener("click", () => setStateValue("selected", index));
    strip.appendChild(button);
  });
}
"""
_STRIP_CSS = """
.aura-strip { font-family: ui-monospace, monospace; font-size: 1rem; line-height: 2.2; white-space: pre-wrap; }
.aura-token { font: inherit; color: inherit; white-space: pre-wrap; border: 1px solid transparent; border-radius: 3px;
  padding: 0; margin: 0; cursor: pointer; }
.aura-token:hover { border-color: var(--aura-muted); }
.aura-selected { outline: 2px solid var(--aura-toxic); }
"""


def _strip_component() -> Any:
    # Registered on every use: an equal definition registers silently, and each server
    # (or test runtime) has its own registry.
    return st.components.v2.component("aura_token_strip", js=_STRIP_JS, css=_STRIP_CSS)


def token_strip(tokens: Sequence[str], scores: Sequence[float], selected: int, key: str) -> int:
    """A strip of clickable tokens shaded by their scores; returns the index of the token last clicked.

    Each token is a button whose label is set as text in the browser, so nothing typed can
    become markup. Until a click, ``selected`` is the answer.
    """
    scale = max([*scores, 0.0])
    data = {
        "tokens": [
            {"text": text, "title": f"score {score:.2f}", "alpha": round(0.0 if scale <= 0 else max(0.0, score) / scale, 3)}
            for text, score in zip(tokens, scores, strict=True)
        ],
        "selected": selected,
    }
    result = _strip_component()(data=data, key=key, default={"selected": selected}, on_selected_change=lambda: None)
    chosen = result.get("selected") if result is not None else None
    return chosen if isinstance(chosen, int) and 0 <= chosen < len(tokens) else selected


@st.cache_resource(show_spinner="Reading the experts' responses…", max_entries=4)
def _baselines(key: str, _experts: Any) -> Baselines:
    return unit_baselines(_experts.responses)


def expert_baselines(experts: Any) -> Baselines:
    """τ and p of every unit of these experts (``SessionExperts``), computed once per server."""
    return _baselines(experts.key, experts)
