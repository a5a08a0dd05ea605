"""What every task shares: the target checks, the task names and losses, and task inference."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import DataError
from ..registry import Registry

if TYPE_CHECKING:
    from torch import Tensor

    from ..metrics import Metric

TASKS = ("auto", "binary", "multiclass", "regression")
LOSSES: Registry[str] = Registry("loss")
LOSSES.register("auto", "auto", "the task's default: bce (binary), cross_entropy, mse")
LOSSES.register("bce", "bce", "binary cross-entropy on logits (BCEWithLogitsLoss)")
LOSSES.register("cross_entropy", "cross_entropy", "softmax cross-entropy (CrossEntropyLoss)")
LOSSES.register("mse", "mse", "mean squared error (MSELoss)")
LOSSES.register("l1", "l1", "mean absolute error (L1Loss)")
LOSSES.register("huber", "huber", "Huber loss, delta 1 (HuberLoss)")

# Integer targets with more distinct values than this are taken as a regression target.
MAX_AUTO_CLASSES = 20


class Task(Protocol):
    """What a task gives the loop: targets as tensors, the loss, metrics and answers.

    The built-in tasks (:class:`~nnfit.tasks.ClassificationTask`,
    :class:`~nnfit.tasks.RegressionTask`) and :class:`~nnfit.tasks.CustomTask` (a user's loss
    function) implement it; a classifier also has ``proba(out)``.

    Attributes:
        name: the saved task's tag ("binary", "multiclass", "regression", "custom").
        out_features: the output width a built-in model gets for it; None when the data
            does not say (a custom task before it has seen targets).
    """

    name: str

    @property
    def out_features(self) -> int | None: ...

    def encode_target(self, y: np.ndarray, source: str = "target") -> Tensor:
        """Raw targets (the rows of one split) as the training tensor; ``source`` names them
        in errors."""

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        """The batch's mean loss, a 0-d tensor. Shape: out (n, ...), target (n, ...)."""

    def metric_inputs(self, out: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """What the metrics see of a batch (probabilities, values in the original units)."""

    def make_metrics(self) -> Metric:
        """A fresh metric for one evaluation (its ``compute()`` names the logged values)."""

    def decode(self, out: Tensor) -> np.ndarray:
        """Outputs as answers: labels, values in the original units, raw outputs."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fitted state with ``"name"`` (checked by ``nnfit.io.validate.TASK``)."""


def _py(v: Any) -> Any:
    """A NumPy scalar as the plain Python value JSON can hold."""
    return v.item() if isinstance(v, np.generic) else v


def check_target(y: np.ndarray, source: str = "target") -> None:
    """Refuse a target with missing (None, NaN) or infinite values, naming the 1-based row.

    Example:
        >>> check_target(np.array([1.0, float("inf")]), "t.csv: target column 'y'")
        Traceback (most recent call last):
        nnfit.errors.DataError: t.csv: target column 'y' has a non-finite value (row 2: inf)
    """
    y = np.asarray(y)
    if y.ndim == 0:
        raise DataError(f"{source} must be an array of rows, got a scalar")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y)
        if bad.any():
            at = np.argwhere(bad)[0]
            v = y[tuple(at)]
            what = "a missing value" if v != v else "a non-finite value"
            raise DataError(f"{source} has {what} (row {at[0] + 1}: {v})")
    elif y.dtype.kind == "O":
        flat = y.reshape(len(y), -1)
        for i, row in enumerate(flat):
            if any(v is None or (isinstance(v, float) and v != v) for v in row):
                raise DataError(f"{source} has a missing value (row {i + 1})")
        _check_label_types(flat, source)
    elif y.dtype.kind not in "iubUS":
        raise DataError(f"{source} must hold labels or numbers, got {y.dtype} values")


# What a label may be: it is saved in JSON (model.json, checkpoints) and read back as itself.
_LABEL_TYPES = (str, int, float, bool, np.integer, np.floating, np.bool_)


def _check_label_types(flat: np.ndarray, source: str) -> None:
    """Refuse an object target holding values that are neither text nor numbers (dates,
    timestamps, decimals, durations, bytes from a Parquet file), naming the first row: they
    cannot be saved with the model. One pass over the types, in C, before any per-row work."""
    if all(issubclass(t, _LABEL_TYPES) for t in set(map(type, flat.ravel()))):
        return
    i, v = next((i, v) for i, row in enumerate(flat) for v in row if not isinstance(v, _LABEL_TYPES))
    shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
    raise DataError(f"{source} must hold labels or numbers, got {type(v).__name__} values "
                    f"(row {i + 1}: {shown})")


def infer_task(y: np.ndarray) -> str:
    """Guess binary / multiclass / regression from a target column.

    Strings, booleans and categories are classes; integers are classes unless there are more
    than 20 distinct values; floats are a regression target unless they only take two integral
    values (a 0/1 column stored as floats).
    """
    if y.ndim == 2 and y.shape[1] > 1:
        return "regression"
    y = y.reshape(-1)
    kind = y.dtype.kind
    if kind in "OUSb":
        n = len(np.unique(y.astype(str) if kind == "O" else y))
        return "binary" if n <= 2 else "multiclass"
    uniq = np.unique(y)
    if kind in "iu":
        if len(uniq) <= 2:
            return "binary"
        return "multiclass" if len(uniq) <= MAX_AUTO_CLASSES else "regression"
    # isfinite first: inf % 1 warns (an error under -W error), and inf is refused later anyway
    if kind == "f" and len(uniq) <= 2 and np.isfinite(uniq).all() and np.all(np.mod(uniq, 1) == 0):
        return "binary"
    return "regression"
