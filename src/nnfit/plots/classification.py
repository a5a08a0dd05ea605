"""Plots of a classifier's validation outputs: the confusion matrix (counts and normalised),
ROC and precision-recall curves (one-vs-rest for multiclass) and a calibration curve.

The curves are computed here with NumPy (sorting the scores once), not scikit-learn: its
metrics module takes about half a second to import, the whole plotting budget of a small run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .canvas import BEST_COLOR, LR_COLOR, new_figure, save

MAX_CONFUSION_CLASSES = 30  # beyond: the most frequent classes only (cells stay readable)
MAX_ANNOTATED = 20  # counts written into the cells up to this many classes (the figure grows)
MIN_CELL_FONT = 6.0  # points: a smaller number is not read, the colour bar says it instead
MAX_CURVES = 10  # one-vs-rest curves drawn per class up to this many classes; micro-average always


def confusion_counts(true: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` x ``n`` matrix of counts, rows the true class, columns the predicted one.

    Example:
        >>> confusion_counts(np.array([0, 1, 1]), np.array([0, 0, 1]), 2).tolist()
        [[1, 0], [1, 1]]
    """
    return np.bincount(true * n + pred, minlength=n * n).reshape(n, n)


def draw_confusion(true: np.ndarray, pred: np.ndarray, classes: list, path: Path) -> Path:
    """``confusion.png``: counts and row-normalised (recall per class) side by side; over
    :data:`MAX_CONFUSION_CLASSES` classes, the most frequent ones in validation only."""
    n = len(classes)
    counts = confusion_counts(true, pred, n)
    shown = np.arange(n)
    title = ""
    if n > MAX_CONFUSION_CLASSES:
        shown = np.sort(np.argsort(-counts.sum(axis=1), kind="stable")[:MAX_CONFUSION_CLASSES])
        title = f" ({MAX_CONFUSION_CLASSES} most frequent of {n} classes)"
    sub = counts[np.ix_(shown, shown)]
    totals = counts.sum(axis=1)[shown, None]  # a row's share among all of its class's rows
    norm = np.divide(sub, totals, out=np.zeros(sub.shape, dtype=float), where=totals > 0)
    names = [_short(classes[i]) for i in shown]
    side = 4.2 if len(shown) <= 10 else min(8.0, 4.2 + 0.25 * (len(shown) - 10))  # cells keep a size
    width = max(len(n) for n in names)  # room below and left for the longest label
    room = min(0.35, 0.08 + 0.011 * width * (4.2 / side))
    fig, axes = new_figure(2 * side + 0.8, side + 0.4, panels=2,
                           margins={"left": room * 0.5, "bottom": room, "right": 0.97, "wspace": 0.35})
    panels = ((axes[0], sub, "counts", "d"), (axes[1], norm, "normalised by true class", ".2f"))
    for ax, values, what, fmt in panels:
        image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if fmt != "d" else max(1, values.max()))
        ax.set_title(what + title, fontsize="medium")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ticks = np.arange(len(shown))
        size = "small" if len(shown) <= 10 else "x-small"
        ax.set_xticks(ticks, names, rotation=90 if len(shown) > 6 else 0, fontsize=size)
        ax.set_yticks(ticks, names, fontsize=size)
        if not _annotate(fig, ax, values, fmt):  # no numbers in the cells: a colour bar reads them
            fig.colorbar(image, ax=ax, shrink=0.8)
    return save(fig, path)


def _annotate(fig: Any, ax: Any, values: np.ndarray, fmt: str) -> bool:
    """Write each cell's value in it, in a font that fits the cell (its longest number's
    width); False, writing nothing, when that font would be too small to read or there are
    more than :data:`MAX_ANNOTATED` classes."""
    n = len(values)
    if n == 0 or n > MAX_ANNOTATED:
        return False
    ax.apply_aspect()  # the square cells' size as drawn
    box = ax.get_position()
    cell = min(box.width * fig.get_figwidth(), box.height * fig.get_figheight()) * 72 / n
    chars = max(len(format(v, fmt)) for v in values.ravel())
    font = min(10.0, 0.8 * cell / (0.65 * max(chars, 2)))  # a digit is about 0.6 em wide
    if font < MIN_CELL_FONT:
        return False
    top = values.max()
    for (r, c), v in np.ndenumerate(values):
        ax.text(c, r, format(v, fmt), ha="center", va="center", fontsize=font,
                color="white" if top and v > top / 2 else "black")
    return True


def _short(label: Any, width: int = 14) -> str:
    """A class label for a tick: long ones shortened with an ellipsis."""
    s = str(label)
    return s if len(s) <= width else s[:width - 1] + "\u2026"


def roc_points(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold, from (0, 0) to (1, 1).

    Example:
        >>> fpr, tpr = roc_points(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
        >>> fpr.tolist(), tpr.tolist()
        ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    tp, fp = _cumulative(y, score)
    return (np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)])


