"""Plots of a regression model's validation outputs, in the target's own units: predicted
against true, and the residuals against the prediction with their distribution.

A model of several targets gets one panel per target, up to :data:`MAX_TARGETS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import printable
from .canvas import BEST_COLOR, LR_COLOR, TRAIN_COLOR, new_figure, save

MAX_TARGETS = 4  # panels per figure; more targets: the first ones (the title says how many)
MAX_POINTS = 20_000  # scatter points per panel; more rows: an even sample (all rows in the numbers)


def _panels(true: np.ndarray) -> tuple[list[int], str]:
    """The target columns to draw and a note when some are left out."""
    k = true.shape[1]
    shown = list(range(min(k, MAX_TARGETS)))
    return shown, "" if k <= MAX_TARGETS else f" (first {MAX_TARGETS} of {k} targets)"


def _sample(n: int) -> np.ndarray:
    """At most :data:`MAX_POINTS` evenly spaced rows of ``n``."""
    return np.arange(n) if n <= MAX_POINTS else np.linspace(0, n - 1, MAX_POINTS).astype(int)


def _name(true: np.ndarray, j: int, target: str | None) -> str:
    """A panel's target: the column's name for one named target, else "target [j]"."""
    if true.shape[1] == 1:
        return printable(target)[:60] if target else "target"
    return f"target {j + 1}"


def _few_ticks(ax: Any) -> None:
    """At most 5 ticks an axis: values like 1002.5 must not run into each other."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.yaxis.set_major_locator(MaxNLocator(5))


def draw_pred_vs_true(true: np.ndarray, pred: np.ndarray, path: Path, target: str | None = None) -> Path:
    """``pred_vs_true.png``: predicted against true values with the diagonal, and R^2 per target
    (``target``: the one target column's name, for the title).

    Shape:
        true, pred: (n, k).
    """
    shown, extra = _panels(true)
    fig, axes = new_figure(4.6 * len(shown) + 0.4, 4.4, panels=len(shown),
                           margins={"right": 0.95, "left": 0.2 / len(shown)})
    rows = _sample(len(true))
    for ax, j in zip(axes, shown, strict=True):
        _few_ticks(ax)
        t, p = true[:, j], pred[:, j]
        ax.scatter(t[rows], p[rows], s=8, alpha=0.5, color=TRAIN_COLOR, edgecolors="none")
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], color=LR_COLOR, ls=":", lw=1)
        ss = float(np.sum((t - t.mean()) ** 2))
        r2 = 1 - float(np.sum((t - p) ** 2)) / ss if ss > 0 else float("nan")
        name = _name(true, j, target)
        ax.set(xlabel=f"true {name}", ylabel="predicted", title=f"{name}: R\u00b2 {r2:.3f}{extra}")
    return save(fig, path)


def draw_residuals(true: np.ndarray, pred: np.ndarray, path: Path, target: str | None = None) -> Path:
    """``residuals.png``: residuals (true - predicted) against the prediction, and their
    histogram, per target.

    Shape:
        true, pred: (n, k).
    """
    shown, extra = _panels(true)
    margins = {"right": 0.95, "left": 0.2 / len(shown)}
    fig, axes = new_figure(5.0, 6.0, heights=(2, 1), margins={**margins, "bottom": 0.09}) \
        if len(shown) == 1 else new_figure(4.6 * len(shown) + 0.4, 4.4, panels=len(shown), margins=margins)
    rows = _sample(len(true))
    for i, j in enumerate(shown):
        ax = axes[0] if len(shown) == 1 else axes[i]
        res, p = true[:, j] - pred[:, j], pred[:, j]
        ax.scatter(p[rows], res[rows], s=8, alpha=0.5, color=TRAIN_COLOR, edgecolors="none")
        ax.axhline(0, color=LR_COLOR, ls=":", lw=1)
        _few_ticks(ax)
        name = _name(true, j, target)
        ax.set(ylabel="true - predicted", title=f"{name}: residuals (mean {res.mean():.3g}, "
                                                  f"sd {res.std():.3g}){extra}")
        if len(shown) == 1:  # room for the distribution below the one panel
            axes[1].hist(res, bins=min(50, max(5, len(res) // 5)), color=BEST_COLOR, alpha=0.6)
            axes[1].set(xlabel="residual", ylabel="rows")
            _few_ticks(axes[1])
        ax.set_xlabel("predicted")
    return save(fig, path)
