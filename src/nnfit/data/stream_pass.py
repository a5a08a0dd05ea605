"""The streaming pass over a table too large for memory (:func:`fit_pass`): every row group
read once for what a sample cannot tell exactly, and the fit of the preprocessing finished
with it.

* **Standardisation** of the numeric features over every training row (a mean and a
  variance merged piece by piece), the **gaps** counted over every row (the one warning line;
  refused without imputation), and the **task**: the classes of every row's target (a
  regression target's mean and deviation over the training rows). A split whose row groups
  lack classes the other split holds (a file sorted by its target) is named in one warning.
* **What the sample got wrong** (the column roles, vocabularies, medians and quantiles come
  from a sample of training rows: :mod:`.stream_fit`), refitted from every training row where
  that is exact and cheap:

  - a column without values in the sample but with values elsewhere gets its role from the
    rows that hold them (up to the sample's size, read again, that column alone), and a
    second pass over that column alone for its statistics; one with no values in any
    training row is dropped, as in memory;
  - categorical levels outside the sample's vocabulary are counted over every training row
    (at most :data:`MAX_UNSEEN` distinct ones a column: memory stays bounded; rows of levels
    beyond them stay "unknown"); those seen :data:`~nnfit.data.schema.MIN_COUNT` times or more
    join the vocabulary (the most frequent first, up to
    :data:`~nnfit.data.schema.MAX_LEVELS`), and the share of "unknown" rows is counted exactly;
  - gaps in training rows that the sample did not show give a numeric or date column its
    "was missing" feature (its statistics follow from the count) and a categorical column
    its "missing" index;
  - text in a column of numbers or dates read as gaps is named, wherever it is.

  Medians, quantiles and a date column's hour part stay the sample's (the message says so).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..config import TrainConfig
from ..errors import warn
from ..tasks import ClassificationTask, RegressionTask, Task, make_task
from .impute import missing_values
from .preprocess import Preprocessor
from .schema import (
    MAX_LEVELS,
    MIN_COUNT,
    UNKNOWN,
    Column,
    TableSchema,
    _fit_column,
    _role,
    no_features,
    warn_filled,
    warn_roles,
)
from .stream import numeric_block, target_values
from .stream_files import TableFiles
from .values import factorize, has_value, is_date, is_number

MAX_TRACKED = 100_000  # distinct numeric targets beyond which an "auto" target is a regression's
MAX_UNSEEN = 1 << 16  # distinct levels outside a column's vocabulary counted by the pass, per column


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
    values of the training and of the validation rows (classes; not kept past
    :data:`MAX_TRACKED` numbers when they can only make a regression), a representative
    array, and the training rows' mean and deviation."""

    def __init__(self, track: bool) -> None:
        self.track, self.first = track, None
        self.seen: dict[bool, np.ndarray] = {}  # training (True) or validation rows -> distinct values
        self.moments = _Moments()

    @property
    def distinct(self) -> np.ndarray | None:
        """The distinct values of every row (None: not tracked)."""
        if not self.track or not self.seen:
            return None
        parts = list(self.seen.values())
        return parts[0] if len(parts) == 1 else np.union1d(*parts)

    def add(self, y: np.ndarray, train: bool) -> None:
        if self.first is None:
            self.first = y
        if self.track:
            u = np.unique(y.astype(str) if y.dtype.kind == "O" and _mixed(y) else y)
            seen = self.seen.get(train)
            self.seen[train] = u = u if seen is None else np.union1d(seen, u)
            if u.dtype.kind in "iuf" and sum(map(len, self.seen.values())) > MAX_TRACKED:
                self.track, self.seen = False, {}  # far more than classes: a regression
        if train and y.dtype.kind in "iufb":
            self.moments.add(torch.from_numpy(y.astype(np.float64).reshape(len(y), 1)))

    def task(self, name: str, cfg: TrainConfig, source: str) -> Task:
        """The task fitted on the values seen (see :func:`~nnfit.tasks.make_task`)."""
        distinct = self.distinct
        if name == "auto" and distinct is None:
            name = "regression"
        y = distinct if distinct is not None else self.first
        fitted = make_task(name, y, loss=cfg.loss, scale_target=False, source=source)
        if isinstance(fitted, RegressionTask) and cfg.scale_target:
            mean, std = self.moments.result()
            fitted.mean, fitted.std = mean, std
        return fitted

    def lacking(self, task: Task) -> dict[bool, list[Any]]:
        """The classes of ``task`` that one split's rows (training: True, validation: False)
        lack while the other's hold them."""
        if not isinstance(task, ClassificationTask) or len(self.seen) < 2:
            return {}
        has = {k: set(task.labels.encode(v).tolist()) for k, v in self.seen.items()}
        return {k: [task.labels.classes[i] for i in sorted(has[not k] - has[k])]
                for k in has if has[not k] - has[k]}