def pr_points(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision at every distinct threshold (highest threshold first), starting at
    recall 0 with the first point's precision."""
    tp, fp = _cumulative(y, score)
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / max(tp[-1], 1)
    return np.r_[0.0, recall], np.r_[precision[:1], precision]


def _cumulative(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives counted down the scores, one point per distinct score."""
    order = np.argsort(-score, kind="stable")
    s, hit = score[order], y[order].astype(np.float64)
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # the last row of each distinct score
    tp = np.cumsum(hit)[last]
    return tp, (last + 1) - tp


def area(x: np.ndarray, y: np.ndarray) -> float:
    """The trapezoid area under the points ``(x, y)``."""
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def _one_vs_rest(true: np.ndarray, proba: np.ndarray,
                 classes: list) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, is_class, score)`` per curve: the positive class for binary; each class present
    in validation (up to :data:`MAX_CURVES` classes) and the micro-average for multiclass."""
    n = proba.shape[1]
    if n == 2:
        return [(str(classes[1]), true == 1, proba[:, 1])]
    onehot = true[:, None] == np.arange(n)[None, :]
    curves = []
    if n <= MAX_CURVES:
        curves = [(_short(classes[c]), onehot[:, c], proba[:, c]) for c in range(n) if onehot[:, c].any()]
    return curves + [("micro-average", onehot.ravel(), proba.ravel())]


def draw_roc(true: np.ndarray, proba: np.ndarray, classes: list, path: Path) -> Path:
    """``roc.png``: ROC curves with their AUC (one-vs-rest for multiclass)."""
    fig, (ax,) = new_figure(5.6, 4.8, margins={"right": 0.95})
    for name, y, score in _one_vs_rest(true, proba, classes):
        if y.all() or not y.any():  # one class only: no curve exists
            continue
        fpr, tpr = roc_points(y, score)
        ax.plot(fpr, tpr, lw=2 if name == "micro-average" else 1.2,
                label=f"{name} (AUC {area(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], color=LR_COLOR, ls=":", lw=1, label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.02),
           title="ROC" + (" (one-vs-rest)" if proba.shape[1] > 2 else ""))
    ax.legend(fontsize="x-small", loc="lower right")
    return save(fig, path)


def draw_pr(true: np.ndarray, proba: np.ndarray, classes: list, path: Path) -> Path:
    """``pr.png``: precision-recall curves with their average precision (one-vs-rest for
    multiclass), and each curve's base rate (a classifier that guesses)."""
    fig, (ax,) = new_figure(5.6, 4.8, margins={"right": 0.95})
    for name, y, score in _one_vs_rest(true, proba, classes):
        if not y.any():
            continue
        recall, precision = pr_points(y, score)
        ap = float(np.sum(np.diff(recall) * precision[1:]))  # step-wise, as average precision is
        ax.plot(recall, precision, lw=2 if name == "micro-average" else 1.2,
                label=f"{name} (AP {ap:.3f}, base {y.mean():.2f})", drawstyle="steps-post")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02),
           title="precision-recall" + (" (one-vs-rest)" if proba.shape[1] > 2 else ""))
    ax.legend(fontsize="x-small", loc="lower left")
    return save(fig, path)


def draw_calibration(true: np.ndarray, proba: np.ndarray, path: Path, bins: int = 10) -> Path:
    """``calibration.png``: observed frequency against predicted probability in ``bins``
    equal-width bins (binary: of the positive class; multiclass: of the predicted class, i.e.
    accuracy against confidence), with the rows per bin below."""
    if proba.shape[1] == 2:
        score, hit, what = proba[:, 1], (true == 1), "predicted probability of the positive class"
    else:
        score, hit, what = proba.max(axis=1), (proba.argmax(axis=1) == true), "confidence (top class)"
    which = np.minimum((score * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    mean_score = np.bincount(which, weights=score, minlength=bins) / np.maximum(count, 1)
    observed = np.bincount(which, weights=hit.astype(float), minlength=bins) / np.maximum(count, 1)
    used = count > 0
    fig, (ax, hist) = new_figure(5.6, 5.6, heights=(3, 1), margins={"right": 0.95, "bottom": 0.09})
    ax.plot([0, 1], [0, 1], color=LR_COLOR, ls=":", lw=1, label="perfectly calibrated")
    ax.plot(mean_score[used], observed[used], marker="o", color=BEST_COLOR, label="model")
    ece = float(np.sum(count * np.abs(mean_score - observed)) / max(count.sum(), 1))
    ax.set(xlim=(0, 1), ylim=(0, 1.02), ylabel="observed frequency",
           title=f"calibration (expected calibration error {ece:.3f})")
    ax.legend(fontsize="small", loc="upper left")
    hist.bar((np.arange(bins) + 0.5) / bins, count, width=1 / bins, color="#9ecae1", edgecolor="white")
    hist.set(xlim=(0, 1), xlabel=what, ylabel="rows")
    return save(fig, path)
