"""matplotlib without a display, figures straight to PNG bytes (they go to the store)."""

from __future__ import annotations

import io
from typing import Any


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    pyplot().close(fig)
    return buf.getvalue()


# one colour per model everywhere, so a reader matches curves across plots
COLOURS = {"dft": "black", "teacher": "tab:blue", "student": "tab:orange"}


def colour(name: str) -> str | None:
    return COLOURS.get(name)
