"""Side-by-side completions shown as pairs: sample j of one side beside sample j of the other.

Both sides of a pair draw the same random numbers, so their texts agree until the
intervention first changes a token; after that they are two different continuations, and
marking their differing words would mark everything. The pair therefore shows the words both
texts share, up to where they part, faded, and each text's own continuation as it is.

>>> shared_words("You are a good friend", "You are a bad one")
3
>>> shared_words("same", "same")
1
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from studio.view import inline_html, side_title, toxicity_badge

__all__ = ["draw_pairs", "parted_html", "shared_words"]

ORDERS = {"by sample": None, "most toxic first": "max", "largest change first": "change"}


def shared_words(left: str, right: str) -> int:
    """How many words, from the start, both texts share (split on spaces, as written)."""
    count = 0
    for a, b in zip(left.split(" "), right.split(" "), strict=False):
        if a != b:
            break
        count += 1
    return count


def parted_html(text: str, shared: int) -> str:
    """``text`` with its first ``shared`` words faded (what the other side wrote too), the rest as written."""
    words = text.split(" ")
    common, own = " ".join(words[:shared]), " ".join(words[shared:])
    faded = f"<span class='aura-shared' style='opacity:0.55'>{inline_html(common)}</span>" if common else ""
    gap = " " if common and own else ""
    return f"<span class='aura-completion' style='white-space: pre-wrap'>{faded}{gap}{inline_html(own)}</span>"


def _ordered(frame: pd.DataFrame, sides: list[str], order: str) -> list[int]:
    wide = frame.pivot(index="sample", columns="side", values="toxicity")[sides]
    how = ORDERS[order]
    if how == "max":
        return list(wide.max(axis=1).sort_values(ascending=False, kind="stable").index)
    if how == "change":
        return list((wide[sides[0]] - wide[sides[1]]).abs().sort_values(ascending=False, kind="stable").index)
    return list(wide.index)


def draw_pairs(frame: pd.DataFrame, strength: float, *, key: str = "pairs") -> None:
    """Every sample as a pair (both sides' text, each with its score), all at once or one at a time."""
    sides = list(dict.fromkeys(frame.side))
    n = int((frame.side == sides[0]).sum())
    samples = _ordered(frame, sides, "by sample")
    if n > 1:  # one pair has no order and nothing to step through
        controls = st.columns([2, 2, 3])
        one_at_a_time = controls[0].toggle(
            "One pair at a time", key=f"{key}_one", help="For a projector: step through the pairs."
        )
        order = controls[1].selectbox("Order", list(ORDERS), key=f"{key}_order", label_visibility="collapsed")
        samples = _ordered(frame, sides, order)
        if one_at_a_time:
            position = controls[2].number_input(f"Pair (of {n})", 1, n, key=f"{key}_at", label_visibility="collapsed")
            samples = [samples[int(position) - 1]]
    by_key = frame.set_index(["side", "sample"])
    heads = st.columns(2)
    for column, side in zip(heads, sides, strict=True):
        column.markdown(f"**{side_title(side, strength)}**")
    for sample in samples:
        texts = [str(by_key.loc[(side, sample), "completion"]) for side in sides]
        scores = [float(by_key.loc[(side, sample), "toxicity"]) for side in sides]
        shared = shared_words(*texts)
        columns = st.columns(2)
        for column, text, score in zip(columns, texts, scores, strict=True):
            with column, st.container(border=True):
                st.markdown(
                    f"{toxicity_badge(score)} · sample {int(sample) + 1}<br>{parted_html(text, shared)}", unsafe_allow_html=True
                )
