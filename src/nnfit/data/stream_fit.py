"""Streaming a table too large for memory: when to (:func:`stream_reason`), and the fit of
its validation split, task and preprocessing without holding it (:func:`prepare_stream`).

* **When.** ``stream=True`` (``--stream``) streams a Parquet file, a directory of Parquet files
  or a CSV/TSV file; ``stream=None`` (the default) streams a directory of Parquet files and a
  file larger than :data:`STREAM_THRESHOLD` bytes, saying so on standard error; ``stream=False``
  (``--no-stream``) reads it whole. The threshold is a size, not a share of this machine's
  memory, so a run resumed on another machine streams (and splits) as it did.
* **Validation**: whole row groups, drawn by ``seed`` until their rows come closest to
  ``val_split`` of the rows (at least one; a file of one row group cannot be split).
* **Preprocessing**: the column roles, vocabularies, medians (fills) and quantiles
  (:func:`~nnfit.data.schema.fit_schema`) on a seeded sample of whole training row groups of
  up to :data:`SAMPLE_ROWS` rows, in memory (all the training rows when there are no more: then
  it equals the in-memory fit); the standardisation statistics and the gaps' counts over every
  training row, in one streaming pass (exact: a mean and a variance merge over pieces).
* **Task**: the classes from every row's target (training and validation: every label has
  an output), a regression target's mean and deviation from the training rows, in the same pass.

A resumed run keeps its task and preprocessing: only the split is drawn again (the same,
by the run's seed).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..config import TrainConfig
from ..errors import ConfigError, DataError
from ..tasks import CustomTask, RegressionTask, Task, make_task, task_from_dict
from .columns import CSV_SUFFIXES, PARQUET_SUFFIXES, Columns, is_frame, names_list
from .impute import missing_values
from .preprocess import Preprocessor
from .schema import TableSchema, fit_schema, warn_filled
from .stream import PieceEncoder, TableStream, numeric_block, target_values
from .stream_files import TableFiles, is_parquet_dir

if TYPE_CHECKING:
    from .prepare import Prepared

STREAM_THRESHOLD = 1 << 30  # bytes of file from which stream=None streams
SAMPLE_ROWS = 1 << 18  # rows the column roles and vocabularies are fitted on
MAX_TRACKED = 100_000  # distinct numeric targets beyond which an "auto" target is a regression's


def stream_reason(x: Any, config: TrainConfig, family: str | None = None, *, val: Any = None,
                  y: Any = None) -> str | None:
    """Why ``x`` is streamed (for the message), or None when it is read into memory.

    Args:
        x: the training data (None: a bundled dataset).
        config: ``stream`` decides; ``fold``, ``bootstrap``, ``sequence_id``, ``window``
            tell data that cannot be streamed.
        family: the built-in model family (images and sequences are read whole).
        val, y: validation data and targets of the user's own, which a stream does not take.

    Raises:
        ConfigError: ``stream=True`` for data that only exists in memory or needs to be read
            whole, or a streamed file with ``val``, ``y``, a fold or a bootstrap.
    """
    if config.stream is False:
        return None
    whole = _read_whole(x, config, family)
    if whole is not None:
        if config.stream:
            raise ConfigError(f"--stream (stream=True) reads a Parquet/CSV file or a directory of Parquet "
                              f"files by row groups, and {whole}: drop --stream")
        return None
    if config.stream:
        reason = "--stream"
    elif is_parquet_dir(x):
        reason = "a directory of Parquet files"
    else:
        size = Path(x).stat().st_size if Path(x).is_file() else 0
        if size <= STREAM_THRESHOLD:
            return None
        reason = (f"{size / 2**30:.1f} GiB, above the {STREAM_THRESHOLD / 2**30:g} GiB streaming threshold; "
                  "--no-stream reads it whole")
    for given, what in ((val is not None, "validation data of your own (val=)"),
                        (y is not None, "targets passed apart (y=)"),
                        (config.fold is not None, f"fold={config.fold}"),
                        (config.bootstrap is not None, f"bootstrap={config.bootstrap}")):
        if given:
            raise ConfigError(f"{x}: a streamed file validates on its own row groups (val_split), so "
                              f"{what} does not apply: drop it, or --no-stream to read the file whole")
    return reason


def _read_whole(x: Any, config: TrainConfig, family: str | None) -> str | None:
    """Why ``x`` is read whole (a phrase for a message), or None when it can stream."""
    from .layouts import IMAGE_MODELS, SEQUENCE_MODELS, is_image_path

    if x is None:
        return "a bundled dataset (--dataset) is in memory already"
    if not isinstance(x, (str, os.PathLike)):
        if is_frame(x):
            return "a DataFrame is in memory already"
        if isinstance(x, (tuple, list, dict)) or hasattr(x, "__array__") or torch.is_tensor(x):
            return "arrays and tensors are in memory already"
        return f"a {type(x).__name__} is read by its own code"
    if config.sequence_id is not None:
        return "sequences (sequence_id) are read whole"
    if config.window:
        return "forecasting windows (window) are read whole"
    if family in IMAGE_MODELS or (is_image_path(x) and not is_parquet_dir(x)):
        return "images are decoded into memory"
    if family in SEQUENCE_MODELS:
        return f"model {family!r} reads sequences, which are read whole"
    p = Path(x)
    if not p.is_dir() and p.suffix.lower() not in CSV_SUFFIXES + PARQUET_SUFFIXES and p.exists():
        return f"{p.suffix or 'this'} files are not tables nnfit streams"
    return None


def prepare_stream(x: str | Path, *, target: str | None, task: str | Task = "auto",
                   config: TrainConfig | None = None, resumed: dict[str, Any] | None = None,
                   reason: str = "--stream") -> Prepared:
    """A streamed table's validation split, task, preprocessing and sources.

    Args:
        x: a Parquet file, a directory of Parquet files, or a CSV/TSV file.
        target: the target column.
        task: "auto", "binary", "multiclass", "regression" or a fitted Task.
        config: the TrainConfig (split, seed, column roles, ``shuffle_buffer``, ...).
        resumed: a resumed run's ``learner`` record: its task and preprocessing are kept.
        reason: why the file is streamed, for the message.

    Returns:
        A :class:`~nnfit.data.prepare.Prepared` whose sources are :class:`TableStream`\\ s.

    Raises:
        DataError: unreadable files, a missing target column, bad values (naming the row),
            too few row groups to hold validation out.
        ConfigError: a resumed run that was not trained on a table.
    """
    from .prepare import Prepared

    cfg = config or TrainConfig()
    files = TableFiles(x)
    if target is None:
        raise DataError(f"{files.source}: name the target column (target=...)")
    if target not in files.names:
        raise DataError(f"{files.source}: target column {target!r} not found "
                        f"(columns: {names_list(files.names)})")
    if len(files.names) < 2:
        raise DataError(f"{files.source}: no feature columns besides the target")
    train, val = split_units(files, cfg)
    if resumed is not None:
        pre = Preprocessor.from_dict(resumed["preprocess"])
        if pre.table is None or pre.layout is not None:
            raise ConfigError(f"{files.source}: the run resumed was not trained on a table, and a "
                              "streamed file is one: resume it with --no-stream")
        fitted, val_targets, sample = task_from_dict(resumed["task"]), None, None
        if cfg.plots:
            val_targets = _targets(files, val, target, _plotted(cfg))
    else:
        cols, sample = _sample(files, train, target, cfg.seed)
        table = fit_schema(cols, cols.rows, categorical=cfg.categorical, numeric=cfg.numeric, drop=cfg.drop,
                           features=cfg.features, numeric_transform=cfg.numeric_transform,
                           impute=cfg.impute, target=target)
        del cols
        pre, fitted, val_targets = _fit(files, table, train, val, target, task, cfg)
    if isinstance(task, CustomTask):
        fitted = task
    if not cfg.quiet:
        print(_message(files, reason, train, val, sample), file=sys.stderr, flush=True)
    encoder = PieceEncoder(files, pre, fitted, target)
    train_src = TableStream(encoder, train, shuffle_buffer=cfg.shuffle_buffer)
    val_src = TableStream(encoder, val) if val else None
    keys: dict[str, np.ndarray] = {}
    if val_src is not None:  # the rows the plots read: whole batches up to plot_rows
        keys["row"] = val_src.row_ids(_plotted(cfg))
        if val_targets is not None:
            keys["target"] = val_targets
    return Prepared(fitted, pre, train_src, val_src, target, keys)


def _plotted(cfg: TrainConfig) -> int:
    """Validation rows the plots read at most (:attr:`TableStream.plot_rows`, in whole
    evaluation batches): only their keys are kept."""
    return -(-TableStream.plot_rows // cfg.eval_batch_size) * cfg.eval_batch_size


def split_units(files: TableFiles, cfg: TrainConfig) -> tuple[list[int], list[int]]:
    """The training and validation row groups (file order): whole row groups drawn by
    ``cfg.seed`` while they bring the validation rows closer to ``val_split`` of all rows.

    Raises:
        DataError: one row group only, while ``val_split`` asks for validation rows.
    """
    units = list(range(len(files.units)))
    if cfg.val_split <= 0:
        return units, []
    if len(units) < 2:
        fix = ("it is small enough to read whole (--no-stream)" if files.converted else
               "write it with smaller ones (pyarrow's row_group_size=65536)")
        raise DataError(f"{files.source}: one row group of {files.num_rows} rows, and a stream validates on "
                        f"whole row groups: {fix}, or set val_split 0")
    want, got, val = cfg.val_split * files.num_rows, 0, []
    for u in np.random.default_rng(cfg.seed).permutation(len(units)).tolist():
        rows = files.rows(u)
        if val and (abs(got + rows - want) >= abs(got - want) or len(val) == len(units) - 1):
            break
        val.append(u)
        got += rows
    return sorted(set(units) - set(val)), sorted(val)


def _sample(files: TableFiles, units: list[int], target: str, seed: int | None) -> tuple[Columns, int]:
    """Whole training row groups drawn by ``seed`` until they hold :data:`SAMPLE_ROWS` rows
    (all of them when there are no more), read in file order up to that many rows, every
    column but the target, as Columns whose ``rows`` number them; and the number of row
    groups drawn."""
    chosen, rows = [], 0
    for u in np.random.default_rng(seed).permutation(units).tolist():
        if rows >= SAMPLE_ROWS:
            break
        chosen.append(u)
        rows += files.rows(u)
    features = [n for n in files.names if n != target]
    return files.gather(sorted(chosen), features, SAMPLE_ROWS), len(chosen)


class _Moments:
    """Per-column mean and population deviation of rows added piece by piece, in float64,
    merged with Chan's formula (as :func:`~nnfit.data.preprocess.column_stats`, whose result
    they equal up to rounding); a constant column gets deviation 1."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, None, None

    def add(self, x: torch.Tensor) -> None:
        if not len(x):
            return
        var_b, mean_b = torch.var_mean(x.double(), dim=0, correction=0)
        nb = len(x)
        if self.mean is None:
            self.n, self.mean, self.m2 = nb, mean_b, var_b * nb
            return
        delta, total = mean_b - self.mean, self.n + nb
        self.mean = self.mean + delta * (nb / total)
        self.m2 = self.m2 + var_b * nb + delta.square() * (self.n * nb / total)
        self.n = total

    def result(self) -> tuple[list[float], list[float]]:
        std = (self.m2 / max(self.n, 1)).sqrt()
        return self.mean.tolist(), torch.where(std > 0, std, torch.ones_like(std)).tolist()


