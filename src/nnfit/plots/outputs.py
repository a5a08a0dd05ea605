"""The validation outputs the plots are drawn from: computed once, after training, in one
ordered pass over the validation data (never inside the loop), with each row's own loss.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.sources import as_source
from ..outputs import cat_outputs, in_order
from ..tasks import ClassificationTask, RegressionTask

# A loss function vmap cannot batch (one reading a value, say) is called row by row: at most
# this many rows, so a large validation set never holds the run's end up for minutes.
MAX_LOOPED_ROWS = 20_000


@dataclass
class ValidationOutputs:
    """The model's outputs on the validation data, row by row, in the data's order.

    Attributes:
        task: the fitted task.
        outputs: raw outputs on the CPU (a tensor, or a custom model's structure).
        target: the encoded targets on the CPU.
        losses: each row's loss (float64), or None when the loss cannot be taken per row.
        keys: the rows' names in the user's data (``row``, ``path``: see ``Prepared.val_keys``).
        pixels: the images (uint8 or float, (n, C, H, W)) for image data, else None.
    """

    task: Any
    outputs: Any
    target: Tensor
    losses: np.ndarray | None
    keys: dict[str, np.ndarray] = field(default_factory=dict)
    pixels: Tensor | None = None

    def __len__(self) -> int:
        return len(self.target)


@torch.inference_mode()
def collect(trainer: Any, model: torch.nn.Module, task: Any, val: Any,
            keys: dict[str, np.ndarray] | None = None) -> ValidationOutputs:
    """Run ``model`` once over ``val`` in order (eval mode, no autograd) and keep its outputs,
    the targets and every row's loss on the CPU.

    Args:
        trainer: the trainer (its runtime's device, ``forward`` and evaluation batch size).
        model: the trained model.
        task: the fitted task.
        val: the validation source, labelled. A source too large for memory (a streamed
            file) bounds the rows read here by a ``plot_rows`` attribute: the first ones.
        keys: the rows' names; dropped when their count is not the rows'.
    """
    source = as_source(val).to(trainer.runtime.device)
    limit = getattr(source, "plot_rows", None)
    outs, targets = in_order(trainer, model, source, limit)
    outs = [o.cpu() if isinstance(o, Tensor) else o for o in outs]
    targets = [t.cpu() for t in targets]
    outputs = torch.cat(outs) if isinstance(outs[0], Tensor) else cat_outputs(outs)
    target = torch.cat(targets)
    if limit is not None:  # the keys of the rows read
        keys = {k: v[:len(target)] for k, v in (keys or {}).items()}
    keys = {k: v for k, v in (keys or {}).items() if len(v) == len(target)}
    pixels = getattr(source, "pixels", None)
    return ValidationOutputs(task, outputs, target, row_losses(task, outputs, target), keys,
                             None if pixels is None else pixels.cpu())


def row_losses(task: Any, outputs: Any, target: Tensor) -> np.ndarray | None:
    """Each row's loss as the task computes a batch's (the batch of that row alone), float64;
    None when the loss cannot be taken per row (a structured output, a function that fails on
    one row)."""
    one = lambda o, t: task.loss(o.unsqueeze(0), t.unsqueeze(0))  # noqa: E731
    if not isinstance(outputs, Tensor):
        return None
    try:
        with warnings.catch_warnings():  # vmap's "no batching rule, slower" notes: not the user's
            warnings.simplefilter("ignore")
            return torch.vmap(one)(outputs, target).double().numpy()
    except Exception:  # a user's loss vmap cannot batch: row by row below
        if isinstance(task, (ClassificationTask, RegressionTask)) or len(target) > MAX_LOOPED_ROWS:
            return None
    try:
        return np.array([float(one(o, t)) for o, t in zip(outputs, target, strict=True)])
    except Exception:  # a custom loss that needs more than one row: no per-row losses
        return None


def user_target(v: ValidationOutputs, unscaled: np.ndarray) -> np.ndarray:
    """The regression targets (n, k) as the user gave them (``keys["target"]``: a CSV's
    digits, not float32's), else ``unscaled``, the targets the task gave back (float32-rounded).

    Args:
        v: the validation outputs.
        unscaled: ``task.metric_inputs``'s targets, (n, k), float64.
    """
    given = v.keys.get("target")
    if given is None or np.asarray(given).dtype.kind not in "iuf":
        return unscaled
    given = np.asarray(given).reshape(len(given), -1)
    return given if given.shape == unscaled.shape else unscaled


def worst_order(losses: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest losses, largest first; a NaN loss counts as the largest.

    Example:
        >>> worst_order(np.array([0.1, float("nan"), 2.0, 0.5]), 3).tolist()
        [1, 2, 3]
    """
    key = np.where(np.isnan(losses), np.inf, losses)
    return np.argsort(-key, kind="stable")[:k]
