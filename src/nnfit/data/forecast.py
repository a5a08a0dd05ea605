"""Forecasting windows over one time-ordered table: the ``forecast`` layout.

One table, one row per time step, ordered by its ``time`` column (dates or numbers, strictly
increasing: a step back or a repeated time is refused, naming the row; dates that do not step
evenly are one warning, as windows count rows, not time). Every column but the
time column is a feature of its row, through the table machinery (:mod:`.schema`: numbers
standardised, categoricals as codes, gaps filled), the target included: the past target is an
input. The forecast for row ``i`` reads the ``window`` rows ``i-H-W+1 ... i-H`` (``H`` the
``horizon``) and never row ``i`` or anything after ``i-H``, so a table of ``n`` rows has a
forecast for each row from ``W+H-1`` on.

Training splits by time: the last ``val_split`` of the forecast rows validate and the rest
train (every training target is earlier than every validation target); the column roles,
their statistics and the target scaling come from the rows before the first validation
target. ``--test-split`` holds out the last part the same way, and the run's ``test.csv`` holds
the test rows with the ``W+H-1`` rows before them, so ``nnfit evaluate RUN RUN/test.csv``
forecasts exactly the test rows. A later file is cut into windows alike: a forecast for every
row with ``W+H-1`` rows before it in that file.

Windows are never copied out of the series: a :class:`WindowData` keeps the ``(rows,
features)`` tensor once and gathers each batch's ``(B, W, features)`` windows by index. The
targets carry the naive and seasonal-naive forecasts (:mod:`nnfit.tasks.forecasting`), so
every evaluation reports both baselines beside the model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ..config import TrainConfig
from ..errors import ConfigError, DataError, warn
from ..tasks import ForecastTask, Task, task_from_dict
from ..tasks.forecasting import seasonal_lag
from .columns import Columns, date_text, names_list, read_columns, write_csv
from .layouts import SEQUENCE_MODELS
from .prepare import Prepared, _warn_unused, as_columns, key_column, table_inputs
from .preprocess import Preprocessor
from .schema import warn_filled
from .sources import Batch, TensorData
from .values import as_datetime, numeric_values

DAY = 86400
# The season a time step implies (seconds -> rows per season): minutes in an hour, hours in a
# day, days in a week, weeks in a year; months and quarters are matched by range below.
SEASONS = {60: 60, 3600: 24, DAY: 7, 7 * DAY: 52}


@dataclass
class Series:
    """One time-ordered table, checked.

    Attributes:
        cols: every column but the time column (the target included).
        y: the target as float64 (NaN where an unlabelled file has no value).
        times: the time column as read (for prediction files and test files).
        moments: the times as datetime64[s] or float64, strictly increasing.
    """

    cols: Columns
    y: np.ndarray
    times: np.ndarray
    moments: np.ndarray

    @property
    def source(self) -> str:
        return self.cols.source


@dataclass
class ForecastLayout:
    """A forecasting run's windows: which columns order and fill them, and their sizes.

    Args:
        time: the column ordering the rows.
        target: the column forecast (also an input: its past values).
        window: W, the rows each forecast reads.
        horizon: H, how many rows ahead of its last input row a forecast is.
        in_features: numeric features per row (the preprocessing's ``x`` width).
        cardinalities: per categorical column, its codes (embedding rows).
        naive_feature: the target's feature in ``x`` when it is on the scale of the task's
            targets, so that a model can forecast the change from its last value (the naive
            forecast); None when it is not (:func:`naive_feature`).
    """

    time: str
    target: str
    window: int
    horizon: int = 1
    in_features: int = 0
    cardinalities: list[int] = field(default_factory=list)
    naive_feature: int | None = None
    kind: ClassVar[str] = "forecast"

    @property
    def context(self) -> int:
        """Rows before the first forecast of a table: ``W + H - 1``."""
        return self.window + self.horizon - 1

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "time": self.time, "target": self.target, "window": self.window,
                "horizon": self.horizon, "in_features": self.in_features,
                "cardinalities": list(self.cardinalities), "naive_feature": self.naive_feature}

    def model_defaults(self, name: str) -> dict[str, Any]:
        """``in_features`` (and ``embeddings`` for categorical columns) of an lstm or gru, and
        how it forecasts (:class:`nnfit.models.LSTM`): the change from the target's last
        value (``naive_feature``), with an autoregressive highway over the whole window
        (``highway=window``). Measured on trending, seasonal, random-walk and hourly series,
        that kept the network level with or ahead of the naive and seasonal-naive forecasts
        and near a linear autoregression, where the plain network fell below the naive
        forecast on a trend past its training range; a spec with ``"highway": 0,
        "naive_feature": None`` is the plain recurrent network.

        Raises:
            ConfigError: another family: windows are (N, W, features) sequences.
        """
        from ..models.tabular import embedding_dim

        if name not in SEQUENCE_MODELS:
            raise ConfigError(f"forecasting windows are sequences of {self.window} rows: use --model lstm or "
                              f"gru (or a module of your own, called as model(x=(N, W, F))), not {name!r}")
        out: dict[str, Any] = {"in_features": self.in_features}
        if self.cardinalities:
            out["embeddings"] = [[c, embedding_dim(c)] for c in self.cardinalities]
        if self.in_features:  # the highway and the naive forecast read float features
            out.update(highway=self.window, naive_feature=self.naive_feature)
        return out

    def sample_inputs(self, pre: Preprocessor) -> dict[str, Tensor]:
        """Two windows of zeros, as the model gets them (for a model summary)."""
        out = {"x": torch.zeros(2, self.window, self.in_features)}
        if self.cardinalities:
            out["codes"] = torch.zeros(2, self.window, len(self.cardinalities), dtype=torch.long)
        return out

    def inputs(self, pre: Preprocessor, x: Any, source: str,
               target: str | None) -> tuple[WindowData, str, dict[str, np.ndarray]]:
        """A later table's windows (a forecast for every row with ``W+H-1`` rows before it),
        its name, and the time of each forecast (``{time: values}``, dates as ISO text)."""
        s = self.series(x, source, labelled=False)
        rows = self.forecast_rows(len(s.y), s.source)
        data = WindowData(self.row_inputs(pre, s, new_levels=True), rows - self.horizon, self.window)
        return data, s.source, {self.time: date_text(s.times[rows])}

    def labelled(self, pre: Preprocessor, task: Task, x: Any, y: Any, target: str | None,
                 source: str) -> tuple[WindowData, str]:
        """A later table's windows with their targets and baselines, and its name."""
        if y is not None:
            raise ConfigError(_NO_Y)
        if target is not None and target != self.target:
            raise ConfigError(f"this model forecasts {self.target!r}, not {target!r}")
        s = self.series(x, source, labelled=True)
        rows = self.forecast_rows(len(s.y), s.source)
        season = task.season if isinstance(task, ForecastTask) else None
        tgt = task.encode_target(baseline_targets(s.y, rows, self.horizon, season),
                                 f"{s.source}: target column {self.target!r}")
        data = WindowData(self.row_inputs(pre, s, new_levels=True), rows - self.horizon, self.window, tgt)
        return data, s.source

    # ------------------------------------------------------------------ reading a table
    def series(self, x: Any, source: str, labelled: bool, check_steps: bool = True) -> Series:
        """``x`` read and checked: the time and target columns present, the time strictly
        increasing, the target numeric (and, where it is an input or a label, present); with
        ``check_steps``, one warning when its dates do not step evenly (:func:`warn_irregular`).

        Raises:
            DataError: one line naming the file, the column and the row.
        """
        cols = _read(x, source, self.target if labelled else None)
        src = cols.source
        for role, name in (("time", self.time), ("target", self.target)):
            if name not in cols.arrays:
                why = ": the past target is an input to every forecast" if role == "target" else ""
                raise DataError(f"{src}: {role} column {name!r} not found (columns: "
                                f"{names_list(cols.names)}){why}")
        moments = _moments(cols, self.time, src)
        times = cols.pop(self.time)
        a = cols.arrays[self.target]
        if a.dtype.kind not in "iuf":
            raise DataError(f"{src}: target column {self.target!r} must hold numbers to forecast, got "
                            f"{cols.kind(self.target)} values")
        y = a.astype(np.float64)
        known = len(y) if labelled else max(len(y) - self.horizon, 0)  # the inputs, at least
        bad = np.flatnonzero(~np.isfinite(y[:known]))
        if len(bad):
            raise DataError(f"{src}: target column {self.target!r} has no value at row {cols.row(bad[0])} "
                            f"({y[bad[0]]}): the past target is an input to the forecasts after it")
        if check_steps:
            warn_irregular(moments, times, self.time, src)
        return Series(cols, y, times, moments)

    def forecast_rows(self, n: int, source: str) -> np.ndarray:
        """The rows of an ``n``-row table that have ``W+H-1`` rows before them.

        Raises:
            DataError: none has (the window is longer than the series).
        """
        if n <= self.context:
            raise DataError(f"{source}: {n} rows, too few for --window {self.window} --horizon "
                            f"{self.horizon}: a forecast needs {self.context} rows before it")
        return np.arange(self.context, n)

    def row_inputs(self, pre: Preprocessor, s: Series, filled: dict[str, int] | None = None,
                   new_levels: bool = False) -> dict[str, Tensor]:
        """The per-row model inputs of every row a window can read (all but the last ``H``:
        only forecasts read them, and a later file's future rows may be empty)."""
        cols = s.cols.take(np.arange(len(s.y) - self.horizon))
        if new_levels:  # a later file: name columns the model does not know
            _warn_unused(pre, cols, self.target)
        inputs = pre.transform_table(cols, s.source, filled, new_levels)
        return dict(inputs) if isinstance(inputs, dict) else {"x": inputs[0]}


_NO_Y = ("forecasting reads the target from the table (target='COL'): its past values are inputs, "
         "so it cannot come separately as y")


def from_dict(d: Mapping[str, Any]) -> ForecastLayout:
    """A saved layout (checked already against ``nnfit.io.validate.LAYOUT``)."""
    return ForecastLayout(d["time"], d["target"], d["window"], d["horizon"], d["in_features"],
                          list(d["cardinalities"]), d.get("naive_feature"))


class WindowData(TensorData):
    """Forecasting windows over one series' rows, gathered batch by batch: the series is held
    once, never ``W`` times.

    Args:
        rows: per-row inputs by name: ``x`` (rows, F) float32 and, with categorical columns,
            ``codes`` (rows, K) int64.
        ends: (n,) int64, the last row each window reads.
        window: W, rows per window.
        target: (n, 3) encoded targets (:class:`~nnfit.tasks.ForecastTask`), or None.

    Shape:
        a batch's inputs: ``x`` (B, W, F), ``codes`` (B, W, K): window ``j`` holds rows
        ``ends[j]-W+1 ... ends[j]`` in time order.

    Example:
        >>> d = WindowData({"x": torch.arange(6.0).unsqueeze(1)}, torch.tensor([2, 5]), 3)
        >>> next(iter(d.batches(2)))[0]["x"][..., 0].tolist()
        [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    """

    # TensorData's own constructor wants every tensor per sample; here the inputs are per
    # row and the samples are windows over them. The fingerprint of a run reads both.
    def __init__(self, rows: Mapping[str, Tensor], ends: Tensor | np.ndarray, window: int,
                 target: Tensor | None = None) -> None:
        self.inputs = dict(rows)
        self.ends = torch.as_tensor(ends, dtype=torch.long)
        self.window = window
        self.target = target
        self._n = len(self.ends)
        if target is not None and len(target) != self._n:
            raise DataError(f"{self._n} windows but {len(target)} targets")

    def to(self, device: torch.device) -> WindowData:
        """The rows, window ends and targets moved to ``device`` once."""
        return WindowData({k: t.to(device) for k, t in self.inputs.items()}, self.ends.to(device),
                          self.window, None if self.target is None else self.target.to(device))

    def subset(self, idx: np.ndarray | Tensor) -> WindowData:
        """The windows ``idx`` (over the same rows)."""
        idx_t = torch.as_tensor(idx, dtype=torch.long, device=self.ends.device)
        return WindowData(self.inputs, self.ends[idx_t], self.window,
                          None if self.target is None else self.target[idx_t])

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                drop_single: bool = False, start: int = 0) -> Iterator[Batch]:
        """Batches of windows in order, or in one permutation of the windows drawn from
        ``generator`` when this is called (a resume replays it); from batch ``start`` on."""
        stop = min(self._n, self.num_batches(batch_size, drop_single) * batch_size)
        perm = None
        if shuffle:  # on the CPU generator (checkpointable), moved once
            perm = torch.randperm(self._n, generator=generator).to(self.ends.device, non_blocking=True)
        return self._windows(perm, range(start * batch_size, stop, batch_size), batch_size)

    def _windows(self, perm: Tensor | None, starts: range, batch_size: int) -> Iterator[Batch]:
        back = torch.arange(1 - self.window, 1, device=self.ends.device)  # a window's rows from its end
        for i in starts:
            pick = slice(i, i + batch_size) if perm is None else perm[i:i + batch_size]
            rows = self.ends[pick].unsqueeze(1) + back  # (B, W), on the device: no sync
            yield ({k: t[rows] for k, t in self.inputs.items()},
                   None if self.target is None else self.target[pick])


