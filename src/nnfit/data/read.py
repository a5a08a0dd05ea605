"""Fast, lean file ingest: a CSV or Parquet file straight into one float32 feature block.

The general reader (:func:`nnfit.data.columns.read_columns`) builds a whole Arrow table and then
NumPy columns: simple, but it holds the data two or three times over. Here the file is parsed
in 32 MB pieces by pyarrow's multi-threaded parser, numeric columns parsed directly as
float32; each piece is copied into a preallocated ``(rows, numeric columns)`` float32 array
and released, so memory stays near the size of the result whatever the file's size.
Non-numeric columns (a text target) are kept as arrays.

Anything unusual (a column whose type changes part-way, quoting that spans lines, a parse
error) falls back to the general reader, whose messages name the column and row.
"""

from __future__ import annotations

import csv as csv_module
import itertools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .columns import (
    CSV_SUFFIXES,
    PARQUET_SUFFIXES,
    Columns,
    check_flat,
    missing_values,
    read_columns,
    value_error,
)

CHUNK_BYTES = 32 << 20  # text parsed per call: enough for the parser's threads, small in memory

class _Fallback(Exception):
    """This file needs the general reader."""


def read_table(path: str | Path, exclude: str | None = None, *, allow_missing: bool = False) -> Columns:
    """Read a CSV/TSV/Parquet file; numeric columns land in one float32 block.

    Args:
        path: the file.
        exclude: a column kept out of the block with its own type (the target), if present.
        allow_missing: keep missing cells of the block's columns as NaN (for a model that
            imputes them) instead of refusing them; other columns must still be complete.

    Returns:
        :class:`~nnfit.data.columns.Columns` whose ``block`` holds every numeric column except
        ``exclude`` (``arrays`` has views of it), and other columns as arrays.

    Raises:
        DataError: the same problems, with the same messages, as ``read_columns``.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = pathlib.Path(d) / "t.csv"
        ...     _ = p.write_text("a,b,y\\n1,2,cat\\n3,4,dog\\n")
        ...     cols = read_table(p, exclude="y")
        >>> cols.block.shape, cols.block_names, cols.arrays["y"].tolist()
        ((2, 2), ['a', 'b'], ['cat', 'dog'])
    """
    p = Path(path)
    suffix = p.suffix.lower()
    general = {"allow_missing": allow_missing, "exclude": exclude}
    if not p.is_file() or p.stat().st_size == 0 or suffix not in CSV_SUFFIXES + PARQUET_SUFFIXES:
        return read_columns(p, **general)  # its messages for missing, empty and unsupported files
    try:
        if suffix in PARQUET_SUFFIXES:
            return _read_parquet(p, exclude, allow_missing)
        return _read_csv(p, exclude, "\t" if suffix == ".tsv" else ",", allow_missing)
    except _Fallback:
        return read_columns(p, **general)


def _numeric(t: Any) -> bool:
    import pyarrow.types as pt

    return pt.is_integer(t) or pt.is_floating(t) or pt.is_boolean(t)


def _to_numpy(col: Any) -> np.ndarray:
    """An Arrow array as NumPy without pyarrow's pandas-based conversion (importing pandas
    would cost more than the whole read of a small file)."""
    import pyarrow as pa

    t = col.type
    if (pa.types.is_integer(t) or pa.types.is_floating(t)) and not col.null_count:
        return _values(col, np.dtype(t.to_pandas_dtype()))
    text = pa.types.is_string(t) or pa.types.is_large_string(t)
    return np.array(col.to_pylist(), dtype=object if text else None)


def _values(col: Any, dtype: np.dtype) -> np.ndarray:
    """The values buffer of a fixed-width Arrow array without nulls, as a NumPy view."""
    data = np.frombuffer(col.buffers()[1], dtype=dtype)
    return data[col.offset:col.offset + len(col)]


