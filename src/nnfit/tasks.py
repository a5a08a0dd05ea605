"""Tasks: what the model's outputs mean, which loss trains them, and how they become answers.

A task is fitted state saved with the model: the label vocabulary of a classifier (labels of any
type mapped to indices 0..C-1) and the target scaling of a regressor. It owns three conversions:
raw targets -> training tensors, (outputs, targets) -> loss, and outputs -> probabilities or
predictions in the user's label space.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import ConfigError, DataError
from .metrics import ClassificationMetrics, Metric, RegressionMetrics
from .registry import Registry

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


@dataclass(frozen=True)
class LabelMap:
    """The sorted label vocabulary of a classifier: label <-> index.

    Example:
        >>> lm = LabelMap.fit(np.array(["b", "a", "b"]))
        >>> lm.encode(np.array(["a", "b"])).tolist(), lm.decode(np.array([1])).tolist()
        ([0, 1], ['b'])
    """

    classes: tuple

    @classmethod
    def fit(cls, y: np.ndarray) -> LabelMap:
        y = np.asarray(y).reshape(-1)
        if y.dtype.kind == "O":
            if any(v is None or (isinstance(v, float) and v != v) for v in y):
                raise DataError("target has missing values")
            kinds = {type(v) for v in y}
            if len(kinds) > 1:  # mixed types sort badly: compare as text
                y = y.astype(str)
        elif y.dtype.kind == "f" and np.isnan(y).any():
            raise DataError("target has missing values")
        return cls(tuple(_py(v) for v in np.unique(y)))

    def encode(self, y: np.ndarray, source: str = "target") -> np.ndarray:
        """Indices of ``y``'s labels; labels never seen at training are an error naming them
        and the first 1-based row holding one."""
        check_target(y, source)
        y = np.asarray(y).reshape(-1)
        index = {c: i for i, c in enumerate(self.classes)}
        text_index = {str(c): i for i, c in enumerate(self.classes)}
        try:  # look up each distinct value once, not each row
            values, first, inverse = np.unique(y, return_index=True, return_inverse=True)
        except TypeError:  # mixed, unorderable objects
            values, first, inverse = y, np.arange(len(y)), np.arange(len(y))
        codes = np.empty(len(values), dtype=np.int64)
        unseen: list = []
        for i, v in enumerate(values.tolist()):
            j = index.get(v)
            if j is None:
                j = text_index.get(str(v))  # "1" in a CSV read as text matches the int label 1
            if j is None:
                unseen.append((first[i], v))
                j = 0
            codes[i] = j
        out = codes[inverse.reshape(-1)]
        unseen.sort(key=lambda rv: rv[0])  # in the order they appear in the data
        if unseen:
            shown = ", ".join(repr(v) for v in list(dict.fromkeys(v for _, v in unseen))[:5])
            raise DataError(
                f"{source} has labels unseen at training: {shown}, first at row {unseen[0][0] + 1} "
                f"(known: {', '.join(repr(c) for c in self.classes[:10])})"
            )
        return out

    def decode(self, idx: np.ndarray) -> np.ndarray:
        """Original labels for indices."""
        return _label_array(self.classes)[np.asarray(idx)]


def _label_array(classes: tuple) -> np.ndarray:
    """The labels as one array. Integer labels stay exact integers: NumPy would make
    ``[1, 2**63 + 5]`` (uint64 labels) float64, i.e. 9.223372036854776e+18 and 1.0."""
    a = np.asarray(list(classes))
    if a.dtype.kind == "f" and all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        a = np.asarray(list(classes), dtype=np.uint64 if min(classes) >= 0 else object)
    return a


@dataclass
class ClassificationTask:
    """Binary or multiclass classification over a fixed label vocabulary.

    Binary models may have one output (a logit, trained with BCE) or two (softmax,
    cross-entropy): the loss follows the output's width, so a user model written either way
    trains unchanged. Multiclass models have one output per class.

    Args:
        labels: the label vocabulary.
        loss: "auto", "bce" (binary, one output) or "cross_entropy".
    """

    labels: LabelMap
    loss_name: str = "auto"
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = "binary" if len(self.labels.classes) == 2 else "multiclass"
        if self.loss_name not in ("auto", "bce", "cross_entropy"):
            raise ConfigError(f"loss {self.loss_name!r} does not fit a {self.name} task")
        if self.loss_name == "bce" and self.name != "binary":
            raise ConfigError("loss 'bce' needs a binary task")

    @property
    def num_classes(self) -> int:
        return len(self.labels.classes)

    @property
    def out_features(self) -> int:
        """Output width of a model built for this task."""
        return 1 if self.name == "binary" and self.loss_name != "cross_entropy" else self.num_classes

    def encode_target(self, y: np.ndarray, source: str = "target") -> Tensor:
        """Label indices as the training tensor: float 0/1 for binary, int64 otherwise."""
        idx = torch.from_numpy(self.labels.encode(y, source))
        return idx.float() if self.name == "binary" else idx

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        """Mean loss of a batch. Shape: out (n,), (n, 1) or (n, C); target (n,)."""
        if out.ndim == 1 or out.shape[-1] == 1:
            return F.binary_cross_entropy_with_logits(out.reshape(-1), target.to(out.dtype))
        if target.dtype != torch.long:  # a binary target kept as floats for the one-logit path
            target = target.long()
        return F.cross_entropy(out, target)

    def proba(self, out: Tensor) -> Tensor:
        """Class probabilities. Shape: (n, C)."""
        if out.ndim == 1 or out.shape[-1] == 1:
            p = torch.sigmoid(out.reshape(-1))
            return torch.stack([1 - p, p], dim=1)
        return torch.softmax(out, dim=-1)

    def metric_inputs(self, out: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        return self.proba(out), target

    def make_metrics(self) -> Metric:
        return ClassificationMetrics(self.num_classes)

    def decode(self, out: Tensor) -> np.ndarray:
        """Predicted labels in the user's label space."""
        idx = self.proba(out).argmax(dim=1).cpu().numpy()
        return self.labels.decode(idx)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "classes": list(self.labels.classes), "loss": self.loss_name}