def _warn_lacking(source: str, target: str, lacking: dict[bool, list[Any]]) -> None:
    """One warning line per split that lacks classes the other holds (a file sorted by its
    target gives whole row groups of one class): training never learns them, or validation's
    metrics and early stopping see part of the task only."""
    for train, classes in sorted(lacking.items(), reverse=True):
        more = f" and {len(classes) - 5} more" if len(classes) > 5 else ""
        shown = ", ".join(repr(c) for c in classes[:5]) + more
        has, other = ("training", "validation") if train else ("validation", "training")
        warn(f"{source}: the {has} row groups hold no rows of class{'es' * (len(classes) > 1)} {shown}, "
             f"which {other} has (is the file sorted by {target!r}?): shuffle its rows once, or draw "
             "other row groups with another --seed")


def _mixed(y: np.ndarray) -> bool:
    """An object array of labels of more than one type (NumPy cannot sort them together)."""
    return len({type(v) for v in y[:1000]}) > 1


class _Seen:
    """What one pass gathers about the feature columns of ``table``, piece by piece.

    Args:
        table: the fitted columns the pass encodes.
        late: columns the sample held no value of: the training pieces holding one are noted.
        track: count the levels outside each vocabulary and the text among numbers (a sample
            smaller than the training rows).

    Attributes:
        moments: the encoded features' mean and deviation over the training rows.
        rows: training rows encoded.
        train_gaps, val_gaps: gaps per column in the training / validation rows.
        refused: gaps per column while the config does not impute (refused after the pass).
        unseen: categorical column -> level outside the vocabulary -> training rows.
        untracked: categorical column -> training rows of levels beyond :data:`MAX_UNSEEN`.
        words: column of numbers or dates read from text -> other text -> training rows.
        late: late column -> the ``(unit, piece)`` of training rows holding a value.
    """

    def __init__(self, table: TableSchema, late: list[str], track: bool) -> None:
        self.table, self.moments, self.rows = table, _Moments(), 0
        self.train_gaps: dict[str, int] = {}
        self.val_gaps: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self.unseen: dict[str, dict[str, int]] = {c.name: {} for c in table.categorical if track}
        self.untracked = dict.fromkeys(self.unseen, 0)
        self.words: dict[str, dict[str, int]] = {c.name: {} for c in table.columns if track and c.coerce}
        self.late: dict[str, list[tuple[int, int]]] = {n: [] for n in late}

    def train(self, cols: Any, cfg: TrainConfig) -> None:
        """Add a piece of training rows."""
        table = self.table
        self.rows += len(cols)
        if not cfg.impute:
            missing = table.count_missing(cols)
            if missing:
                _add(self.refused, missing)
                return
        before = {n: self.train_gaps.get(n, 0) for n in self.words}
        fast = numeric_block(table, cols, self.train_gaps)
        x, codes = fast if fast is not None else table.encode(cols, filled=self.train_gaps)
        if cfg.standardize and x.shape[1]:
            self.moments.add(torch.from_numpy(x))
        for k, c in enumerate(table.categorical if self.unseen else []):
            self._levels(cols, c.name, codes[:, k] == UNKNOWN)
        for name, was in before.items():  # gaps beyond the empty cells: text that is no number (date)
            if self.train_gaps.get(name, 0) - was > int((~has_value(cols, name)).sum()):
                self._words(cols, name)

    def validation(self, cols: Any, cfg: TrainConfig) -> None:
        """Add a piece of validation rows: their gaps are filled too (or refused)."""
        _add(self.val_gaps if cfg.impute else self.refused, self.table.count_missing(cols))

    def find_late(self, files: TableFiles, batch: Any, unit: int, piece: int, first: int) -> None:
        """Note the late columns that hold a value in this piece of training rows."""
        for name, found in self.late.items():
            if batch.column(name).null_count < batch.num_rows and has_value(
                    files.columns(batch, [name], first), name).any():  # "" and NaN are gaps too
                found.append((unit, piece))

    def _levels(self, cols: Any, name: str, unknown: np.ndarray) -> None:
        codes, levels = factorize(cols, name)  # the encoding's own, kept by cols
        codes = codes[unknown]
        codes = codes[codes >= 0]  # a gap is no level
        if not len(codes):
            return
        counts, seen = np.bincount(codes, minlength=len(levels)), self.unseen[name]
        for i in np.flatnonzero(counts).tolist():
            level, n = levels[i], int(counts[i])
            if level in seen or len(seen) < MAX_UNSEEN:
                seen[level] = seen.get(level, 0) + n
            else:
                self.untracked[name] += n

    def _words(self, cols: Any, name: str) -> None:
        test = is_date if self.table.columns[self.table.used.index(name)].role == "datetime" else is_number
        codes, levels = factorize(cols, name)
        counts, words = np.bincount(codes[codes >= 0], minlength=len(levels)), self.words[name]
        for i in np.flatnonzero(counts).tolist():
            if not test(levels[i]) and (levels[i] in words or len(words) < MAX_UNSEEN):
                words[levels[i]] = words.get(levels[i], 0) + int(counts[i])

    def merge(self, other: _Seen) -> None:
        """Take in a pass over other columns."""
        for mine, theirs in ((self.train_gaps, other.train_gaps), (self.val_gaps, other.val_gaps),
                             (self.refused, other.refused)):
            _add(mine, theirs)
        self.unseen.update(other.unseen)
        self.untracked.update(other.untracked)
        self.words.update(other.words)

    def stats(self, cfg: TrainConfig) -> dict[str, tuple[float, float]]:
        """Feature name -> (mean, deviation) over the training rows (empty: not standardised)."""
        if not cfg.standardize or self.moments.mean is None:
            return {}
        return dict(zip(self.table.feature_names, zip(*self.moments.result(), strict=True), strict=True))


