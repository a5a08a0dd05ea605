"""Callbacks: the documented hooks users attach to the loop, and the built-in ones.

Every hook is a no-op on :class:`Callback`; subclass it and override only what you need. Hooks
receive the :class:`~nnfit.trainer.Trainer`, whose ``model``, ``optimizer``, ``state`` and
``config`` they may read. ``logs`` is the one dict the loop shares with callbacks at epoch end.
The per-batch hook is only dispatched to callbacks that override it, so an unused hook costs
nothing in the hot loop.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .trainer import Trainer


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


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if (v == 0 or math.isfinite(v) and 1e-3 <= abs(v) < 1e4) else f"{v:.3e}"
    return str(v)


class ProgressBar(Callback):
    """A rich progress display: a bar per epoch with ETA and the running training loss, and
    one line of logs per finished epoch (Keras-style).

    The running loss is read at most every ``refresh_s`` seconds: each read is one deliberate
    host sync, so the display costs a handful of syncs per epoch, not one per step.

    Args:
        refresh_s: minimum seconds between reads of the running loss. Default 0.5.
    """

    def __init__(self, refresh_s: float = 0.5) -> None:
        self.refresh_s = refresh_s
        self._progress: Any = None
        self._task: Any = None
        self._last = 0.0

    def on_fit_start(self, trainer: Trainer) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        if not self.console.is_terminal:
            # Logs piped to a file or a pipe get the epoch lines only: a bar there is noise, and
            # rich ends a live display on such a stream with an empty line (a second stderr line
            # after a one-line error).
            return
        self._progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[loss]}"),
            console=self.console, transient=True,
        )
        self._progress.start()

    def on_epoch_start(self, trainer: Trainer) -> None:
        if self._progress is None:
            return
        if self._task is not None:
            self._progress.remove_task(self._task)
        epoch = f"{trainer.state.epoch + 1}/{trainer.config.epochs}"
        self._task = self._progress.add_task("", total=trainer.batches_per_epoch, epoch=epoch,
                                             loss="")
        self._last = time.monotonic()

    def on_train_batch_end(self, trainer: Trainer, batch: int) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if now - self._last < self.refresh_s:
            self._progress.advance(self._task)
            return
        self._last = now
        loss = f"loss {trainer.running_loss():.4g}"  # deliberate sync, rate-limited
        self._progress.update(self._task, advance=1, loss=loss)

    # The epoch line shows the headline numbers; every value is in the history.
    SHOWN = ("train_loss", "val_loss", "val_accuracy", "val_f1", "val_r2", "val_rmse", "lr")

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        parts = [f"epoch {logs['epoch']}/{trainer.config.epochs}"]
        parts += [f"{k} {_fmt(logs[k])}" for k in self.SHOWN if k in logs]
        parts.append(f"{logs.get('time', 0.0):.2f}s")
        self.console.print("  ".join(parts), highlight=False, soft_wrap=True)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None


class CSVLogger(Callback):
    """Rewrite ``path`` with the full history after every epoch (atomically).

    Args:
        path: the CSV file to write.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        from .checkpoint import atomic_write_text

        atomic_write_text(self.path, trainer.state.history.to_csv())


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
