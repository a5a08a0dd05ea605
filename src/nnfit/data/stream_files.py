"""Tables too large for memory, as files read one row group at a time (:class:`TableFiles`).

Three kinds of path are streamed:

* a Parquet file: its row groups, as written;
* a directory of Parquet files (``*.parquet``, ``*.pq``, below it too; names starting with
  ``_`` or ``.``, which Spark and Hadoop write beside the data, skipped): every file's row
  groups, the files in path order, all with the same columns, their types unified as pandas
  reads them (an integer column that is float in another file is float, one of nulls takes
  the others' type: ``pyarrow.unify_schemas``, permissive) and each piece cast to them. Hive
  partition directories (``month=1/``) add their keys as columns, typed as pyarrow's
  discovery infers them (:meth:`TableFiles._partitions`);
* a CSV/TSV file: converted once into a Parquet file in a temporary directory
  (:mod:`.stream_csv`).

Rows are numbered across the files in name order (a CSV: its data rows), as messages and the
validation keys name them. A row group is converted :data:`PIECE_ROWS` rows at a time, so a
large one is never held twice. :meth:`TableFiles.fingerprint` tells whether the data changed
without holding it: the SHA-256 of the files' bytes, read in pieces (about 1 GB/s), or a
CSV's, taken while it is converted.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .columns import (
    CSV_SUFFIXES,
    IMAGE_SUFFIXES,
    PARQUET_SUFFIXES,
    Columns,
    _one_line,
    check_data_file,
    check_flat,
    check_unique,
    value_error,
)
from .fill import _Filler, _scan
from .stream_csv import convert

PIECE_ROWS = 1 << 16  # rows converted at a time: a larger row group is read in pieces


class TableFiles:
    """The row groups of a Parquet file, a directory of Parquet files, or a converted CSV.

    Args:
        path: the file or directory.

    Attributes:
        source: the path as given, for messages.
        names, types: the columns and their Arrow types as :meth:`read` gives them (a
            directory's: unified over its files, then its partition keys).
        keys: per file, its Hive partition values (column -> value).
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
        self.root = p if p.is_dir() else None
        if p.is_dir():
            paths = parquet_files(p)
        else:
            _check_file(p)
            if p.suffix.lower() in CSV_SUFFIXES:
                converted, self._csv_sha256 = convert(p, self)
                self._sha256, paths = self._csv_sha256, [converted]
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
        self.keys: list[dict[str, Any]] = [{} for _ in paths]  # each file's partition values
        self._partitioned: set[str] = set()
        if self.root is not None:
            self._partitions()
        self._stored = dict(zip(self.names, self.types, strict=True))  # what a piece is cast to
        self.types = [_text_type(t) for t in self.types]  # what read() gives: bytes as text
        self.units = [(i, g, m.row_group(g).num_rows) for i, m in enumerate(self.metas)
                      for g in range(m.num_row_groups) if m.row_group(g).num_rows > 0]
        rows = np.array([u[2] for u in self.units], dtype=np.int64)
        self.starts = np.cumsum(rows) - rows
        self.num_rows = int(rows.sum())
        if self.num_rows == 0:
            raise DataError(f"{self.source}: no data rows")

    def _schema(self, schemas: list[Any]) -> tuple[list[str], list[Any]]:
        """The columns of the first file, checked, and the same in every other file (in any
        order): the types unified as pandas would read them (an integer column that is float
        in another file is float; one of nulls only takes the others' type)."""
        import pyarrow as pa

        paths = self.paths
        names = [str(n) for n in schemas[0].names]
        check_unique(names, self.source)
        for f, s in zip(paths[1:], schemas[1:], strict=True):
            if sorted(str(n) for n in s.names) != sorted(names):
                raise DataError(f"{f}: its columns differ from {self._name(0)}'s ({_columns(s)} against "
                                f"{_columns(schemas[0])}): a directory's files must hold the same columns")
        try:
            unified = pa.unify_schemas([s.remove_metadata() for s in schemas], promote_options="permissive")
        except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise DataError(f"{self.source}: its files' columns differ in type ({_one_line(e)}): a "
                            "directory's files must hold the same columns") from None
        types = [unified.field(n).type for n in names]
        for n, t in zip(names, types, strict=True):
            check_flat(t, n, self.source)
        # each file's columns of another type than the directory's: cast as they are read
        self._cast = [{n for n, t in zip(names, types, strict=True) if s.field(n).type != t} for s in schemas]
        return names, types

    def _name(self, i: int) -> str:
        """File ``i`` as messages name it: its path below the directory."""
        return self.paths[i].name if self.root is None else self.paths[i].relative_to(self.root).as_posix()

    def _partitions(self) -> None:
        """Hive partitions (``month=1/part-0.parquet``): each directory level's key a column
        after the files' own, typed as pyarrow infers it (int32 for integers, else text);
        its value in every row of the files below."""
        import pyarrow as pa
        import pyarrow.dataset as ds

        assert self.root is not None
        levels = {part.split("=", 1)[0] for f in self.paths for part in f.relative_to(self.root).parts[:-1]
                  if "=" in part}
        if not levels:
            return
        clash = sorted(levels & set(self.names))
        if clash:
            raise DataError(f"{self.source}: column {clash[0]!r} is both in the files and a partition "
                            f"directory's name ({clash[0]}=...): rename one")
        hive = ds.HivePartitioning.discover(infer_dictionary=False)
        try:
            found = ds.dataset([str(f) for f in self.paths], format="parquet", partitioning=hive,
                               partition_base_dir=str(self.root))
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{self.source}: cannot read its partition directories ({_one_line(e)})") \
                from None
        keys = {fr.path: ds.get_partition_keys(fr.partition_expression) for fr in found.get_fragments()}
        self.keys = [keys.get(str(f), {}) for f in self.paths]
        given = {k for d in self.keys for k in d}
        names = [n for n in found.schema.names if n in given]  # the keys, in the directories' order
        self._partitioned = set(names)
        self.names, self.types = self.names + names, self.types + [found.schema.field(n).type for n in names]

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
        try:  # no pre-buffering: the row group's pages are read as they are decoded, not all at once
            f = pq.ParquetFile(self.paths[i], metadata=self.metas[i], pre_buffer=False, buffer_size=1 << 20)
        except (pa.ArrowException, OSError) as e:
            if self.converted:  # its temporary directory removed while the run went on
                raise DataError(f"{self.source}: its conversion to Parquet ({self.paths[i]}) cannot be read "
                                f"({_one_line(e)}); was the temporary directory removed? Run again") from None
            raise DataError(f"{where}: cannot read it ({_one_line(e)})") from None
        own = [c for c in columns if c not in self._partitioned]
        try:
            for batch in f.iter_batches(batch_size=PIECE_ROWS, row_groups=[g], columns=own):
                yield _as_text(self._conform(batch, i, columns), where)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{where}: cannot read it ({_one_line(e)})") from None
        finally:
            f.close()
            # pyarrow's allocator keeps freed pages for later: given back after each row group,
            # the peak stays put (within 2 MB run to run, not 15) for about a tenth of the rate
            pa.default_memory_pool().release_unused()

    def _conform(self, batch: Any, i: int, columns: list[str]) -> Any:
        """A piece of file ``i`` with the directory's column types (the file's cast to
        them) and its partition values, columns in the order asked for."""
        import pyarrow as pa

        if not self._partitioned and not self._cast[i]:
            return batch
        arrays = []
        for name in columns:
            t = self._stored[name]
            if name in self._partitioned:  # one value for the whole file
                col = pa.array([self.keys[i].get(name)], t).take(np.zeros(batch.num_rows, dtype=np.int32))
            else:
                col = batch.column(name)
                col = col.cast(t) if name in self._cast[i] else col
            arrays.append(col)
        return pa.RecordBatch.from_arrays(arrays, names=columns)

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

    def gather(self, units: list[int], names: list[str], limit: int,
               pieces: set[tuple[int, int]] | None = None) -> Columns:
        """The first ``limit`` rows of ``units`` (in the order given), columns ``names``, as
        one :class:`Columns` (see :meth:`columns`); each piece is copied in as it is read, so
        memory holds the result and one piece. ``pieces``: only these ``(unit, piece)``
        (:meth:`pieces` numbers a unit's from 0)."""
        sizes = [(u, j, n) for u in units for j, n in enumerate(self.pieces(u))
                 if pieces is None or (u, j) in pieces]
        total = min(limit, sum(n for _, _, n in sizes))
        filler, numbers = self._filler(names, total), []
        for u in dict.fromkeys(u for u, _, _ in sizes):
            first = int(self.starts[u])
            for j, batch in enumerate(self.read(u, names)):
                if pieces is not None and (u, j) not in pieces:
                    first += batch.num_rows
                    continue
                take = min(total - filler.row, batch.num_rows)
                filler.add(_select(batch.slice(0, take), names))
                numbers.append(np.arange(first, first + take))
                first += batch.num_rows
                if filler.row == total:
                    return self._finish(filler, np.concatenate(numbers))
        return self._finish(filler, np.concatenate(numbers))

    def read_all(self, exclude: str | None, allow_missing: bool) -> Columns:
        """Every row in one :class:`Columns`, as :func:`nnfit.data.read.read_table` reads a
        Parquet file whole (a directory's for ``--no-stream``, ``evaluate`` and ``predict``).

        Args:
            exclude: a column kept out of the numeric block (the target).
            allow_missing: keep gaps instead of refusing them.
        """
        filler = _Filler(self.names, self.types, self.num_rows, exclude, allow_missing)
        for u in range(len(self.units)):
            for batch in self.read(u, self.names):
                filler.add(batch)
        return filler.finish(self.source, lambda row, name: self.value(row, name))

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
            for i, f in enumerate(self.paths):
                h.update(("" if len(self.paths) == 1 else self._name(i)).encode() + b";")
                h.update(_file_sha256(f).encode())
            self._sha256 = h.hexdigest()
        return self._sha256


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _walk(d: Path) -> Iterator[Path]:
    """The files below directory ``d``, in path order, but those (and the directories) whose
    names start with ``_`` or ``.``: what Spark and Hadoop write beside the data
    (``_SUCCESS``, ``_temporary/``, ``.crc`` files)."""
    for top, dirs, names in os.walk(d):
        dirs[:] = sorted(n for n in dirs if not n.startswith(("_", ".")))
        for n in sorted(names):
            if not n.startswith(("_", ".")):
                yield Path(top) / n


def parquet_files(d: Path) -> list[Path]:
    """The Parquet files below directory ``d`` (subdirectories too: Hive partitions such as
    ``month=1/``), in path order.

    Raises:
        DataError: none there.
    """
    files = sorted((f for f in _walk(d) if f.suffix.lower() in PARQUET_SUFFIXES),
                   key=lambda f: f.relative_to(d).parts)
    if not files:
        raise DataError(f"{d}: no Parquet files (*.parquet) in this directory or below it")
    return files


def is_parquet_dir(x: Any) -> bool:
    """Whether ``x`` is a path to a directory of Parquet files: the first data file found
    below it (in path order) is one, not an image."""
    if not isinstance(x, (str, os.PathLike)) or not Path(x).is_dir():
        return False
    try:
        for f in _walk(Path(x)):
            suffix = f.suffix.lower()
            if suffix in PARQUET_SUFFIXES or suffix in IMAGE_SUFFIXES:
                return suffix in PARQUET_SUFFIXES
    except OSError:
        pass
    return False


def _check_file(p: Path) -> None:
    """A file that exists, holds bytes, and is CSV, TSV or Parquet (as any data file)."""
    check_data_file(p)


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


def _text_type(t: Any) -> Any:
    """The type :func:`_as_text` gives a column of type ``t``."""
    import pyarrow as pa
    import pyarrow.types as pt

    return pa.string() if pt.is_binary(t) else pa.large_string() if pt.is_large_binary(t) else t


def _columns(schema: Any) -> str:
    text = ", ".join(f"{n}: {t}" for n, t in zip(schema.names, schema.types, strict=True))
    return text if len(text) <= 120 else text[:117] + "..."