# ---------------------------------------------------------------------------------- training
def prepare(x: Any, y: Any = None, *, target: str | None, val: Any, task: str | Task,
            config: TrainConfig, resumed: dict[str, Any] | None) -> Prepared:
    """Check the series, split it by time, fit the task and the column roles on the training
    part (or keep a resumed run's), and build the training and validation windows.

    Raises:
        DataError, ConfigError: one line naming the file, column or row.
    """
    cfg = config
    if y is not None:
        raise ConfigError(_NO_Y)
    if cfg.fold is not None or cfg.bootstrap is not None:
        part = f"fold={cfg.fold}" if cfg.fold is not None else f"bootstrap={cfg.bootstrap}"
        raise ConfigError(f"{part}: a forecast validates on the end of its series (val_split), "
                          "never on rows drawn from its past")
    pre = fitted = None
    if resumed is not None:  # the run's own layout, preprocessing and task
        pre, fitted = Preprocessor.from_dict(resumed["preprocess"]), task_from_dict(resumed["task"])
        layout = pre.layout
    else:
        layout = new_layout(cfg, target)
    s = layout.series(x, "training data", labelled=True)
    n, h = len(s.y), layout.horizon
    rows = layout.forecast_rows(n, s.source)
    n_val = _held_rows(len(rows), cfg.val_split if val is None else 0.0, "validation", s.source)
    known = n - n_val  # the training part: every row before the first validation target
    train_rows, val_rows = rows[:len(rows) - n_val], rows[len(rows) - n_val:]
    y_source = f"{s.source}: target column {layout.target!r}"
    if fitted is None:
        season = cfg.season or infer_season(s.moments)
        fitted = _forecast_task(task, cfg, s.y[:known], season)
    if pre is None:
        part = np.arange(known)
        pre, _ = table_inputs(s.cols.take(part), part, s.cols, cfg, layout.target, None, {})
        layout = replace(layout, in_features=pre.inputs[0].shape[0],
                         cardinalities=[c.cardinality for c in pre.table.categorical],
                         naive_feature=naive_feature(pre, fitted, layout.target))
        pre.layout = layout
    filled: dict[str, int] = {}
    row_inputs = layout.row_inputs(pre, s, filled)
    if filled:
        warn_filled(s.source, filled)
    season = fitted.season if isinstance(fitted, ForecastTask) else None
    tgt = fitted.encode_target(baseline_targets(s.y, rows, h, season), y_source)
    k = len(train_rows)
    train = WindowData(row_inputs, train_rows - h, layout.window, tgt[:k])
    val_src = WindowData(row_inputs, val_rows - h, layout.window, tgt[k:]) if n_val else None
    if val is not None:
        vx, vy = val if isinstance(val, tuple) and len(val) == 2 else (val, None)
        val_src, _ = layout.labelled(pre, fitted, vx, vy, layout.target, "validation data")
    # a forecast is named by its target row's time (the validation windows of the series)
    times = s.times[val_rows]
    if times.dtype.kind == "M":  # 2021-03-31, not 2021-03-31T00:00:00.000000000
        times = np.datetime_as_string(times, unit="auto")
    keys = {key_column(cfg.time, "time"): times} if n_val and val is None else {}
    return Prepared(fitted, pre, train, val_src, layout.target, keys)


