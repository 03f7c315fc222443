"""The frame runs first: a page that Streamlit started on its own is drawn inside ``app.py``.

Streamlit treats a ``pages/`` folder beside ``app.py`` as its older multipage layout until the
first ``st.navigation`` call, so on a fresh server the first visitor's page would run bare (no
navigation, no shared sidebar, no session setup). ``ensure_frame``, atop ``app.py`` and every
page, turns that layout off and runs ``app.py`` in this same run, which draws the page asked for;
a rerun instead would drop the click that started this run.

>>> callable(ensure_frame)
True
"""

from __future__ import annotations

import runpy
from pathlib import Path

from streamlit.runtime.pages_manager import PagesManager

from studio import settings

APP = Path(__file__).resolve().parents[1] / "app.py"


def ensure_frame() -> None:
    """Draw this run through ``app.py`` if Streamlit started it from the ``pages/`` folder."""
    if not PagesManager.uses_pages_directory:
        return
    PagesManager.uses_pages_directory = False  # as st.navigation sets it: later runs start at app.py
    runpy.run_path(str(APP), run_name="__main__")
    settings.stop()  # the bare run that called us has nothing left to draw
