"""The run directory: what a training run leaves on disk, and how a resume finds it.

Layout::

    RUN/
      config.json                 the resolved configuration
      checkpoints/last.safetensors  full state after the newest checkpointed epoch
      checkpoints/best.safetensors  full state at the best epoch of the monitored metric
      history.csv                 one row per epoch
      model.safetensors           the weights the run ends with (the best ones when restored)
      model.json                  task, label map, preprocessing, model spec, nnfit version
      metrics.json                final validation metrics

Every file is written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from .checkpoint import atomic_write_json, atomic_write_text, load_tensors, save_tensors
from .errors import CheckpointError

if TYPE_CHECKING:
    from .learner import Learner
    from .trainer import Trainer

LAST = "checkpoints/last.safetensors"
BEST = "checkpoints/best.safetensors"


def jsonable_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metric values with NaN/inf turned into None, so the JSON is standard."""
    out = {}
    for k, v in metrics.items():
        out[k] = None if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))) else v
    return out


class RunWriter:
    """Writes a run directory as training goes.

    Args:
        run_dir: the directory (created if needed).
        learner: the learner being trained (its task, preprocessing and spec go into every
            checkpoint so a resume needs no user code for built-in models).
        config: the configuration to record in ``config.json``; defaults to the learner's
            TrainConfig.
    """

    def __init__(self, run_dir: str | Path, learner: Learner, config: Any = None) -> None:
        self.dir = Path(run_dir)
        self.learner = learner
        self.config = dict(config) if config is not None else asdict(learner.config)
        self._started = False

    def _start(self) -> None:
        # Created at the first write, so a run that fails while starting leaves nothing behind.
        if not self._started:
            (self.dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.dir / "config.json", self.config)
            self._started = True

    def checkpoint(self, trainer: Trainer, improved: bool) -> None:
        """Persist the state after an epoch: history always, the last checkpoint every
        ``checkpoint_every`` epochs (and at the end), the best checkpoint when improved."""
        c, st = trainer.config, trainer.state
        self._start()
        atomic_write_text(self.dir / "history.csv", st.history.to_csv())
        due = c.checkpoint_every and (st.epoch % c.checkpoint_every == 0 or st.stop or st.epoch == c.epochs)
        if not (due or improved):
            return
        tensors, meta = trainer.checkpoint_parts()
        meta.update({"format": 1, "learner": self.learner.meta(), "config": self.config})
        if due:
            save_tensors(self.dir / LAST, tensors, meta)
        if improved:
            save_tensors(self.dir / BEST, tensors, meta)

    def finish(self, trainer: Trainer, val: Any) -> dict[str, Any] | None:
        """Write the final model and ``metrics.json`` (validation metrics, when there is
        validation data); returns those metrics."""
        self._start()
        self.learner.save(self.dir)
        if val is None:
            return None
        metrics = trainer.evaluate(self.learner.model, val, task=self.learner.task)
        metrics.pop("loss", None)
        atomic_write_json(self.dir / "metrics.json", jsonable_metrics(metrics))
        return metrics

    @staticmethod
    def read_last(run_dir: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The last checkpoint of ``run_dir`` as ``(tensors, meta)``.

        Raises:
            CheckpointError: no run there, or no readable checkpoint in it.
        """
        p = Path(run_dir)
        if not p.is_dir():
            raise CheckpointError(f"{p}: no such run directory")
        tensors, meta = load_tensors(p / LAST)
        if not meta or "learner" not in meta or "optimizer" not in meta:
            raise CheckpointError(f"{p / LAST}: not an nnfit checkpoint")
        if meta.get("format", 0) > 1:
            raise CheckpointError(f"{p / LAST}: written by a newer nnfit; upgrade nnfit")
        return tensors, meta
