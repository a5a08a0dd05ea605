"""A task made of a user's loss function: any output, any target, through the same loop.

The built-in tasks fit state (a label vocabulary, a target scaling); a custom task fits
nothing. Its targets are taken as given (no label map, no scaling), its one logged number is
the loss (``val_loss``, what early stopping and the best checkpoint watch by default) and its
answers are the raw outputs. Only the function's name is saved, never its code: a loaded
model predicts without it, and evaluating or resuming it needs the function again
(``nnfit.load(path, loss=fn)``, ``nnfit.fit(..., resume=run, loss=fn)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DataError, warn
from ..metrics import Metric
from ..outputs import map_leaves
from .base import check_target

LossFn = Callable[[Any, Tensor], Tensor]


class LossOnly(Metric):
    """The metric of a custom task: nothing beside the loss, which the loop averages itself."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Nothing to clear."""

    def update(self, output: Tensor, target: Tensor) -> None:
        """Nothing to accumulate."""

    def compute(self) -> dict[str, float | list]:
        """No values: the evaluation's ``loss`` is all there is."""
        return {}


def _numpy(t: Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def loss_name(fn: Any) -> str:
    """A loss function's qualified name, as saved (informative only): ``gaussian_nll``,
    ``Model.loss``, ``<lambda>``, or the class name of a callable object (``MSELoss``)."""
    name = getattr(fn, "__qualname__", None)
    return name if isinstance(name, str) else type(fn).__qualname__


@dataclass
class CustomTask:
    """Train with your own loss function ``fn(output, target) -> scalar tensor``.

    Targets are taken as given: floats become float32, integers stay int64, booleans become
    float32, with whatever shape each row has (no label map, no scaling). The output may be
    anything the model returns and ``fn`` accepts: a sequence, a (mean, log-variance) pair,
    multi-label logits. Evaluation reports the loss only; :meth:`decode` gives the raw outputs.

    Args:
        fn: the loss, returning the batch's mean (a 0-d tensor); None for a loaded model,
            which predicts but cannot evaluate or train.
        loss_name: saved as ``task.loss`` (informative only); defaults to ``fn``'s name.
        target_shape: the shape of one target row, taken from the training targets
            (``()`` for one value per row); None until the task has seen them.

    Example:
        >>> import torch.nn.functional as F
        >>> task = CustomTask(F.l1_loss)
        >>> task.to_dict()
        {'name': 'custom', 'loss': 'l1_loss', 'target_shape': None}
    """

    fn: LossFn | None
    loss_name: str = ""
    target_shape: tuple[int, ...] | None = None
    name: str = "custom"

    def __post_init__(self) -> None:
        if self.fn is not None and not callable(self.fn):
            raise ConfigError(f"loss must be a function (output, target) -> loss, got "
                              f"{type(self.fn).__name__}")
        if not self.loss_name:
            self.loss_name = loss_name(self.fn) if self.fn is not None else "unknown"

    @property
    def out_features(self) -> int | None:
        """The values of one target row: the output width a built-in model gets by default
        (give ``out_features`` in the spec for another, e.g. 2 for a mean and a variance)."""
        return None if self.target_shape is None else math.prod(self.target_shape)

    def encode_target(self, y: np.ndarray, source: str = "target") -> Tensor:
        """Targets as a tensor of their own shape: float32, or int64 for integers.

        Raises:
            DataError: targets that are not numbers or booleans, missing or infinite
                values, or rows shaped unlike the training targets' (all naming ``source``).
        """
        y = np.asarray(y)
        if y.dtype.kind not in "iufb":
            raise DataError(f"{source} must be numbers or booleans for a custom loss, got {y.dtype} values")
        check_target(y, source)
        if self.target_shape is not None and y.shape[1:] != self.target_shape:
            raise DataError(f"{source} has rows of shape {y.shape[1:]}, the model was trained on rows of "
                            f"shape {self.target_shape}")
        dtype = np.int64 if y.dtype.kind in "iu" else np.float32  # booleans as 0.0 / 1.0
        return torch.from_numpy(np.ascontiguousarray(y, dtype=dtype))

    def loss(self, out: Any, target: Tensor) -> Tensor:
        """``fn(out, target)``, checked to be one value with a gradient (in training).

        The checks read host metadata only (type, shape, autograd flag): no device sync, so
        they run on every step, training and evaluation alike.

        Raises:
            ConfigError: a loaded model, whose loss function was not given again; ``fn``
                returning something other than a 0-d tensor, or (with autograd on) one that
                does not depend on the model's parameters.
        """
        if self.fn is None:
            raise self.missing()
        value = self.fn(out, target)
        if not isinstance(value, Tensor) or value.dim() != 0 or (
                torch.is_grad_enabled() and not value.requires_grad):
            raise self._bad_loss(value)
        return value

    def _bad_loss(self, value: Any) -> ConfigError:
        """The one-line error of a loss function that returned something ``backward`` cannot use."""
        fn = f"loss function {loss_name(self.fn)!r}"  # the one called: a loaded task keeps the saved name
        if not isinstance(value, Tensor):
            return ConfigError(f"{fn} returned a {type(value).__name__} ({value!r:.40}), not a tensor: "
                               "compute it from the output with torch operations, so that it has a gradient")
        if value.dim() != 0:
            return ConfigError(f"{fn} returned a tensor of shape {tuple(value.shape)}, not one value: "
                               "reduce it to the batch's mean (e.g. .mean())")
        return ConfigError(f"{fn} returned a tensor without a gradient: compute it from the model's output "
                           "(not from the targets alone, not under torch.no_grad() or .detach())")

    def missing(self) -> ConfigError:
        """The one-line error of a model that needs its loss function but was loaded without it."""
        return ConfigError(f"this model was trained with the custom loss function {self.loss_name!r}, "
                           "which is not saved: pass it as loss= (nnfit.load(path, loss=fn), or "
                           "nnfit.fit(..., resume=run, loss=fn))")

    def metric_inputs(self, out: Any, target: Tensor) -> tuple[Any, Tensor]:
        return out, target

    def make_metrics(self) -> Metric:
        return LossOnly()

    def decode(self, out: Any) -> Any:
        """The raw outputs as a NumPy array (bfloat16 as float32, which NumPy lacks), or a
        structured output (tuples, lists, dicts of tensors) with NumPy arrays for leaves."""
        return map_leaves(_numpy, out)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "loss": self.loss_name,
                "target_shape": None if self.target_shape is None else list(self.target_shape)}


