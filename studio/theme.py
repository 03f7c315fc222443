"""The app's own colours, as CSS variables that follow the theme Streamlit shows (light or dark).

Streamlit sets ``color-scheme`` on the app's root from its active theme (the visitor's system
setting, or the one chosen in the app menu), so ``light-dark()`` picks each colour for the
theme on screen, with no rerun. HTML the app writes itself (completions, token strips,
badges) names these variables, never a literal colour.

>>> "--aura-toxic" in THEME_CSS and css_var("toxic")
'var(--aura-toxic)'
>>> shade("hot", 0.5)
'color-mix(in srgb, var(--aura-hot) 50%, transparent)'
"""

from __future__ import annotations

import streamlit as st

__all__ = ["COLOURS", "THEME_CSS", "css_var", "draw_theme", "shade"]

# name → (on a light background, on a dark one); each pair reads at WCAG AA on its background.
COLOURS: dict[str, tuple[str, str]] = {
    "toxic": ("#c62828", "#ff7b72"),  # scores above the threshold, the outlined peak token
    "mild": ("#a85400", "#ffa94d"),  # scores between 0.2 and the threshold
    "clean": ("#1b7a1b", "#6fdc7f"),  # scores below 0.2
    "hot": ("#d62728", "#ff5a55"),  # shading of a unit's activation (mixed with transparency)
    "cool": ("#2ca02c", "#4cd964"),  # shading of what an intervention removed
    "muted": ("#5f6b64", "#a3b1a8"),  # secondary text and borders
}

# Below this width a page shows the containers keyed aura-title and aura-results before the rest (its settings).
NARROW_PX = 640

THEME_CSS = (
    ":root {\n"
    + "".join(f"  --aura-{name}: light-dark({light}, {dark});\n" for name, (light, dark) in COLOURS.items())
    + "}\n"
    # A tapped piece of text shows the value a mouse would see on hover (touch has no hover).
    + ".aura-tip:focus { outline: 1px dashed var(--aura-muted); }\n"
    + ".aura-tip:focus::after { content: ' ' attr(data-value); font-size: 0.8em; color: var(--aura-muted); }\n"
    + f"@media (max-width: {NARROW_PX}px) {{\n"
    # A keyed container sits in a layout wrapper, the item of its parent's flex column.
    + "  :has(> .st-key-aura-results), .st-key-aura-results { order: -1; }\n"
    + "  :has(> .st-key-aura-title), .st-key-aura-title { order: -2; }\n"
    + "}\n"
)


def css_var(name: str) -> str:
    """The CSS reference to one of :data:`COLOURS`."""
    if name not in COLOURS:
        raise KeyError(f"no theme colour {name!r}: use one of {', '.join(COLOURS)}")
    return f"var(--aura-{name})"


def shade(name: str, alpha: float) -> str:
    """A theme colour at ``alpha`` (0 transparent … 1 full), over whatever background the theme has."""
    percent = round(max(0.0, min(1.0, float(alpha))) * 100)
    return f"color-mix(in srgb, {css_var(name)} {percent}%, transparent)"


def draw_theme() -> None:
    """Put the variables on the page (once per run, before anything names them); it takes no space."""
    st.html(f"<style>{THEME_CSS}</style>")
