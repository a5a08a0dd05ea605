"""What :func:`nnfit.data.prepare.prepare` hands the trainer (its own module: the preparation
of streams builds one too, below :mod:`.prepare`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..tasks import Task
from .preprocess import Preprocessor
from .sources import DataSource


@dataclass
class Prepared:
    """What training needs from the data: the fitted task and preprocessing and the sources.

    Attributes:
        task: the task fitted on the training split (or the resumed run's).
        preprocessor: the fitted preprocessing; None for a Dataset/DataLoader.
        train, val: the training and validation sources (``val`` may be None).
        target: the target column of a table, or None.
        val_keys: what names each validation row in the data the user gave (the plots' worst
            examples): ``row``, its 0-based position there (a held-out row's position in the
            training data; a row of ``val``'s own), and ``path`` for image files; a sequence
            table's id column and a series' time column (:func:`key_column`) name a sequence
            and a forecast. Empty for a DataLoader;
            ``target``, the row's target as the user gave it (worst.csv shows it unrounded).
    """

    task: Task
    preprocessor: Preprocessor | None
    train: DataSource
    val: DataSource | None
    target: str | None
    val_keys: dict[str, np.ndarray] = field(default_factory=dict)


def key_column(name: str | None, default: str) -> str:
    """The ``val_keys`` name under which a column of the user's (a sequence id, a time) names
    each validation row: the column's own name, unless that is one of the keys with a meaning
    of their own (``row``, ``path``, ``target``)."""
    name = name or default
    return f"{name}_" if name in ("row", "path", "target", "val_row") else name
