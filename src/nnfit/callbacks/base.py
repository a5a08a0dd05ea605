"""The callback protocol (:class:`Callback`), the run's :class:`History`, and :class:`LambdaCallback`.

Every hook is a no-op on :class:`Callback`; subclass it and override only what you need. Hooks
receive the :class:`~nnfit.trainer.Trainer`, whose ``model``, ``optimizer``, ``state`` and
``config`` they may read. ``logs`` is the one dict the loop shares with callbacks at epoch end.
The per-batch hook is only dispatched to callbacks that override it, so an unused hook costs
nothing in the hot loop.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..trainer import Trainer


class Callback:
    """Base class of all callbacks: every hook does nothing until overridden.

    Example:
        >>> class PrintLR(Callback):
        ...     def on_epoch_end(self, trainer, logs):
        ...         print(logs["lr"])
    """

    def on_fit_start(self, trainer: Trainer) -> None:
        """Called once before the first epoch (after a resume has been restored)."""

    def on_epoch_start(self, trainer: Trainer) -> None:
        """Called before each training epoch; ``trainer.state.epoch`` is the 0-based epoch."""

    def on_train_batch_end(self, trainer: Trainer, batch: int) -> None:
        """Called after each training batch. ``trainer.last_loss`` is the batch loss as a
        device tensor: reading its value forces a host sync, so do it sparingly."""

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        """Called after training and validation of an epoch, with that epoch's logs
        (epoch, train_loss, val_loss, val_<metric>, lr, time). Set ``trainer.state.stop`` to
        end training after this epoch."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """Called once when training ends (normally, early-stopped, or interrupted)."""


class History:
    """Per-epoch records of a fit: a list of dicts, also indexable by key like Keras'.

    Example:
        >>> h = History([{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.25}])
        >>> h["train_loss"], h[-1]["epoch"]
        ([0.5, 0.25], 2)
    """

    def __init__(self, records: list[dict[str, Any]] | None = None) -> None:
        self.records: list[dict[str, Any]] = list(records or [])

    def append(self, logs: dict[str, Any]) -> None:
        self.records.append(dict(logs))

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            return [r.get(key) for r in self.records]
        return self.records[key]

    def keys(self) -> list[str]:
        """Every key that appears in any record, in first-seen order."""
        return list(dict.fromkeys(k for r in self.records for k in r))

    def to_csv(self) -> str:
        """The history as CSV text, one row per epoch."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.keys(), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.records)
        return buf.getvalue()

    def __repr__(self) -> str:
        return f"History({len(self)} epochs, keys={self.keys()})"


class LambdaCallback(Callback):
    """A callback from plain functions, for one-off hooks.

    Args:
        on_epoch_end: called as ``fn(trainer, logs)`` after each epoch.
        on_fit_end: called as ``fn(trainer)`` when training ends.
    """

    def __init__(self, *, on_epoch_end: Any = None, on_fit_end: Any = None) -> None:
        self._epoch_end = on_epoch_end
        self._fit_end = on_fit_end

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if self._epoch_end:
            self._epoch_end(trainer, logs)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._fit_end:
            self._fit_end(trainer)
