"""The user-facing workflow: ``fit`` a model on arrays, tables or files, then evaluate, predict,
save, load and inspect it through the returned :class:`Learner`.

A Learner is a plain ``nn.Module`` plus what is needed to use it on new raw data: the task
(label vocabulary or target scaling), the input preprocessing fitted on the training split, the
model's spec (so a saved built-in model is rebuilt without user code) and the training history.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from . import __version__
from .callbacks import Callback, History
from .checkpoint import FORMAT_VERSION, tensors_to_bytes
from .config import TrainConfig, train_config
from .data import LoaderData, TensorData
from .data.columns import column_name
from .data.prepare import labelled_inputs, model_inputs, prepare
from .data.preprocess import Preprocessor
from .errors import ConfigError, warn
from .files import write_files
from .guards import check_finite_outputs
from .io.model_dir import META_FILE, MODEL_FILE, model_from_files, read_model_dir
from .models import build_model
from .specs import built_in, complete_spec, family
from .summary import ModelSummary, summarize
from .tasks import ClassificationTask, CustomTask, Task, task_from_dict
from .tasks.custom import check_resumed, training_task
from .trainer import Trainer

if TYPE_CHECKING:
    from .run import RunWriter


class Learner:
    """A trained (or trainable) model with its task, preprocessing, spec and history.

    Args:
        model: the ``nn.Module``; nnfit never wraps or changes it.
        task: a fitted task (label map or target scaling).
        preprocessor: the input schema and standardisation, or None for DataLoader-fed models.
        spec: the model's declarative spec when it is a built-in model, else None.
        config: the TrainConfig used for training (and evaluation batch size, device).
        history: per-epoch training records.
        trainer: the trainer that trained the model (reused for evaluation and prediction).
        target_name: the target column when trained on a table or file.

    Example:
        >>> import nnfit
        >>> x, y = np.random.rand(80, 4), np.random.rand(80) > 0.5
        >>> learner = nnfit.fit(nnfit.models.MLP(4, [8], 1), x, y, epochs=2, quiet=True)
        >>> learner.predict(x[:3]).shape
        (3,)
    """

    def __init__(self, model: nn.Module, *, task: Task, preprocessor: Preprocessor | None,
                 spec: dict | None = None, config: TrainConfig | None = None,
                 history: History | None = None, trainer: Trainer | None = None,
                 target_name: str | None = None) -> None:
        self.model = model
        self.target_name = target_name  # the target column of table data, if any
        self.stop_reason = ""  # why training ended early, when it did
        self.task = task
        self.preprocessor = preprocessor
        self.spec = spec
        self.config = config or TrainConfig()
        self.history = history or History()
        self._trainer = trainer

    # ------------------------------------------------------------------ use
    @property
    def trainer(self) -> Trainer:
        """A quiet Trainer on the learner's device, for evaluation and prediction."""
        if self._trainer is None:
            # seed=None: evaluating or predicting must not reseed the caller's global RNG.
            self._trainer = Trainer(self.config, quiet=True, seed=None)
            self._trainer.task = self.task
        return self._trainer

    @property
    def classes(self) -> list | None:
        """The label vocabulary (classification) in index order, or None (regression)."""
        return list(self.task.labels.classes) if isinstance(self.task, ClassificationTask) else None

    def _inputs(self, x: Any, source: str = "input") -> tuple[Any, str]:
        """Model-ready inputs for ``x`` and the name to use for them in errors."""
        if isinstance(x, (Dataset, DataLoader)):
            return LoaderData(x), source
        if self.preprocessor is None:
            raise ConfigError("this model was trained from a DataLoader: pass a Dataset or DataLoader")
        if self.preprocessor.layout is not None:  # images, sequences, forecasting windows
            data, source, _ = self.preprocessor.layout.inputs(self.preprocessor, x, source, self.target_name)
            return data, source
        inputs, source = model_inputs(self.preprocessor, x, source, self.target_name)
        return TensorData(inputs), source

    def prediction_keys(self, x: Any) -> tuple[Tensor, dict[str, np.ndarray]]:
        """Raw outputs for ``x`` (as :meth:`outputs`) and the columns that name each output row
        in a prediction file: the image ``path``, the sequence id, the forecast's time column;
        empty for rows of features (one output per input row, in order)."""
        keys: dict[str, np.ndarray] = {}
        pre = self.preprocessor
        if pre is not None and pre.layout is not None and not isinstance(x, (Dataset, DataLoader)):
            data, source, keys = pre.layout.inputs(pre, x, "input", self.target_name)
        else:
            data, source = self._inputs(x)
        out = self.trainer.predict_outputs(self.model, data)
        check_finite_outputs(out, source)
        return out, keys

    @property
    def imputes(self) -> bool:
        """Whether missing feature values are filled with training medians (``impute=True``)."""
        return self.preprocessor is not None and self.preprocessor.imputes

    def outputs(self, x: Any, *, check_finite: bool = True) -> Any:
        """Raw model outputs (logits or scaled values) for ``x``, on the CPU: one tensor, or the
        structure a custom-loss model returns (tuples, lists, dicts of tensors, every leaf
        holding a row per input row).

        Args:
            check_finite: refuse a NaN or infinite output (as :meth:`predict`,
                :meth:`predict_proba` and :meth:`evaluate` do); False returns it as it is.

        Raises:
            DataError: an output is not finite, naming the data and the first such row.
        """
        data, source = self._inputs(x)
        out = self.trainer.predict_outputs(self.model, data)
        if check_finite:
            check_finite_outputs(out, source)
        return out

    def predict(self, x: Any) -> Any:
        """Predicted labels (in the training label space) or values (original units); a
        custom-loss model's raw outputs, NumPy arrays in the structure the model returns."""
        return self.task.decode(self.outputs(x))

    def predict_proba(self, x: Any) -> np.ndarray:
        """Class probabilities, columns in :attr:`classes` order. Shape: (n, C)."""
        if not isinstance(self.task, ClassificationTask):
            raise ConfigError("predict_proba needs a classification model")
        return self.task.proba(self.outputs(x)).double().numpy()

    def evaluate(self, x: Any, y: Any = None, *, target: str | None = None) -> dict[str, Any]:
        """Loss and metrics on labelled data (arrays + ``y``, or a table/file + ``target``).

        Raises:
            ConfigError: a custom-loss model loaded without its loss function (``loss=``).
            DataError: bad data, or a model output that is not finite (naming the first such
                row) rather than NaN metrics.
        """
        if isinstance(self.task, CustomTask) and self.task.fn is None:  # before reading any data
            raise self.task.missing()
        data, source = self._labelled(x, y, target, "evaluation data")
        return self.trainer.evaluate(self.model, data, task=self.task, finite_outputs=source)

    def labelled(self, x: Any, y: Any, target: str | None, source: str) -> Any:
        """``x`` and ``y`` as a model-ready labelled source, checked against the schema."""
        return self._labelled(x, y, target, source)[0]

    def _labelled(self, x: Any, y: Any, target: str | None, source: str) -> tuple[Any, str]:
        """:meth:`labelled`, and the name to use for the inputs in errors."""
        if isinstance(x, (Dataset, DataLoader)):
            return LoaderData(x), source
        if self.preprocessor is None:
            raise ConfigError("this model was trained from a DataLoader: pass a Dataset or DataLoader")
        if self.preprocessor.layout is not None:  # images, sequences, forecasting windows
            return self.preprocessor.layout.labelled(self.preprocessor, self.task, x, y,
                                                     column_name(target) or self.target_name, source)
        return labelled_inputs(self.preprocessor, self.task, x, y, column_name(target) or self.target_name,
                               source)

    def summary(self, sample_input: Any = None) -> ModelSummary:
        """Layer table with output shapes from a forward pass on ``sample_input`` (default: a
        batch of zeros shaped like the training inputs, through a copy of the model on the meta
        device where it can run there: shapes without memory; two 1x5792x5792 images through
        a CNN's first stages take 17 GB)."""
        layout = None if self.preprocessor is None else self.preprocessor.layout
        if sample_input is None and hasattr(layout, "sample_inputs"):  # forecasting: windows of rows
            sample_input = layout.sample_inputs(self.preprocessor)
        if sample_input is None and self.preprocessor is not None:
            try:
                return summarize(_on_meta(self.model), self._zeros(torch.device("meta")))
            except Exception:  # a model that reads values (.item(), NumPy) cannot run on meta
                sample_input = self._zeros(torch.device("cpu"))
        dev = next(self.model.parameters(), torch.zeros(0)).device
        if isinstance(sample_input, Tensor):
            sample_input = sample_input.to(dev)
        elif isinstance(sample_input, dict):
            sample_input = {k: v.to(dev) for k, v in sample_input.items()}
        elif isinstance(sample_input, tuple):
            sample_input = tuple(v.to(dev) for v in sample_input)
        return summarize(self.model, sample_input)

    def _zeros(self, device: torch.device) -> Any:
        """A batch of two zero samples shaped like the training inputs, as the model takes them."""
        assert self.preprocessor is not None
        zeros = [torch.zeros([2, *s.shape], dtype=torch.float32 if s.dtype == "float32" else torch.long,
                             device=device) for s in self.preprocessor.inputs]
        names = [s.name for s in self.preprocessor.inputs]
        return (dict(zip(names, zeros, strict=False)) if self.preprocessor.style == "named"
                else zeros[0] if self.preprocessor.style == "single" else tuple(zeros))

    # ------------------------------------------------------------------ persistence
    def meta(self) -> dict[str, Any]:
        """Everything but the weights, as JSON-able data."""
        return {
            "format": FORMAT_VERSION, "nnfit_version": __version__, "spec": self.spec,
            "task": self.task.to_dict(), "target": self.target_name,
            "preprocess": None if self.preprocessor is None else self.preprocessor.to_dict(),
        }

    def save(self, path: str | Path) -> Path:
        """Write ``model.safetensors`` (weights), ``model.json`` (everything else) and
        ``manifest.json`` (their SHA-256) into the directory ``path``; returns it.

        No pickle: reloading runs no code from the files, and :meth:`load` refuses any file
        that does not match the manifest. Under torchrun only rank 0 writes (every rank holds
        the same weights).
        """
        from .runtime import launched_rank

        out = Path(path)
        if launched_rank()[0] == 0:
            write_files(out, "model", self.files())
        return out

    def files(self) -> dict[str, bytes]:
        """What :meth:`save` writes besides the manifest: ``model.safetensors`` and
        ``model.json``, as bytes."""
        weights = tensors_to_bytes(self.model.state_dict(), {"format": FORMAT_VERSION, "kind": "weights"})
        meta = (json.dumps(self.meta(), indent=2) + "\n").encode("utf-8")
        return {MODEL_FILE: weights, META_FILE: meta}

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None, *,
             device: str = "auto", loss: Callable | None = None) -> Learner:
        """Load a saved model or run directory (:func:`nnfit.load` also takes a sweep's
        ensemble directory).

        Args:
            path: a directory written by :meth:`save` or ``nnfit train``.
            model: an instance of your own module class, for models without a spec; the
                weights are loaded into it strictly.
            device: where the model runs predictions.
            loss: the loss function of a model trained with one (``fit(..., loss=fn)``): it is
                never saved, and :meth:`evaluate` needs it; prediction does not.

        Raises:
            ConfigError: ``loss`` given for a model trained with a built-in task.
            CheckpointError: missing or damaged files, a newer format, a field of
                ``model.json`` or ``config.json`` that is not valid, or weights that do not fit
                the model (missing/unexpected tensors, shapes, dtypes, NaN), all named. Every
                byte is checked before the model is built (:mod:`nnfit.io.model_dir`).
        """
        return cls._rebuilt(*read_model_dir(Path(path), model), device, loss)

    @classmethod
    def from_files(cls, files: Mapping[str, bytes], model: nn.Module | None = None, *,
                   device: str = "auto", loss: Callable | None = None,
                   source: str = "model files") -> Learner:
        """A Learner from the bytes :meth:`files` gave, checked as :meth:`load` checks a
        directory's (no pickle: nothing in them runs code); for models kept elsewhere than in
        a directory, such as a pickled :class:`nnfit.sklearn.NNClassifier`.

        Args:
            files: ``model.safetensors`` and ``model.json``, as bytes.
            model, device, loss: as :meth:`load`.
            source: what to name in errors, as a directory would be named.

        Raises:
            CheckpointError: a missing file, or a field or tensor that is not valid, named.

        Example:
            >>> x, y = np.random.rand(40, 3), np.arange(40) % 2
            >>> learner = fit({"name": "mlp", "hidden": [4]}, x, y, epochs=1, quiet=True)
            >>> copy = Learner.from_files(learner.files())
            >>> bool((copy.predict_proba(x) == learner.predict_proba(x)).all())
            True
        """
        return cls._rebuilt(*model_from_files(dict(files), Path(source), model), device, loss)

    @classmethod
    def _rebuilt(cls, model: nn.Module, meta: dict[str, Any], device: str,
                 loss: Callable | None) -> Learner:
        """A loaded model and its checked ``model.json`` as a Learner on ``device``."""
        # model.json was checked whole against io.validate.LEARNER: task and preprocessing rebuild
        pre = meta["preprocess"]
        task = task_from_dict(meta["task"], loss)
        preprocessor = None if pre is None else Preprocessor.from_dict(pre)
        learner = cls(model, task=task, preprocessor=preprocessor,
                      spec=meta.get("spec"), config=TrainConfig(device=device, quiet=True),
                      target_name=meta.get("target"))
        learner.model.to(learner.trainer.runtime.device).eval()
        return learner

    def as_module(self) -> nn.Module:
        """One ``nn.Module`` from raw numeric features to the model's outputs: the fitted
        missing-value fill and standardisation, as buffers, in front of :attr:`model`.

        :attr:`model` alone expects standardised inputs: called on raw features it gives wrong
        outputs without an error. This module takes the raw features as one float tensor
        (NaN where the model imputes) and gives what :meth:`outputs` gives; it shares the
        model's parameters and checks nothing, so it can be exported or put in a larger model.

        Returns:
            ``nn.Sequential(Standardize, model)`` on the model's device and in its mode; the
            model itself when it was trained from a Dataset/DataLoader (nothing is fitted).

        Raises:
            ConfigError: a model of several inputs (text categoricals reach it as codes), or
                table columns that raw numbers cannot give (datetime parts, quantile scores,
                missing-value indicators), named.

        Example:
            >>> import nnfit
            >>> raw = torch.arange(32.0).reshape(8, 4)
            >>> learner = nnfit.fit(nnfit.MLP(4, [8], 1), raw, torch.arange(8) % 2, epochs=1, quiet=True)
            >>> torch.equal(learner.as_module()(raw).detach(), learner.outputs(raw))
            True
        """
        if self.preprocessor is None:
            return self.model
        device = next(self.model.parameters(), torch.zeros(0)).device
        front = self.preprocessor.as_module().to(device)
        return nn.Sequential(front, self.model).train(self.model.training)


