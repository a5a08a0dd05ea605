"""The block a table is read into: one float32 matrix for its numeric columns (filled piece
by piece, checked for NaN and inf as it fills) beside its other columns, shared by the
whole-file reader (:mod:`.read`) and the row-group reader of streams (:mod:`.stream_files`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import DataError
from .columns import (
    Columns,
    add_column,
    missing_values,
    value_error,
)
from .kinds import arrow_column, arrow_kind, bool_values, fixed_values, missing_of, numpy_dtype

SCAN_ROWS = 1 << 16  # rows of the block checked for NaN and inf at a time


def _block_kind(t: Any, name: str, exclude: str | None) -> str | None:
    """The kind of a column that goes into the float32 block; None for one kept out of it."""
    kind = arrow_kind(t)
    return kind if kind in ("int", "float", "bool") and name != exclude else None


class _Filler:
    """Copies Arrow pieces into the float32 block and keeps the other columns' pieces, to
    convert them once at the end.

    The block is C-ordered (a row is contiguous, as training reads it) and allocated for
    ``capacity`` rows: the pages of rows never written are never touched, so an estimate too
    high costs address space, not memory; one too low grows the block in place.

    Args:
        workers: threads to convert the other columns with.
        null_texts: text values that mean a missing cell (markers the parser left as text).
    """

    def __init__(self, names: list[str], types: list[Any], capacity: int, exclude: str | None,
                 allow_missing: bool, *, workers: int = 1, null_texts: Sequence[str] = ()) -> None:
        import pyarrow as pa

        self.names, self.types = names, dict(zip(names, types, strict=True))
        self.workers, self.null_texts = workers, list(null_texts)
        self.exclude, self.allow_missing = exclude, allow_missing
        kinds = {n: _block_kind(t, n, exclude) for n, t in self.types.items()}
        self.block_names = [n for n in names if kinds[n]]
        self.kinds = {n: k for n, k in kinds.items() if k}
        self.where = {n: j for j, n in enumerate(self.block_names)}
        # Each block column's NumPy dtype, when its Arrow values are plain fixed-width numbers.
        self.dtypes = [numpy_dtype(self.types[n]) if kinds[n] in ("int", "float")
                       and not pa.types.is_null(self.types[n]) else None for n in self.block_names]
        self.block = np.empty((max(capacity, 1), len(self.block_names)), dtype=np.float32)
        self.others: dict[str, list[Any]] = {n: [] for n in names if n not in self.where}
        self.row = 0

    def add(self, table: Any) -> None:
        """Copy one piece (an Arrow table or record batch with the file's columns)."""
        k = table.num_rows
        if self.row + k > len(self.block):
            # Rows shorter than the head's: grow by half again (realloc moves no data).
            self.block.resize((max(self.row + k, len(self.block) * 3 // 2), self.block.shape[1]),
                              refcheck=False)
        # A float64 beyond float32's range becomes inf, found by finish() and named there.
        with np.errstate(over="ignore"):
            for i, name in enumerate(self.names):
                col = table.column(i)
                chunks = col.chunks if hasattr(col, "chunks") else [col]
                j = self.where.get(name)
                if j is None:
                    self.others[name].extend(chunks)
                else:
                    self._copy(chunks, self.block[self.row:self.row + k, j], self.dtypes[j])
        self.row += k

    @staticmethod
    def _copy(chunks: list[Any], out: np.ndarray, dtype: np.dtype | None) -> None:
        """One column's chunks of a piece into ``out``, its rows of the block."""
        r = 0
        for chunk in chunks:
            n = len(chunk)
            if dtype is not None and not chunk.null_count:  # the usual chunk, without a call
                out[r:r + n] = np.frombuffer(chunk.buffers()[1], dtype, n, chunk.offset * dtype.itemsize)
            else:
                _copy_numbers(chunk, out[r:r + n])
            r += n

    def finish(self, source: str, cell: Callable[[int, str], Any]) -> Columns:
        """The Columns read; ``cell(row, name)`` is the file's own value of a cell (0-based
        data row), looked up only to name a value float32 could not hold.

        Raises:
            DataError: no rows, missing values (counted per column; with ``allow_missing``,
                a missing target value, its row named), or inf in the block.
        """
        if self.row == 0:
            raise DataError(f"{source}: no data rows")
        if len(self.block) != self.row:
            self.block.resize((self.row, self.block.shape[1]), refcheck=False)  # frees the rest
        block = self.block
        missing, first = _scan(block, self.block_names, not self.allow_missing)
        out = Columns(source, {}, block=block, block_names=self.block_names)
        converted = self._convert_others()
        for n in self.names:
            j = self.where.get(n)
            if j is not None:
                out.arrays[n], out.kinds[n] = block[:, j], self.kinds[n]
            else:
                values, kind, codes = converted[n]
                add_column(out, n, values, kind, codes, missing, self.allow_missing, n == self.exclude)
        if missing:
            raise missing_values(source, {n: missing[n] for n in self.names if n in missing})
        if first is not None:
            raise value_error(source, first[1], first[0], cell(*first))
        return out

    def _convert_others(self) -> dict[str, tuple[np.ndarray, str, Any]]:
        """The columns kept out of the block, converted (:func:`~nnfit.data.kinds.arrow_column`)
        on a few threads: hashing text releases the GIL, and a column of distinct strings
        takes as long as parsing a tenth of the file."""
        import pyarrow as pa

        def convert(n: str) -> tuple[np.ndarray, str, Any]:
            col = pa.chunked_array(self.others.pop(n), type=self.types[n])
            # A date target stays Python dates: refused later, naming the row.
            return arrow_column(col, python_dates=n == self.exclude, null_texts=self.null_texts)

        names = list(self.others)
        workers = min(len(names), self.workers)
        if workers < 2:
            return {n: convert(n) for n in names}
        # The columns of most distinct values start first: hashing a million distinct strings
        # takes longer than all the other columns together. Their first piece tells.
        order = sorted(names, key=lambda n: -len(self.others[n][0].unique())
                       if self.others[n] and arrow_kind(self.types[n]) == "text" else 0)
        with ThreadPoolExecutor(workers, thread_name_prefix="nnfit-read") as pool:
            return dict(zip(order, pool.map(convert, order), strict=True))


def _copy_numbers(chunk: Any, out: np.ndarray) -> None:
    """A numeric or boolean Arrow array into ``out`` (a column of the block), NaN where null."""
    import pyarrow.types as pt

    t = chunk.type
    if pt.is_null(t):
        out[:] = np.nan
        return
    if pt.is_boolean(t):
        out[:] = bool_values(chunk)
    else:
        out[:] = fixed_values(chunk, numpy_dtype(t))  # cast as copied: no second copy
    missing = missing_of(chunk)
    if missing is not None:
        out[missing] = np.nan


def _scan(block: np.ndarray, names: list[str],
          count_nan: bool) -> tuple[dict[str, int], tuple[int, str] | None]:
    """Missing cells (NaN) per column when ``count_nan``, and the first inf by row: "inf" in
    the file or a number beyond float32's range, found while the file's rows are known."""
    missing: dict[str, int] = {}
    if not block.size or (np.isfinite(block.max()) and np.isfinite(block.min())):
        return missing, None  # two passes without temporaries (NaN propagates): the usual case
    # fmax/fmin skip NaN: inf shows in them whether or not there are gaps.
    top, bottom = np.fmax.reduce(block, axis=None), np.fmin.reduce(block, axis=None)
    inf = bool(np.isinf(top) or np.isinf(bottom))
    nan = count_nan and bool(np.isnan(block.max()))
    if not inf and not nan:
        return missing, None
    counts = np.zeros(block.shape[1], dtype=np.int64)
    first: tuple[int, str] | None = None
    for r in range(0, len(block), SCAN_ROWS):
        part = block[r:r + SCAN_ROWS]
        if nan:
            counts += np.isnan(part).sum(axis=0)
        if inf and first is None:
            hit = np.isinf(part)
            if hit.any():
                i, j = divmod(int(hit.argmax()), block.shape[1])  # row-major: first by row
                first = (r + i, names[j])
    missing.update((n, int(c)) for n, c in zip(names, counts, strict=True) if c)
    return missing, first