def new_layout(cfg: TrainConfig, target: str | None) -> ForecastLayout:
    """The layout the settings ask for (sizes from the data come later).

    Raises:
        ConfigError: no target, or the time column as the target.
    """
    if target is None:
        raise ConfigError("forecasting needs the column to forecast: --target COL (target='COL')")
    if cfg.time == target:
        raise ConfigError(f"--time and --target name the same column {target!r}")
    assert cfg.time is not None  # layout_kind refuses --window without --time
    return ForecastLayout(cfg.time, target, cfg.window, cfg.horizon)


def naive_feature(pre: Preprocessor, task: Task, target: str) -> int | None:
    """The target's feature in the input ``x``, if the model sees it on the scale of the
    task's targets (then its last value is the naive forecast as the loss sees it): both
    standardised with the same statistics (the default: the task's scaling is fitted on the
    rows the preprocessing is), or neither. None when the target is not among ``x``'s
    features, goes through the quantile transform, or is scaled otherwise."""
    x = pre.inputs[0]
    names = x.features or []
    if target not in names or pre.table is None:
        return None
    j = names.index(target)
    if any(c.name == target and c.quantiles is not None for c in pre.table.columns):
        return None
    mean, std = getattr(task, "mean", None), getattr(task, "std", None)
    if x.mean is None or mean is None:
        return j if x.mean is None and mean is None else None
    # the same rows, the inputs' statistics taken over their float32 values: equal to its rounding
    same = abs(x.mean[j] - mean[0]) <= 1e-6 * std[0] and math.isclose(x.std[j], std[0], rel_tol=1e-6)
    return j if same else None


