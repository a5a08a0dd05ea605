"""Numerical guards: stop training in the step where the loss or a gradient goes NaN or
infinite, before the weights are updated, never checkpoint a non-finite tensor, and never
answer a prediction or evaluation from a non-finite model output (:func:`check_finite_outputs`).

Cost on the CPU: the loss is read as a Python float (a memory read there, not a device sync)
and the gradients are checked by one fused ``foreach`` kernel per optimizer step. On CUDA the
per-step checks would each be a host sync, so they are skipped there: the epoch's mean loss
(read once per epoch anyway) and the parameters are checked at every epoch end, and every
checkpoint is checked before it is written.

``check_finite=False`` turns these guards off; checkpoints and a run's final model are still
checked when written (:meth:`nnfit.trainer.Trainer.checkpoint_parts`). The messages say what
went wrong; the trainer adds which checkpoint, if any, is left to resume from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from .errors import DataError, TrainingError
from .outputs import leaves


def first_non_finite(named: Iterable[tuple[str, Tensor]]) -> str | None:
    """The name of the first floating-point tensor holding NaN or inf, or None."""
    for name, t in named:
        if t is None or not t.is_floating_point():
            continue
        if t.is_sparse:  # e.g. the gradient of nn.Embedding(sparse=True)
            t = t.coalesce().values()
        if not bool(torch.isfinite(t).all()):  # sync: on failure paths and at checkpoints only
            return name
    return None


class FiniteGuard:
    """Per-step finiteness checks for one model's training.

    Args:
        model: the model being trained.
        per_step: check every step (the CPU default); otherwise only :meth:`check_params`
            and the checkpoint check apply.
    """

    def __init__(self, model: nn.Module, per_step: bool) -> None:
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self._params = [p for _, p in self.named]  # the per-step list, without the names
        self.per_step = per_step
        dev = self.named[0][1].device if self.named else torch.device("cpu")
        self._found = torch.zeros(1, device=dev)
        self._one = torch.ones(1, device=dev)
        self._fused = True

    def check_loss(self, loss: Tensor, where: Callable[[], str]) -> None:
        """Raise when this step's loss is not finite (CPU: reading a value, not a sync);
        ``where()`` describes the step, and is formatted only for the error."""
        value = loss.item()
        if not math.isfinite(value):
            hint = first_non_finite(self.named)
            cause = (f"; parameter {hint!r} was already non-finite (the previous update overflowed)"
                     if hint else "")
            raise TrainingError(f"non-finite loss ({value}) {where()}{cause}; training stopped before "
                                "this step's update")

    def check_grads(self, where: Callable[[], str]) -> None:
        """Raise when any gradient is not finite, before the optimizer uses it."""
        grads = [g for p in self._params if (g := p.grad) is not None]
        if not grads:
            return
        if self._fused:
            try:
                # One kernel over all gradients: sets _found when any is NaN/inf. Multiplying by
                # 1.0 leaves every gradient bit-identical.
                torch._amp_foreach_non_finite_check_and_unscale_(grads, self._found, self._one)
                bad = bool(self._found.item())  # CPU: a read, not a device sync
            except (RuntimeError, NotImplementedError):  # dtype/device mix the kernel refuses
                self._fused, bad = False, True
        else:
            bad = True
        if bad:
            name = first_non_finite((n, p.grad) for n, p in self.named)
            if name is not None:
                raise TrainingError(f"non-finite gradient of {name!r} {where()}; training stopped before "
                                    "this step's update")
            self._found.zero_()

    def check_params(self, where: str) -> None:
        """Raise when a parameter is not finite (e.g. an update overflowed)."""
        name = first_non_finite(self.named)
        if name is not None:
            raise TrainingError(f"parameter {name!r} became non-finite {where}")


def all_finite(out: Any) -> Tensor:
    """Whether every leaf of a structured output (tuples, lists, dicts of tensors) is finite,
    as a 0-d bool tensor on the device: no sync."""
    return torch.stack([torch.isfinite(t).all() for _, t in leaves(out)]).all()


def check_finite_outputs(out: Any, source: str) -> None:
    """Refuse NaN/inf model outputs, naming the first 1-based row: never a "nan" prediction, a
    label argmax picked from NaN, or NaN metrics, with exit status 0. A structured output (a
    custom loss's tuples, lists, dicts of tensors) is checked leaf by leaf, naming the leaf.

    Raises:
        DataError: naming ``source``, the row (and leaf) and the value.
    """
    if not isinstance(out, Tensor):
        for path, t in leaves(out):
            _check_rows(t, source, path)
        return
    _check_rows(out, source, "output")


def _check_rows(out: Tensor, source: str, name: str) -> None:
    flat = out.reshape(len(out), -1) if out.dim() else out.reshape(1, 1)
    bad = ~torch.isfinite(flat)
    if bad.any():  # sync: once per prediction or failed evaluation
        row, col = (int(i) for i in bad.nonzero()[0])
        raise DataError(f"{source}: the model's {name} for row {row + 1} is not finite "
                        f"({flat[row, col].item()}): inputs far outside the training data, "
                        "or a model with non-finite weights")
