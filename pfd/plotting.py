"""matplotlib without a display, figures straight to PNG bytes.

Every plot pfd makes goes to the store or into a markdown artifact as bytes, never to a
screen, and a worker has no display: one place selects the Agg backend and closes
figures so that long runs do not accumulate them.
"""

from __future__ import annotations

import io
from typing import Any


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig: Any, dpi: float | None = None) -> bytes:
    """The figure as PNG bytes (tight layout), then closed."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", **({"dpi": dpi} if dpi else {}))
    pyplot().close(fig)
    return buf.getvalue()
