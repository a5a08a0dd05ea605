"""Streaming a table too large for memory: when to (:func:`stream_reason`), and the fit of
its validation split, task and preprocessing without holding it (:func:`prepare_stream`).

* **When.** ``stream=True`` (``--stream``) streams a Parquet file, a directory of Parquet files
  or a CSV/TSV file; ``stream=None`` (the default) streams a directory of Parquet files and a
  file larger than :data:`STREAM_THRESHOLD` bytes, saying so on standard error; ``stream=False``
  (``--no-stream``) reads it whole. The threshold is a size, not a share of this machine's
  memory, so a run resumed on another machine streams (and splits) as it did.
* **Validation**: whole row groups, in an order drawn by ``seed``, each taken when it brings
  the count closer to ``val_split`` of the rows (at least one; a file of one row group cannot
  be split): row groups of unequal sizes never make validation most of the file when a closer
  choice exists (:func:`split_units`).
* **Preprocessing**: the column roles, vocabularies, medians (fills) and quantiles
  (:func:`~nnfit.data.schema.fit_schema`) on a seeded sample of whole training row groups of
  up to :data:`SAMPLE_ROWS` rows, in memory (all the training rows when there are no more: then
  it equals the in-memory fit); the standardisation statistics and the gaps' counts over every
  training row, in one streaming pass (exact: a mean and a variance merge over pieces), which
  also refits what the sample could not see (:mod:`.stream_pass`).
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
from ..tasks import CustomTask, Task, task_from_dict
from .columns import CSV_SUFFIXES, PARQUET_SUFFIXES, Columns, is_frame, names_list
from .preprocess import Preprocessor
from .schema import TableSchema, fit_schema
from .stream import PieceEncoder, TableStream, target_values
from .stream_files import TableFiles, is_parquet_dir
from .stream_pass import fit_pass
from .values import has_value

if TYPE_CHECKING:
    from .prepared import Prepared

STREAM_THRESHOLD = 1 << 30  # bytes of file from which stream=None streams
SAMPLE_ROWS = 1 << 18  # rows the column roles and vocabularies are fitted on


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
            kind = "directory" if Path(x).is_dir() else "file"
            raise ConfigError(f"{x}: a streamed {kind} validates on its own row groups (val_split), so "
                              f"{what} does not apply: drop it, or --no-stream to read the {kind} whole")
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
    from .prepared import Prepared

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
        fitted, val_targets, sample, refitted = task_from_dict(resumed["task"]), None, None, []
        if cfg.plots:
            val_targets = _targets(files, val, target, _plotted(cfg))
    else:
        cols, sample = _sample(files, train, target, cfg.seed)
        partial = sum(files.rows(u) for u in train) > SAMPLE_ROWS
        table, late = _fit_sample(cols, cfg, target, partial)
        del cols
        pre, fitted, val_targets, refitted = fit_pass(
            files, table, train, val, target, task, cfg, late=late, partial=partial, limit=SAMPLE_ROWS,
            plotted=_plotted(cfg) if cfg.plots else 0)
    if isinstance(task, CustomTask):
        fitted = task
    if not cfg.quiet:
        print(_message(files, reason, train, val, sample, cfg, refitted), file=sys.stderr, flush=True)
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
    """The training and validation row groups (file order): the row groups, in an order
    drawn by ``cfg.seed``, each taken when it brings the validation rows closer to
    ``val_split`` of all rows (a large one passed over leaves room for smaller ones); when
    none does, the one whose rows come closest. At least one row group is left to train on.

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
    order = np.random.default_rng(cfg.seed).permutation(len(units)).tolist()
    for u in order:  # every group is considered: a large one passed over, a smaller may fit
        rows = files.rows(u)
        if abs(got + rows - want) < abs(got - want) and len(val) < len(units) - 1:
            val.append(u)
            got += rows
    if not val:  # every group alone overshoots twice over: the one closest (the first drawn of equals)
        val = [min(order, key=lambda u: abs(files.rows(u) - want))]
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


def _fit_sample(cols: Columns, cfg: TrainConfig, target: str, partial: bool) -> tuple[TableSchema, list[str]]:
    """The column roles fitted on the sample ``cols``: as in memory when it holds every
    training row (``partial`` False). Otherwise its warnings wait for the streaming pass,
    which sees every training row (:func:`~nnfit.data.stream_pass.fit_pass`), and so do the
    columns the sample holds no value of (returned: the pass fits those that hold some)."""
    late: list[str] = []
    if partial:
        kept = [n for n in cols.names if n not in cfg.drop and (not cfg.features or n in cfg.features)]
        late = [n for n in kept if not has_value(cols, n).any()]
    table = fit_schema(cols, cols.rows, categorical=cfg.categorical, numeric=cfg.numeric,
                       drop=[*cfg.drop, *late], features=cfg.features,
                       numeric_transform=cfg.numeric_transform, impute=cfg.impute, target=target,
                       report=not partial)
    return table, late


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


def _message(files: TableFiles, reason: str, train: list[int], val: list[int], sample: int | None,
             cfg: TrainConfig, refitted: list[str]) -> str:
    """The one line that says the file is streamed, why, and how it was fitted."""
    rows = lambda units: sum(files.rows(u) for u in units)  # noqa: E731
    groups = lambda n: f"{n} row group{'s' * (n != 1)}"  # noqa: E731
    text = (f"streaming {files.source} ({reason}): {files.num_rows:,} rows in {groups(len(files.units))}, "
            f"{rows(train):,} to train on")
    if val:
        text += f", {rows(val):,} to validate on ({groups(len(val))}, whole, by seed)"
    if sample is not None:
        stats = ["vocabularies", "medians", *(["quantiles"] if cfg.numeric_transform == "quantile" else [])]
        what = f"{', '.join(stats[:-1])} and {stats[-1]}"
        if rows(train) <= SAMPLE_ROWS:
            text += f"; column roles, {', '.join(stats)} and standardisation fitted on all training rows"
        else:
            text += (f"; column roles, {what} fitted on a seeded sample of {SAMPLE_ROWS:,} "
                     f"rows ({groups(sample)}), standardisation, gaps and levels outside the sample on all "
                     "training rows")
        if refitted:
            text += f" (refitted: {', '.join(refitted)})"
    return text
