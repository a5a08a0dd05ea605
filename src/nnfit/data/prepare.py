"""The one entry from user data to training sources: :func:`prepare`, called by ``nnfit.fit``
(and so by ``nnfit train``), and :func:`model_inputs` / :func:`labelled_inputs`, which apply the
fitted preprocessing to later data (evaluate, predict, a loaded run).

Stages, each in its own module: read (:mod:`.read`, :mod:`.columns`, :mod:`.inputs`) ->
column roles (:mod:`.schema`) -> split (:mod:`.split`) -> fit the preprocessing on the training
split (:mod:`.preprocess`) -> sources (:mod:`.sources`). A file too large for memory takes
the same stages by row groups (:mod:`.stream_fit`, :mod:`.stream`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..config import TrainConfig
from ..errors import ConfigError, DataError, warn
from ..tasks import CustomTask, Task, check_target, make_task, task_from_dict
from . import layouts
from .columns import Columns, column_name, columns_from_frame, is_frame, names_list
from .impute import missing_values
from .inputs import RawInputs, check_plain_tensor, raw_inputs
from .layouts import layout_kind
from .prepared import Prepared, key_column  # noqa: F401  (re-exported)
from .preprocess import Preprocessor
from .read import read_table
from .schema import fit_schema, warn_filled
from .sources import DataSource, Inputs, LoaderData, StreamData, TensorData, as_source
from .split import holdout, holds_out, stratify_labels
from .stream_fit import prepare_stream, stream_reason


def prepare(x: Any, y: Any = None, *, target: str | None = None, val: Any = None,
            task: str | Task = "auto", config: TrainConfig | None = None,
            resumed: dict[str, Any] | None = None, numeric: bool = False,
            family: str | None = None) -> Prepared:
    """Read, give columns roles, split, fit the task and preprocessing, and build sources.

    Args:
        x: a path, DataFrame, Columns, array, tensor, tuple/dict of them, or Dataset/DataLoader;
            a Parquet/CSV path (or a directory of Parquet files) is streamed by row groups
            per ``config.stream`` (:func:`~nnfit.data.stream_fit.stream_reason`).
        y: targets, unless ``target`` names a column of ``x``.
        target: the target column of a table.
        val: validation data like ``x`` (``(x, y)`` for arrays); else ``val_split`` is held out.
        task: "auto", "binary", "multiclass", "regression" or a fitted Task.
        config: the TrainConfig (split, seed, impute, column roles...).
        resumed: the ``learner`` part of a checkpoint: its task and preprocessing are kept.
        numeric: integer and boolean array inputs become float features (built-in models).
        family: the built-in model family to train ("mlp", "cnn", "lstm"...), None for a
            user's module: it tells images and sequences from rows where arrays look alike.

    Raises:
        DataError, ConfigError: bad data or arguments, in one line.
    """
    cfg = config or TrainConfig()
    streamed = stream_reason(x, cfg, family, val=val, y=y)  # refuses --stream on data in memory
    if streamed is not None:  # a file too large for memory: read by row groups (.stream_fit)
        return prepare_stream(x, target=column_name(target), task=task, config=cfg, resumed=resumed,
                              reason=streamed)
    _check_resampling(cfg, val, _is_stream(x))
    if _is_stream(x):  # the user's batches: no preprocessing to fit
        src = as_source(x)
        return Prepared(_loader_task(task, src, cfg.loss), None, src,
                        None if val is None else as_source(val), None)
    target = column_name(target)
    if resumed is not None:  # a resumed run keeps its layout (none: rows of features)
        kind = ((resumed.get("preprocess") or {}).get("layout") or {}).get("kind")
    else:
        kind = layout_kind(x, cfg, family)
    if kind is not None:  # images, sequences, forecasting windows: their own module
        return layouts.module(kind).prepare(x, y, target=target, val=val, task=task, config=cfg,
                                            resumed=resumed)
    pre = None if resumed is None else Preprocessor.from_dict(resumed["preprocess"])
    cols = as_columns(x, "training data", target, allow_missing=pre is None or pre.table is not None
                      or pre.imputes)
    if cols is not None and (pre is None or pre.table is not None):
        return _prepare_table(cols, y, target, val, task, cfg, resumed, pre)
    raw, y_arr, *sources = _xy(x, y, target, "training data", cfg.impute, cols,
                               keep_shape=isinstance(task, CustomTask))
    if numeric:
        raw = raw.as_float()
    return _prepare_arrays(raw, y_arr, val, target, task, cfg, resumed, pre, sources)


def _check_resampling(cfg: TrainConfig, val: Any, stream: bool) -> None:
    """A fold or bootstrap holds out its own validation rows: refused with validation data
    of the user's, and for batches nnfit cannot split (a Dataset, DataLoader or stream)."""
    if cfg.fold is None and cfg.bootstrap is None:
        return
    part = f"fold={cfg.fold}" if cfg.fold is not None else f"bootstrap={cfg.bootstrap}"
    if val is not None:
        raise ConfigError(f"{part} holds out its own validation rows: pass no validation data (val=), "
                          "or drop it")
    if stream:
        raise ConfigError(f"{part}: a Dataset, DataLoader or stream is never split into rows; pass "
                          "arrays, a table or a file, or drop it")


