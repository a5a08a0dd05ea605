"""TensorBoard logging (``--log tensorboard``): event files under ``RUN/tensorboard/``.

Written through ``torch.utils.tensorboard.SummaryWriter`` (the ``nnfit[tensorboard]`` extra).
Every scalar is indexed by the optimizer step, as Lightning does: the epoch's numbers
(``train_loss``, ``val_*``, ``lr``, ``epoch``...) at the step that ended the epoch, and the batch
loss ``train_loss_step`` every ``log_every`` steps. One step axis for all tags is what lets a
resumed run purge what an interrupted writer logged past its checkpoint (``purge_step``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .loggers import STEP_LOSS, MetricLogger

if TYPE_CHECKING:
    from ..trainer import Trainer


def hparam_values(config: dict[str, Any], prefix: str = "") -> dict[str, int | float | str | bool]:
    """``config`` flattened (nested dicts as ``a.b``) to the scalar types TensorBoard's hparams
    plugin and MLflow's params take: lists, None and other values as text.

    Example:
        >>> hparam_values({"lr": 0.1, "model": {"hidden": [8, 8]}, "seed": None})
        {'lr': 0.1, 'model.hidden': '[8, 8]', 'seed': 'None'}
    """
    out: dict[str, int | float | str | bool] = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(hparam_values(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


class TensorBoardLogger(MetricLogger):
    """Write the fit's scalars and hyperparameters as TensorBoard event files in ``log_dir``.

    Args:
        log_dir: the event files' folder (``RUN/tensorboard``).
        hparams: the run's settings, shown in TensorBoard's HPARAMS tab (flattened by
            :func:`hparam_values`); written once, with the folder's first events.
        monitor: the metric named as the HPARAMS tab's metric column.
        every, before_write: as for :class:`~nnfit.callbacks.loggers.MetricLogger`.

    Example:
        >>> cb = TensorBoardLogger("runs/r/tensorboard", hparams={"lr": 1e-3})  # doctest: +SKIP
    """

    def __init__(self, log_dir: str | Path, *, hparams: dict[str, Any] | None = None,
                 monitor: str = "val_loss", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log_dir = Path(log_dir)
        self.hparams = hparam_values(hparams or {})
        self.monitor = monitor
        self._writer: Any = None
        self._steps: list[tuple[int, float]] = []

    def open(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # A resume purges every event an interrupted writer logged after its checkpoint's step.
        purge = self.resumed_step + 1 if self.resumed_step else None
        # The hparams go with the run's first events: a new run, or a resume that adds the sink.
        first = not self.resumed_step or not any(self.log_dir.glob("events.out.tfevents.*"))
        self._writer = SummaryWriter(str(self.log_dir), purge_step=purge)
        if first and self.hparams:
            from torch.utils.tensorboard.summary import hparams

            experiment, start, _ = hparams(self.hparams, {self.monitor: 0.0})
            self._writer.file_writer.add_summary(experiment)
            self._writer.file_writer.add_summary(start)

    def log_step(self, step: int, epoch: int, loss: float) -> None:
        # Held until the epoch ends: each event wakes the writer's thread, which then takes the
        # GIL from the training loop; 125 of them cost the CPU loop 4-5% (measured), one burst
        # per epoch does not.
        self._steps.append((step, loss))

    def log_epoch(self, step: int, logs: dict[str, float]) -> None:
        self._write_steps()
        for name, value in logs.items():
            self._writer.add_scalar(name, value, step)

    def _write_steps(self) -> None:
        for s, loss in self._steps:
            self._writer.add_scalar(STEP_LOSS, loss, s)
        self._steps.clear()

    def close(self) -> None:
        self._write_steps()  # a fit cut short keeps the losses of its last epoch
        self._writer.close()