class _Targets:
    """What the task needs from every target value, gathered piece by piece: the distinct
    values (classes; not kept past :data:`MAX_TRACKED` numbers when they can only make a
    regression), a representative array, and the training rows' mean and deviation."""

    def __init__(self, track: bool) -> None:
        self.track, self.distinct, self.first = track, None, None
        self.moments = _Moments()

    def add(self, y: np.ndarray, train: bool) -> None:
        if self.first is None:
            self.first = y
        if self.track:
            u = np.unique(y.astype(str) if y.dtype.kind == "O" and _mixed(y) else y)
            self.distinct = u if self.distinct is None else np.union1d(self.distinct, u)
            if self.distinct.dtype.kind in "iuf" and len(self.distinct) > MAX_TRACKED:
                self.track, self.distinct = False, None  # far more than classes: a regression
        if train and y.dtype.kind in "iufb":
            self.moments.add(torch.from_numpy(y.astype(np.float64).reshape(len(y), 1)))

    def task(self, name: str, cfg: TrainConfig, source: str) -> Task:
        """The task fitted on the values seen (see :func:`~nnfit.tasks.make_task`)."""
        if name == "auto" and self.distinct is None:
            name = "regression"
        y = self.distinct if self.distinct is not None else self.first
        fitted = make_task(name, y, loss=cfg.loss, scale_target=False, source=source)
        if isinstance(fitted, RegressionTask) and cfg.scale_target:
            mean, std = self.moments.result()
            fitted.mean, fitted.std = mean, std
        return fitted