def _is_stream(x: Any) -> bool:
    """A Dataset, DataLoader, DataSource or a function making batches (as_source takes them)."""
    if isinstance(x, (Dataset, DataLoader, LoaderData, StreamData)):
        return True
    return all(hasattr(x, m) for m in ("length", "num_batches", "batches", "to")) or (
        callable(x) and not isinstance(x, type) and not is_frame(x))


def as_columns(x: Any, source: str, exclude: str | None, allow_missing: bool = True) -> Columns | None:
    """A path, Columns or DataFrame as Columns (a fresh copy), or None for other inputs."""
    if isinstance(x, (str, Path)):
        return read_table(x, exclude=exclude, allow_missing=allow_missing)
    if isinstance(x, Columns):
        return x.copy()
    if is_frame(x):
        return columns_from_frame(x, source, allow_missing=allow_missing, exclude=exclude)
    return None


# ------------------------------------------------------------------------------ tables
def _prepare_table(cols: Columns, y: Any, target: str | None, val: Any, task: str | Task,
                   cfg: TrainConfig, resumed: dict | None, pre: Preprocessor | None) -> Prepared:
    """Tables: roles and vocabularies fitted on the training split, the same two inputs
    (``x``, ``codes``) for every split."""
    y_arr, y_source = _table_target(cols, y, target)
    if not cols.arrays:
        raise DataError(f"{cols.source}: no feature columns besides the target")
    va_cols, y_va, va_source = None, None, f"{cols.source}: target column {target!r}"
    rows, whole = np.arange(len(cols)), cols
    if val is None and holds_out(cfg):
        rows, va_idx = holdout(len(cols), cfg, stratify_labels(y_arr, task), source=y_source)
        va_cols, y_va = cols.take(va_idx), y_arr[va_idx]
        cols, y_arr = cols.take(rows), y_arr[rows]
    elif val is not None:
        vx, vy = val if isinstance(val, tuple) and len(val) == 2 else (val, None)
        va_cols = as_columns(vx, "validation data", target)
        if va_cols is None:
            raise DataError("validation data: pass a table (DataFrame or file) like the training data")
        y_va, va_source = _table_target(va_cols, vy, target)
    fitted = _fitted_task(task, y_arr, cfg, resumed, y_source)
    filled: dict[str, int] = {}
    pre, inputs = table_inputs(cols, rows, whole, cfg, target, pre, filled)
    train = TensorData(inputs, fitted.encode_target(y_arr, y_source))
    val_src = None
    if va_cols is not None:
        _warn_unused(pre, va_cols, target)
        val_src = TensorData(pre.transform_table(va_cols, "validation data", filled),
                             fitted.encode_target(y_va, va_source))
    if filled:  # one line for the training and validation splits, in column order
        warn_filled(cols.source, {n: filled[n] for n in pre.table.used if n in filled})
    keys = {} if va_cols is None else {"row": va_cols.rows if va_cols.rows is not None
                                       else np.arange(len(va_cols)), "target": y_va}
    return Prepared(fitted, pre, train, val_src, target, keys)


