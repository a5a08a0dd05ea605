"""A CSV/TSV file streamed as Parquet: converted once (:func:`convert`), with pyarrow's
streaming CSV reader, into a Parquet file of row groups of :data:`CSV_ROW_GROUP` rows (fewer
for a small file: :func:`group_rows`), which :class:`~nnfit.data.stream_files.TableFiles`
then reads by row groups.

The Parquet file goes in a temporary directory (``nnfit-stream-PID-*`` under the system's
temporary directory, ``TMPDIR``), removed when the process ends. It is as large as the data,
so it never goes beside the user's files (a disk too full for it is named in one line, with
``TMPDIR`` as the way out); a run converts again when it resumes (the same file gives the
same row groups), and a directory left by a killed process is removed by the next
conversion. A cache kept across processes would hold gigabytes nobody asked for.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

from ..errors import DataError
from .columns import _one_line, check_unique

CSV_ROW_GROUP = 1 << 16  # rows per row group of a CSV's conversion: the unit of shuffling and validation
MIN_GROUP = 1 << 10  # ... and of a small CSV's, which has fewer rows (see group_rows)
BLOCK_BYTES = 4 << 20  # CSV text parsed at a time
TEMP_PREFIX = "nnfit-stream-"


def convert(p: Path, owner: object) -> tuple[Path, str]:
    """CSV ``p`` as a Parquet file (:func:`convert_csv`) in a new temporary directory, removed
    when ``owner`` is collected or the process ends; returns the file and the CSV's SHA-256.

    Raises:
        DataError: the CSV does not parse, or the temporary directory has no room for it.
    """
    try:
        temp = _temp_dir()
    except OSError as e:
        raise _disk_error(p, Path(tempfile.gettempdir()), e) from None
    weakref.finalize(owner, shutil.rmtree, temp, True)  # at exit too
    out = temp / "data.parquet"
    return out, convert_csv(p, out)


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
            if isinstance(e, OSError) and e.errno in _DISK_ERRORS:  # writing, not parsing
                raise _disk_error(p, out.parent, e) from None
            raise _parse_error(p, e, delimiter) from None
        while source.readinto(bytearray(1 << 20)):  # whatever the reader left unread, hashed too
            pass
    if rows == 0:
        raise DataError(f"{p}: no data rows")
    return source.sha256.hexdigest()


_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def _disk_error(p: Path, where: Path, e: OSError) -> DataError:
    """The conversion of CSV ``p`` could not be written in ``where``: say where, and how to
    choose another place."""
    why = os.strerror(e.errno) if e.errno else _one_line(e)
    return DataError(f"{p}: cannot write its conversion to Parquet in {where} ({why}): it takes about as "
                     "much room as the data; free some there or set TMPDIR to a directory with room")


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