def _mixed(y: np.ndarray) -> bool:
    """An object array of labels of more than one type (NumPy cannot sort them together)."""
    return len({type(v) for v in y[:1000]}) > 1


def _fit(files: TableFiles, table: TableSchema, train: list[int], val: list[int], target: str,
         task: str | Task, cfg: TrainConfig) -> tuple[Preprocessor, Task, np.ndarray | None]:
    """The streaming pass: every row group read once (the features a model uses and the
    target), for the standardisation (training rows), the gaps (all rows) and the task.

    Returns:
        the preprocessor, the task (``task`` itself when it is fitted already), and the
        validation rows' targets as given (for the plots; None without plots).

    Raises:
        DataError: gaps while the config does not impute (counted over every row), bad
            target values, a task the targets cannot make.
    """
    moments, filled, gaps = _Moments(), {}, {}
    name = task if isinstance(task, str) else None
    targets = _Targets(track=name is not None and name != "regression")
    val_targets: list[np.ndarray] = []
    used, training = list(table.used), set(train)
    for u in sorted(train + val):
        first = int(files.starts[u])
        for batch in files.read(u, [*used, target]):
            y = target_values(batch, target, files.source, first)
            cols = files.columns(batch, used, first)
            first += batch.num_rows
            targets.add(y, u in training)
            if u not in training:
                if cfg.plots and sum(map(len, val_targets)) < _plotted(cfg):
                    val_targets.append(y)
                # validation gaps: filled too (counted in the one warning), or refused
                _add(filled if cfg.impute else gaps, table.count_missing(cols))
                continue
            if not cfg.impute:
                missing = table.count_missing(cols)
                if missing:
                    _add(gaps, missing)
                    continue
            fast = numeric_block(table, cols, filled)
            x, _ = fast if fast is not None else table.encode(cols, filled=filled)
            if cfg.standardize and x.shape[1]:
                moments.add(torch.from_numpy(x))
    if gaps:
        raise missing_values(files.source, {n: gaps[n] for n in used if n in gaps})
    if filled:
        warn_filled(files.source, {n: filled[n] for n in used if n in filled})
    mean, std = moments.result() if moments.mean is not None else (None, None)
    fitted = task if name is None else targets.task(name, cfg, f"{files.source}: target column {target!r}")
    y_val = np.concatenate(val_targets)[:_plotted(cfg)] if val_targets else None
    return Preprocessor.for_table(table, mean, std), fitted, y_val


