"""Tables too large for memory, as files read one row group at a time (:class:`TableFiles`).

Three kinds of path are streamed:

* a Parquet file: its row groups, as written;
* a directory of Parquet files (``*.parquet``, ``*.pq``; subdirectories are not read): every
  file's row groups, the files in name order, all with the same columns;
* a CSV/TSV file: converted once, with pyarrow's streaming CSV reader, into a Parquet file of
  row groups of :data:`CSV_ROW_GROUP` rows (fewer for a small file: :func:`group_rows`) in a
  temporary directory (``nnfit-stream-PID-*`` under the
  system's temporary directory, ``TMPDIR``), removed when the process ends. It is as large as
  the data, so it never goes beside the user's files; a run converts again when it resumes
  (the same file gives the same row groups), and a directory left by a killed process is
  removed by the next conversion. A cache kept across processes would hold gigabytes nobody
  asked for.

Rows are numbered across the files in name order (a CSV: its data rows), as messages and the
validation keys name them. A row group is converted :data:`PIECE_ROWS` rows at a time, so a
large one is never held twice. :meth:`TableFiles.fingerprint` tells whether the data changed
without holding it: the SHA-256 of the files' bytes, read in pieces (about 1 GB/s), or a
CSV's, taken while it is converted.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .columns import CSV_SUFFIXES, PARQUET_SUFFIXES, Columns, check_flat, check_unique, value_error
from .read import _Filler, _scan

CSV_ROW_GROUP = 1 << 16  # rows per row group of a CSV's conversion: the unit of shuffling and validation
MIN_GROUP = 1 << 10  # ... and of a small CSV's, which has fewer rows (see group_rows)
BLOCK_BYTES = 4 << 20  # CSV text parsed at a time
PIECE_ROWS = 1 << 16  # rows converted at a time: a larger row group is read in pieces
TEMP_PREFIX = "nnfit-stream-"


class TableFiles:
    """The row groups of a Parquet file, a directory of Parquet files, or a converted CSV.

    Args:
        path: the file or directory.

    Attributes:
        source: the path as given, for messages.
        names, types: the columns and their Arrow types.
        units: ``(file, row group, rows)`` per row group that holds rows, in file order.
        starts: (len(units),) the first row of each unit, counted across the files.
        num_rows: rows in all.

    Raises:
        DataError: a missing, empty or unreadable file, a directory without Parquet files,
            files whose columns differ, duplicate or empty column names, nested columns, a
            CSV that does not parse (a ragged row named by its data row).

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = pathlib.Path(d) / "t.csv"
        ...     _ = p.write_text("a,y\\n1,x\\n2,y\\n")
        ...     files = TableFiles(p)
        ...     files.names, files.num_rows, len(files.units)
        (['a', 'y'], 2, 1)
    """

    def __init__(self, path: str | Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.source = str(path)
        p = Path(path)
        self._csv_sha256: str | None = None
        self._sha256: str | None = None
        if p.is_dir():
            paths = parquet_files(p)
        else:
            _check_file(p)
            if p.suffix.lower() in CSV_SUFFIXES:
                temp = _temp_dir()
                weakref.finalize(self, shutil.rmtree, temp, True)  # at exit too
                paths = [temp / "data.parquet"]
                self._csv_sha256 = self._sha256 = convert_csv(p, paths[0])
            else:
                paths = [p]
        self.paths = paths
        self.metas = []
        for f in paths:
            try:
                self.metas.append(pq.read_metadata(f))
            except (pa.ArrowException, OSError) as e:
                raise DataError(f"{f}: not a readable Parquet file ({_one_line(e)})") from None
        self.names, self.types = self._schema([m.schema.to_arrow_schema() for m in self.metas])
        self.units = [(i, g, m.row_group(g).num_rows) for i, m in enumerate(self.metas)
                      for g in range(m.num_row_groups) if m.row_group(g).num_rows > 0]
        rows = np.array([u[2] for u in self.units], dtype=np.int64)
        self.starts = np.cumsum(rows) - rows
        self.num_rows = int(rows.sum())
        if self.num_rows == 0:
            raise DataError(f"{self.source}: no data rows")

    def _schema(self, schemas: list[Any]) -> tuple[list[str], list[Any]]:
        """The columns of the first file, checked, and the same in every other file."""
        paths = self.paths
        names, types = [str(n) for n in schemas[0].names], list(schemas[0].types)
        check_unique(names, self.source)
        for n, t in zip(names, types, strict=True):
            check_flat(t, n, self.source)
        for f, s in zip(paths[1:], schemas[1:], strict=True):
            if [str(n) for n in s.names] != names or list(s.types) != types:
                raise DataError(f"{f}: its columns differ from {paths[0].name}'s ({_columns(s)} against "
                                f"{_columns(schemas[0])}): a directory's files must hold the same columns")
        return names, types

    @property
    def converted(self) -> bool:
        """Whether these are a CSV's conversion."""
        return self._csv_sha256 is not None

    def rows(self, unit: int) -> int:
        """Rows of ``unit``."""
        return self.units[unit][2]

    def pieces(self, unit: int) -> list[int]:
        """Rows of each piece :meth:`read` yields for ``unit``."""
        n = self.rows(unit)
        return [min(PIECE_ROWS, n - s) for s in range(0, n, PIECE_ROWS)]

    def read(self, unit: int, columns: list[str]) -> Iterator[Any]:
        """The pieces of ``unit`` as Arrow record batches of ``columns`` (text that Parquet
        stores as bytes cast to text).

        Raises:
            DataError: the row group cannot be read (a damaged file), or bytes that are not
                UTF-8 text, naming the file and the row group.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        i, g, _ = self.units[unit]
        where = f"{self.paths[i] if self._csv_sha256 is None else self.source}: row group {g}"
        # No pre-buffering: the row group's pages are read as they are decoded, not all at once.
        f = pq.ParquetFile(self.paths[i], metadata=self.metas[i], pre_buffer=False, buffer_size=1 << 20)
        try:
            for batch in f.iter_batches(batch_size=PIECE_ROWS, row_groups=[g], columns=columns):
                yield _as_text(batch, where)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{where}: cannot read it ({_one_line(e)})") from None
        finally:
            f.close()
            # pyarrow's allocator keeps freed pages for later: given back after each row group,
            # the peak stays put (within 2 MB run to run, not 15) for about a tenth of the rate
            pa.default_memory_pool().release_unused()

    def columns(self, batch: Any, names: list[str], first: int) -> Columns:
        """The feature columns ``names`` of one piece (a record batch whose first row is row
        ``first``) as :class:`Columns`: numbers in one float32 block and gaps kept, exactly as
        :func:`nnfit.data.read.read_table` reads a whole file; ``rows`` number them (0-based,
        across the files), as messages do.

        Raises:
            DataError: a number beyond float32's range or infinite, naming its row.
        """
        filler = self._filler(names, batch.num_rows)
        filler.add(_select(batch, names))
        return self._finish(filler, np.arange(first, first + batch.num_rows))

    def gather(self, units: list[int], names: list[str], limit: int) -> Columns:
        """The first ``limit`` rows of ``units`` (in the order given), columns ``names``, as
        one :class:`Columns` (see :meth:`columns`); each piece is copied in as it is read, so
        memory holds the result and one piece."""
        total = min(limit, sum(self.rows(u) for u in units))
        filler, numbers = self._filler(names, total), []
        for u in units:
            first = int(self.starts[u])
            for batch in self.read(u, names):
                take = min(total - filler.row, batch.num_rows)
                filler.add(_select(batch.slice(0, take), names))
                numbers.append(np.arange(first, first + take))
                first += batch.num_rows
                if filler.row == total:
                    return self._finish(filler, np.concatenate(numbers))
        return self._finish(filler, np.concatenate(numbers))

    def _filler(self, names: list[str], rows: int) -> _Filler:
        return _Filler(names, [self.types[self.names.index(n)] for n in names], rows, None,
                       allow_missing=True)

    def _finish(self, filler: _Filler, rows: np.ndarray) -> Columns:
        """The Columns a filler holds, ``rows`` numbering them."""
        cell = lambda row, name: self.value(int(rows[row]), name)  # noqa: E731
        try:
            cols = filler.finish(self.source, cell)
        except DataError:  # an inf, named by its row in the filler: found again to name the file's row
            _, bad = _scan(filler.block, filler.block_names, False)
            if bad is None:
                raise
            raise value_error(self.source, bad[1], int(rows[bad[0]]), cell(*bad)) from None
        cols.rows = rows
        return cols

    def value(self, row: int, name: str) -> Any:
        """The file's own value of column ``name`` at ``row`` (counted across the files), read
        from its row group: for a message."""
        unit = int(np.searchsorted(self.starts, row, side="right")) - 1
        offset = row - int(self.starts[unit])
        for batch in self.read(unit, [name]):  # a message's path: the row group read again
            if offset < batch.num_rows:
                return batch.column(0)[offset].as_py()
            offset -= batch.num_rows
        return None

    def fingerprint(self) -> str:
        """SHA-256 of the files' bytes (in a directory, with their names), read once in
        pieces; a CSV's was taken while it was converted. The Parquet footer alone would miss
        an edited value: its statistics hold only each chunk's extremes."""
        if self._sha256 is None:
            h = hashlib.sha256()
            for f in self.paths:
                h.update(("" if len(self.paths) == 1 else f.name).encode() + b";")
                h.update(_file_sha256(f).encode())
            self._sha256 = h.hexdigest()
        return self._sha256


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def parquet_files(d: Path) -> list[Path]:
    """The Parquet files of directory ``d``, in name order.

    Raises:
        DataError: none there.
    """
    files = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in PARQUET_SUFFIXES)
    if not files:
        raise DataError(f"{d}: no Parquet files (*.parquet) in this directory")
    return files


