"""The run directory: what a training run leaves on disk, and how a resume finds it.

Layout::

    RUN/
      config.json                   the resolved configuration
      checkpoints/step-000000120/   a checkpoint taken inside an epoch (every ``checkpoint_steps``
                                    optimizer steps, or on SIGINT/SIGTERM)
      checkpoints/step-000000150-epoch-00003/  a checkpoint at the end of epoch 3
          state.safetensors         model, optimizer, RNG and loop tensors
          state.json                epoch, step, data order, history, scheduler, early stopping,
                                    config, data fingerprint, task and preprocessing
          manifest.json             format version, size and SHA-256 of both files
      history.csv                   one row per epoch
      model.safetensors, model.json, manifest.json   the final model (see Learner.save)
      metrics.json                  final validation metrics
      confusion_matrix.safetensors  the confusion matrices of a target over 100 classes
      test.csv, test_metrics.json   the test split and its metrics (``nnfit train``)
      .nnfit.lock                   while a writer holds the run (see nnfit.io.lock)

Every name nnfit writes here is registered in ``nnfit.io.layout.RUN_LAYOUT`` (what
``--overwrite`` removes). One process writes a run at a time: it holds the run's lock.

A checkpoint directory is built under a temporary name and committed with one rename; the
newest ``keep_checkpoints`` plus the best one are kept, older ones removed only after a newer
one is committed. A resume takes the newest checkpoint that verifies against its manifest,
warning about (and skipping) damaged ones; temporaries of a killed writer are removed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .checkpoint import (
    FORMAT_VERSION,
    atomic_write_json,
    atomic_write_text,
    save_checkpoint,
)
from .data import LoaderData, TensorData
from .errors import ConfigError, warn
from .files import clean_temporaries, remove_bundle, write_files
from .io.checkpoints import CHECKPOINTS, checkpoint_name, committed, latest_checkpoint
from .io.layout import clear_run
from .io.model_dir import KIND, run_files, write_run_config

if TYPE_CHECKING:
    from .learner import Learner
    from .trainer import Trainer

# What a resumed run may change: how long and where it runs, not what it trains.
RESUMABLE = {"epochs", "patience", "quiet", "device", "eval_batch_size", "threads", "checkpoint_every",
             "checkpoint_steps", "keep_checkpoints", "compile", "check_finite", "cuda_graphs", "fused",
             "channels_last", "plots", "report", "log", "log_every", "dist_backend"}


def jsonable_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metric values with NaN/inf turned into None, so the JSON is standard."""
    out = {}
    for k, v in metrics.items():
        out[k] = None if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))) else v
    return out


def write_metrics(run_dir: str | Path, split: str, metrics: dict[str, Any],
                  classes: list | None) -> dict[str, Any]:
    """Write ``metrics.json`` (``split`` "validation") or ``SPLIT_metrics.json``; returns what
    was written. A confusion matrix over ``confusion.MAX_SHOWN_CLASSES`` classes goes to
    ``confusion_matrix.safetensors`` (key ``split``) instead, with a per-class summary and
    ``confusion_matrix_file`` in the JSON."""
    from .confusion import FILE, save_confusion, split_confusion

    shown, matrix = split_confusion(metrics, classes)
    if matrix is not None:
        save_confusion(run_dir, split, matrix)
        shown["confusion_matrix_file"] = FILE
    shown = jsonable_metrics(shown)
    name = "metrics.json" if split == "validation" else f"{split}_metrics.json"
    atomic_write_json(Path(run_dir) / name, shown)
    return shown


def data_fingerprint(*sources: Any) -> str:
    """SHA-256 of the training (and validation) tensors as trained on: a resume checks that it
    continues on the same data. A Dataset/DataLoader contributes only its type and length; a
    source with a ``fingerprint()`` of its own (a file streamed by row groups) that, so no
    file too large for memory is read for it."""
    h = hashlib.sha256()
    for s in sources:
        if isinstance(s, TensorData):
            tensors = list(s.inputs.values()) if isinstance(s.inputs, dict) else list(s.inputs)
            for t in [*tensors, *([s.target] if s.target is not None else [])]:
                h.update(f"{t.dtype}{tuple(t.shape)};".encode())
                h.update(t.detach().cpu().contiguous().reshape(-1).view(dtype=torch.uint8).numpy())
        elif isinstance(s, LoaderData):  # a stream's length is None
            ds = getattr(s.data, "dataset", s.data)
            h.update(f"{type(ds).__name__}:{s.length}:{getattr(s.data, 'batch_size', None)};".encode())
        elif callable(getattr(s, "fingerprint", None)):  # a streamed file (nnfit.data.stream)
            h.update(f"{type(s).__name__}:{s.fingerprint()};".encode())
        elif s is not None:  # a StreamData or a source of the user's own
            h.update(f"{type(s).__name__}:{s.length}:{s.num_batches(1)};".encode())
        else:
            h.update(b"none;")
    return h.hexdigest()


