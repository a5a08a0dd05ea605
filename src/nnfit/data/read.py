"""Fast, lean file ingest: a CSV or Parquet file straight into one float32 feature block.

The general reader (:func:`nnfit.data.columns.read_columns`) builds a whole Arrow table and then
NumPy columns: simple, but it holds the data two or three times over. Here a CSV is parsed in
pieces of ``CHUNK_BYTES``, a few at once on threads (pyarrow's serial parser each: the parse
releases the GIL), with the column types read from the file's head. Each piece's numbers are
copied into a ``(rows, numeric columns)`` float32 block, C-ordered as training reads it, and
released, so memory stays near the size of the result whatever the file's size. The block is
allocated once for an estimate of the rows (pages never written cost no memory) and trimmed
or grown in place, so no pass over the file counts its lines first. Other columns (text,
dates, the target) are kept as Arrow pieces and converted once at the end (see
:mod:`nnfit.data.kinds`): text is dictionary-encoded in C++.

A column whose values outgrow the type read from the head (integers, then a decimal point;
dates, then times; a "NA" among numbers) is read again with the wider type. Anything else
unusual (a column numeric at the top and text further down, quoting that spans lines across
a piece, a parse error) falls back to the general reader, whose messages name the column and
row.
"""

from __future__ import annotations

import csv as csv_module
import itertools
import os
import re
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .columns import (
    CSV_SUFFIXES,
    PARQUET_SUFFIXES,
    Columns,
    check_flat,
    read_columns,
)
from .fill import _Filler
from .kinds import arrow_kind

CHUNK_BYTES = 4 << 20  # text parsed per call: long enough to amortise a call, short in memory
MAX_WORKERS = 4  # pieces parsed at once, at most (each holds its text and its columns)
PEEK_BYTES = 1 << 16  # the head of the file whose values set each column's type


class _Fallback(Exception):
    """This file needs the general reader."""


class _Widen(Exception):
    """A column's values need a wider type than the file's head suggested (or, with ``name``
    None, pyarrow's missing-value markers are needed): read again."""

    def __init__(self, name: str | None, to: Any) -> None:
        super().__init__(name)
        self.name, self.to = name, to


def read_table(path: str | Path, exclude: str | None = None, *, allow_missing: bool = False) -> Columns:
    """Read a CSV/TSV/Parquet file; numeric columns land in one float32 block.

    Args:
        path: the file, or a directory of Parquet files
            (:class:`~nnfit.data.stream_files.TableFiles`).
        exclude: a column kept out of the block with its own type (the target), if present.
        allow_missing: keep missing cells of every column but ``exclude`` (NaN in the block
            and other numbers, None in text, NaT in dates) instead of refusing them.

    Returns:
        :class:`~nnfit.data.columns.Columns` whose ``block`` holds every numeric column except
        ``exclude`` (``arrays`` has views of it), and other columns as arrays; ``kinds`` for
        every column and ``codes`` for text columns, as the general reader gives them.

    Raises:
        DataError: the same problems, with the same messages, as ``read_columns``.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = pathlib.Path(d) / "t.csv"
        ...     _ = p.write_text("a,b,y\\n1,2.5,cat\\n3,4,dog\\n")
        ...     cols = read_table(p, exclude="y")
        >>> cols.block.shape, cols.block_names, cols.arrays["y"].tolist()
        ((2, 2), ['a', 'b'], ['cat', 'dog'])
        >>> cols.kinds, cols.codes["y"][0].tolist()
        ({'a': 'int', 'b': 'float', 'y': 'text'}, [0, 1])
    """
    p = Path(path)
    suffix = p.suffix.lower()
    general = {"allow_missing": allow_missing, "exclude": exclude}
    if p.is_dir():  # a directory of Parquet files (Hive partitions too), read as one table
        from .stream_files import TableFiles, is_parquet_dir

        if is_parquet_dir(p):
            return TableFiles(p).read_all(exclude, allow_missing)
    if not p.is_file() or p.stat().st_size == 0 or suffix not in CSV_SUFFIXES + PARQUET_SUFFIXES:
        return read_columns(p, **general)  # its messages for missing, empty and unsupported files
    try:
        if suffix in PARQUET_SUFFIXES:
            return _read_parquet(p, exclude, allow_missing)
        return _read_csv(p, exclude, "\t" if suffix == ".tsv" else ",", allow_missing)
    except _Fallback:
        return read_columns(p, **general)


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