def _scan(files: TableFiles, table: TableSchema, train: list[int], val: list[int], cfg: TrainConfig, *,
          late: list[str] = (), track: bool = False, target: str | None = None,
          targets: _Targets | None = None, plotted: int = 0) -> tuple[_Seen, list[np.ndarray]]:
    """One pass over the row groups ``train`` and ``val`` (file order), reading the columns
    ``table`` uses, ``late`` ones (training rows) and ``target`` (into ``targets``).

    Returns:
        what was seen, and the first ``plotted`` validation targets (as given), in pieces.
    """
    seen, val_targets = _Seen(table, list(late), track), []
    used, training = table.used, set(train)
    for u in sorted(train + val):
        is_train = u in training
        names = [*used, *(late if is_train else ()), *([target] if target is not None else [])]
        first = int(files.starts[u])
        for j, batch in enumerate(files.read(u, names)):
            if target is not None:
                y = target_values(batch, target, files.source, first)
                targets.add(y, is_train)
                if not is_train and sum(map(len, val_targets)) < plotted:
                    val_targets.append(y)
            cols = files.columns(batch, used, first)
            if is_train:
                seen.train(cols, cfg)
                seen.find_late(files, batch, u, j, first)
            else:
                seen.validation(cols, cfg)
            first += batch.num_rows
    return seen, val_targets


def fit_pass(files: TableFiles, table: TableSchema, train: list[int], val: list[int], target: str,
             task: str | Task, cfg: TrainConfig, *, late: list[str], partial: bool, limit: int,
             plotted: int) -> tuple[Preprocessor, Task, np.ndarray | None, list[str]]:
    """The streaming pass (see the module's docstring), and the preprocessing it finishes.

    Args:
        table: the column roles fitted on the sample (without the ``late`` columns).
        late: columns the sample held no value of.
        partial: the sample held fewer rows than training (then ``table`` was fitted without
            its warnings, which are given here, from every training row).
        limit: the most rows a late column's role is fitted on.
        plotted: validation targets kept for the plots.

    Returns:
        the preprocessor, the task (``task`` itself when it is fitted already), the first
        ``plotted`` validation targets as given (None: none kept), and what was refitted
        from the pass (for the message).

    Raises:
        DataError: gaps while the config does not impute (counted over every row), bad
            target values, a task the targets cannot make, no feature column left.
    """
    name = task if isinstance(task, str) else None
    targets = _Targets(track=name is not None and name != "regression")
    seen, val_targets = _scan(files, table, train, val, cfg, late=late, track=partial, target=target,
                              targets=targets, plotted=plotted)
    fitted = task if name is None else targets.task(name, cfg, f"{files.source}: target column {target!r}")
    stats = seen.stats(cfg)
    columns = {c.name: c for c in table.columns}
    # reasons counted on the sample say so (an id-like column's distinct values)
    dropped = {n: why.replace(" training rows", " sampled rows") if partial else why
               for n, why in table.dropped.items() if n not in late}
    notes: list[str] = []
    if late:
        found, why = _fit_late(files, seen.late, train, cfg, limit)
        dropped.update(why)
        notes += [f"{c.name} (values outside the sample)" for c in found]
        if found:  # a second pass, over these columns alone
            more, _ = _scan(files, TableSchema(found, {}, cfg.numeric_transform, cfg.impute), train, val, cfg,
                            track=True)
            seen.merge(more)
            stats.update(more.stats(cfg))
            columns.update((c.name, c) for c in found)
    final = TableSchema([columns[n] for n in files.names if n in columns], dropped, cfg.numeric_transform,
                        cfg.impute)
    if seen.refused:
        raise missing_values(files.source, {n: seen.refused[n] for n in final.used if n in seen.refused})
    if partial:
        notes += _refit(final, seen)
        warn_roles(files.source, _strays(final, seen), [f"{n} ({w})" for n, w in dropped.items()
                                                        if w not in ("drop=", "not in features=")])
        if not final.columns:
            raise no_features(files.source, dropped)
    filled = {n: seen.train_gaps.get(n, 0) + seen.val_gaps.get(n, 0) for n in final.used}
    if any(filled.values()):
        warn_filled(files.source, {n: k for n, k in filled.items() if k})
    lacking = targets.lacking(fitted)
    if lacking:
        _warn_lacking(files.source, target, lacking)
    mean, std = _standardisation(final, stats, seen, cfg)
    y_val = np.concatenate(val_targets)[:plotted] if val_targets else None
    return Preprocessor.for_table(final, mean, std), fitted, y_val, notes


