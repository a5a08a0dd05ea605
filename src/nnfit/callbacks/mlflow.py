"""MLflow logging (``--log mlflow``): one MLflow run per nnfit run, through MLflow's own client.

The store is ``MLFLOW_TRACKING_URI`` when set (experiment ``MLFLOW_EXPERIMENT_NAME``, default
"nnfit"), else one inside the run directory: ``RUN/mlflow.db`` with artifacts under
``RUN/mlartifacts/`` (MLflow 3 refuses its old ``mlruns/`` file store; browse this one with
``mlflow ui --backend-store-uri sqlite:///RUN/mlflow.db``). Params are the run's settings,
metrics are indexed by the optimizer step as in TensorBoard, and the run directory's files go
up as artifacts when the run is complete. The MLflow run's id is kept in ``RUN/mlflow_run.json``
so a resumed run continues the same MLflow run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .loggers import STEP_LOSS, MetricLogger
from .tensorboard import hparam_values

if TYPE_CHECKING:
    from ..trainer import Trainer

RUN_FILE = "mlflow_run.json"
DB_FILE = "mlflow.db"
ARTIFACTS = "mlartifacts"
# What is not uploaded: the store itself, the lock, and the checkpoints (the final model is
# uploaded; the checkpoints are only for resuming and would copy it several times over).
NOT_ARTIFACTS = {DB_FILE, ARTIFACTS, "checkpoints", ".nnfit.lock"}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's own noise kept from the user: the deprecation warnings of its SQLAlchemy layer
    and the INFO lines of creating its database."""
    db_log = logging.getLogger("mlflow.store.db.utils")
    level = db_log.level
    db_log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        db_log.setLevel(level)


class MLflowLogger(MetricLogger):
    """Log the fit to an MLflow run: params, metrics per step and epoch, then artifacts.

    Args:
        run_dir: the nnfit run directory (holds the run id, and the local store when
            ``MLFLOW_TRACKING_URI`` is unset).
        hparams: the run's settings, logged as params by the MLflow run's first fit.
        every, before_write: as for :class:`~nnfit.callbacks.loggers.MetricLogger`.
    """

    def __init__(self, run_dir: str | Path, *, hparams: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_dir = Path(run_dir)
        self.hparams = hparam_values(hparams or {})
        self.client: Any = None
        self.run_id: str | None = None
        self._last: dict[str, int] = {}  # per metric, the last step the MLflow run holds

    def tracking_uri(self) -> str:
        """``MLFLOW_TRACKING_URI``, else the SQLite store inside the run directory."""
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(self.run_dir / DB_FILE).absolute()}"

    def open(self, trainer: Trainer) -> None:
        from mlflow.tracking import MlflowClient

        from ..checkpoint import read_json
        from ..files import atomic_write_json

        uri = self.tracking_uri()
        with _quiet():
            self.client = MlflowClient(tracking_uri=uri)
            saved = read_json(self.run_dir / RUN_FILE) if (self.run_dir / RUN_FILE).is_file() else {}
            if saved.get("tracking_uri") == uri:  # resumed: go on with the same MLflow run
                self.run_id = saved["run_id"]
                self.client.update_run(self.run_id, status="RUNNING")
                self._last = self._logged_steps()
                return
            run = self.client.create_run(self._experiment(), run_name=self.run_dir.name,
                                         tags={"nnfit.run_dir": str(self.run_dir.absolute())})
            self.run_id = run.info.run_id
            atomic_write_json(self.run_dir / RUN_FILE, {"tracking_uri": uri, "run_id": self.run_id})
            self._params()

    def _experiment(self) -> str:
        """The id of the experiment to log to (created when missing)."""
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "nnfit"
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        local = (None if os.environ.get("MLFLOW_TRACKING_URI")
                 else (self.run_dir / ARTIFACTS).absolute().as_uri())
        return self.client.create_experiment(name, artifact_location=local)

    def _params(self) -> None:
        from mlflow.entities import Param

        params = [Param(k, str(v)) for k, v in self.hparams.items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def _logged_steps(self) -> dict[str, int]:
        """The last step of each metric the MLflow run already holds: an interrupted writer
        may have logged past the checkpoint resumed from, and MLflow cannot take points back."""
        run = self.client.get_run(self.run_id)
        return {k: max(m.step for m in self.client.get_metric_history(self.run_id, k))
                for k in run.data.metrics}

    def _log(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        # A step the run already holds is the same number again (a resume is exact): not twice.
        metrics = [Metric(k, v, now, step) for k, v in values.items() if step > self._last.get(k, -1)]
        if metrics:
            with _quiet():
                self.client.log_batch(self.run_id, metrics=metrics)

    def log_step(self, step: int, epoch: int, loss: float) -> None:
        self._log(step, {STEP_LOSS: loss})

    def log_epoch(self, step: int, logs: dict[str, float]) -> None:
        self._log(step, logs)

    def on_fit_end(self, trainer: Trainer) -> None:
        import sys

        from ..errors import Stopped

        error = sys.exc_info()[1]  # on_fit_end runs in the loop's `finally`
        if self._open and error is not None:
            stopped = isinstance(error, (Stopped, KeyboardInterrupt))
            with _quiet():
                self.client.set_terminated(self.run_id, "KILLED" if stopped else "FAILED")
        super().on_fit_end(trainer)

    def finish(self, run_dir: Path) -> None:
        """Upload the run directory's files (but the store and checkpoints), end the run."""
        if self.run_id is None:
            return
        with _quiet():
            for p in sorted(Path(run_dir).iterdir()):
                if p.name in NOT_ARTIFACTS or p.name.startswith("."):
                    continue
                if p.is_dir():
                    self.client.log_artifacts(self.run_id, str(p), artifact_path=p.name)
                else:
                    self.client.log_artifact(self.run_id, str(p))
            self.client.set_terminated(self.run_id, "FINISHED")
