"""The progress display of a fit (rich), off with ``quiet``."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from .base import Callback

if TYPE_CHECKING:
    from ..trainer import Trainer


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
