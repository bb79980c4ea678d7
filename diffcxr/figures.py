"""Figures as PNG bytes: what stages write next to their outputs and log to MLflow."""

from __future__ import annotations

import io
from typing import Any


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (stages run headless, in Ray workers too)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Any, metadata: dict[str, str] | None = None) -> bytes:
    """The figure as PNG bytes (with ``metadata`` text chunks, e.g. the synthetic mark), then closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata=metadata)
    pyplot().close(fig)
    return buf.getvalue()