@dataclass
class RegressionTask:
    """Regression on one or more float targets, optionally trained on standardised targets.

    Args:
        n_targets: number of target columns.
        loss_name: "auto" (= mse), "mse", "l1" or "huber".
        mean, std: target statistics from the training split, or None for no scaling.
    """

    n_targets: int = 1
    loss_name: str = "auto"
    mean: list[float] | None = None
    std: list[float] | None = None
    name: str = "regression"

    def __post_init__(self) -> None:
        if self.loss_name not in ("auto", "mse", "l1", "huber"):
            raise ConfigError(f"loss {self.loss_name!r} does not fit a regression task")
        self._fn = {"auto": F.mse_loss, "mse": F.mse_loss, "l1": F.l1_loss,
                    "huber": F.huber_loss}[self.loss_name]
        self._scale: tuple[Tensor, Tensor] | None = None

    @property
    def out_features(self) -> int:
        return self.n_targets

    def fit_scaling(self, y: np.ndarray) -> None:
        """Take the target mean and standard deviation from the training split."""
        y = y.reshape(len(y), -1).astype(np.float64)
        std = y.std(axis=0)
        self.mean = y.mean(axis=0).tolist()
        self.std = np.where(std > 0, std, 1.0).tolist()
        self._scale = None

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        # float64 and cached per device: a target around 1e8 keeps its digits when unscaled.
        if self._scale is None or self._scale[0].device != like.device:
            m = torch.tensor(self.mean, dtype=torch.float64, device=like.device)
            s = torch.tensor(self.std, dtype=torch.float64, device=like.device)
            self._scale = (m, s)
        return self._scale

    def encode_target(self, y: np.ndarray, source: str = "target") -> Tensor:
        """Targets as a float32 (n, k) tensor, standardised when scaling was fitted."""
        y = np.asarray(y)
        if y.dtype.kind not in "iufb":
            raise DataError(f"{source} must be numeric for regression, got {y.dtype} values")
        check_target(y, source)
        y = y.reshape(len(y), -1).astype(np.float64)
        if y.shape[1] != self.n_targets:
            raise DataError(f"{source} has {y.shape[1]} columns, the model predicts {self.n_targets}")
        if self.mean is not None:
            y = (y - np.asarray(self.mean)) / np.asarray(self.std)
        return torch.from_numpy(y.astype(np.float32))

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        """Mean loss of a batch. Shape: out (n,) or (n, k); target (n, k)."""
        if out.ndim == 1:
            out = out.unsqueeze(-1)
        if target.ndim == 1:  # a Dataset/DataLoader yields (n,) targets: (n, 1) vs (n,) broadcasts
            target = target.unsqueeze(-1)
        return self._fn(out, target)

    def unscale(self, t: Tensor) -> Tensor:
        """Outputs or targets back in the original units, in float64 (float32 has 24 bits:
        a value near 1e8 would be rounded to a multiple of 8). Shape: (n,) or (n, k) -> (n, k).
        """
        if t.ndim == 1:
            t = t.unsqueeze(-1)
        if self.mean is None:
            return t.double()
        m, s = self._stats(t)
        return t.double() * s + m

    def metric_inputs(self, out: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        return self.unscale(out), self.unscale(target)

    def make_metrics(self) -> Metric:
        return RegressionMetrics()

    def decode(self, out: Tensor) -> np.ndarray:
        """Predictions in the original units. Shape: (n,) for one target, else (n, k)."""
        pred = self.unscale(out).cpu().double().numpy()
        return pred[:, 0] if self.n_targets == 1 else pred

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "n_targets": self.n_targets, "loss": self.loss_name,
                "mean": self.mean, "std": self.std}


