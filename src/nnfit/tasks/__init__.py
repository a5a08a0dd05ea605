"""Tasks: what the model's outputs mean, which loss trains them, and how they become answers.

A task is fitted state saved with the model: the label vocabulary of a classifier (labels of any
type mapped to indices 0..C-1) and the target scaling of a regressor. It owns three conversions:
raw targets -> training tensors, (outputs, targets) -> loss, and outputs -> probabilities or
predictions in the user's label space. :class:`Task` is the protocol they implement;
:class:`CustomTask` implements it with a user's loss function (any output, any target).
"""


from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from .base import LOSSES, MAX_AUTO_CLASSES, TASKS, Task, check_target, infer_task
from .classification import ClassificationTask, LabelMap
from .custom import CustomTask
from .forecasting import ForecastTask
from .regression import RegressionTask

__all__ = ["LOSSES", "MAX_AUTO_CLASSES", "TASKS", "ClassificationTask", "CustomTask", "ForecastTask",
           "LabelMap", "RegressionTask", "Task", "check_target", "infer_task", "make_task", "task_from_dict"]


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


def task_from_dict(d: dict[str, Any], loss: Callable | None = None) -> Task:
    """Rebuild a saved task (the inverse of ``to_dict``).

    Args:
        loss: a custom task's loss function, which is never saved (None: the task predicts
            but cannot evaluate or train). Refused for a built-in task.

    Raises:
        ConfigError: ``loss`` given for a model trained with a built-in task.
    """
    if d["name"] == "custom":
        shape = d.get("target_shape")
        return CustomTask(loss, d.get("loss", ""), None if shape is None else tuple(shape))
    if loss is not None:
        raise ConfigError(f"loss=: this model trains a built-in {d['name']} task (loss "
                          f"{d.get('loss', 'auto')!r}), not a custom loss function")
    if d["name"] == "regression":
        return RegressionTask(d["n_targets"], d.get("loss", "auto"), d.get("mean"), d.get("std"))
    if d["name"] == "forecast":
        return ForecastTask(d["n_targets"], d.get("loss", "auto"), d.get("mean"), d.get("std"),
                            season=d.get("season"))
    return ClassificationTask(LabelMap(tuple(d["classes"])), d.get("loss", "auto"))
