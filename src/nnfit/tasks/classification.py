"""Classification: a label vocabulary of any label type, mapped to indices 0..C-1."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, DataError
from ..metrics import ClassificationMetrics, Metric
from .base import _py, check_target


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