def check_resumed(saved: dict[str, Any], given: Any, force: bool) -> None:
    """A resume goes on with the kind of loss its run trained with: a custom run's function
    again (by name; ``force``: another name only warns), never a function for a built-in task.

    Args:
        saved: the checkpoint's task (``learner.task``).
        given: the task ``fit`` was asked for (a CustomTask when it got ``loss=fn``).

    Raises:
        ConfigError: in one line, saying what to pass.
    """
    custom = isinstance(given, CustomTask)
    if saved["name"] != "custom":
        if custom:
            raise ConfigError(f"cannot resume with a custom loss function: the run trains a built-in "
                              f"{saved['name']} task (loss {saved.get('loss', 'auto')!r}); drop loss=, "
                              "or start a new run")
        return
    if not custom or given.fn is None:
        raise CustomTask(None, saved["loss"]).missing()
    if loss_name(given.fn) != saved["loss"]:
        what = f"loss ({saved['loss']!r} -> {loss_name(given.fn)!r})"
        if not force:
            raise ConfigError(f"cannot resume with changed settings: {what}; start a new run, or pass "
                              "force_resume=True to continue anyway")
        warn(f"resuming despite changed settings: {what}")


def training_task(task: CustomTask, fn: LossFn, train: Any, val: Any) -> CustomTask:
    """The custom task a fit trains: ``fn`` on ``task`` (a fresh one, or a resumed run's, saved
    without its function), with the shape of the training targets' rows.

    Args:
        train, val: the prepared sources (their targets' shape, when they hold tensors).

    Raises:
        DataError: validation targets shaped unlike the training targets.
    """
    shape = task.target_shape
    target = getattr(train, "target", None)
    if shape is None and isinstance(target, Tensor):
        shape = tuple(target.shape[1:])
    val_target = getattr(val, "target", None)
    if shape is not None and isinstance(val_target, Tensor) and tuple(val_target.shape[1:]) != shape:
        raise DataError(f"validation data: target rows of shape {tuple(val_target.shape[1:])}, the training "
                        f"targets' are {shape}")
    return replace(task, fn=fn, loss_name=loss_name(fn), target_shape=shape)
