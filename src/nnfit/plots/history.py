"""Plots from a run's history alone: the loss curves with the learning rate, the monitored
metric with its best epoch, and the validation curves of several runs (``nnfit runs compare``).

A history is a list of per-epoch records (``History.records``, or the rows of ``history.csv``);
a value may be missing (no validation data) or NaN (a diverged epoch): those points are left
out of a line, never drawn as zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..metrics import metric_direction
from .canvas import BEST_COLOR, LR_COLOR, TRAIN_COLOR, VAL_COLOR, new_figure, note, save


def series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """``(epochs, values)`` of ``key``, leaving out epochs where it is missing or not finite.

    Example:
        >>> series([{"epoch": 1, "a": 0.5}, {"epoch": 2, "a": float("nan")}, {"epoch": 3}], "a")
        ([1], [0.5])
    """
    epochs, values = [], []
    for i, r in enumerate(records):
        v = _number(r.get(key))
        if v is not None and math.isfinite(v):
            epochs.append(_epoch(r.get("epoch"), i + 1))
            values.append(v)
    return epochs, values


def _epoch(v: Any, position: int) -> int:
    """A record's epoch; ``position`` (1-based) where it is missing or no whole number (a
    damaged history.csv: the plots still draw, ``nnfit runs compare`` refuses it)."""
    e = _number(v)
    return int(e) if e is not None and math.isfinite(e) and e == int(e) else position


def _number(v: Any) -> float | None:
    """A record's value as a float (history.csv holds text), or None when it is not one."""
    if v is None or v == "" or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def best_epoch(records: Sequence[dict[str, Any]], monitor: str) -> tuple[int, float] | None:
    """The epoch with the best finite ``monitor`` value (the first of ties) and that value."""
    epochs, values = series(records, monitor)
    if not values:
        return None
    sign = 1.0 if metric_direction(monitor) == "min" else -1.0
    i = min(range(len(values)), key=lambda j: sign * values[j])
    return epochs[i], values[i]


def draw_loss(records: Sequence[dict[str, Any]], path: Path, ylabel: str = "loss") -> Path:
    """``loss.png``: training and validation loss per epoch (log scale when they span more than
    a factor of 100), the learning rate on a second axis."""
    # the right margin holds the learning rate's tick labels and its axis label
    fig, (ax,) = new_figure(margins={"right": 0.83})
    drawn = []
    for key, label, color in (("train_loss", "train", TRAIN_COLOR), ("val_loss", "validation", VAL_COLOR)):
        x, y = series(records, key)
        if y:
            ax.plot(x, y, marker="o" if len(x) < 30 else None, ms=3, label=label, color=color)
            drawn += y
    if not drawn:
        note(ax, "no finite loss was logged")
        return save(fig, path)
    if min(drawn) > 0 and max(drawn) / min(drawn) > 100:
        _log_scale(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    lines, labels = ax.get_legend_handles_labels()
    x, lr = series(records, "lr")
    if lr:
        ax2 = ax.twinx()
        ax2.plot(x, lr, color=LR_COLOR, ls="--", lw=1, label="learning rate")
        ax2.set_ylabel("learning rate", color=LR_COLOR)
        if min(lr) > 0 and max(lr) / min(lr) > 100:
            _log_scale(ax2)
        elif min(lr) == max(lr):  # a constant rate: a flat line at its value, not a zoom on noise
            ax2.set_ylim(0, 2 * max(lr) or 1)
        more = ax2.get_legend_handles_labels()
        lines, labels = lines + more[0], labels + more[1]
    ax.legend(lines, labels, loc="upper right", fontsize="small")
    ax.set_title("loss")
    _integer_epochs(ax)
    return save(fig, path)


def draw_metric(records: Sequence[dict[str, Any]], monitor: str, path: Path) -> Path:
    """``metric.png``: the monitored metric per epoch, its best epoch marked."""
    fig, (ax,) = new_figure()
    x, y = series(records, monitor)
    if not y:
        note(ax, f"{monitor}: no finite value was logged")
        return save(fig, path)
    ax.plot(x, y, marker="o" if len(x) < 30 else None, ms=3, color=VAL_COLOR, label=monitor)
    best = best_epoch(records, monitor)
    assert best is not None
    ax.axvline(best[0], color=BEST_COLOR, ls=":", lw=1)
    ax.plot([best[0]], [best[1]], marker="*", ms=14, color=BEST_COLOR, ls="",
            label=f"best {best[1]:.4g} (epoch {best[0]})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(monitor)
    ax.set_title(f"{monitor} ({'lower' if metric_direction(monitor) == 'min' else 'higher'} is better)")
    ax.legend(fontsize="small")
    _integer_epochs(ax)
    return save(fig, path)


def draw_overlay(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]], key: str, path: Path) -> Path:
    """The ``key`` curve (validation loss) of several runs in one plot, one line per run
    named by its label; a run without the value is named in the legend as such."""
    fig, (ax,) = new_figure(7.2, 4.4)
    for label, records in runs:
        x, y = series(records, key)
        if y:
            ax.plot(x, y, marker="o" if len(x) < 30 else None, ms=3, label=label)
        else:
            ax.plot([], [], label=f"{label} (no {key})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(key)
    ax.set_title(f"{key} per epoch")
    ax.legend(fontsize="small")
    _integer_epochs(ax)
    return save(fig, path)


def _log_scale(ax: Any) -> None:
    """A log y axis labelled in plain numbers (0.001, not 10^-3): matplotlib's default labels
    are mathtext, whose parser costs 0.05 s to build in every process that draws one."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _integer_epochs(ax: Any) -> None:
    """Epoch ticks at whole numbers only (one epoch would otherwise show 0.96 ... 1.04)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