def _add(into: dict[str, int], counts: dict[str, int]) -> None:
    for k, v in counts.items():
        into[k] = into.get(k, 0) + v


def _targets(files: TableFiles, units: list[int], target: str, limit: int) -> np.ndarray | None:
    """The first ``limit`` target values of ``units`` as given, in order (one column read)."""
    parts, rows = [], 0
    for u in units:
        first = int(files.starts[u])
        for batch in files.read(u, [target]):
            if rows >= limit:
                break
            parts.append(target_values(batch, target, files.source, first))
            first, rows = first + batch.num_rows, rows + batch.num_rows
    return np.concatenate(parts)[:limit] if parts else None


def _message(files: TableFiles, reason: str, train: list[int], val: list[int], sample: int | None) -> str:
    """The one line that says the file is streamed, why, and how it was fitted."""
    rows = lambda units: sum(files.rows(u) for u in units)  # noqa: E731
    text = (f"streaming {files.source} ({reason}): {files.num_rows:,} rows in {len(files.units)} row groups, "
            f"{rows(train):,} to train on")
    if val:
        text += f", {rows(val):,} to validate on ({len(val)} whole row group{'s' * (len(val) > 1)}, by seed)"
    if sample is not None:
        fitted_on = ("all training rows" if rows(train) <= SAMPLE_ROWS else
                     f"a seeded sample of {SAMPLE_ROWS:,} rows ({sample} row groups)")
        text += (f"; column roles, vocabularies and medians fitted on {fitted_on}, standardisation on "
                 "all training rows")
    return text