def _forecast_task(task: str | Task, cfg: TrainConfig, y: np.ndarray, season: int | None) -> Task:
    """The task to train: a given ForecastTask, or one fitted on the training part's target
    values ``y`` (the rows the preprocessing is fitted on, so that both scale it alike)."""
    if isinstance(task, ForecastTask):
        return task
    if task not in ("auto", "regression"):
        shown = task if isinstance(task, str) else type(task).__name__
        raise ConfigError(f"forecasting predicts the target's values: task must be 'auto' or 'regression', "
                          f"got {shown!r}")
    fitted = ForecastTask(loss_name=cfg.loss, season=season)
    if cfg.scale_target:
        fitted.fit_scaling(y)
    return fitted


def _held_rows(m: int, fraction: float, part: str, source: str) -> int:
    """How many of ``m`` forecast rows (the last ones) a ``fraction`` holds out for ``part``.

    Raises:
        DataError: none would be left to train on.
    """
    if fraction <= 0:
        return 0
    k = max(1, round(fraction * m))
    if m - k < 1:
        raise DataError(f"{source}: {m} row(s) to forecast, too few for a {part} part ({fraction:g} of them) "
                        "and training: a longer series or a shorter --window")
    return k


def baseline_targets(y: np.ndarray, rows: np.ndarray, horizon: int, season: int | None) -> np.ndarray:
    """The (n, 3) targets of forecast ``rows`` of series ``y``: the value ``y[i]``, the naive
    forecast ``y[i-H]`` and the seasonal naive ``y[i-k*P]`` (NaN where that row is before the
    table's first, or the season is unknown)."""
    out = np.full((len(rows), 3), np.nan)
    out[:, 0], out[:, 1] = y[rows], y[rows - horizon]
    if season:
        back = rows - seasonal_lag(horizon, season)
        ok = back >= 0
        out[ok, 2] = y[back[ok]]
    return out