def table_inputs(cols: Columns, rows: np.ndarray, whole: Columns, cfg: TrainConfig, target: str | None,
                 pre: Preprocessor | None, filled: dict[str, int]) -> tuple[Preprocessor, Inputs]:
    """The training split ``cols`` as model inputs, through column roles and standardisation
    fitted on it (or a resumed run's ``pre``): the one fit of a table's preprocessing, for
    rows of features and for the steps of sequences alike.

    Args:
        cols: the training split (target removed).
        rows: its rows' positions in ``whole`` (to recognise a column that counts the rows).
        whole: every row (training and validation): gaps are refused over all of it when
            the config does not ``impute``.
        cfg: the column-role settings (categorical, numeric, drop, features, impute...).
        target: the target's name, refused in the column lists.
        pre: a resumed run's preprocessing, applied as it is; None: fit one.
        filled: gaps filled are counted into it (column -> count).

    Raises:
        DataError: a column list naming what does not exist, nothing left to train on, or
            gaps without ``impute``.
    """
    if pre is not None:
        return pre, pre.transform_table(cols, filled=filled)
    distinct, first = np.unique(rows, return_index=True)
    # A bootstrap sample repeats rows: column roles (an id is distinct on most rows), levels and
    # fills are fitted on the distinct rows drawn, or every id would read as a repeated category;
    # the standardisation below weighs each row as often as it was drawn.
    seen, seen_rows = (cols, rows) if len(distinct) == len(rows) else (cols.take(first), distinct)
    table = fit_schema(seen, seen_rows, categorical=cfg.categorical, numeric=cfg.numeric, drop=cfg.drop,
                       features=cfg.features, numeric_transform=cfg.numeric_transform,
                       impute=cfg.impute, target=target)
    gaps = {} if cfg.impute else table.count_missing(whole)
    if gaps:  # counted over the whole table, not only the training split
        raise missing_values(whole.source, gaps)
    return Preprocessor.fit_table(cols, table, standardize=cfg.standardize, filled=filled)


def _table_target(cols: Columns, y: Any, target: str | None) -> tuple[np.ndarray, str]:
    """The target array of a table (its ``target`` column, removed, or ``y``), checked once."""
    if y is None:
        if target is None:
            raise DataError(f"{cols.source}: name the target column (target=...)")
        if target not in cols.arrays:
            raise DataError(f"{cols.source}: target column {target!r} not found "
                            f"(columns: {names_list(cols.names)})")
        y_arr, y_source = cols.pop(target), f"{cols.source}: target column {target!r}"
    else:
        y_arr, y_source = target_array(y, f"{cols.source} target"), f"{cols.source} target"
        if target is not None and target in cols.arrays:
            cols.pop(target)
        if len(y_arr) != len(cols):
            raise DataError(f"{cols.source}: {len(cols)} rows of inputs but {len(y_arr)} targets")
    check_target(y_arr, y_source)
    return y_arr, y_source


def _warn_unused(pre: Preprocessor, cols: Columns, target: str | None) -> None:
    """One warning line naming columns the model does not know (not features, not dropped,
    not the target): they are ignored."""
    assert pre.table is not None
    pre.table.check_present(cols)  # a missing column is the error, not an extra one
    known = set(pre.table.used) | set(pre.table.dropped) | {target}
    extra = [n for n in cols.names if n not in known]
    if extra:
        warn(f"{cols.source}: ignoring columns the model was not trained on: {names_list(extra)}")


def model_inputs(pre: Preprocessor, x: Any, source: str, target: str | None) -> tuple[Any, str]:
    """Unlabelled data as model inputs through the fitted preprocessing, and its name for errors.
    A table's target column is ignored when present, so one file serves evaluate and predict."""
    if pre.table is not None:
        cols = _table_of(pre, x, source, target)
        if target is not None and target in cols.arrays:
            cols.pop(target)
        _warn_unused(pre, cols, target)
        return pre.transform_table(cols, new_levels=True), cols.source
    cols = as_columns(x, source, target, pre.imputes)
    if cols is None:
        raw = raw_inputs(x, source, pre.imputes)
    else:
        if target is not None and target in cols.arrays and len(cols.arrays) > 1:
            cols.pop(target)
        raw, source = raw_inputs(cols, cols.source, pre.imputes), cols.source
    return pre.transform(raw, source), source


