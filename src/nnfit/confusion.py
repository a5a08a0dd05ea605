"""Confusion matrices of targets with many classes: kept out of JSON and the terminal.

A matrix of C classes has C * C cells; at 5,000 classes it is 25 million numbers, hundreds of
megabytes as JSON text. Up to :data:`MAX_SHOWN_CLASSES` classes the matrix stays in
``metrics.json``, ``nnfit evaluate --json`` and the terminal; above that it is saved on its
own as an int32 tensor in the run's ``confusion_matrix.safetensors`` (one key per split:
``validation``, ``test``), and what is shown instead is a per-class summary: the classes with
the lowest recall.

Example:
    >>> shown, cm = split_confusion({"accuracy": 0.5, "confusion_matrix": [[1, 0], [1, 0]]}, ["a", "b"])
    >>> cm is None and shown["confusion_matrix"]
    [[1, 0], [1, 0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

MAX_SHOWN_CLASSES = 100
FILE = "confusion_matrix.safetensors"
WORST = 5  # classes listed in the summary


def split_confusion(metrics: dict[str, Any], classes: Sequence[Any] | None,
                    worst: int = WORST) -> tuple[dict[str, Any], Tensor | None]:
    """Metrics fit for JSON and the terminal, and the confusion matrix when it is too large.

    Args:
        metrics: a metrics dict, perhaps with ``confusion_matrix`` (rows = true class,
            columns = predicted) as nested lists.
        classes: the class labels in index order (None: indices are shown).
        worst: how many classes the summary lists.

    Returns:
        ``(shown, matrix)``. Up to :data:`MAX_SHOWN_CLASSES` classes: a copy of ``metrics``
        and None. Above: ``shown`` has ``num_classes`` and ``lowest_recall`` (a list of
        ``{"class", "recall", "support"}``, lowest recall first among classes with targets,
        the most often missed first among equals) in place of ``confusion_matrix``, and
        ``matrix`` is the (C, C) count tensor: int32 (half the size of int64: 100 MB, not
        200, at 5,000 classes), int64 only for a count past 2**31 - 1.
    """
    shown = dict(metrics)
    cm = shown.get("confusion_matrix")
    if cm is None or len(cm) <= MAX_SHOWN_CLASSES:
        return shown, None
    del shown["confusion_matrix"]
    matrix = np.array(cm, dtype=np.int64)  # 3x faster than torch.tensor from nested lists
    support = matrix.sum(1)
    recall = matrix.diagonal() / np.maximum(support, 1)
    present = np.flatnonzero(support > 0)
    order = present[np.lexsort((present, -support[present], recall[present]))][:worst]
    shown["num_classes"] = len(cm)
    shown["lowest_recall"] = [
        {"class": _label(classes, k), "recall": float(recall[k]), "support": int(support[k])}
        for k in order.tolist()]
    if matrix.max() < 2**31:
        matrix = matrix.astype(np.int32)
    return shown, torch.from_numpy(matrix)


def _label(classes: Sequence[Any] | None, k: int) -> Any:
    """Class ``k``'s label as plain JSON (a NumPy scalar becomes its Python value)."""
    if classes is None:
        return k
    label = classes[k]
    return label.item() if isinstance(label, np.generic) else label


def save_confusion(run_dir: str | Path, split: str, matrix: Tensor) -> Path:
    """Save ``matrix`` as key ``split`` of the run's confusion-matrix file (atomically; the
    other split's matrix stays); returns the file's path."""
    from .checkpoint import load_tensors, save_tensors
    from .errors import CheckpointError

    path = Path(run_dir) / FILE
    tensors: dict[str, Tensor] = {}
    if path.is_file():
        try:
            tensors, _ = load_tensors(path)
        except CheckpointError:  # damaged: written again from this run's matrices
            tensors = {}
    tensors[split] = matrix
    save_tensors(path, tensors, {"rows": "true class", "columns": "predicted class",
                                 "classes": "in the order of model.json's task classes"})
    return path
