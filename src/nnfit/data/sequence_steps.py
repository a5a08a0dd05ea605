"""Reading sequences: every form a user has, as :class:`Steps` (the steps of each sequence, one
sequence after another), checked.

Forms:

* ``table``: a long-format table (CSV/Parquet file, DataFrame, Columns) with one row per time
  step: the ``sequence_id`` column names each row's sequence, the ``time`` column (numbers or
  dates) orders its rows, and the target is one label per sequence. Rows may come in any order
  and sequences may have any length from one row up (two to train on: :data:`TRAIN_STEPS`).
  Sequences keep the order of their first row in the table.
* ``floats``: an array or tensor (N, T, F) (every sequence T steps long), or a list of
  (T_i, F) arrays or tensors.
* ``tokens``: an integer array or tensor (N, T) of token ids, or a list of (T_i,) ones.

Every problem is one :class:`~nnfit.errors.DataError` line naming the source and the sequence
(its id, or its 1-based row for arrays) or the table's row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from ..errors import ConfigError, DataError
from ..tasks import check_target
from .columns import Columns, columns_from_frame, date_text, is_frame, names_list, read_columns
from .inputs import check_plain_tensor
from .values import as_datetime, factorize

# What makes a table a set of sequences, for the one line that asks for it.
SEQUENCE_FLAGS = ("sequence models read a long-format table (one row per time step) with --sequence-id COL "
                  "and --time COL (sequence_id=, time= in Python), or arrays (N, T, F), token arrays "
                  "(N, T) or a list of sequences")
# The fewest rows of a table's sequence that training takes (the bad input: one row is
# more likely a broken export than a sequence); evaluate and predict score a one-row sequence.
TRAIN_STEPS = 2


@dataclass
class Steps:
    """Sequences as their steps, one sequence after another.

    Attributes:
        form: "table", "floats" or "tokens".
        lengths: (N,) steps per sequence.
        rows: the steps: a table's rows sorted by sequence, then time (id, time and target
            columns removed), or a (R, F) float / (R,) int64 array.
        labels: (N,) one label per sequence, or None (unlabelled data).
        ids: (N,) the id of each sequence (a table's), or None.
        positions: (R,) the table row each step came from (0-based, in the table as given),
            or None for arrays.
        source: the data's name in errors.
        label_source: the labels' name in errors.
    """

    form: str
    lengths: np.ndarray
    rows: Columns | np.ndarray
    labels: np.ndarray | None
    ids: np.ndarray | None
    positions: np.ndarray | None
    source: str
    label_source: str

    def __len__(self) -> int:
        return len(self.lengths)

    def take(self, idx: np.ndarray) -> Steps:
        """The sequences ``idx`` (in that order)."""
        idx = np.asarray(idx, dtype=np.int64)
        starts = np.concatenate(([0], np.cumsum(self.lengths)[:-1]))
        steps = _ranges(starts[idx], self.lengths[idx])
        rows = self.rows.take(steps) if isinstance(self.rows, Columns) else self.rows[steps]
        return replace(self, lengths=self.lengths[idx], rows=rows,
                       labels=None if self.labels is None else self.labels[idx],
                       ids=None if self.ids is None else self.ids[idx],
                       positions=None if self.positions is None else self.positions[steps])


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenated ranges ``starts[i] .. starts[i] + lengths[i] - 1``."""
    total = int(lengths.sum())
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return np.arange(total, dtype=np.int64) + offsets


def is_table(x: Any) -> bool:
    """A path, DataFrame or Columns: a long-format table."""
    return isinstance(x, (str, Path, Columns)) or is_frame(x)


def read_table_columns(x: Any, source: str, target: str | None) -> Columns:
    """A path, DataFrame or Columns as Columns (a copy), gaps kept (the column roles fill or
    refuse them). Files go through the general reader, which keeps integer ids and times
    exact (the fast reader's float32 block rounds integers above 2**24)."""
    if isinstance(x, Columns):
        return x.copy()
    if is_frame(x):
        return columns_from_frame(x, source, allow_missing=True, exclude=target)
    return read_columns(x, allow_missing=True, exclude=target)


def read_steps(x: Any, y: Any, *, sequence_id: str | None, time: str | None, target: str | None,
               source: str, labelled: bool, min_steps: int = 1) -> Steps:
    """Any form of sequences as Steps (see the module's docstring).

    Args:
        x: a table (path, DataFrame, Columns) or arrays of sequences.
        y: labels of arrays (one per sequence); a table's are its ``target`` column.
        sequence_id, time: a table's id and time columns.
        target: a table's target column (ignored when present in unlabelled data).
        source: the data's name in errors.
        labelled: labels are required (training, evaluation).
        min_steps: the fewest rows a table's sequence may have (:data:`TRAIN_STEPS` to train).

    Raises:
        DataError: bad data, in one line.
        ConfigError: a table without ``sequence_id``: the flags that make sequences.
    """
    if is_table(x):
        if sequence_id is None or time is None:
            raise ConfigError(SEQUENCE_FLAGS)
        if y is not None:
            raise ConfigError(f"{source}: a long-format table has its labels in a column: name it "
                              "with target= (--target), not y")
        return table_steps(read_table_columns(x, source, target), sequence_id, time, target, labelled,
                           min_steps)
    return array_steps(x, y, source, labelled)


# ------------------------------------------------------------------------------ tables
def table_steps(cols: Columns, sequence_id: str, time: str, target: str | None, labelled: bool,
                min_steps: int = 1) -> Steps:
    """A long-format table's rows as Steps: sorted by sequence (in order of first appearance),
    then time; the id, time and target columns taken out of the steps. A sequence of fewer
    than ``min_steps`` rows (at most 2) is refused."""
    src = cols.source
    for flag, name in (("--sequence-id", sequence_id), ("--time", time)):
        if name not in cols.arrays:
            raise DataError(f"{src}: {flag} column {name!r} not found (columns: {names_list(cols.names)})")
    if sequence_id == time:
        raise ConfigError(f"--sequence-id and --time name the same column {time!r}")
    if labelled and (target is None or target not in cols.arrays):
        if target is None:
            raise DataError(f"{src}: name the target column (target=..., --target)")
        raise DataError(f"{src}: target column {target!r} not found (columns: {names_list(cols.names)})")
    if target in (sequence_id, time):
        raise ConfigError(f"the target {target!r} is the --sequence-id or --time column")
    seq, first = _sequence_codes(cols, sequence_id)
    key = _time_key(cols, time)
    order = np.lexsort((key, seq))
    seq_sorted, key_sorted = seq[order], key[order]
    same = seq_sorted[1:] == seq_sorted[:-1]
    dup = np.flatnonzero(same & (key_sorted[1:] == key_sorted[:-1]))
    ids = cols.arrays[sequence_id][first]
    if len(dup):
        a, b = sorted((int(order[dup[0]]), int(order[dup[0] + 1])))
        raise DataError(f"{src}: sequence {_shown(ids[seq[a]])} has time {_shown(cols.arrays[time][a])} "
                        f"twice (rows {cols.row(a)} and {cols.row(b)}): one row per time step")
    lengths = np.bincount(seq, minlength=len(first))
    if (lengths < min_steps).any():
        k = int(np.flatnonzero(lengths < min_steps)[0])
        raise DataError(f"{src}: sequence {_shown(ids[k])} has one row (row {cols.row(int(first[k]))}): "
                        "a sequence needs two time steps or more to train on")
    labels, label_source = None, f"{src}: target column {target!r}"
    y = cols.pop(target) if target is not None and target in cols.arrays else None
    if labelled:
        labels = _one_label(y[order], same, order, ids, seq_sorted, cols, target)
        check_target(labels, label_source)
    for name in (sequence_id, time):
        cols.pop(name)
    return Steps("table", lengths, cols.take(order), labels, ids, order, src, label_source)


def _sequence_codes(cols: Columns, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Each row's sequence, numbered 0, 1, ... in order of first appearance, and the first row
    of each sequence. Integer ids compare exactly; other ids as the column's values read as
    text (as categories do)."""
    a = cols.arrays[name]
    if a.dtype.kind in "iu":  # factorize() compares numbers as float64: ids past 2**53 would merge
        codes = np.unique(a, return_inverse=True)[1].reshape(-1).astype(np.int64)
    else:
        codes, _ = factorize(cols, name)
    if (codes < 0).any():
        raise DataError(f"{cols.source}: --sequence-id column {name!r} is missing on row "
                        f"{cols.row(int(np.flatnonzero(codes < 0)[0]))}")
    n = len(codes)
    first = np.full(int(codes.max()) + 1 if n else 0, n, dtype=np.int64)
    np.minimum.at(first, codes, np.arange(n))
    seen = np.flatnonzero(first < n)  # a level of the reader's may have no row left (a subset)
    seen = seen[np.argsort(first[seen], kind="stable")]
    rank = np.full(len(first), -1, dtype=np.int64)
    rank[seen] = np.arange(len(seen))
    return rank[codes], first[seen]


def _time_key(cols: Columns, name: str) -> np.ndarray:
    """The time column as a sort key: integers exact, floats, or dates (ISO text parsed)."""
    a, kind = cols.arrays[name], cols.kind(name)
    if kind == "bool":
        raise DataError(f"{cols.source}: --time column {name!r} holds true/false values: the time "
                        "must be numbers or dates")
    # inf, or a uint64 past int64 (it would wrap negative and sort first), orders nothing
    wrong = (np.isinf(a) if a.dtype.kind == "f" else a > np.iinfo(np.int64).max if a.dtype.kind == "u"
             else np.zeros(len(a), dtype=bool))
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        raise DataError(f"{cols.source}: --time column {name!r} has {_shown(a[i])} on row {cols.row(i)}: "
                        "a time must be a finite number below 2**63 or a date")
    if a.dtype.kind in "iu":
        return a.astype(np.int64)
    if a.dtype.kind == "f":
        key, missing = a.astype(np.float64), np.isnan(a)
    else:  # datetimes, or text that must be dates
        t = as_datetime(cols, name, cols.source)
        key, missing = t.astype(np.int64), np.isnat(t)
    if missing.any():
        raise DataError(f"{cols.source}: --time column {name!r} is missing on row "
                        f"{cols.row(int(np.flatnonzero(missing)[0]))}")
    return key


def _one_label(y: np.ndarray, same: np.ndarray, order: np.ndarray, ids: np.ndarray, seq: np.ndarray,
               cols: Columns, target: str) -> np.ndarray:
    """One label per sequence from the target of its rows (sorted by sequence), which must
    not change within a sequence."""
    changed = np.flatnonzero(same & (y[1:] != y[:-1]))
    if len(changed):
        i = int(changed[0])
        a, b = sorted((int(order[i]), int(order[i + 1])))
        raise DataError(f"{cols.source}: sequence {_shown(ids[seq[i]])} has two labels in target column "
                        f"{target!r} ({_shown(y[i])} and {_shown(y[i + 1])}, rows {cols.row(a)} and "
                        f"{cols.row(b)}): one label per sequence")
    starts = np.flatnonzero(np.concatenate(([True], ~same)))
    return y[starts]


def _shown(v: Any) -> str:
    """A value as a message quotes it: ``'a'``, ``7``, ``2024-01-02T00:00:00``."""
    if isinstance(v, np.datetime64):  # as the file shows it, not to the nanosecond
        return str(date_text(np.array([v]))[0])
    return repr(v.item() if isinstance(v, np.generic) else v)


# ------------------------------------------------------------------------------ arrays
def array_steps(x: Any, y: Any, source: str, labelled: bool) -> Steps:
    """Arrays of sequences as Steps: (N, T, F) floats, (N, T) tokens, or a list of
    (T_i, F) / (T_i,) arrays or tensors."""
    if isinstance(x, (list, tuple)):
        seqs = [_array(v, f"{source} row {i + 1}") for i, v in enumerate(x)]
        if not seqs:
            raise DataError(f"{source}: no sequences")
        dims = {s.ndim for s in seqs}
        if dims - {1, 2} or len(dims) > 1:
            raise DataError(f"{source}: each sequence must be (steps, features) floats or (steps,) "
                            f"token ids, got shapes {sorted({s.shape for s in seqs}, key=str)[:3]}")
        widths = {s.shape[1:] for s in seqs}
        if len(widths) > 1:
            raise DataError(f"{source}: sequences have different numbers of features per step: "
                            f"{sorted(w[0] for w in widths)}")
        empty = next((i for i, s in enumerate(seqs) if len(s) == 0), None)
        if empty is not None:
            raise DataError(f"{source}: row {empty + 1} is an empty sequence")
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        flat = np.concatenate(seqs)
    else:
        a = _array(x, source)
        if a.ndim == 2 and a.dtype.kind == "f":
            raise DataError(f"{source}: a float array of sequences is (N, T, F): for one feature per "
                            "step add a last axis (x[..., None]); integer (N, T) arrays are token ids")
        if a.ndim not in (2, 3) or 0 in a.shape:
            raise DataError(f"{source}: expected sequences as (N, T, F) floats or (N, T) token ids, "
                            f"got shape {a.shape}")
        lengths = np.full(a.shape[0], a.shape[1], dtype=np.int64)
        flat = a.reshape(a.shape[0] * a.shape[1], *a.shape[2:])
    tokens = flat.ndim == 1
    if tokens and flat.dtype.kind not in "iu":
        raise DataError(f"{source}: one value per step must be an integer token id, got {flat.dtype} "
                        "values: give floats as (steps, 1)")
    _check_values(flat, lengths, source, tokens)
    labels, label_source = None, f"{source} target"
    if labelled:
        labels = _array_labels(y, len(lengths), source)
    return Steps("tokens" if tokens else "floats", lengths,
                 flat.astype(np.int64 if tokens else np.float32), labels, None, None, source, label_source)


def _array(v: Any, source: str) -> np.ndarray:
    if isinstance(v, Tensor):
        check_plain_tensor(v, source)
        return v.detach().cpu().numpy()
    a = np.asarray(v)
    if a.dtype.kind not in "iufb":
        raise DataError(f"{source}: sequences must hold numbers, got {a.dtype} values")
    return a


def _check_values(flat: np.ndarray, lengths: np.ndarray, source: str, tokens: bool) -> None:
    """Refuse non-finite features, values beyond float32 and negative tokens, naming the
    1-based row (sequence) and step."""
    from .columns import F32_MAX

    if tokens:
        bad = (flat < 0) | (flat > np.iinfo(np.int64).max)  # uint64 ids past int64 would wrap negative
        what = "a negative token id or one past 2**63 - 1 (tokens are 0, 1, 2, ...)"
    else:
        values = flat.astype(np.float64) if flat.dtype.kind in "iub" else flat
        bad = ~np.isfinite(values) | (np.abs(np.nan_to_num(values)) > F32_MAX)
        bad = bad.any(axis=1) if bad.ndim == 2 else bad
        what = "a missing, infinite or float32-overflowing value"
    if bad.any():
        row, step = step_of(int(np.flatnonzero(bad)[0]), lengths)
        raise DataError(f"{source}: {what} at row {row + 1}, step {step + 1}")


def step_of(k: int, lengths: np.ndarray) -> tuple[int, int]:
    """The (sequence, step) of flat step ``k``, both 0-based."""
    ends = np.cumsum(lengths)
    row = int(np.searchsorted(ends, k, side="right"))
    return row, k - int(ends[row] - lengths[row])


def _array_labels(y: Any, n: int, source: str) -> np.ndarray:
    from .prepare import target_array

    if y is None:
        raise DataError(f"{source}: targets are missing (pass y, one label per sequence)")
    labels = target_array(y, f"{source} target")
    if len(labels) != n:
        raise DataError(f"{source}: {n} sequences but {len(labels)} targets")
    check_target(labels, f"{source} target")
    return labels