def labelled_inputs(pre: Preprocessor, task: Task, x: Any, y: Any, target: str | None,
                    source: str) -> tuple[TensorData, str]:
    """Labelled data as a source through the fitted preprocessing and task, and its name."""
    if pre.table is not None:
        cols = _table_of(pre, x, source, target)
        y_arr, y_source = _table_target(cols, y, target)
        _warn_unused(pre, cols, target)
        inputs = pre.transform_table(cols, new_levels=True)
        return TensorData(inputs, task.encode_target(y_arr, y_source)), cols.source
    raw, y_arr, source, y_source = _xy(x, y, target, source, pre.imputes,
                                       keep_shape=isinstance(task, CustomTask))
    return TensorData(pre.transform(raw, source), task.encode_target(y_arr, y_source)), source


def _table_of(pre: Preprocessor, x: Any, source: str, target: str | None) -> Columns:
    """``x`` as Columns for a model trained on a table. A plain 2-D array is taken as the
    feature columns in training order when every feature is numeric."""
    cols = as_columns(x, source, target)
    if cols is not None:
        return cols
    assert pre.table is not None
    used = pre.table.used
    if isinstance(x, Tensor):
        check_plain_tensor(x, source)
        x = x.detach().cpu().numpy()
    a = np.asarray(x) if not isinstance(x, (dict, tuple)) else None
    numeric_only = all(c.role == "numeric" for c in pre.table.columns)
    if a is not None and a.ndim == 2 and a.shape[1] == len(used) and numeric_only and a.dtype.kind in "iufb":
        return Columns(source, {n: a[:, j] for j, n in enumerate(used)})
    raise DataError(f"{source}: this model was trained on a table: pass a DataFrame or file with the "
                    f"columns {names_list(used)}")


# ------------------------------------------------------------------------------ arrays
def _xy(x: Any, y: Any, target: str | None, source: str, allow_missing: bool = False,
        cols: Columns | None = None, keep_shape: bool = False) -> tuple[RawInputs, np.ndarray, str, str]:
    """Split user data into raw inputs and a target array (arrays, or a table for a model
    saved before column roles: every column a numeric feature). ``keep_shape``: as
    :func:`target_array`.

    Returns:
        (inputs, target array, the inputs' name for errors, the target's name for errors).
    """
    target = column_name(target)
    cols = cols if cols is not None else as_columns(x, source, target, allow_missing)
    y_source = f"{source} target"
    if cols is not None:
        source = cols.source
        if y is None:
            if target is None:
                raise DataError(f"{cols.source}: name the target column (target=...)")
            y = cols.pop(target)
            y_source = f"{cols.source}: target column {target!r}"
        if not cols.arrays:
            raise DataError(f"{cols.source}: no feature columns besides the target")
        raw = raw_inputs(cols, cols.source, allow_missing)
    else:
        if y is None:
            raise DataError(f"{source}: targets are missing (pass y)")
        raw = raw_inputs(x, source, allow_missing)
    y_arr = target_array(y, y_source, keep_shape)
    if len(y_arr) != len(raw):
        raise DataError(f"{source}: {len(raw)} rows of inputs but {len(y_arr)} targets")
    return raw, y_arr, source, y_source


def target_array(y: Any, source: str = "target", keep_shape: bool = False) -> np.ndarray:
    """Targets as a NumPy array (a column vector as 1-D, unless ``keep_shape``: a custom
    loss gets the targets as given).

    Raises:
        DataError: rows of different shapes (a list of arrays of different lengths), naming
            ``source`` and the first row that differs.
    """
    if isinstance(y, Tensor):
        check_plain_tensor(y, source)
        return y.detach().cpu().numpy()
    if hasattr(y, "to_numpy"):
        y = y.to_numpy()
    try:
        a = np.asarray(y)
    except ValueError:  # NumPy refuses rows of different shapes (a ragged list)
        raise DataError(f"{source}: {_ragged(y)}: every target row needs the same shape (pad the "
                        "shorter rows and pass a mask in the target)") from None
    if a.ndim == 2 and a.shape[1] == 1 and not keep_shape:
        a = a[:, 0]
    return a


