"""Figures without pyplot: a fresh :class:`matplotlib.figure.Figure` on the Agg canvas per plot,
rendered to PNG bytes and written atomically. No global figure state exists, so nothing leaks
between plots, threads or runs, and no display is ever needed.

matplotlib is imported here, when the first figure is made: ``import nnfit`` and every command
that draws nothing stay free of it (about 0.3 s).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ..files import atomic_write_bytes

DPI = 100  # with the sizes below: 640x400 px for one panel, small enough for a report
MARGINS = {"left": 0.11, "right": 0.88, "bottom": 0.12, "top": 0.9, "wspace": 0.3, "hspace": 0.45}
TRAIN_COLOR, VAL_COLOR, LR_COLOR, BEST_COLOR = "#1f77b4", "#ff7f0e", "#7f7f7f", "#d62728"


def new_figure(width: float = 6.4, height: float = 4.0, panels: int = 1,
               heights: tuple[float, ...] | None = None,
               margins: dict[str, float] | None = None) -> tuple[Any, list[Any]]:
    """A figure of ``width`` x ``height`` inches with ``panels`` axes side by side, or, with
    ``heights``, one axes above the other in these proportions; ``margins`` override
    :data:`MARGINS` (``subplots_adjust`` fractions).

    Returns:
        ``(figure, [axes, ...])``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Fixed margins, not a layout engine: constrained or tight layout measures every text
    # twice and took half of the plotting time (0.5 s of 1 s for a wine run).
    fig = Figure(figsize=(width, height), dpi=DPI)
    fig.subplots_adjust(**{**MARGINS, **(margins or {})})
    FigureCanvasAgg(fig)
    if heights is not None:
        axes = fig.subplots(len(heights), 1, squeeze=False, height_ratios=heights)[:, 0]
    else:
        axes = fig.subplots(1, panels, squeeze=False)[0]
    return fig, list(axes)


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def save(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically (nothing half-written on a crash)."""
    atomic_write_bytes(path, png_bytes(fig))
    return Path(path)


def note(ax: Any, text: str) -> None:
    """A grey note in the middle of ``ax`` (an empty panel says why it is empty)."""
    ax.text(0.5, 0.5, text, ha="center", va="center", color="#555555", transform=ax.transAxes,
            wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