def is_parquet_dir(x: Any) -> bool:
    """Whether ``x`` is a path to a directory holding Parquet files."""
    if not isinstance(x, (str, os.PathLike)) or not Path(x).is_dir():
        return False
    try:
        return any(f.suffix.lower() in PARQUET_SUFFIXES for f in Path(x).iterdir())
    except OSError:
        return False


def _check_file(p: Path) -> None:
    """A file that exists, holds bytes, and is CSV, TSV or Parquet; the same messages as
    :func:`nnfit.data.columns.read_columns`."""
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if not p.is_file():
        raise DataError(f"{p}: not a file")
    suffix = p.suffix.lower()
    if suffix not in CSV_SUFFIXES + PARQUET_SUFFIXES:
        raise DataError(f"{p}: unsupported file type {suffix!r} (use .csv, .tsv or .parquet)")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: file is empty")


def _select(batch: Any, names: list[str]) -> Any:
    """The columns ``names`` of a record batch, in that order, as a table (no copy)."""
    import pyarrow as pa

    return pa.Table.from_batches([batch]).select(names)


def _as_text(batch: Any, where: str) -> Any:
    """``batch`` with binary columns (Parquet bytes) as text, refused unless UTF-8."""
    import pyarrow as pa
    import pyarrow.types as pt

    if not any(pt.is_binary(t) or pt.is_large_binary(t) for t in batch.schema.types):
        return batch
    arrays = []
    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        if pt.is_binary(col.type) or pt.is_large_binary(col.type):
            try:
                col = col.cast(pa.string() if pt.is_binary(col.type) else pa.large_string())
            except pa.ArrowInvalid:
                raise DataError(f"{where}: column {name!r} is not UTF-8 text") from None
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _columns(schema: Any) -> str:
    text = ", ".join(f"{n}: {t}" for n, t in zip(schema.names, schema.types, strict=True))
    return text if len(text) <= 120 else text[:117] + "..."


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# ------------------------------------------------------------------------------ CSV
def _temp_dir() -> Path:
    """A new temporary directory for a conversion; those of processes no longer running are
    removed first (a killed run never cleans up after itself)."""
    root = Path(tempfile.gettempdir())
    for old in root.glob(f"{TEMP_PREFIX}*"):
        pid = old.name[len(TEMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


class _Hashing(io.RawIOBase):
    """A binary file read through SHA-256: the conversion hashes what it parses."""

    def __init__(self, f: Any) -> None:
        super().__init__()
        self.f, self.sha256 = f, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self.f.readinto(b)
        self.sha256.update(memoryview(b)[:n])
        return n


class _Widen(Exception):
    """A column of the CSV needs a wider type than its first block gave it: convert again."""

    def __init__(self, name: str, to: Any) -> None:
        super().__init__(name)
        self.name, self.to = name, to


def convert_csv(p: Path, out: Path) -> str:
    """Write CSV/TSV ``p`` as the Parquet file ``out`` in row groups of :func:`group_rows`
    rows, parsed by pyarrow's streaming reader (types from the first block; a column whose
    later values need a wider type is converted again with it); returns the SHA-256 of ``p``.

    Raises:
        DataError: the file does not parse (a ragged row is named by its data row), has
            duplicate or empty column names, or no data rows.
    """
    types: dict[str, Any] = {}
    for _ in range(64):  # each pass widens one column, and a column widens at most twice
        try:
            return _write_parquet(p, out, types)
        except _Widen as w:
            types[w.name] = w.to
    raise DataError(f"{p}: cannot parse: column types keep changing down the file")


def _write_parquet(p: Path, out: Path, types: dict[str, Any]) -> str:
    """One conversion pass with the column ``types`` known so far; returns the SHA-256 of
    ``p``'s bytes, hashed as they are parsed.

    Raises:
        _Widen: a column needs a wider type.
    """
    import pyarrow as pa
    from pyarrow import csv

    from .columns import _parse_error

    delimiter = "\t" if p.suffix.lower() == ".tsv" else ","
    with open(p, "rb") as raw:
        source = _Hashing(raw)
        try:
            reader = csv.open_csv(
                source, read_options=csv.ReadOptions(block_size=BLOCK_BYTES),
                parse_options=csv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                convert_options=csv.ConvertOptions(strings_can_be_null=True, column_types=types))
        except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
            raise _parse_error(p, e, delimiter) from None
        check_unique([str(n) for n in reader.schema.names], str(p))
        try:
            rows = _write_groups(reader, out, reader.schema, p.stat().st_size)
        except pa.ArrowInvalid as e:
            widen = _wider(e, reader.schema)
            if widen is not None:
                raise _Widen(*widen) from None
            raise _parse_error(p, e, delimiter) from None
        except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
            raise _parse_error(p, e, delimiter) from None
        while source.readinto(bytearray(1 << 20)):  # whatever the reader left unread, hashed too
            pass
    if rows == 0:
        raise DataError(f"{p}: no data rows")
    return source.sha256.hexdigest()


def _write_groups(reader: Any, out: Path, schema: Any, size: int) -> int:
    """The reader's batches as Parquet row groups of :func:`group_rows` rows (the last one
    shorter); returns the rows written. ``size``: the CSV's bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    held: list[Any] = []
    count = rows = 0
    group = 0
    with pq.ParquetWriter(out, schema) as writer:
        for batch in reader:
            if not group:  # the first block tells the rows per byte
                group = group_rows(batch.num_rows * max(1.0, size / BLOCK_BYTES))
            held.append(batch)
            count += batch.num_rows
            if count >= group:
                table = pa.Table.from_batches(held, schema=schema)
                whole = count // group * group
                writer.write_table(table.slice(0, whole), row_group_size=group)
                held, count, rows = table.slice(whole).to_batches(), count - whole, rows + whole
        if count:
            writer.write_table(pa.Table.from_batches(held, schema=schema), row_group_size=group)
    return rows + count


def group_rows(rows: float) -> int:
    """Rows per row group of a CSV of about ``rows`` rows: :data:`CSV_ROW_GROUP`, or a 32nd
    of a smaller file's rows (at least :data:`MIN_GROUP`), so that even a small file has
    row groups to validate on and to shuffle.

    Example:
        >>> group_rows(10_000_000), group_rows(100_000), group_rows(3_000)
        (65536, 3125, 1024)
    """
    return int(min(CSV_ROW_GROUP, max(MIN_GROUP, rows // 32)))


def _wider(e: Exception, schema: Any) -> tuple[str, Any] | None:
    """The column a conversion error names and the type to read it with next: numbers after
    integers (or a column empty in the first block), text after anything else."""
    import pyarrow as pa
    import pyarrow.types as pt

    m = re.search(r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to ([^:]*): invalid value",
                  str(e))
    if m is None or schema is None or int(m.group(1)) >= len(schema.names):
        return None
    name, t = schema.names[int(m.group(1))], schema.types[int(m.group(1))]
    if pt.is_integer(t) or pt.is_null(t):
        return name, pa.float64()
    if pt.is_string(t) or pt.is_large_string(t):
        return None
    return name, pa.string()