def _ragged(y: Any) -> str:
    """The first row of a ragged target whose shape differs from the first row's."""
    try:
        shapes = [np.shape(r) for r in y]
    except (TypeError, ValueError):  # a row that is ragged itself
        return "rows of different shapes"
    bad = next((i for i, s in enumerate(shapes) if s != shapes[0]), None)
    if bad is None:
        return "rows of different shapes"
    return f"row {bad + 1} has shape {shapes[bad]}, row 1 {shapes[0]}"


def _prepare_arrays(raw: RawInputs, y: np.ndarray, val: Any, target: str | None, task: str | Task,
                    cfg: TrainConfig, resumed: dict | None, pre: Preprocessor | None,
                    sources: list[str]) -> Prepared:
    """Arrays and tensors: split, fit the task and preprocessing on the training part (or keep
    a resumed run's ``pre``), build tensors. ``sources`` name the inputs and the target in
    error messages."""
    x_source, y_source = sources
    if len(raw) == 0:
        raise DataError("training data has no rows")
    va_source = y_source
    check_target(y, y_source)
    if val is None and holds_out(cfg):
        tr_idx, va_idx = holdout(len(raw), cfg, stratify_labels(y, task), source=y_source)
        raw_tr, y_tr, raw_va, y_va = raw.take(tr_idx), y[tr_idx], raw.take(va_idx), y[va_idx]
        keys = {"row": np.asarray(va_idx), "target": y_va}
    else:
        raw_tr, y_tr, raw_va, y_va = raw, y, None, None
        if val is not None:
            vx, vy = (val if isinstance(val, tuple) and len(val) == 2 else (val, None))
            raw_va, y_va, _, va_source = _xy(vx, vy, target, "validation data", cfg.impute,
                                             keep_shape=isinstance(task, CustomTask))
        keys = {} if raw_va is None else {"row": np.arange(len(raw_va)), "target": y_va}
    fitted = _fitted_task(task, y_tr, cfg, resumed, y_source)
    if pre is None:
        pre = Preprocessor.fit(raw_tr, standardize=cfg.standardize, impute=cfg.impute, source=x_source)
    filled: dict[str, int] = {}
    train = TensorData(pre.transform(raw_tr, x_source, filled), fitted.encode_target(y_tr, y_source))
    val_src = None
    if raw_va is not None:
        val_src = TensorData(pre.transform(raw_va, "validation data", filled),
                             fitted.encode_target(y_va, va_source))
    if filled:  # one line for both splits
        warn_filled(x_source, filled)
    return Prepared(fitted, pre, train, val_src, target, keys)


def _fitted_task(task: str | Task, y: np.ndarray, cfg: TrainConfig, resumed: dict | None,
                 source: str) -> Task:
    """The task to train: a resumed run's own, a fitted Task as given, or one fitted on the
    training split's targets ``y``."""
    if resumed is not None:  # a resumed run keeps the task (and preprocessing) it started with
        return task_from_dict(resumed["task"])
    if not isinstance(task, str):
        return task
    return make_task(task, y, loss=cfg.loss, scale_target=cfg.scale_target, source=source)


def _loader_task(name: str | Task, data: DataSource, loss: str) -> Task:
    """A task for DataLoader-fed training: targets are already indices or float values."""
    if not isinstance(name, str):
        return name
    if name == "auto":
        raise ConfigError("with a Dataset/DataLoader, pass task='binary', 'multiclass' or 'regression'")
    ys = [np.asarray(t.cpu()) for _, t in data.batches(4096)]
    y = np.concatenate(ys) if ys else np.zeros(0)
    if name == "regression":
        return make_task(name, y, loss=loss, scale_target=False)
    classes = np.arange(int(y.max()) + 1 if len(y) else 0)
    return make_task(name, classes, loss=loss)