def warn_irregular(moments: np.ndarray, times: np.ndarray, time: str, source: str) -> None:
    """One warning line when a datetime series does not step evenly (a missing day, a
    weekend skipped): windows, the horizon and the seasonal baseline count rows, so a row
    is then not the time step they assume. Steps are compared with the median step, in
    calendar months for monthly and longer steps (months differ in days). Never an error."""
    if moments.dtype.kind != "M" or len(moments) < 3:
        return
    seconds = np.diff(moments.astype("datetime64[s]").astype(np.int64))
    steps, unit = seconds, "s"
    if np.sort(seconds)[(len(seconds) - 1) // 2] >= 28 * DAY:
        steps, unit = np.diff(moments.astype("datetime64[M]").astype(np.int64)), "M"
    usual = int(np.sort(steps)[(len(steps) - 1) // 2])  # a median that is one of the steps
    odd = np.flatnonzero(steps != usual)
    if len(odd):
        j = int(odd[0])
        before, at = (str(v) for v in date_text(times[j:j + 2]).tolist())
        warn(f"{source}: time column {time!r} does not step evenly: {len(odd)} of {len(steps)} steps "
             f"are not its usual {_step_text(usual, unit)} (the first: {at} after {before}); windows, "
             "--horizon and --season count rows, not time")


def _step_text(step: int, unit: str) -> str:
    """A time step in words: ``1 day``, ``6 hours``, ``3 months``, ``90 s``."""
    if unit == "M":
        n, name = step, "month"
    else:
        n, name = next(((step // size, name) for size, name in ((DAY, "day"), (3600, "hour"), (60, "minute"))
                        if step % size == 0), (step, "second"))
    return f"{n} {name}{'s' if n != 1 else ''}"


def infer_season(moments: np.ndarray) -> int | None:
    """The seasonal period implied by the median time step: minutely 60, hourly 24, daily 7,
    weekly 52, monthly 12, quarterly 4; None for numeric times or another step."""
    if moments.dtype.kind != "M" or len(moments) < 2:
        return None
    step = float(np.median(np.diff(moments.astype("datetime64[s]").astype(np.int64))))
    if step in SEASONS:
        return SEASONS[int(step)]
    if 28 * DAY <= step <= 31 * DAY:
        return 12
    return 4 if 89 * DAY <= step <= 92 * DAY else None


# ------------------------------------------------------------------------ test split (CLI)
def hold_out(data: Any, fraction: float, config: TrainConfig, target: str | None,
             task: str) -> tuple[Columns, Columns, int]:
    """The training part (rows before the first test target), the test part (the test rows
    with the ``W+H-1`` rows before them) and the number of test rows: the last ``fraction``
    of the forecast rows. The series is checked here, before a run directory exists."""
    layout = new_layout(config, target)
    # no warning here: training warns of its part, the test's evaluation of the rest
    s = layout.series(data, "training data", labelled=True, check_steps=False)
    n = len(s.y)
    rows = layout.forecast_rows(n, s.source)
    k = _held_rows(len(rows), fraction, "test", s.source)
    whole = data if isinstance(data, Columns) else _read(data, "training data", target)
    return whole.take(np.arange(n - k)), whole.take(np.arange(n - k - layout.context, n)), k


def write_test(path: str | Path, test_part: Columns, config: TrainConfig, target: str | None) -> Path:
    """Write the test part (its rows and the context before them) as CSV, atomically."""
    return write_csv(path, test_part)


def _read(x: Any, source: str, exclude: str | None) -> Columns:
    """A path (read at full precision: a numeric time column keeps every digit), DataFrame
    or Columns as Columns of its own."""
    if isinstance(x, (str, Path)):
        return read_columns(x, allow_missing=True, exclude=exclude)
    cols = as_columns(x, source, exclude)
    if cols is None:
        raise DataError(f"{source}: forecasting reads one time-ordered table: pass a DataFrame or a "
                        f"CSV/Parquet file, not {type(x).__name__}")
    return cols


def _moments(cols: Columns, time: str, source: str) -> np.ndarray:
    """The time column as datetime64[s] or float64, checked present on every row and strictly
    increasing.

    Raises:
        DataError: a gap, a step back (naming the row) or a repeated time (naming both rows).
    """
    if cols.kind(time) in ("int", "float"):
        m = numeric_values(cols, time, source)
        gaps = np.isnan(m)
    else:
        m = as_datetime(cols, time, source)
        gaps = np.isnat(m)
    if gaps.any():
        at = cols.row(int(np.argmax(gaps)))
        raise DataError(f"{source}: time column {time!r} has no value at row {at}")
    steps = np.diff(m.astype(np.int64) if m.dtype.kind == "M" else m)
    bad = np.flatnonzero(steps <= 0)
    if len(bad):
        j = int(bad[0])
        before, at = (str(v) for v in date_text(cols.arrays[time][j:j + 2]).tolist())
        if steps[j] == 0:
            raise DataError(f"{source}: time column {time!r} repeats {at} (rows {cols.row(j)} and "
                            f"{cols.row(j + 1)}): one row per time step")
        raise DataError(f"{source}: time column {time!r} goes back at row {cols.row(j + 1)} ({at} after "
                        f"{before}): sort the rows by time")
    return m