def resume_differences(saved: dict[str, Any], record: dict[str, Any], saved_data: str | None,
                       data: str | None) -> list[str]:
    """Field-by-field differences between a checkpoint's run and the one asked for."""
    from .config import LATER_SETTINGS

    now = json.loads(json.dumps(record))  # tuples as lists, as saved
    saved = {**{k: v for k, v in LATER_SETTINGS.items() if k in now}, **saved}  # older runs
    # A data file moved or renamed is the same data when its fingerprint is the run's.
    same_data = saved_data is not None and saved_data == data
    diffs = [f"{k} ({saved.get(k)!r} -> {now.get(k)!r})" for k in sorted(set(saved) | set(now))
             if k not in RESUMABLE and saved.get(k) != now.get(k) and not (k == "data" and same_data)]
    if saved_data is not None and data is not None and saved_data != data:
        diffs.append(f"training data (sha256 {saved_data[:12]}... -> {data[:12]}...)")
    return diffs


def checkpoint_due(trainer: Trainer, improved: bool, force: bool = False) -> bool:
    """Whether :meth:`RunWriter.checkpoint` writes a checkpoint now: inside an epoch when
    called, at an epoch end every ``checkpoint_every`` epochs, at the end, when ``improved``,
    or when ``force``d. Every rank of a torchrun run asks at the same points, and all take
    part in the checkpoint (:class:`RankWriter`)."""
    c, st = trainer.config, trainer.state
    return st.batch > 0 or force or improved or bool(c.checkpoint_every) and (
        st.epoch % c.checkpoint_every == 0 or st.stop or st.epoch == c.epochs)


class RankWriter:
    """What a rank other than 0 does where rank 0's :class:`RunWriter` writes: the same
    checkpoint decisions, taking part in gathering each checkpoint's per-rank state, and the
    last validation; it writes nothing."""

    def checkpoint(self, trainer: Trainer, improved: bool, force: bool = False) -> None:
        if checkpoint_due(trainer, improved, force):
            trainer.checkpoint_parts()  # gathers this rank's generators into rank 0's checkpoint

    def finish(self, trainer: Trainer, val: Any) -> None:
        if val is not None:  # rank 0 evaluates too: an evaluation of all ranks
            trainer.evaluate(trainer.model, val, task=trainer.task)


