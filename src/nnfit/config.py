"""Typed configuration: frozen dataclasses are the schema for flags, files and keyword arguments.

Three sections, each owning distinct keys so a config file can stay flat:

* :class:`ModelConfig` – the built-in model to build from data (``nnfit train``).
* :class:`TrainConfig` – the loop: optimizer, schedule, epochs, early stopping, device, seed.
* :class:`DataConfig` – where the data comes from and how it is split.

A file (YAML or TOML) and ``key=value`` overrides map onto them by field name; an unknown key or
a value of the wrong type is a :class:`~nnfit.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

# Where ``log`` may send metrics besides history.csv (TrainConfig.log).
LOG_SINKS = ("jsonl", "tensorboard", "mlflow")
# TrainConfig.precision and TrainConfig.dist_backend.
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
DIST_BACKENDS = ("auto", "gloo", "nccl")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _check_part(key: str, value: Any, too_few: str) -> None:
    """``value`` is None or a "k/K" string with whole numbers 1 <= k <= K, K >= 2
    (TrainConfig.fold and bootstrap); ``too_few`` says why K = 1 is refused."""
    if value is None:
        return
    _check(isinstance(value, str), f"{key} must be a string k/K such as '2/5', got {_short(value)}")
    m = re.fullmatch(r"(\d{1,9})/(\d{1,9})", value)
    if m is None:
        raise ConfigError(f"{key} must be k/K with whole numbers, such as 2/5; got {_short(value)}")
    k, total = int(m[1]), int(m[2])
    _check(total >= 2, f"{key} {value}: {too_few}")
    _check(1 <= k <= total, f"{key} {value}: k must be in 1..{total}")


@dataclass(frozen=True)
class ModelConfig:
    """A built-in model: which family and its shape (the input/output sizes come from the data).

    Args:
        model: registered model name (``nnfit ls`` lists them): "mlp" or "resmlp" for tables,
            "cnn" for images, "lstm" or "gru" for sequences and forecasting.
        hidden: hidden layer sizes (for "resmlp", one residual block per entry; for "lstm" and
            "gru", one recurrent layer per entry, all of one size). Default (64, 64).
        activation: activation name (relu, gelu, tanh, sigmoid, leaky_relu, silu). Default relu.
        dropout: dropout probability after each hidden activation (between recurrent layers
            for "lstm"/"gru"). Default 0.0.
        batchnorm: batch normalisation after each hidden linear or conv layer. Default None:
            the family's own default (off for "mlp"/"resmlp", on for "cnn").
        channels: "cnn" output channels per stage (each stage: conv blocks, then pooling).
            Default (): from the images' shorter side s, 32, 64, 128, 256 for
            ``clamp(ceil(log2(s / 4)), 2, 4)`` stages (32,64 up to 16 px, 32,64,128 up to 32 px).
        residual: "cnn" stages as residual blocks (two convs and a skip connection). Default False.
        bidirectional: "lstm"/"gru" read each sequence in both directions. Default False.
        readout: "lstm"/"gru" output from the "last" state (default) or the "mean" over time.
    """

    model: str = "mlp"
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "relu"
    dropout: float = 0.0
    batchnorm: bool | None = None
    channels: tuple[int, ...] = ()
    residual: bool = False
    bidirectional: bool = False
    readout: str = "last"

    def __post_init__(self) -> None:
        _check(all(h > 0 for h in self.hidden), f"hidden sizes must be positive, got {self.hidden}")
        _check(all(c > 0 for c in self.channels), f"channels must be positive, got {self.channels}")
        _check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        _check(self.readout in ("last", "mean"), f"readout must be last or mean, got {self.readout!r}")


AUGMENTS = ("auto", "none", "crop", "flip", "crop,flip")


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained: the loop's settings, all with working defaults.

    Args:
        epochs: maximum number of passes over the training data. Default 100.
        batch_size: training batch size. Default 32.
        optimizer: sgd, adam, adamw or rmsprop. Default adam.
        lr: learning rate (the peak rate for the one-cycle schedule). Default 1e-3.
        momentum: momentum for sgd and rmsprop. Default 0.0 (torch's default).
        nesterov: Nesterov momentum for sgd (needs momentum > 0). Default False.
        weight_decay: L2 penalty (decoupled for adamw). Default 0.0 (0.01 is usual for adamw).
        scheduler: none, step, multistep, exponential, cosine, onecycle or plateau.
        step_size: epochs between decays for "step". Default 10.
        gamma: decay factor for step/multistep/exponential, reduction factor for plateau.
        milestones: epochs at which "multistep" decays.
        warmup_epochs: linear warm-up epochs for "cosine". Default 0.
        min_lr: the floor of "cosine" and "plateau". Default 0.0.
        sched_patience: epochs without improvement before "plateau" reduces the rate. Default 5.
        loss: auto (the task's default), mse, l1, huber, cross_entropy or bce.
        val_split: fraction of the training data held out for validation when no validation
            data is given (stratified for classification). 0 disables. Default 0.2.
        fold: "k/K" validates on fold k of K (1-based) instead of ``val_split``: the rows are
            dealt into K folds by ``seed`` (stratified for classification, each class spread
            over every fold) and the other K-1 folds train. None (the default): no folds.
        bootstrap: "b/K" trains on bootstrap sample b of K instead of ``val_split``: as many
            rows as there are, drawn with replacement by (``seed``, b); the rows never drawn
            (out of bag) validate. None (the default): no bootstrap.
        patience: early stopping after this many epochs without improvement of ``monitor``;
            0 disables. Default 10 (only active when there is validation data).
        monitor: the metric early stopping, the best checkpoint and "plateau" watch. Default
            val_loss (train_loss when there is no validation data).
        min_delta: the smallest change of ``monitor`` that counts as an improvement.
        restore_best: load the best weights when training ends early or finishes. Default True.
        grad_clip: clip the global gradient norm to this value; 0 disables. Default 0.
        accumulate: number of batches whose gradients are summed before a step. Default 1.
        eval_batch_size: batch size for validation, evaluation and prediction. Default 4096.
        seed: seeds initialisation, dropout and data order; a CPU run is bitwise reproducible.
        device: auto, cpu, cuda or cuda:N. Default auto.
        quiet: no progress display or tables. Default False.
        standardize: standardise numeric features with training-split statistics. Default True.
        impute: fill missing feature values, saved with the model so evaluate and predict
            fill the same way: numeric gaps with the training split's column median (plus a
            0/1 "was missing" feature for a table column that had gaps), categorical gaps with
            their own index. Default True; False refuses missing values, counted per column.
            Missing targets are always refused, naming the row.
        numeric_transform: numeric table columns are "standard" (standardised, the default)
            or "quantile" (mapped through the training quantiles to normal scores first:
            robust to skew and outliers).
        categorical: table columns to treat as categorical (e.g. integer-coded categories);
            text, boolean and pandas category columns are categorical anyway.
        numeric: table columns to treat as numeric (text is refused, naming the row).
        drop: table columns never to use.
        features: when given, use only these table columns.
        scale_target: standardise regression targets for training (predictions are returned in
            the original units). Default True.
        checkpoint_every: write a checkpoint every N epochs when a run directory is given;
            0 disables. Default 1.
        checkpoint_steps: also write a checkpoint every N optimizer steps inside an epoch;
            0 disables. Default 0.
        keep_checkpoints: checkpoints kept in the run directory besides the best one; older
            ones are removed once a newer one is committed. 0 keeps all. Default 2.
        check_finite: stop in the step whose loss or gradient is NaN or infinite, before the
            update (CPU; on CUDA the loss and parameters are checked once per epoch). Default True.
            False turns only these loop checks off: checkpoints and a run's final model are
            still checked when written, and a non-finite one is refused (TrainingError).
        fused: use the optimizer's fused kernel (sgd, adam, adamw) where torch has one for
            the device. Default True.
        channels_last: train 2-d convolutions in channels-last memory (NHWC), where oneDNN's
            CPU kernels are faster: on the CNN family's 16 px digits a step took about half the
            time. None (the default) turns it on for models that ask for it (the ``cnn``
            family) on CPU; True for any model with a 4-d weight on any device (a model whose
            ``forward`` calls ``.view`` on a conv's output needs ``.reshape`` then); False off.
            Results differ from contiguous memory only by rounding; the model is returned in
            contiguous memory.
        plots: after training, draw the run's plots (loss, metric, confusion matrix, curves,
            worst examples...) as PNGs under ``RUN/plots/``. Default True.
        report: after training, write the one-file ``RUN/report.html``. Default False.
        log: extra metric sinks besides ``history.csv``, any of "jsonl" (``RUN/metrics.jsonl``),
            "tensorboard" (``RUN/tensorboard/``) and "mlflow" (``MLFLOW_TRACKING_URI``, else a
            store inside the run). Default none.
        log_every: also log the training loss every N optimizer steps (read from the device
            only then); 0 logs per epoch only. Default 50.
        threads: CPU intra-op threads while training; 0 picks one thread for small models
            (where a second thread only adds synchronisation) and torch's default otherwise.
        compile: train through ``torch.compile(model)``; the first step's time (mostly
            compilation) is reported as ``compile_time`` in the first epoch's logs.
        cuda_graphs: on CUDA, replay full-size training steps as a CUDA graph when the run
            allows it (in-memory data, constant lr, no accumulation or clipping). Default True.
        image_size: (H, W) every image is resized to; empty (the default) refuses images of
            another size than the first, naming the file.
        augment: training-only augmentation of images, on whole batches: "auto" (random crops
            with padding and horizontal flips for colour images, none for greyscale ones),
            "none", "crop", "flip" or "crop,flip".
        image_cache: keep decoded images in a cache file next to the image folder, keyed by the
            files' content, so the next run skips decoding. Default False.
        sequence_id: the column naming the sequence of each row of a long-format table (one
            row per time step); one label per sequence.
        time: the column ordering the rows of a sequence, or of a series to forecast.
        window: forecast from the ``window`` rows before each row (0: no forecasting).
        horizon: forecast ``horizon`` rows ahead: row i from rows i-horizon-window+1 ...
            i-horizon. Default 1.
        season: the seasonal-naive baseline's period in rows; 0 (the default) infers it from
            the time column's frequency (7 for daily data, 24 hourly, 12 monthly...).
        precision: "fp32" (the default: bitwise reproducible), "tf32" (CUDA matmuls and
            convolutions in TF32), "bf16" (autocast to bfloat16, no loss scaling) or "fp16"
            (autocast to float16 with a gradient scaler; CUDA only).
        dist_backend: the torch.distributed backend under ``torchrun``: "auto" (nccl on CUDA,
            gloo on CPU), "gloo" or "nccl" (needs CUDA). Ignored in a single process.
        stream: read a Parquet/CSV file by row groups instead of loading it whole: True,
            False, or None (the default) to stream files above ``STREAM_THRESHOLD`` bytes.
        shuffle_buffer: rows of the shuffle buffer a stream draws from (with a random row-group
            order). Default 65536.
    """

    epochs: int = 100
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    scheduler: str = "none"
    step_size: int = 10
    gamma: float = 0.1
    milestones: tuple[int, ...] = ()
    warmup_epochs: int = 0
    min_lr: float = 0.0
    sched_patience: int = 5
    loss: str = "auto"
    val_split: float = 0.2
    fold: str | None = None
    bootstrap: str | None = None
    patience: int = 10
    monitor: str = "val_loss"
    min_delta: float = 0.0
    restore_best: bool = True
    grad_clip: float = 0.0
    accumulate: int = 1
    eval_batch_size: int = 4096
    seed: int | None = 0
    device: str = "auto"
    quiet: bool = False
    standardize: bool = True
    impute: bool = True
    numeric_transform: str = "standard"
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    scale_target: bool = True
    checkpoint_every: int = 1
    checkpoint_steps: int = 0
    keep_checkpoints: int = 2
    check_finite: bool = True
    fused: bool = True
    channels_last: bool | None = None
    plots: bool = True
    report: bool = False
    log: tuple[str, ...] = ()
    log_every: int = 50
    threads: int = 0
    compile: bool = False
    cuda_graphs: bool = True
    image_size: tuple[int, ...] = ()
    augment: str = "auto"
    image_cache: bool = False
    sequence_id: str | None = None
    time: str | None = None
    window: int = 0
    horizon: int = 1
    season: int = 0
    precision: str = "fp32"
    dist_backend: str = "auto"
    stream: bool | None = None
    shuffle_buffer: int = 65536

    def __post_init__(self) -> None:
        _check(self.precision in PRECISIONS,
               f"precision must be one of {', '.join(PRECISIONS)}, got {_short(self.precision)}")
        _check(self.dist_backend in DIST_BACKENDS,
               f"dist_backend must be one of {', '.join(DIST_BACKENDS)}, got {_short(self.dist_backend)}")
        _check(1 <= self.shuffle_buffer <= 10**9,
               f"shuffle_buffer must be in [1, 1e9], got {self.shuffle_buffer}")
        _check(len(self.image_size) in (0, 2) and all(0 < v <= 65536 for v in self.image_size),
               f"image_size must be two positive sizes H,W, got {self.image_size}")
        _check(self.augment in AUGMENTS,
               f"augment must be one of {', '.join(AUGMENTS)}, got {self.augment!r}")
        # the bounds a saved run's layout and task are checked against (nnfit.io.validate_fields
        # MAX_WINDOW): a run trained past them could not be opened again
        _check(0 <= self.window <= 10**6, f"window must be in [0, 1000000], got {self.window}")
        _check(1 <= self.horizon <= 10**6, f"horizon must be in [1, 1000000], got {self.horizon}")
        _check(0 <= self.season <= 10**6, f"season must be in [0, 1000000], got {self.season}")
        _check(self.threads >= 0, f"threads must be >= 0, got {self.threads}")
        _check(self.numeric_transform in ("standard", "quantile"),
               f"numeric_transform must be standard or quantile, got {self.numeric_transform!r}")
        _check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check(self.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {self.eval_batch_size}")
        _check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _check(self.momentum >= 0, f"momentum must be >= 0, got {self.momentum}")
        _check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _check(0.0 <= self.val_split < 1.0, f"val_split must be in [0, 1), got {self.val_split}")
        _check_part("fold", self.fold, "k-fold needs at least 2 folds")
        _check_part("bootstrap", self.bootstrap, "a bootstrap needs at least 2 samples")
        _check(self.fold is None or self.bootstrap is None,
               f"fold and bootstrap cannot both be set (fold={self.fold}, bootstrap={self.bootstrap}): "
               "a run validates on one fold or on one bootstrap sample's out-of-bag rows")
        _check(self.patience >= 0, f"patience must be >= 0, got {self.patience}")
        _check(self.grad_clip >= 0, f"grad_clip must be >= 0, got {self.grad_clip}")
        _check(self.accumulate >= 1, f"accumulate must be >= 1, got {self.accumulate}")
        _check(self.step_size >= 1, f"step_size must be >= 1, got {self.step_size}")
        _check(self.gamma > 0, f"gamma must be > 0, got {self.gamma}")
        _check(self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        _check(self.checkpoint_every >= 0, "checkpoint_every must be >= 0")
        _check(self.checkpoint_steps >= 0, "checkpoint_steps must be >= 0")
        _check(self.keep_checkpoints >= 0, "keep_checkpoints must be >= 0")
        _check(not (self.nesterov and self.momentum <= 0), "nesterov needs momentum > 0")
        # Values torch, NumPy or the OS cannot take are refused here, not deep in a library.
        _check(self.seed is None or 0 <= self.seed < 2**63, f"seed must be in [0, 2**63), got {self.seed}")
        _check(self.threads <= 4096, f"threads must be <= 4096, got {self.threads}")
        bad = next((s for s in self.log if s not in LOG_SINKS), None)
        _check(bad is None, f"log: unknown sink {bad!r:.60} (valid: {', '.join(LOG_SINKS)})")
        _check(0 <= self.log_every <= 10**9, f"log_every must be in [0, 1e9], got {self.log_every}")
        _check(self.min_lr >= 0, f"min_lr must be >= 0, got {self.min_lr}")
        _check(self.sched_patience >= 0, f"sched_patience must be >= 0, got {self.sched_patience}")
        _check(self.min_delta >= 0, f"min_delta must be >= 0, got {self.min_delta}")
        _check(all(m >= 1 for m in self.milestones), f"milestones must be >= 1, got {self.milestones}")


@dataclass(frozen=True)
class DataConfig:
    """Where ``nnfit train`` reads its data and how it holds some back.

    Args:
        data: a CSV or Parquet file; None trains on the bundled ``dataset``.
        dataset: a bundled dataset name (``nnfit ls``). Default breast_cancer.
        target: the target column of ``data`` (bundled datasets know theirs).
        task: auto, binary, multiclass or regression. Default auto (inferred from the target).
        test_split: fraction held out as a test set, scored once at the end and saved as
            ``test.csv`` in the run. Default: 0.2 for bundled datasets, 0 for files.
    """

    data: str | None = None
    dataset: str = "breast_cancer"
    target: str | None = None
    task: str = "auto"
    test_split: float | None = None

    def __post_init__(self) -> None:
        _check(
            self.test_split is None or 0.0 <= self.test_split < 1.0,
            f"test_split must be in [0, 1), got {self.test_split}",
        )


SECTIONS: tuple[type, ...] = (ModelConfig, TrainConfig, DataConfig)

# Settings added after runs were first saved, with their defaults: a config.json written before
# one existed lacks it, and reads (and resumes) as if it held the default.
LATER_SETTINGS: dict[str, Any] = {"numeric_transform": "standard", "categorical": [], "numeric": [],
                                  "drop": [], "features": [], "channels": [], "residual": False,
                                  "bidirectional": False, "readout": "last", "image_size": [],
                                  "augment": "auto", "image_cache": False, "sequence_id": None,
                                  "time": None, "window": 0, "horizon": 1, "season": 0,
                                  "channels_last": None, "plots": True, "report": False, "log": [],
                                  "log_every": 50, "fold": None, "bootstrap": None,
                                  "precision": "fp32", "dist_backend": "auto", "stream": None,
                                  "shuffle_buffer": 65536}


@dataclass(frozen=True)
class RunConfig:
    """Everything a ``nnfit train`` run was started with; saved as ``config.json`` in the run."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)

    def to_dict(self) -> dict[str, Any]:
        """A flat, JSON-serialisable dict of every key."""
        out: dict[str, Any] = {}
        for section in (self.model, self.train, self.data):
            for f in fields(section):
                v = getattr(section, f.name)
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


def _owner(key: str) -> type:
    for cls in SECTIONS:
        if key in {f.name for f in fields(cls)}:
            return cls
    valid = sorted(f.name for cls in SECTIONS for f in fields(cls))
    raise ConfigError(f"unknown config key {_short(key)} (valid keys: {', '.join(valid)})")


def coerce(key: str, value: Any, annotation: Any) -> Any:
    """Convert ``value`` to the field type ``annotation`` or raise a ConfigError naming ``key``.

    Strings are accepted for every type, so ``key=value`` overrides and CSV-style lists
    (``hidden=64,32``) work.
    """
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        inner = [a for a in args if a is not type(None)][0]
        return coerce(key, value, inner)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(coerce(key, v, args[0]) for v in value)
    bad = ConfigError(f"{key}: expected {getattr(annotation, '__name__', annotation)}, got {_short(value)}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise bad
    if annotation is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if not isinstance(value, str):  # never str() a list or mapping: it may be huge
            raise bad
        try:
            return int(value)
        except ValueError:
            raise bad from None
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise bad
        try:
            out = float(value)
        except (OverflowError, ValueError):
            raise bad from None
        if not math.isfinite(out):  # nan, inf and numbers beyond a double are never settings
            raise bad
        return out
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    return value


def _short(value: Any) -> str:
    """A one-line, bounded repr of a config value for error messages."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring = r.maxother = 60
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 2, 4, 4, 4, 4
    return r.repr(value)


def build(cls: type, values: dict[str, Any], base: Any = None) -> Any:
    """Construct ``cls`` from ``values`` (coerced by field type), starting from ``base``.

    Raises:
        ConfigError: a key ``cls`` does not have, a value of the wrong type or out of range.
    """
    names = {f.name: f for f in fields(cls)}
    for key in values:
        if key not in names:
            valid = ", ".join(sorted(names))
            raise ConfigError(f"unknown {cls.__name__} key {_short(key)} (valid keys: {valid})")
    hints = typing.get_type_hints(cls)
    kwargs = {k: coerce(k, v, hints[k]) for k, v in values.items()}
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except TypeError as e:  # a value that survived coercion but not the comparison checks
        raise ConfigError(str(e)) from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a flat YAML (.yaml/.yml) or TOML (.toml) config file into a dict.

    Tables/mappings named ``model``, ``train`` or ``data`` are flattened, so both a flat file and
    one grouped by section are accepted.

    Raises:
        ConfigError: missing file, unknown extension, a syntax error, or a non-mapping document.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    suffix = p.suffix.lower()
    try:
        text = p.read_text(encoding="utf-8")
        if suffix in (".yaml", ".yml"):
            import yaml

            doc = yaml.safe_load(text)
        elif suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            doc = tomllib.loads(text)
        elif suffix == ".json":
            doc = json.loads(text)
        else:
            raise ConfigError(f"{p}: config files must be .yaml, .yml, .toml or .json")
    except ConfigError:
        raise
    except Exception as e:  # yaml/toml/json/unicode errors all mean "not a valid config file"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{p}: invalid config file: {first}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{p}: a config file must hold a mapping of keys to values")
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if key in ("model", "train", "data") and isinstance(value, dict):
            flat.update(value)
        else:
            flat[str(key)] = value
    return flat


def make_run_config(values: dict[str, Any], base: RunConfig | None = None) -> RunConfig:
    """Split flat ``values`` into sections and build a RunConfig on top of ``base``.

    Example:
        >>> make_run_config({"hidden": "32,16", "epochs": 5}).model.hidden
        (32, 16)
    """
    base = base or RunConfig()
    by_section: dict[type, dict[str, Any]] = {cls: {} for cls in SECTIONS}
    for key, value in values.items():
        by_section[_owner(key)][key] = value
    return RunConfig(
        model=build(ModelConfig, by_section[ModelConfig], base.model),
        train=build(TrainConfig, by_section[TrainConfig], base.train),
        data=build(DataConfig, by_section[DataConfig], base.data),
    )


def check_names(cfg: RunConfig) -> None:
    """Resolve every registry name of ``cfg`` now, so a typo fails before any data is read.

    Raises:
        ConfigError: an unknown model, activation, optimizer, scheduler, loss, task, device or
            dataset, naming the valid choices; a precision the device cannot run (fp16 on CPU).
    """
    from .datasets import DATASETS
    from .models import ACTIVATIONS, MODELS
    from .optim import OPTIMIZERS, SCHEDULERS
    from .precision import check_precision
    from .runtime import resolve_device
    from .tasks import LOSSES, TASKS

    MODELS.get(cfg.model.model)
    ACTIVATIONS.get(cfg.model.activation)
    OPTIMIZERS.get(cfg.train.optimizer)
    SCHEDULERS.get(cfg.train.scheduler)
    LOSSES.get(cfg.train.loss)
    _check(cfg.data.task in TASKS, f"unknown task {cfg.data.task!r} (choose from: {', '.join(TASKS)})")
    check_precision(cfg.train.precision, resolve_device(cfg.train.device))
    if cfg.data.data is None:
        DATASETS.get(cfg.data.dataset)


def train_config(config: TrainConfig | None = None, **overrides: Any) -> TrainConfig:
    """A TrainConfig from an optional base plus keyword overrides (names checked)."""
    return build(TrainConfig, overrides, config or TrainConfig())


def effective_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings of a run's ``config.json`` that took effect: ``dataset`` (a bundled
    dataset's name, always recorded with its default) is left out when the run trained on a
    ``data`` file. What the report and ``nnfit runs compare`` show.

    Example:
        >>> effective_settings({"data": "bin.csv", "dataset": "breast_cancer", "lr": 0.01})
        {'data': 'bin.csv', 'lr': 0.01}
    """
    if config.get("data") is not None:
        return {k: v for k, v in config.items() if k != "dataset"}
    return dict(config)
