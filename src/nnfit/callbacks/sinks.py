"""The ``--log`` sinks of a run: checked before training starts, built, and finished.

``TrainConfig.log`` names them (``config.LOG_SINKS``): "jsonl" (``RUN/metrics.jsonl``),
"tensorboard" (``RUN/tensorboard/``) and "mlflow" (see :mod:`nnfit.callbacks.mlflow`).
``history.csv`` is written whatever they are.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import Callback
from .loggers import JSONLLogger, MetricLogger

# The module each optional sink imports, and the extra that installs it.
EXTRAS = {"tensorboard": ("torch.utils.tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}


def check_sinks(log: Sequence[str], run_dir: str | Path | None) -> None:
    """Refuse, before anything is read or trained, sinks that cannot work.

    Args:
        log: the sink names (``TrainConfig.log``).
        run_dir: the run directory the sinks write into, or None.

    Raises:
        ConfigError: a sink without a run directory (it would log nowhere), a sink whose
            optional dependency is not installed (naming the extra to install), or an
            ``MLFLOW_TRACKING_URI`` that does not work (:func:`~nnfit.callbacks.mlflow.check_tracking`).
    """
    if not log:
        return
    if run_dir is None:
        raise ConfigError(f"log={list(log)} writes into the run directory: pass run_dir= "
                          "(nnfit train always has one)")
    for sink in log:
        if sink not in EXTRAS:
            continue
        module, extra = EXTRAS[sink]
        try:
            importlib.import_module(module)
        except ImportError:
            raise ConfigError(f"logging to {sink} needs the {extra} package: "
                              f'pip install "nnfit[{extra}]"') from None
    if "mlflow" in log:
        from .mlflow import check_tracking

        check_tracking()


def make_sinks(log: Sequence[str], run_dir: str | Path, *, every: int, hparams: dict[str, Any],
               monitor: str, before_write: Callable[[], None] | None = None) -> list[MetricLogger]:
    """The logger callbacks for ``log`` writing into ``run_dir`` (call :func:`check_sinks` first).

    Args:
        log: the sink names, in any order.
        run_dir: the run directory.
        every: log the batch loss every N optimizer steps (0: per epoch only).
        hparams: the run's settings (``config.json``), for TensorBoard's hparams and MLflow's params.
        monitor: the monitored metric, TensorBoard's hparams metric.
        before_write: called once before a sink first writes (the run writer's start).
    """
    d = Path(run_dir)
    common: dict[str, Any] = {"every": every, "before_write": before_write}
    sinks: list[MetricLogger] = []
    # MLflow first: the sinks open as the fit starts, and the one that can fail there (its store
    # went away since check_sinks) then fails before the others hold open files and threads.
    if "mlflow" in log:
        from .mlflow import MLflowLogger

        sinks.append(MLflowLogger(d, hparams=hparams, **common))
    if "jsonl" in log:
        sinks.append(JSONLLogger(d / "metrics.jsonl", **common))
    if "tensorboard" in log:
        from .tensorboard import TensorBoardLogger

        sinks.append(TensorBoardLogger(d / "tensorboard", hparams=hparams, monitor=monitor, **common))
    return sinks


# Where each sink's numbers are, for the note on a resume that changes the sinks.
WHERE = {"jsonl": "metrics.jsonl", "tensorboard": "tensorboard/", "mlflow": "the MLflow run"}


def note_resumed_sinks(meta: dict[str, Any], log: Sequence[str]) -> None:
    """Warn, in one line, when a resume logs to other sinks than the fit that wrote its checkpoint.

    The sinks are chosen per session, as Lightning's loggers are: a resume logs where it is
    told (``nnfit train --resume`` repeats the run's ``--log`` unless given another), and a
    sink left out stops where the checkpoint is while ``history.csv`` goes on.

    Args:
        meta: the checkpoint's ``state.json`` (its ``config`` holds the earlier ``log``).
        log: the resumed fit's sinks.
    """
    from ..errors import warn

    config = meta.get("config")
    before = config.get("log") if isinstance(config, dict) else None
    before = [s for s in before if s in WHERE] if isinstance(before, list) else []
    stopped = [s for s in before if s not in log]
    started = [s for s in log if s not in before]
    if not stopped and not started:
        return
    parts = [f"{what} {', '.join(WHERE[s] for s in sinks)}" for what, sinks in
             (("not continued:", stopped), ("new:", started)) if sinks]
    now, was = ",".join(log) or "no sink", ",".join(before) or "no sink"
    warn(f"this resume logs to {now}, the run logged to {was} "
         f"(--log is chosen per session; from step {meta.get('step')}, epoch {meta.get('epoch')}): "
         f"{'; '.join(parts)}; history.csv holds every epoch")


def finish_sinks(callbacks: Sequence[Callback], run_dir: str | Path) -> None:
    """Give every sink among ``callbacks`` its last word on the complete run directory (MLflow
    uploads it as artifacts)."""
    for cb in callbacks:
        if isinstance(cb, MetricLogger):
            cb.finish(Path(run_dir))