class _Filler:
    """Copies Arrow record batches into the preallocated block and per-column lists."""

    def __init__(self, names: list[str], types: list[Any], rows: int, exclude: str | None,
                 allow_missing: bool = False) -> None:
        self.names = names
        self.allow_missing = allow_missing
        self.block_names = [n for n, t in zip(names, types, strict=True) if _numeric(t) and n != exclude]
        # Column-major, so each column of a batch is one contiguous copy.
        self.block = np.empty((rows, len(self.block_names)), dtype=np.float32, order="F")
        self.where = {n: j for j, n in enumerate(self.block_names)}
        self.others: dict[str, list[np.ndarray]] = {n: [] for n in names if n not in self.where}
        self.missing: dict[str, int] = {}
        self.row = 0
        import pyarrow as pa

        self.float32 = pa.float32()

    def add(self, batch: Any) -> None:
        k = batch.num_rows
        if self.row + k > len(self.block):
            raise _Fallback  # more rows than newlines: cannot happen in a plain CSV
        for i, name in enumerate(self.names):
            col = batch.column(i)
            j = self.where.get(name)
            if col.null_count and (j is None or not self.allow_missing):
                self.missing[name] = self.missing.get(name, 0) + col.null_count
                if j is None:
                    continue
            if j is None:
                self.others[name].append(_to_numpy(col))
                continue
            if col.type != self.float32:
                col = col.cast(self.float32, safe=False)  # ints, booleans of the first piece
            if col.null_count:
                # Kept for imputation as NaN; otherwise counted above, and filled all the same:
                # the block is never left uninitialised, where finish() would count its
                # garbage as more missing values (a NaN that is text in the file still counts).
                col = col.fill_null(float("nan") if self.allow_missing else 0.0)
            self.block[self.row:self.row + k, j] = _values(col, np.dtype(np.float32))
        self.row += k

    def finish(self, source: str, cell: Callable[[int, str], Any]) -> Columns:
        """The Columns read; ``cell(row, name)`` is the file's own value of a cell (0-based
        data row), looked up only to name a value float32 could not hold.

        Raises:
            DataError: no rows, missing values (counted per column), or inf in the block.
        """
        if self.row == 0:
            raise DataError(f"{source}: no data rows")
        block = self.block[:self.row]
        # inf here is "inf" in the file or a number beyond float32's range (parsed to float32
        # as inf): found now, while file rows are known, and named by the file's own value.
        first: tuple[int, str] | None = None  # (row, column) of the first inf, by row
        for j, name in enumerate(self.block_names):
            col = block[:, j]
            if np.isfinite(col).all():  # one pass over a column: the usual case
                continue
            nan = 0 if self.allow_missing else int(np.isnan(col).sum())
            if nan:
                self.missing[name] = self.missing.get(name, 0) + nan
            hit = np.isinf(col)
            if hit.any() and (first is None or int(hit.argmax()) < first[0]):
                first = (int(hit.argmax()), name)
        if self.missing:
            raise missing_values(source, self.missing)
        if first is not None:
            raise value_error(source, first[1], first[0], cell(*first))
        arrays = {}
        for n in self.names:
            j = self.where.get(n)
            arrays[n] = block[:, j] if j is not None else np.concatenate(self.others[n])
        return Columns(source, arrays, block=block, block_names=self.block_names)


def _csv_cell(p: Path, delimiter: str, row: int, column: int) -> str | None:
    """The text of data row ``row`` (0-based, blank lines skipped as the parser skips them),
    field ``column``; None when it cannot be found. An error path: reads up to that row."""
    try:
        with open(p, encoding="utf-8-sig", errors="replace", newline="") as f:
            rows = (r for r in csv_module.reader(f, delimiter=delimiter) if r)
            fields = next(itertools.islice(rows, row + 1, None), None)  # + 1: the header
    except csv_module.Error:
        return None
    return fields[column] if fields is not None and column < len(fields) else None


def _count_lines(p: Path) -> tuple[int, bytes]:
    """Newlines in the file (an upper bound on its data rows, plus one without a final
    newline) and its header line."""
    lines, last = 0, b"\n"
    with open(p, "rb") as f:
        header = f.readline()
        f.seek(0)
        while chunk := f.read(CHUNK_BYTES):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n"), header


