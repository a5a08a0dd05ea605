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
from .outputs import ValidationOutputs, user_target, worst_order

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
        pred, true = _regression(v)
        k = pred.shape[1]
        names = ["true", "predicted"] if k == 1 else (
            [f"true_{j + 1}" for j in range(k)] + [f"predicted_{j + 1}" for j in range(k)])
        return true.tolist(), pred.tolist(), names
    pred = v.outputs if isinstance(v.outputs, torch.Tensor) else None
    true_cells = [[_cell(t)] for t in v.target]
    pred_cells = [[_cell(p)] for p in pred] if pred is not None else [[""] for _ in true_cells]
    return true_cells, pred_cells, ["true", "predicted"]


def _regression(v: ValidationOutputs) -> tuple[np.ndarray, np.ndarray]:
    """A regression's predictions and true values (n, k) in the target's units, the true ones
    as the user gave them where known (:func:`nnfit.plots.outputs.user_target`)."""
    pred, true = (t.numpy() for t in v.task.metric_inputs(v.outputs, v.target))
    return pred, user_target(v, true[:, :pred.shape[1]])  # a forecast's target holds baselines


def worst_losses(v: ValidationOutputs) -> tuple[str, np.ndarray] | None:
    """Each row's loss as ``worst.csv`` shows it and ranks it: ``(column name, losses)``.

    A regression's loss is taken in the target's own units, not the standardised ones it was
    trained on: ``squared_error`` (mse) or ``absolute_error`` (l1, and huber, whose threshold
    holds only in standardised units), averaged over several targets. Every other task's is
    its training loss, ``loss``. None when no loss can be taken per row.
    """
    from ..tasks import RegressionTask

    if isinstance(v.task, RegressionTask) and isinstance(v.outputs, torch.Tensor):
        pred, true = _regression(v)
        diff = np.asarray(true, dtype=np.float64) - pred
        if v.task.loss_name in ("auto", "mse"):
            return "squared_error", np.mean(diff ** 2, axis=1)
        return "absolute_error", np.mean(np.abs(diff), axis=1)
    return None if v.losses is None else ("loss", v.losses)


def _cell(t: torch.Tensor) -> Any:
    """A custom model's row as one CSV cell: a number, a few numbers, or their count."""
    flat = t.reshape(-1).tolist()
    if len(flat) == 1:
        return flat[0]
    return " ".join(repr(x) for x in flat) if len(flat) <= 8 else f"({len(flat)} values)"


def write_worst_csv(v: ValidationOutputs, path: Path) -> list[int]:
    """Write ``worst.csv``: the :data:`WORST_ROWS` validation rows with the largest losses,
    largest first; returns their positions in the validation data.

    Columns: ``row`` (0-based position among the data rows the user gave, a header not
    counted: ``pandas.read_csv(file).iloc[row]``; ``val_row``, the position in the validation
    data, where the data has no rows of its own), ``path`` for image files, a sequence table's
    id column or a series' time column (named as in the data), the true value(s)
    (as the user gave them), the prediction(s) and the loss (:func:`worst_losses`).
    """
    found = worst_losses(v)
    assert found is not None
    loss_name, losses = found
    order = worst_order(losses, WORST_ROWS).tolist()
    true, pred, names = answers(v)
    named = [k for k in v.keys if k not in ("row", "target")]  # path, a sequence id, a time
    key_names = ["row" if "row" in v.keys else "val_row", *named]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*key_names, *names, loss_name])
    for i in order:
        keys = [int(v.keys["row"][i]) if "row" in v.keys else i, *(str(v.keys[k][i]) for k in named)]
        w.writerow([*keys, *(_text(x) for x in true[i] + pred[i]), _text(float(losses[i]))])
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
    found = worst_losses(v)
    assert v.pixels is not None and found is not None
    what, losses = found[0].replace("_", " "), found[1]
    shown = order[:WORST_IMAGES]
    true, pred, _ = answers(v)
    cols = min(4, len(shown))
    rows = math.ceil(len(shown) / cols)
    # 0.6 in above every image holds its three-line title: as fractions of this figure's size
    height, room = 2.5 * rows, 0.6
    panel = (height - room * rows - 0.05) / rows
    fig, _ = new_figure(2.3 * cols, height, panels=1)
    fig.clf()  # the grid below replaces the one panel (clf also resets the margins: set after)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.05 / height, top=1 - room / height,
                        wspace=0.15, hspace=room / panel)
    for n, i in enumerate(shown):
        ax = fig.add_subplot(rows, cols, n + 1)
        image = _displayable(v.pixels[i])
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1,  # not per image
                  interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"true {_label(true[i])}\npred {_label(pred[i])}\n{what} {losses[i]:.3g}",
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