def _peek_types(p: Path, names: list[str], parse: Any) -> tuple[dict[str, Any], int]:
    """Column types from the file's head (``PEEK_BYTES``), as the pieces are parsed: numbers
    to float64 or int64, text, dates and booleans as they are (anything else as text); and
    an estimate of the data rows, from the head's line length."""
    import pyarrow as pa
    from pyarrow import csv

    with open(p, "rb") as f:
        f.readline()
        start = f.tell()
        head = f.read(PEEK_BYTES)
    head = head[:head.rfind(b"\n") + 1] or head
    table = csv.read_csv(pa.py_buffer(head), read_options=csv.ReadOptions(column_names=names),
                         parse_options=parse)
    if any(pa.types.is_binary(t) for t in table.schema.types):
        raise _Fallback  # text that is not UTF-8: the general reader names the row
    types = {}
    for n, t in zip(names, table.schema.types, strict=True):
        kind = arrow_kind(t)
        if kind == "float":  # a column with no value in the head, too
            # float64, as pyarrow parses it fastest; rounded to float32 as it is copied.
            t = pa.float64()
        elif kind is None:
            t = pa.string()
        types[n] = t
    data = p.stat().st_size - start
    per_row = len(head) / max(head.count(b"\n"), 1)
    # At most one row per len(names) bytes (its delimiters and line end) whatever the head says.
    rows = min(int(data / per_row * 1.2) + 1024, data // len(names) + 2)
    return types, rows


def _widened(t: Any) -> Any:
    """The type to read a column with again after a value that ``t`` cannot hold; None when
    no type of the same kind can."""
    import pyarrow as pa
    import pyarrow.types as pt

    if pt.is_integer(t):
        return pa.float64()
    if pt.is_date(t) or (pt.is_timestamp(t) and t.unit != "ns"):
        return pa.timestamp("ns", getattr(t, "tz", None))
    return None


def _read_csv(p: Path, exclude: str | None, delimiter: str, allow_missing: bool) -> Columns:
    from pyarrow import csv

    with open(p, "rb") as f:
        header = f.readline()
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
    try:
        types, rows = _peek_types(p, names, parse)
    except (ValueError, UnicodeDecodeError):  # pyarrow's errors are ValueErrors too
        raise _Fallback from None
    # Only empty cells are missing at first: checking each cell against pyarrow's list of
    # markers ("NA", "null", ...) costs a tenth of the parse. A marker in a number, date or
    # boolean column fails its conversion and the file is read again with the list; in text
    # it is found among the column's distinct values (``null_texts``).
    nulls: list[str] | None = [""]
    for _ in range(len(names) + 2):  # each retry widens a column or restores the markers
        try:
            filler = _parse_pieces(p, names, types, rows, exclude, parse, allow_missing, nulls)
        except _Widen as w:
            if w.name is None:
                nulls = None
            else:
                types[w.name] = w.to
            continue
        return filler.finish(str(p), lambda row, name: _csv_cell(p, delimiter, row, names.index(name)))
    raise _Fallback


def _parse_pieces(p: Path, names: list[str], types: dict[str, Any], rows: int, exclude: str | None,
                  parse: Any, allow_missing: bool, nulls: list[str] | None) -> _Filler:
    """Parse the file's rows piece by piece into a :class:`_Filler`, with ``nulls`` the
    texts of a missing cell (None: pyarrow's list).

    Pieces are parsed on a few threads at once, each piece by pyarrow's serial reader (the
    parse releases the GIL): on two cores this takes a quarter less CPU than one
    multi-threaded read, whose 1 MB tasks cost more to share out than they save. Pieces
    are copied into the block in file order as they come back.

    Raises:
        _Widen: a column needs a wider type, or the list of missing-value markers.
        _Fallback: anything else that the general reader must handle (a piece that ends
            inside a quoted value, a value that no type of its column's kind holds, ...).
    """
    import pyarrow as pa
    from pyarrow import csv

    read = csv.ReadOptions(column_names=names, use_threads=False)
    convert = csv.ConvertOptions(column_types=types, strings_can_be_null=True)
    if nulls is not None:
        convert.null_values = nulls

    def parse_piece(piece: memoryview) -> Any:
        if np.count_nonzero(np.frombuffer(piece, dtype=np.uint8) == ord('"')) % 2:
            # The piece ends inside a quoted value holding a line end: parsed in two pieces
            # it would be wrong without any error, so the general reader reads it. (Counted
            # here, on the parsing thread, by NumPy, which releases the GIL.)
            raise _Fallback
        # Parsed straight from the buffer it was read into: the text is never copied.
        return csv.read_csv(pa.py_buffer(piece), read_options=read, parse_options=parse,
                            convert_options=convert)

    workers = _workers(p)
    markers = [] if nulls is None else [t for t in csv.ConvertOptions().null_values if t not in nulls]
    filler = _Filler(names, [types[n] for n in names], rows, exclude, allow_missing, workers=workers,
                     null_texts=markers)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="nnfit-read") if workers > 1 else None
    try:
        with open(p, "rb") as f:
            f.readline()
            pending: deque[Future] = deque()
            # workers + 1 buffers: a buffer is refilled only after its piece's parse is done.
            for piece in _pieces(f, workers + 1):
                if pool is None:
                    filler.add(parse_piece(piece))
                    continue
                pending.append(pool.submit(parse_piece, piece))
                if len(pending) > workers:
                    filler.add(pending.popleft().result())
            while pending:
                filler.add(pending.popleft().result())
    except pa.ArrowInvalid as e:
        raise _widen_or_fallback(e, names, types, nulls is not None) from None
    except (pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError):
        raise _Fallback from None  # e.g. a column numeric at the top and text further down
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return filler


