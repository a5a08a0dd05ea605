"""MLflow logging (``--log mlflow``): one MLflow run per nnfit run, through MLflow's own client.

The store is ``MLFLOW_TRACKING_URI`` when set (experiment ``MLFLOW_EXPERIMENT_NAME``, default
"nnfit"), else one inside the run directory: ``RUN/mlflow.db`` with artifacts under
``RUN/mlartifacts/`` (MLflow 3 refuses its old ``mlruns/`` file store; browse this one with
``mlflow ui --backend-store-uri sqlite:///RUN/mlflow.db``). Params are the run's settings,
metrics are indexed by the optimizer step as in TensorBoard, and the run directory's files go
up as artifacts when the run is complete. The MLflow run's id is kept in ``RUN/mlflow_run.json``
so a resumed run continues the same MLflow run.

A ``MLFLOW_TRACKING_URI`` is tried (:func:`check_tracking`) before anything is read or written:
an address that does not answer is refused in one line within seconds, not after MLflow's
minutes of retries. A plain folder or ``file://`` URI is MLflow's file store. Step losses are
kept in memory and sent with the epoch's metrics in one batch: the loop never waits on the store.
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
BATCH = 1000  # MLflow's most metrics in one log_batch


# The check's HTTP settings: one try, 5 s to answer (MLflow's defaults, 7 retries with growing
# back-off and 120 s each, keep a dead address busy for minutes). A user's own values win.
CHECK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


def tracking_uri(run_dir: str | Path) -> str:
    """``MLFLOW_TRACKING_URI``, else the SQLite store inside the run directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(run_dir) / DB_FILE).absolute()}"


def is_file_store(uri: str) -> bool:
    """Whether MLflow reads ``uri`` as its file store: a plain folder or a ``file://`` URI."""
    from urllib.parse import urlparse

    return urlparse(uri).scheme in ("", "file")