Task = ClassificationTask | RegressionTask


def make_task(name: str, y: np.ndarray, *, loss: str = "auto", scale_target: bool = True,
              source: str = "target") -> Task:
    """Build and fit the task for training targets ``y`` (the training split only).

    ``source`` names the target in error messages (e.g. "data.csv: target column 'y'").

    Raises:
        ConfigError: unknown task name or a loss that does not fit it.
        DataError: a classification target with a single class, or a non-numeric regression target.
    """
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r} (choose from: {', '.join(TASKS)})")
    LOSSES.get(loss)
    y = np.asarray(y)
    if y.ndim == 0 or len(y) == 0:
        raise DataError("no training rows")
    check_target(y, source)
    if name == "auto":
        name = infer_task(y)
    if name == "regression":
        if y.dtype.kind not in "iufb":
            raise DataError(f"{source} must be numeric for regression, got {y.dtype} values")
        task = RegressionTask(n_targets=y.reshape(len(y), -1).shape[1], loss_name=loss)
        if scale_target:
            task.fit_scaling(y.astype(np.float64))
        return task
    if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
        raise DataError(f"task {name!r} needs class labels, but {source} has fractional values "
                        f"(e.g. {y[np.mod(y, 1) != 0][0]!r}): use task 'regression'")
    labels = LabelMap.fit(y)
    if len(labels.classes) < 2:
        raise DataError(f"{source} has a single class ({labels.classes[0]!r}): nothing to learn")
    if name == "binary" and len(labels.classes) != 2:
        raise DataError(f"task 'binary' needs 2 classes, {source} has {len(labels.classes)}")
    if name == "multiclass" and len(labels.classes) == 2 and loss == "auto":
        loss = "cross_entropy"  # two classes asked for as multiclass: two outputs and softmax
    return ClassificationTask(labels, loss)


def task_from_dict(d: dict[str, Any]) -> Task:
    """Rebuild a saved task (the inverse of ``to_dict``)."""
    if d["name"] == "regression":
        return RegressionTask(d["n_targets"], d.get("loss", "auto"), d.get("mean"), d.get("std"))
    return ClassificationTask(LabelMap(tuple(d["classes"])), d.get("loss", "auto"))