def _peek_types(p: Path, names: list[str], exclude: str | None, parse: Any, pool: Any) -> dict[str, Any]:
    """Column types from the file's first 64 KB: numeric columns then parse straight to
    float32 (booleans stay booleans and are converted when copied)."""
    import pyarrow as pa
    from pyarrow import csv

    with open(p, "rb") as f:
        f.readline()
        head = f.read(1 << 16)
    head = head[:head.rfind(b"\n") + 1] or head
    table = csv.read_csv(pa.py_buffer(head), read_options=csv.ReadOptions(column_names=names),
                         parse_options=parse, memory_pool=pool)
    if any(pa.types.is_binary(t) for t in table.schema.types):
        raise _Fallback  # text that is not UTF-8: the general reader names the row
    return {n: (pa.float32() if _numeric(t) and not pa.types.is_boolean(t) and n != exclude else t)
            for n, t in zip(names, table.schema.types, strict=True)}


def _read_csv(p: Path, exclude: str | None, delimiter: str, allow_missing: bool) -> Columns:
    import pyarrow as pa
    from pyarrow import csv

    lines, header = _count_lines(p)
    try:
        # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first name,
        # nor does it hide that name's quotes; pyarrow's reader drops it the same way.
        names = next(csv_module.reader([header.decode("utf-8-sig")], delimiter=delimiter), [])
    except (UnicodeDecodeError, csv_module.Error):  # e.g. a lone "\r", a line end to pyarrow
        raise _Fallback from None
    if not names or len(set(names)) != len(names) or not all(n.strip() for n in names):
        raise _Fallback  # empty or duplicate names: the general reader explains them
    if header.count(b'"') % 2:
        raise _Fallback  # a quoted name running over more than one line
    parse = csv.ParseOptions(delimiter=delimiter)
    read = csv.ReadOptions(column_names=names)
    pool = pa.system_memory_pool()  # freed pieces go back to the OS instead of a cache
    filler: _Filler | None = None
    try:
        types = _peek_types(p, names, exclude, parse, pool)
        with open(p, "rb") as f:
            f.readline()
            buf = bytearray(CHUNK_BYTES)
            view, held = memoryview(buf), 0  # `held`: bytes of a partial line carried over
            while True:
                got = f.readinto(view[held:])
                end = held + got
                cut = buf.rfind(b"\n", 0, end) + 1 if got else end
                if cut == 0 and got:  # a line longer than the buffer: grow it
                    view.release()
                    buf.extend(bytes(len(buf)))
                    view, held = memoryview(buf), end
                    continue
                if buf.count(b'"', 0, cut) % 2:
                    # The cut falls inside a quoted value holding a newline: parsed in two
                    # pieces it would be wrong without any error, so the general reader reads it.
                    raise _Fallback
                if re.search(rb"\S", view[:cut]):
                    convert = csv.ConvertOptions(column_types=types, strings_can_be_null=True)
                    # Parsed straight from the reusable buffer: the text is never copied.
                    table = csv.read_csv(pa.py_buffer(view[:cut]), read_options=read,
                                         parse_options=parse, convert_options=convert,
                                         memory_pool=pool)
                    if filler is None:
                        filler = _Filler(names, table.schema.types, max(1, lines - 1), exclude,
                                         allow_missing)
                    for batch in table.to_batches():
                        filler.add(batch)
                    del table
                if not got:
                    break
                rest = bytes(view[cut:end])
                buf[:len(rest)] = rest
                held = len(rest)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError):
        raise _Fallback from None  # e.g. a column numeric at the top and text further down
    if filler is None:
        raise DataError(f"{p}: no data rows")
    return filler.finish(str(p), lambda row, name: _csv_cell(p, delimiter, row, names.index(name)))


def _read_parquet(p: Path, exclude: str | None, allow_missing: bool) -> Columns:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(p)
        schema = f.schema_arrow
        names = [str(n) for n in schema.names]
        for n, t in zip(names, schema.types, strict=True):
            check_flat(t, n, str(p))
        if len(set(names)) != len(names) or not all(n.strip() for n in names) or any(
                pa.types.is_binary(t) or pa.types.is_large_binary(t) for t in schema.types):
            raise _Fallback
        filler = _Filler(names, list(schema.types), f.metadata.num_rows, exclude, allow_missing)
        for batch in f.iter_batches(batch_size=1 << 16):
            filler.add(batch)
    except (pa.ArrowInvalid, OSError):
        raise _Fallback from None
    return filler.finish(str(p), lambda row, name: pq.read_table(p, columns=[name]).column(0)[row].as_py())
