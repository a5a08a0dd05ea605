"""Loggers: callbacks that write a fit's metrics where people read them: ``history.csv``
(always, in a run directory), and the sinks ``--log`` adds: ``metrics.jsonl`` here, TensorBoard
(:mod:`nnfit.callbacks.tensorboard`) and MLflow (:mod:`nnfit.callbacks.mlflow`); the
:mod:`nnfit.callbacks.sinks` module builds them for a run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import Callback

if TYPE_CHECKING:
    from ..trainer import Trainer


class CSVLogger(Callback):
    """Rewrite ``path`` with the full history after every epoch (atomically).

    Args:
        path: the CSV file to write.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        from ..checkpoint import atomic_write_text

        atomic_write_text(self.path, trainer.state.history.to_csv())


# The step series' name in every sink: the batch loss at the logging interval (the epoch's mean
# is ``train_loss``, as in history.csv).
STEP_LOSS = "train_loss_step"


def numeric(logs: dict[str, Any]) -> dict[str, float]:
    """The numbers of an epoch's ``logs`` (bools and non-numbers left out), as floats."""
    return {k: float(v) for k, v in logs.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


class MetricLogger(Callback):
    """Base of the metric sinks: hands them the epoch's logs and, every ``every`` optimizer
    steps, the batch loss; subclasses write them.

    The step loss is read from the device only at the interval: between two intervals the
    logger reads nothing, so logging adds no host sync per step. A sink opens as the fit starts,
    before the first epoch's clock (opening a SummaryWriter or an MLflow run takes seconds that
    are no epoch's time), after ``before_write`` (the run writer's start: an ``overwrite``
    clears the earlier run before any sink writes into it).

    Args:
        every: log the batch loss every N optimizer steps; 0 logs per epoch only.
        before_write: called once before the first write, or None.

    Attributes:
        resumed_step: the optimizer step the fit started from (0 for a new run): the sink
            drops what an earlier, interrupted writer logged past it.
    """

    def __init__(self, *, every: int = 50, before_write: Callable[[], None] | None = None) -> None:
        self.every = every
        self.before_write = before_write
        self.resumed_step = 0
        self.resumed_epoch = 0
        self._open = False
        self._logged = -1  # the last step logged: batches of one accumulation window share it

    def on_fit_start(self, trainer: Trainer) -> None:
        self.resumed_step, self.resumed_epoch = trainer.state.step, trainer.state.epoch
        self._logged = trainer.state.step
        self._ensure_open(trainer)  # here, not at the first write: outside every epoch's time

    def on_train_batch_end(self, trainer: Trainer, batch: int) -> None:
        step = trainer.state.step
        if self.every and step % self.every == 0 and step != self._logged:
            self._logged = step
            value = trainer.last_loss.item()  # sync: once per `every` optimizer steps
            self._ensure_open(trainer)
            self.log_step(step, trainer.state.epoch + 1, value)

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        self._ensure_open(trainer)
        self.log_epoch(trainer.state.step, numeric(logs))

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._open:
            self.close()
            self._open = False

    def _ensure_open(self, trainer: Trainer) -> None:
        if not self._open:
            if self.before_write is not None:
                self.before_write()
            self.open(trainer)
            self._open = True

    def open(self, trainer: Trainer) -> None:
        """Open the sink (once, before its first write)."""

    def log_step(self, step: int, epoch: int, loss: float) -> None:
        """Write the batch loss of optimizer step ``step`` (in 1-based ``epoch``)."""

    def log_epoch(self, step: int, logs: dict[str, float]) -> None:
        """Write an epoch's numbers (``logs["epoch"]`` is 1-based) at optimizer step ``step``."""

    def close(self) -> None:
        """Flush and close the sink (at the end of the fit, however it ended)."""

    def finish(self, run_dir: Path) -> None:
        """After the run directory is complete (final model, metrics): the last words."""


class JSONLLogger(MetricLogger):
    """Append one JSON object per line to ``RUN/metrics.jsonl``: ``{"step", "epoch",
    "train_loss_step"}`` at the logging interval and ``{"step", **logs}`` per epoch (NaN and
    infinities as null).

    A resumed run first drops the lines an interrupted writer wrote past the checkpoint it
    resumes from (and a torn last line), so no step appears twice.

    Args:
        path: the JSONL file.
        every, before_write: as for :class:`MetricLogger`.
    """

    def __init__(self, path: str | Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(path)
        self._file: Any = None

    def open(self, trainer: Trainer) -> None:
        from ..files import atomic_write_text

        if self.path.exists():
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                    if self._keep(line)]
            atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))
        self._file = open(self.path, "a", encoding="utf-8")

    def _keep(self, line: str) -> bool:
        """Whether ``line`` was logged at or before the point this fit resumed from."""
        try:
            rec = json.loads(line)
            step, epoch = int(rec["step"]), int(rec["epoch"])
        except (ValueError, TypeError, KeyError):  # torn by a kill mid-write
            return False
        return step <= self.resumed_step and (STEP_LOSS in rec or epoch <= self.resumed_epoch)

    def _write(self, record: dict[str, Any]) -> None:
        from ..run import jsonable_metrics

        self._file.write(json.dumps(jsonable_metrics(record)) + "\n")
        self._file.flush()  # a line at a time: a reader (or a crash) sees whole lines

    def log_step(self, step: int, epoch: int, loss: float) -> None:
        self._write({"step": step, "epoch": epoch, STEP_LOSS: loss})

    def log_epoch(self, step: int, logs: dict[str, float]) -> None:
        self._write({"step": step, **logs, "epoch": int(logs["epoch"])})

    def close(self) -> None:
        self._file.close()