def _on_meta(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers are on the meta device (shapes, no
    data): nothing of the weights is copied, ties between them are kept."""
    import copy

    memo: dict[int, Any] = {}
    for t in [*model.parameters(), *model.buffers()]:
        on_meta = t.detach().to("meta")
        memo[id(t)] = nn.Parameter(on_meta, t.requires_grad) if isinstance(t, nn.Parameter) else on_meta
    return copy.deepcopy(model, memo)


def fit(model: nn.Module | Mapping | str, x: Any, y: Any = None, *, target: str | None = None,
        val: Any = None, task: str | Task = "auto", callbacks: Sequence[Callback] = (),
        config: TrainConfig | None = None, run_dir: str | Path | None = None,
        resume: str | Path | None = None, run_config: Mapping[str, Any] | None = None,
        overwrite: bool = False, force_resume: bool = False, **overrides: Any) -> Learner:
    """Train ``model`` on ``x``/``y`` and return a :class:`Learner` ready to evaluate, predict
    and save.

    Args:
        model: any ``nn.Module`` (trained unchanged), or a spec such as
            ``{"name": "mlp", "hidden": [64, 64]}`` whose sizes default to the data's.
        x: a NumPy array, tensor, DataFrame, CSV/Parquet path, a tuple (positional model
            inputs) or dict (keyword inputs) of arrays, or a Dataset/DataLoader yielding
            ``(inputs..., target)``.
        y: targets of any label type; omit when ``target`` names a column of ``x``.
        target: the target column of a DataFrame or file.
        val: validation data: ``(x_val, y_val)``, a DataFrame/file with the target column, or
            a Dataset/DataLoader. When omitted, ``val_split`` of the training data is held out.
        task: "auto", "binary", "multiclass", "regression", or a task object
            (:class:`~nnfit.tasks.CustomTask` for a loss function of your own).
        callbacks: extra callbacks.
        config: a TrainConfig; ``overrides`` are applied on top of it.
        run_dir: when given, checkpoints, history.csv and the final model are written there.
        resume: a run directory to continue from its newest valid checkpoint (damaged ones are
            skipped with a warning). The settings (but ``epochs``, ``patience``, ``device`` and
            other RESUMABLE ones) and the data must be those of the run.
        run_config: what to record as the run's ``config.json`` (default: the TrainConfig).
        overwrite: allow ``run_dir`` to be a directory that already holds files (without
            ``resume``); off by default so an earlier run is never overwritten by accident.
            The earlier run's files (every name in ``nnfit.io.layout.RUN_LAYOUT``) are removed
            before the first write, once the data and model checked out; other files stay.
            Refused for a non-empty directory that holds no nnfit run, and when ``x`` or
            ``val`` is a file of the run that would be removed (``nnfit.io.layout.check_overwrite``).
        force_resume: resume even when settings or data differ (a warning lists the changes).
        **overrides: TrainConfig fields, e.g. ``epochs=20, lr=3e-4, optimizer="adamw"``.
            ``loss`` may also be a function ``fn(output, target) -> scalar tensor``: the
            model then trains on that loss with targets as given (``task=CustomTask(fn)``;
            a built-in model's ``out_features`` defaults to the values per target row),
            and the run records loss "custom". Resuming such a run needs ``loss=fn`` again.

    Returns:
        The trained :class:`Learner`; ``learner.history`` holds the per-epoch records.

    Seeding: ``seed`` fixes dropout, data order, the validation split and the initialisation
    of a model built from a spec; call ``torch.manual_seed`` before building your own module.

    Raises:
        ConfigError, DataError: bad arguments or data, named in one line; a built-in model
            whose training cannot fit in memory (:mod:`nnfit.memory`), before it is built.
        CheckpointError: ``resume``'s weights do not fit the model asked for (checked before
            it is built, ``force_resume`` or not).
        RunDirInUse: (a ConfigError) another process is writing ``run_dir`` or ``resume``:
            every writer holds the directory's lock (``nnfit.io.lock``) for all of ``fit``.
    """
    from .callbacks.sinks import check_sinks, make_sinks, note_resumed_sinks
    from .distributed import check_world_size
    from .io.resume import read_resume
    from .memory import check_training_memory
    from .models import state_shapes
    from .run import RankWriter, RunWriter, data_fingerprint
    from .runtime import launched_rank

    main = launched_rank()[0] == 0  # under torchrun only rank 0 writes (the run directory, its lock)
    with _holding(run_dir if main else None, resume if main else None):  # one writer per run directory
        if main:
            _check_run_dir(run_dir, resume, overwrite, (x, val))
        # checked whole (the task, preprocessing and model it describes too) before any use
        ckpt = read_resume(resume, set_aside=main) if resume is not None else None
        task, overrides = _custom_task(task, config, overrides)
        if ckpt is not None:  # a custom run goes on with its function, a built-in task without one
            check_resumed(ckpt[1]["learner"]["task"], task, force_resume)
        if ckpt is not None and config is None and "impute" not in overrides:
            # impute's default became True in 0.2: a run keeps what it was started with
            overrides = {**overrides, "impute": ckpt[1]["config"].get("impute", True)}
        cfg = train_config(config, **overrides)
        check_sinks(cfg.log, run_dir)  # a missing extra is named before any data is read
        if ckpt is not None and run_dir is not None and main:  # other sinks than the run's: say where
            note_resumed_sinks(ckpt[1], cfg.log)
        trainer = Trainer(cfg, callbacks=callbacks)  # seeds the global RNG before any model init
        if ckpt is not None:  # the processes that wrote it: torchrun's world size
            changed = check_world_size(ckpt[1], trainer.runtime, force_resume, f"{ckpt[2]}/state.json")
            if changed is not None and main:
                warn(changed)
        target = column_name(target)
        data = prepare(x, y, target=target, val=val, task=task, config=cfg,
                       resumed=None if ckpt is None else ckpt[1]["learner"], numeric=built_in(model),
                       family=family(model))
        fitted_task, pre, train_src, val_src = data.task, data.preprocessor, data.train, data.val
        if isinstance(task, CustomTask):  # a resumed run's task comes back without its function
            fitted_task = training_task(fitted_task, task.fn, train_src, val_src)
        if pre is not None and pre.table is not None and not cfg.quiet and main:
            _say(pre.table.summary())
        spec = complete_spec(model, pre, fitted_task)  # whole and counted, nothing built yet
        record = None if run_dir is None else (
            dict(run_config) if run_config is not None else {**asdict(cfg), "model": spec})
        fingerprint = None if run_dir is None else data_fingerprint(train_src, val_src)
        if ckpt is not None:  # settings, data, and the weights against the spec: before building
            _check_resume(ckpt, spec, record, fingerprint, force_resume)
        if not isinstance(model, nn.Module):
            check_training_memory(state_shapes(spec), cfg, trainer.runtime, run_dir is not None)
        module = model if isinstance(model, nn.Module) else build_model(spec)
        learner = Learner(module, task=fitted_task, preprocessor=pre, spec=spec, config=cfg,
                          trainer=trainer, target_name=None if pre is None else target)
        writer: Any = None
        if run_dir is not None and not main:
            writer = RankWriter()
        elif run_dir is not None:
            writer = RunWriter(run_dir, learner, record, fingerprint,
                               best=None if ckpt is None else ckpt[1].get("best_checkpoint"),
                               overwrite=overwrite and resume is None,
                               resumed=None if ckpt is None else ckpt[1])
            # the --log sinks, after the user's callbacks; they write once the writer started
            trainer.callbacks += make_sinks(cfg.log, run_dir, every=cfg.log_every, hparams=record,
                                            monitor=cfg.monitor, before_write=writer.start)
        learner.history = trainer.fit(module, train_src, val_src, task=fitted_task, resume=ckpt,
                                      checkpoint_fn=writer.checkpoint if writer else None)
        learner.stop_reason = trainer.state.stop_reason
        if writer is not None and not main:
            writer.finish(trainer, val_src)
        elif writer is not None:
            _finish_run(writer, learner, trainer, val_src, data.val_keys)
    return learner


def _finish_run(writer: RunWriter, learner: Learner, trainer: Trainer, val: Any,
                val_keys: dict[str, Any]) -> None:
    """What a run directory gets after training, in order: the final model and metrics, the
    plots (or the removal of an earlier fit's, which would show an older state than
    history.csv), the report, and the sinks' last word (MLflow uploads the whole directory)."""
    from .distributed import local_only

    cfg, run_dir = learner.config, writer.dir
    writer.finish(trainer, val)  # under torchrun: with every rank (RankWriter.finish)
    with local_only():  # rank 0 alone from here
        _finish_files(cfg, run_dir, learner, trainer, val, val_keys)


def _finish_files(cfg: TrainConfig, run_dir: Path, learner: Learner, trainer: Trainer, val: Any,
                  val_keys: dict[str, Any]) -> None:
    from .callbacks.sinks import finish_sinks

    if cfg.plots:  # after the model is written, from its history
        from .plots import plot_run

        plot_run(run_dir, trainer, learner.model, learner.task, val, val_keys)
    else:
        from .plots import remove_plots

        remove_plots(run_dir, say=None if cfg.quiet else _say)
    if cfg.report:  # the report shows everything written above
        from .report import write_report

        write_report(run_dir)
    finish_sinks(trainer.callbacks, run_dir)


def _custom_task(task: str | Task, config: TrainConfig | None,
                 overrides: dict[str, Any]) -> tuple[str | Task, dict[str, Any]]:
    """``loss=fn`` as a CustomTask, and loss "custom" in the config of a fit with one (what the
    run records; no name a user can pass makes it).

    Raises:
        ConfigError: a loss function together with a task, or a loss name with a CustomTask.
    """
    loss = overrides.get("loss", None if config is None else config.loss)
    if callable(loss):
        if not (isinstance(task, str) and task == "auto"):
            given = repr(task) if isinstance(task, str) else type(task).__name__
            raise ConfigError(f"loss=<function> trains a custom task: drop task={given}")
        task = CustomTask(loss)
    elif isinstance(task, CustomTask) and loss not in (None, "auto", "custom"):
        raise ConfigError(f"loss {loss!r}: a CustomTask trains with its own loss function; drop loss=")
    if isinstance(task, CustomTask):
        overrides = {**overrides, "loss": "custom"}
    return task, overrides


def _say(text: str) -> None:
    """A note for the user, on standard error beside the progress display."""
    import sys

    print(text, file=sys.stderr, flush=True)


@contextmanager
def _holding(run_dir: str | Path | None, resume: str | Path | None) -> Iterator[None]:
    """Hold the lock of each run directory ``fit`` writes: ``run_dir``, and ``resume``, whose
    damaged checkpoints are renamed aside. A directory to resume is never created (a missing
    one is named by the resume itself)."""
    from .io.lock import hold_run_dir

    same = resume is not None and run_dir is not None and Path(run_dir).absolute() == Path(resume).absolute()
    with ExitStack() as held:
        if run_dir is not None:
            held.enter_context(hold_run_dir(run_dir, create=not same))
        if resume is not None and not same:
            held.enter_context(hold_run_dir(resume, create=False))
        yield


def _check_run_dir(run_dir: str | Path | None, resume: Any, overwrite: bool, data: tuple) -> None:
    """Refuse to train into a non-empty directory unless resuming it or told to overwrite, and
    to overwrite one that holds no nnfit run or whose clearing would delete a file of ``data``."""
    from .io.layout import check_run_target

    if run_dir is None or resume is not None:
        return
    files = [v for v in data if isinstance(v, (str, os.PathLike))]
    check_run_target(run_dir, overwrite, files, "pass overwrite=True, resume= or another run_dir")


def _check_resume(ckpt: Any, spec: dict | None, record: dict[str, Any] | None,
                  fingerprint: str | None, force: bool) -> None:
    """Before the model is built: the settings and data must be the run's (unless ``force``)
    and the checkpoint's weights must fit the model ``spec`` describes, so a changed hidden
    size never allocates its model."""
    from .checkpoint import STATE_TENSORS
    from .io.weights import check_spec_fits
    from .run import check_resume

    def fits() -> None:  # a user's module (no spec) is checked when the checkpoint is restored
        if spec is not None:
            check_spec_fits(ckpt[0], spec, f"{ckpt[2]}/{STATE_TENSORS}")

    if record is None:  # no run directory: no settings to compare
        fits()
    else:
        check_resume(ckpt[1], record, fingerprint, force, fits)


__all__ = ["Learner", "fit"]