@contextlib.contextmanager
def _quiet(uri: str, *, check: bool = False) -> Iterator[None]:
    """Around every MLflow call: MLflow's own noise kept from the user (the deprecation warnings
    of its SQLAlchemy layer, the INFO lines of creating its database), the file store allowed
    when ``uri`` is one, and for ``check`` the short HTTP settings of :data:`CHECK_HTTP`.

    MLflow 3 refuses its file store unless ``MLFLOW_ALLOW_FILE_STORE=true`` ("maintenance
    mode"); the issue promises a local file store and the user chose it by its address, so it
    is allowed for nnfit's calls only: the variables are restored after each.
    """
    env = {**({k: v for k, v in CHECK_HTTP.items() if k not in os.environ} if check else {}),
           **({"MLFLOW_ALLOW_FILE_STORE": "true"} if is_file_store(uri) else {})}
    before = {k: os.environ.get(k) for k in env}
    db_log = logging.getLogger("mlflow.store.db.utils")
    level = db_log.level
    db_log.setLevel(logging.WARNING)
    os.environ.update(env)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        db_log.setLevel(level)
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _reason(error: Exception) -> str:
    """An MLflow error in one short line (its messages run to paragraphs)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def experiment_id(client: Any, run_dir: str | Path) -> str:
    """The id of the experiment to log to (``MLFLOW_EXPERIMENT_NAME``, default "nnfit"),
    created when missing; without ``MLFLOW_TRACKING_URI`` its artifacts go to ``RUN/mlartifacts``."""
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "nnfit"
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    local = (None if os.environ.get("MLFLOW_TRACKING_URI")
             else (Path(run_dir) / ARTIFACTS).absolute().as_uri())
    return client.create_experiment(name, artifact_location=local)


def check_tracking() -> None:
    """Try ``MLFLOW_TRACKING_URI`` before anything is read or written: build the client and
    get (or create) the experiment, with one HTTP try of 5 s. Without the variable the store is
    a new one inside the run directory: nothing to try.

    Raises:
        ConfigError: the address is not one MLflow takes or does not answer, naming it.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return
    from mlflow.tracking import MlflowClient

    from ..errors import ConfigError

    try:
        with _quiet(uri, check=True):
            experiment_id(MlflowClient(tracking_uri=uri), ".")
    except Exception as e:  # any failure of MLflow's: unknown scheme, refused, timed out, denied
        raise ConfigError(f"--log mlflow: MLFLOW_TRACKING_URI {uri!r} does not work: "
                          f"{_reason(e)}") from None


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
        self._pending: list[tuple[str, float, int, int]] = []  # (key, value, ms, step) to send

    def tracking_uri(self) -> str:
        """``MLFLOW_TRACKING_URI``, else the SQLite store inside the run directory."""
        return tracking_uri(self.run_dir)

    def open(self, trainer: Trainer) -> None:
        """Start the MLflow run (or continue the resumed one's).

        Raises:
            ConfigError: the store failed (it answered :func:`check_tracking` moments ago, or a
                resumed run's MLflow run is gone), naming its address.
        """
        from ..errors import ConfigError

        uri = self.tracking_uri()
        try:
            with _quiet(uri):
                self._start(uri)
        except Exception as e:  # MLflow's own errors: one line, not a traceback
            raise ConfigError(f"--log mlflow: the MLflow store {uri!r} failed: {_reason(e)}") from None

    def _start(self, uri: str) -> None:
        """Continue the MLflow run ``RUN/mlflow_run.json`` names in ``uri``, else create one."""
        from mlflow.tracking import MlflowClient

        from ..checkpoint import read_json
        from ..files import atomic_write_json

        self.client = MlflowClient(tracking_uri=uri)
        saved = read_json(self.run_dir / RUN_FILE) if (self.run_dir / RUN_FILE).is_file() else {}
        if saved.get("tracking_uri") == uri:  # resumed: go on with the same MLflow run
            self.run_id = saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            self._last = self._logged_steps()
            return
        run = self.client.create_run(experiment_id(self.client, self.run_dir), run_name=self.run_dir.name,
                                     tags={"nnfit.run_dir": str(self.run_dir.absolute())})
        self.run_id = run.info.run_id
        atomic_write_json(self.run_dir / RUN_FILE, {"tracking_uri": uri, "run_id": self.run_id})
        self._params()

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

    def _keep(self, step: int, values: dict[str, float]) -> None:
        """Hold ``values`` at ``step`` until the next :meth:`_send`, with their own time."""
        now = int(time.time() * 1000)
        # A step the run already holds is the same number again (a resume is exact): not twice.
        self._pending += [(k, v, now, step) for k, v in values.items() if step > self._last.get(k, -1)]

    def _send(self) -> None:
        """Send the held metrics: one ``log_batch`` per :data:`BATCH` of them."""
        from mlflow.entities import Metric

        pending, self._pending = self._pending, []
        if not pending:
            return
        with _quiet(self.tracking_uri()):
            for i in range(0, len(pending), BATCH):
                self.client.log_batch(self.run_id, metrics=[Metric(*m) for m in pending[i:i + BATCH]])

    def log_step(self, step: int, epoch: int, loss: float) -> None:
        # Held, not sent: a store round trip per logged step (~10 ms on SQLite, more over HTTP)
        # would be charged to the epoch; the epoch's end sends them with its metrics.
        self._keep(step, {STEP_LOSS: loss})

    def log_epoch(self, step: int, logs: dict[str, float]) -> None:
        self._keep(step, logs)
        self._send()

    def on_fit_end(self, trainer: Trainer) -> None:
        import sys

        from ..errors import Stopped

        error = sys.exc_info()[1]  # on_fit_end runs in the loop's `finally`
        try:
            if self._open:
                self._send()  # the step losses of an epoch a stop or an error cut short
            if self._open and error is not None:
                stopped = isinstance(error, (Stopped, KeyboardInterrupt))
                with _quiet(self.tracking_uri()):
                    self.client.set_terminated(self.run_id, "KILLED" if stopped else "FAILED")
        finally:
            super().on_fit_end(trainer)

    def finish(self, run_dir: Path) -> None:
        """Upload the run directory's files (but the store and checkpoints), end the run."""
        if self.run_id is None:
            return
        with _quiet(self.tracking_uri()):
            for p in sorted(Path(run_dir).iterdir()):
                if p.name in NOT_ARTIFACTS or p.name.startswith("."):
                    continue
                if p.is_dir():
                    self.client.log_artifacts(self.run_id, str(p), artifact_path=p.name)
                else:
                    self.client.log_artifact(self.run_id, str(p))
            self.client.set_terminated(self.run_id, "FINISHED")