def _fit_late(files: TableFiles, found: dict[str, list[tuple[int, int]]], train: list[int],
              cfg: TrainConfig, limit: int) -> tuple[list[Column], dict[str, str]]:
    """The late columns fitted on up to ``limit`` training rows of the pieces holding their
    values (one column read at a time), as in memory; those with no value in any training
    row are fitted on a piece of them (dropped, or refused when forced numeric, as in memory).

    Returns:
        the columns fitted, and the dropped ones -> why.
    """
    fitted, dropped = [], {}
    for name, pieces in found.items():
        units = sorted({u for u, _ in pieces}) or [min(train)]
        cols = files.gather(units, [name], limit, set(pieces) or {(units[0], 0)})
        role, why, words = _role(cols, name, cols.rows, name in cfg.categorical, name in cfg.numeric,
                                 files.source)
        if role is None:
            dropped[name] = why
        else:
            fitted.append(_fit_column(cols, name, role, cfg.numeric_transform, files.source,
                                      coerce=words is not None))
    return fitted, dropped


def _refit(table: TableSchema, seen: _Seen) -> list[str]:
    """Correct in place what the sample could not see (see the module's docstring); returns
    what changed, for the message."""
    notes = []
    for c in table.columns:
        gaps = seen.train_gaps.get(c.name, 0)
        if c.role != "categorical":
            c.indicator = c.indicator or gaps > 0  # its statistics: _standardisation
            continue
        c.missing = c.missing or gaps > 0
        counts = seen.unseen.get(c.name, {})
        room = max(0, MAX_LEVELS - len(c.levels or []))
        frequent = (lvl for lvl, n in counts.items() if n >= MIN_COUNT)
        new = sorted(frequent, key=lambda lvl: (-counts[lvl], lvl))[:room]
        c.levels = [*(c.levels or []), *new]
        rest = sum(counts.values()) - sum(counts[lvl] for lvl in new) + seen.untracked.get(c.name, 0)
        c.unknown = rest / seen.rows if seen.rows else 0.0
        if new:
            notes.append(f"{c.name} ({len(new)} more level{'s' * (len(new) > 1)})")
    return notes


def _strays(table: TableSchema, seen: _Seen) -> dict[str, list[str]]:
    """Column -> its three most frequent texts read as gaps among numbers or dates."""
    out = {}
    for c in table.columns:
        words = seen.words.get(c.name)
        if words:
            out[c.name] = sorted(words, key=lambda w: (-words[w], w))[:3]
    return out


def _standardisation(table: TableSchema, stats: dict[str, tuple[float, float]], seen: _Seen,
                     cfg: TrainConfig) -> tuple[list[float] | None, list[float] | None]:
    """Each feature's mean and deviation over the training rows: from the pass, and for a
    "was missing" feature the sample did not call for, from its gaps' count (a 0/1 column)."""
    names = table.feature_names
    if not cfg.standardize or not names:
        return None, None
    for name in names:
        if name not in stats and name.endswith(":missing"):  # added by _refit
            p = seen.train_gaps.get(name.rsplit(":", 1)[0], 0) / max(seen.rows, 1)
            std = float(np.sqrt(p * (1 - p)))
            stats[name] = (p, std if std > 0 else 1.0)
    return [stats[n][0] for n in names], [stats[n][1] for n in names]


def _add(into: dict[str, int], counts: dict[str, int]) -> None:
    for k, v in counts.items():
        into[k] = into.get(k, 0) + v