def _workers(p: Path) -> int:
    """Threads to parse with: pyarrow's CPU count (which ``pyarrow.set_cpu_count`` sets), at
    most ``MAX_WORKERS`` (each holds a piece), and one for a file of a piece or less."""
    import pyarrow as pa

    if p.stat().st_size <= CHUNK_BYTES:
        return 1
    return max(1, min(pa.cpu_count(), MAX_WORKERS))


def _pieces(f: BinaryIO, buffers: int) -> Iterator[memoryview]:
    """The rest of the file in pieces of about ``CHUNK_BYTES`` that end at a line end, each a
    view of one of ``buffers`` rotating buffers (a piece's buffer is refilled ``buffers``
    pieces later). Pieces of blank lines only are skipped."""
    ring: list[bytearray] = []
    carry = b""  # a partial line, carried over to the next piece
    # A small file gets a buffer its size (+ 1, so that reading it all is a short read).
    first = min(CHUNK_BYTES, os.fstat(f.fileno()).st_size - f.tell() + 1)
    for k in itertools.count():
        while True:
            size = max(first, 2 * len(carry))
            if len(ring) <= k % buffers:
                ring.append(bytearray(size))
            elif len(ring[k % buffers]) < size:  # a new buffer: never resize one in use
                ring[k % buffers] = bytearray(size)
            buf = ring[k % buffers]
            view = memoryview(buf)
            view[:len(carry)] = carry
            got = f.readinto(view[len(carry):])
            end = len(carry) + got
            last = end < len(buf)  # a short read of a file: its end
            cut = end if last else buf.rfind(b"\n", 0, end) + 1
            if cut or last:
                break
            carry = bytes(view[:end])  # a line longer than the buffer: a bigger one
        carry = bytes(view[cut:end])
        if re.search(rb"\S", view[:cut]):
            yield view[:cut]
        if last:
            return


def _widen_or_fallback(e: Exception, names: list[str], types: dict[str, Any],
                       markers_off: bool) -> Exception:
    """A conversion error that a wider type or pyarrow's missing-value markers (when
    ``markers_off``) fix: :class:`_Widen`; anything else: :class:`_Fallback`."""
    from pyarrow import csv

    m = re.search(r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to [^:]*: "
                  r"invalid value '(.*)'$", str(e))
    if not m or int(m.group(1)) >= len(names):
        return _Fallback()
    if markers_off and m.group(2) in csv.ConvertOptions().null_values:
        return _Widen(None, None)
    name = names[int(m.group(1))]
    to = _widened(types[name])
    return _Widen(name, to) if to is not None else _Fallback()


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
