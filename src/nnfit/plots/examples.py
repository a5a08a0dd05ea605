"""The worst examples of validation: the rows with the largest losses, listed in ``worst.csv``
(their rows in the data the user gave, true value, prediction, loss) and, for image data,
shown in ``worst.png`` with their true and predicted labels.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import atomic_write_text
from .canvas import BEST_COLOR, new_figure, save
from .outputs import ValidationOutputs, worst_order

WORST_ROWS = 50  # rows of worst.csv
WORST_IMAGES = 16  # images of worst.png (4 x 4)


def answers(v: ValidationOutputs) -> tuple[list[list[Any]], list[list[Any]], list[str]]:
    """True values and predictions per row, as the columns of ``worst.csv`` hold them, and
    those columns' names: labels for a classifier, values in the target's units for
    regression (one column per target), and a short text of a custom model's values."""
    from ..tasks import ClassificationTask, RegressionTask

    task = v.task
    if isinstance(task, ClassificationTask):
        proba = task.proba(v.outputs.float())
        true = task.labels.decode(v.target.long().numpy())
        pred = task.labels.decode(proba.argmax(dim=1).numpy())
        return [[t] for t in true.tolist()], [[p] for p in pred.tolist()], ["true", "predicted"]
    if isinstance(task, RegressionTask) and isinstance(v.outputs, torch.Tensor):
        pred, true = (t.numpy() for t in task.metric_inputs(v.outputs, v.target))
        true = true[:, :pred.shape[1]]  # a forecast's target also holds its baselines
        k = pred.shape[1]
        names = ["true", "predicted"] if k == 1 else (
            [f"true_{j + 1}" for j in range(k)] + [f"predicted_{j + 1}" for j in range(k)])
        return true.tolist(), pred.tolist(), names
    pred = v.outputs if isinstance(v.outputs, torch.Tensor) else None
    true_cells = [[_cell(t)] for t in v.target]
    pred_cells = [[_cell(p)] for p in pred] if pred is not None else [[""] for _ in true_cells]
    return true_cells, pred_cells, ["true", "predicted"]


def _cell(t: torch.Tensor) -> Any:
    """A custom model's row as one CSV cell: a number, a few numbers, or their count."""
    flat = t.reshape(-1).tolist()
    if len(flat) == 1:
        return flat[0]
    return " ".join(repr(x) for x in flat) if len(flat) <= 8 else f"({len(flat)} values)"


def write_worst_csv(v: ValidationOutputs, path: Path) -> list[int]:
    """Write ``worst.csv``: the :data:`WORST_ROWS` validation rows with the largest losses,
    largest first; returns their positions in the validation data.

    Columns: ``row`` (0-based position in the data the user gave; ``val_row``, the position
    in the validation data, where the data has no rows of its own), ``path`` for image files,
    the true value(s), the prediction(s) and ``loss``.
    """
    assert v.losses is not None
    order = worst_order(v.losses, WORST_ROWS).tolist()
    true, pred, names = answers(v)
    key_names = ["row" if "row" in v.keys else "val_row", *(["path"] if "path" in v.keys else [])]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*key_names, *names, "loss"])
    for i in order:
        keys = [int(v.keys["row"][i]) if "row" in v.keys else i,
                *([str(v.keys["path"][i])] if "path" in v.keys else [])]
        w.writerow([*keys, *(_text(x) for x in true[i] + pred[i]), _text(float(v.losses[i]))])
    atomic_write_text(path, buf.getvalue())
    return order


def _text(x: Any) -> Any:
    """Floats with every digit (``repr``), NaN as ``nan``; anything else as it is."""
    if isinstance(x, float):
        return "nan" if math.isnan(x) else repr(x)
    return x


def draw_worst_images(v: ValidationOutputs, order: list[int], path: Path) -> Path:
    """``worst.png``: the images of the largest losses (up to :data:`WORST_IMAGES`), each
    titled with its true and predicted value and its loss."""
    assert v.pixels is not None and v.losses is not None
    shown = order[:WORST_IMAGES]
    true, pred, _ = answers(v)
    cols = min(4, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, _ = new_figure(2.3 * cols, 2.5 * rows, panels=1,
                        margins={"left": 0.02, "right": 0.98, "bottom": 0.02, "top": 0.86, "hspace": 0.6})
    fig.clf()
    for n, i in enumerate(shown):
        ax = fig.add_subplot(rows, cols, n + 1)
        image = _displayable(v.pixels[i])
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1,  # not per image
                  interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"true {_label(true[i])}\npred {_label(pred[i])}\nloss {v.losses[i]:.3g}",
                     fontsize="small", color=BEST_COLOR if true[i] != pred[i] else "black")
    return save(fig, path)


def _label(cells: list[Any]) -> str:
    """A row's value(s) for an image title."""
    return ", ".join(f"{c:.3g}" if isinstance(c, float) else str(c)[:16] for c in cells)


def _displayable(image: torch.Tensor) -> np.ndarray:
    """One (C, H, W) image as matplotlib shows it: (H, W) grey or (H, W, 3) RGB in 0..1; a
    float image scaled to its own range; other channel counts show their first channel."""
    x = image.double()
    x = x / 255.0 if image.dtype == torch.uint8 else (x - x.min()) / max(float(x.max() - x.min()), 1e-12)
    if x.shape[0] == 3:
        return x.permute(1, 2, 0).numpy()
    return x[0].numpy()