class RunWriter:
    """Writes a run directory as training goes.

    Args:
        run_dir: the directory (created at the first write).
        learner: the learner being trained (its task, preprocessing and spec go into every
            checkpoint so a resume needs no user code for built-in models).
        config: the configuration recorded in ``config.json`` and every checkpoint.
        fingerprint: :func:`data_fingerprint` of the data trained on.
        best: the name of the best checkpoint so far (when resuming), kept through rotation.
        overwrite: remove an earlier run's files (every name of ``RUN_LAYOUT``) at the first
            write, so none of its checkpoints, model or metrics mixes with this run's.
        resumed: the ``state.json`` of the checkpoint this fit resumes from: its epoch and step
            are added to ``resumes.json`` (the report's resume history) once training has
            really resumed: at the first epoch end or checkpoint of this fit, or at its finish.

    The caller holds the run directory's lock (:mod:`nnfit.io.lock`) while the writer writes.
    """

    def __init__(self, run_dir: str | Path, learner: Learner, config: dict[str, Any],
                 fingerprint: str | None = None, best: str | None = None,
                 overwrite: bool = False, resumed: dict[str, Any] | None = None) -> None:
        self.dir = Path(run_dir)
        self.learner = learner
        self.config = dict(config)
        self.fingerprint = fingerprint
        self.best = best
        self.overwrite = overwrite
        self.resumed = resumed
        self._started = False
        # learner.meta() at the first checkpoint, kept: the task, preprocessing and spec do not
        # change during a fit, and rebuilding them (up to 1e7 class labels) at every one is slow.
        self._learner_meta: dict[str, Any] | None = None

    def start(self) -> None:
        """Prepare the directory for its first write (once; later calls do nothing)."""
        # At the first write, when the inputs have checked out and training has begun: a run
        # that fails while starting changes nothing, an earlier run's files included.
        if not self._started:
            if self.overwrite:
                clear_run(self.dir)
            for d in (self.dir, self.dir / CHECKPOINTS):
                clean_temporaries(d)
            (self.dir / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
            write_run_config(self.dir, self.config)  # with the manifest that covers it
            self._started = True

    def _note_resume(self) -> None:
        """Record the resume in ``resumes.json`` (once). Not at :meth:`start`: the metric sinks
        start the writer before the first epoch, and a resume that fails there (a sink that
        cannot open its file) never resumed."""
        if self.resumed is not None:
            record_resume(self.dir, self.resumed)
            self.resumed = None

    def checkpoint(self, trainer: Trainer, improved: bool, force: bool = False) -> Path | None:
        """Persist the state: at an epoch end, history always and a checkpoint every
        ``checkpoint_every`` epochs, at the end, and when ``improved``; inside an epoch
        (``trainer.state.batch > 0``) a checkpoint when called. ``force`` writes one regardless.

        Raises:
            NonFiniteError: a tensor of the state is NaN or infinite; nothing is written.
        """
        c, st = trainer.config, trainer.state
        mid_epoch = st.batch > 0
        self.start()
        self._note_resume()
        if not mid_epoch:
            atomic_write_text(self.dir / "history.csv", st.history.to_csv())
        if not checkpoint_due(trainer, improved, force):
            return None
        name = checkpoint_name(st.step, None if mid_epoch else st.epoch)
        tensors, meta = trainer.checkpoint_parts()  # checks every tensor is finite
        best = name if improved else self.best
        if self._learner_meta is None:
            self._learner_meta = self.learner.meta()
        meta.update({"format": FORMAT_VERSION, "learner": self._learner_meta, "config": self.config,
                     "data_sha256": self.fingerprint, "best_checkpoint": best})
        target = self.dir / CHECKPOINTS / name
        if target.exists():  # the same step again after a resume: replace it
            remove_bundle(target)
        save_checkpoint(target, tensors, meta)
        self.best = best
        self._rotate(c.keep_checkpoints)
        return target

    def _rotate(self, keep: int) -> None:
        """Remove all but the newest ``keep`` checkpoints and the best one (0 keeps all)."""
        names = committed(self.dir)
        if keep <= 0:
            return
        for name in names[:-keep]:
            if name != self.best:
                remove_bundle(self.dir / CHECKPOINTS / name)

    def finish(self, trainer: Trainer, val: Any) -> dict[str, Any] | None:
        """Write the final model and ``metrics.json`` (validation metrics, when there is
        validation data); returns those metrics."""
        self.start()
        self._note_resume()  # a resume of a finished run that had no epoch left to train
        # One manifest over the model and config.json: the finished run verifies as a whole.
        write_files(self.dir, KIND, run_files(self.learner.files(), self.config))
        if val is None:
            return None
        metrics = trainer.evaluate(self.learner.model, val, task=self.learner.task)
        metrics.pop("loss", None)
        write_metrics(self.dir, "validation", metrics, self.learner.classes)
        return metrics


def record_resume(run_dir: Path, meta: dict[str, Any]) -> None:
    """Add a resume from the checkpoint ``meta`` (its ``state.json``) to ``RUN/resumes.json``:
    when, from which epoch and step, and with which nnfit. Nothing else records a resume; a
    file that does not parse is started anew (it is a record for people, never read back to
    train)."""
    import time

    from . import __version__

    path = run_dir / "resumes.json"
    try:
        resumes = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    except (OSError, ValueError):
        resumes = []
    if not isinstance(resumes, list):
        resumes = []
    resumes.append({"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "epoch": meta.get("epoch"),
                    "step": meta.get("step"), "batch": meta.get("batch"), "nnfit_version": __version__})
    atomic_write_json(path, resumes)


def read_latest(run_dir: str | Path, set_aside: bool = False) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The newest checkpoint of ``run_dir`` that verifies, as ``(tensors, meta)``
    (:func:`latest_checkpoint` without its directory)."""
    return latest_checkpoint(run_dir, set_aside)[1:]


def check_resume(meta: dict[str, Any], record: dict[str, Any], fingerprint: str | None,
                 force: bool, fits: Callable[[], None] | None = None) -> None:
    """Refuse (or, with ``force``, warn about) resuming with other settings or data.

    Args:
        fits: raises when the checkpoint's weights cannot fit the model asked for; called after
            the settings are compared and before the warning, so a forced resume is refused
            for its real cause, without a warning first.
    """
    diffs = resume_differences(meta.get("config") or {}, record, meta.get("data_sha256"), fingerprint)
    if diffs and not force:
        raise ConfigError(f"cannot resume with changed settings: {', '.join(diffs)}; start a new run, "
                          "or pass --force-resume (force_resume=True) to continue anyway")
    if fits is not None:
        fits()
    if diffs:
        warn(f"resuming despite changed settings: {', '.join(diffs)}")
