"""Tabular input: CSV/Parquet files and DataFrames into checked columns, and every kind of user
input (arrays, tensors, frames, tuples and dicts of them) into :class:`RawInputs`, the named
arrays that the fitted preprocessing (:mod:`nnfit.data.preprocess`) checks and transforms.

Files are read with pyarrow (multi-threaded, typed columns). Every problem is a
:class:`~nnfit.errors.DataError` naming the file, the column and, where there is one, the
1-based data row.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..files import atomic_write_text
from .impute import missing_values
from .kinds import Codes, arrow_column, missing_mask, series_column

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")  # image files (nnfit.data.layouts)


@dataclass
class Columns:
    """Named, equally long 1-D arrays read from one source.

    Attributes:
        source: where they came from (a file name, "DataFrame"), for error messages.
        arrays: column name -> 1-D NumPy array, in file order.
        block: optionally, the numeric columns as one (n, k) float32 array; ``arrays`` then
            holds column views of it (see :mod:`nnfit.data.read`).
        block_names: the columns of ``block``, in order.
        kinds: column name -> the type the source gave it: "int", "float", "bool", "text" or
            "datetime" (a column of the float32 block may be an integer column of the file).
            Columns not listed are judged by their array's dtype.
        codes: for text columns, a dictionary encoding made while reading: name ->
            (int32 codes, -1 where missing; the levels they index). The schema stage uses it
            instead of hashing the strings again; any column may lack one.
    """

    source: str
    arrays: dict[str, np.ndarray]
    block: np.ndarray | None = None
    block_names: list[str] | None = None
    kinds: dict[str, str] = field(default_factory=dict)
    codes: dict[str, tuple[np.ndarray, list[str]]] = field(default_factory=dict)
    rows: np.ndarray | None = None  # 0-based rows of the source these are (after take); None: all

    def row(self, i: int) -> int:
        """The 1-based row of the source that row ``i`` of these columns came from."""
        return int(self.rows[i]) + 1 if self.rows is not None else i + 1

    def copy(self) -> Columns:
        """A shallow copy whose column dict can be changed (the arrays are shared)."""
        return Columns(self.source, dict(self.arrays), self.block, self.block_names,
                       dict(self.kinds), dict(self.codes), self.rows)

    def take(self, idx: np.ndarray) -> Columns:
        """The rows ``idx`` of every column (the block stays one block)."""
        kinds = dict(self.kinds)
        rows = np.asarray(idx) if self.rows is None else self.rows[idx]
        codes = {k: (c[idx], levels) for k, (c, levels) in self.codes.items() if k in self.arrays}
        if self.block is None:
            return Columns(self.source, {k: v[idx] for k, v in self.arrays.items()}, kinds=kinds, codes=codes,
                           rows=rows)
        block = self.block[idx]
        where = {n: j for j, n in enumerate(self.block_names)}
        arrays = {k: (block[:, where[k]] if k in where else v[idx]) for k, v in self.arrays.items()}
        return Columns(self.source, arrays, block, list(self.block_names), kinds, codes, rows)

    def kind(self, name: str) -> str:
        """The source type of column ``name`` (see ``kinds``), from its dtype when not recorded."""
        if name in self.kinds:
            return self.kinds[name]
        a = self.arrays[name]
        return {"i": "int", "u": "int", "f": "float", "b": "bool", "M": "datetime"}.get(a.dtype.kind, "text")

    @property
    def names(self) -> list[str]:
        return list(self.arrays)

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values()))) if self.arrays else 0

    def pop(self, name: str) -> np.ndarray:
        """Remove and return column ``name``."""
        if name not in self.arrays:
            raise DataError(f"{self.source}: column {name!r} not found (columns: {names_list(self.names)})")
        self.kinds.pop(name, None)
        self.codes.pop(name, None)
        return self.arrays.pop(name)


def names_list(names: Sequence[str], limit: int = 12) -> str:
    """Column names for a message: the first ``limit``, then how many there are in all."""
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def check_data_file(p: Path) -> None:
    """``p`` is a file that exists, holds bytes, and is CSV, TSV or Parquet.

    Raises:
        DataError: naming ``p`` and what it is not.
    """
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if not p.is_file():
        raise DataError(f"{p}: not a file")
    suffix = p.suffix.lower()
    if suffix not in CSV_SUFFIXES + PARQUET_SUFFIXES:
        raise DataError(f"{p}: unsupported file type {suffix!r} (use .csv, .tsv or .parquet)")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: file is empty")


def read_columns(path: str | Path, *, allow_missing: bool = False, exclude: str | None = None) -> Columns:
    """Read a CSV/TSV or Parquet file into :class:`Columns`, each column with its kind and
    text columns with codes (see :mod:`nnfit.data.kinds`).

    Args:
        path: the file.
        allow_missing: keep missing cells of every column but ``exclude`` (NaN in numbers,
            None in text, NaT in dates) instead of refusing them.
        exclude: the target column, which may never have missing values.

    Raises:
        DataError: missing or empty file, unknown format, a parse error (a ragged row is named
            by its 1-based data row), text that is not UTF-8, empty or duplicate column names,
            no data rows, missing values (counted per column), or a missing target value
            while ``allow_missing`` (its row named).
    """
    p = Path(path)
    check_data_file(p)
    suffix = p.suffix.lower()
    import pyarrow as pa

    delimiter = "\t" if suffix == ".tsv" else ","
    try:
        if suffix in PARQUET_SUFFIXES:
            import pyarrow.parquet as pq

            check_unique([str(n) for n in pq.read_schema(p).names], str(p))  # before pyarrow trips
            table = pq.read_table(p)
        else:
            from pyarrow import csv

            # newlines_in_values: without it pyarrow's chunker may split a quoted value that
            # holds a line break into two rows without any error (the fast reader sends such
            # files here).
            parse = csv.ParseOptions(delimiter=delimiter, newlines_in_values=True)
            read = csv.ReadOptions(autogenerate_column_names=False)
            # Empty cells of text columns are missing values too, not the label "".
            convert = csv.ConvertOptions(strings_can_be_null=True)
            table = csv.read_csv(p, read_options=read, parse_options=parse,
                                 convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OSError,
            UnicodeDecodeError) as e:
        raise _parse_error(p, e, delimiter) from None
    return _from_arrow(table, str(p), allow_missing, exclude)


def _parse_error(p: Path, e: Exception, delimiter: str) -> DataError:
    """The reader's complaint in one line; a ragged row is found and named by its data row."""
    text = _one_line(e)
    if "Empty CSV file" in text:
        return DataError(f"{p}: no header row (the file holds only blank lines)")
    if isinstance(e, UnicodeDecodeError):
        return DataError(f"{p}: cannot parse: the text is not UTF-8 ({_one_line(e)})")
    m = re.search(r"Expected (\d+) columns, got (\d+)", text)
    row = _ragged_row(p, delimiter, int(m.group(1))) if m else None
    if row is not None:
        fields = f"{row[1]} field" + ("" if row[1] == 1 else "s")
        return DataError(f"{p}: cannot parse: row {row[0]} has {fields}, the header has {m.group(1)}")
    return DataError(f"{p}: cannot parse: {text}")


def _ragged_row(p: Path, delimiter: str, width: int) -> tuple[int, int] | None:
    """The first data row (1-based, blank lines skipped as the parser does) whose field count
    differs from ``width``, and that count; None when Python's csv module sees none."""
    import csv as csv_module

    try:
        with open(p, encoding="utf-8", errors="replace", newline="") as f:
            rows = (r for r in csv_module.reader(f, delimiter=delimiter) if r)
            next(rows, None)  # the header
            for i, r in enumerate(rows, 1):
                if len(r) != width:
                    return i, len(r)
    except csv_module.Error:  # e.g. a field over the csv module's size limit
        return None
    return None


def check_unique(names: Sequence[str], source: str) -> None:
    """Raise a DataError naming an empty column name (by its 1-based position) or any name
    that appears more than once."""
    empty = [i + 1 for i, n in enumerate(names) if not str(n).strip()]
    if empty:
        raise DataError(f"{source}: column {empty[0]} has an empty name")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"{source}: duplicate column names: {', '.join(dupes)}")


def _from_arrow(table: Any, source: str, allow_missing: bool = False,
                exclude: str | None = None) -> Columns:
    try:
        names = [str(n) for n in table.column_names]
    except UnicodeDecodeError:
        raise DataError(f"{source}: the header is not UTF-8 text") from None
    check_unique(names, source)
    if table.num_rows == 0:
        raise DataError(f"{source}: no data rows")
    missing: dict[str, int] = {}
    out = Columns(source, {})
    for i, n in enumerate(names):
        col = table.column(i)
        check_flat(col.type, n, source)
        col = _check_text(col, n, source)
        # A date target stays Python dates: refused later, naming the row.
        values, kind, codes = arrow_column(col, python_dates=n == exclude)
        add_column(out, n, values, kind, codes, missing, allow_missing, n == exclude)
    if missing:
        raise missing_values(source, missing)
    return out


def add_column(cols: Columns, name: str, values: np.ndarray, kind: str, codes: Codes | None,
               missing: dict[str, int], allow_missing: bool, target: bool) -> None:
    """Add a column read from a file or frame to ``cols``, with its missing cells kept (NaN,
    None, NaT) when ``allow_missing``, else counted into ``missing`` for one error.

    Args:
        cols: the columns read so far.
        name, values, kind, codes: the column, as :mod:`nnfit.data.kinds` made it.
        missing: missing cells per column, added to when they are not kept.
        allow_missing: keep missing cells (of any column but the target).
        target: this column is the target, whose missing cells are never kept.

    Raises:
        DataError: the target misses a value while ``allow_missing``: it is never filled, so
            the first such row is named at once.
    """
    cols.arrays[name], cols.kinds[name] = values, kind
    if codes is not None:
        cols.codes[name] = codes
    mask = missing_mask(values, codes)
    if mask is None or not mask.any():
        return
    if allow_missing and target:
        raise target_missing(cols.source, name, mask)
    if not allow_missing:
        missing[name] = int(mask.sum())


def target_missing(source: str, name: str, mask: np.ndarray) -> DataError:
    """The error for a target with missing cells, naming the first 1-based data row."""
    rows = int(mask.sum())
    return DataError(f"{source}: target column {name!r} is missing on row {int(mask.argmax()) + 1} "
                     f"({rows} row{'' if rows == 1 else 's'} in all)")


def check_flat(t: Any, name: str, source: str) -> None:
    """Refuse a column of lists, structs or maps (Parquet can hold them): each cell must be
    one number or label.

    Raises:
        DataError: naming the file, the column and its Arrow type.
    """
    import pyarrow.types as pt

    if pt.is_nested(t):
        kind = str(t)
        kind = kind if len(kind) <= 60 else kind[:57] + "..."
        raise DataError(f"{source}: column {name!r} holds a nested value per row ({kind}); nnfit "
                        "reads one number or label per cell: store each element as its own column")


def _check_text(col: Any, name: str, source: str) -> Any:
    """The column, with raw bytes (left so by the CSV parser, or a Parquet binary column) as
    text: labels are text, and bytes could not be saved with the model.

    Raises:
        DataError: the bytes are not UTF-8 text, naming the first such row.
    """
    import pyarrow as pa
    import pyarrow.types as pt

    if pt.is_binary(col.type) or pt.is_large_binary(col.type):
        values = col.to_pylist()
        bad = next((i for i, v in enumerate(values) if v is not None and not _utf8(v)), None)
        if bad is None:  # bytes from a Parquet file, but valid text
            return col.cast(pa.string() if pt.is_binary(col.type) else pa.large_string())
        raise DataError(f"{source}: column {name!r} is not UTF-8 text (row {bad + 1}: {values[bad]!r})")
    return col


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def columns_from_frame(df: Any, source: str = "DataFrame", *, allow_missing: bool = False,
                       exclude: str | None = None) -> Columns:
    """Columns of a pandas DataFrame (or any object with ``columns`` and ``__getitem__``),
    each with its kind and, for text and ``category`` columns, codes (see
    :func:`nnfit.data.kinds.series_column` for how each dtype maps).

    Args:
        df: the frame.
        source: its name in messages.
        allow_missing: keep missing cells (NaN, None, NaT; ``pd.NA`` as NaN or None) of every
            column but ``exclude`` instead of refusing them.
        exclude: the target column, which may never have missing values.

    Raises:
        DataError: empty or duplicate column names, no rows, missing values (counted per
            column), or a missing target value while ``allow_missing`` (its row named).
    """
    names = [str(c) for c in df.columns]
    check_unique(names, source)
    if len(df) == 0:
        raise DataError(f"{source}: no data rows")
    missing: dict[str, int] = {}
    out = Columns(source, {})
    for c, n in zip(df.columns, names, strict=True):
        values, kind, codes = series_column(df[c])
        add_column(out, n, values, kind, codes, missing, allow_missing, n == exclude)
    if missing:
        raise missing_values(source, missing)
    return out


def column_name(label: Any) -> str | None:
    """A column label as nnfit names it: ``str(label)``, as for a DataFrame's columns, so a
    pandas MultiIndex column is found by its tuple (``target=("t", "y")``) or by its text."""
    return label if label is None or isinstance(label, str) else str(label)


def is_frame(x: Any) -> bool:
    """Duck-typed DataFrame check that does not import pandas."""
    return hasattr(x, "columns") and hasattr(x, "iloc") and hasattr(x, "to_numpy")


F32_MAX = float(np.finfo(np.float32).max)


def feature_matrix(cols: Columns, features: Sequence[str], allow_nan: bool = False) -> np.ndarray:
    """Stack numeric ``features`` of ``cols`` into an (n, d) float32 matrix.

    Args:
        allow_nan: let missing values (NaN) through, for a model that imputes them.

    Raises:
        DataError: a missing, non-numeric, infinite or float32-overflowing feature column
            (naming the first bad 1-based row).
    """
    if cols.block is not None and list(features) == cols.block_names:
        # Already one float32 block, no copy. Only nnfit.data.read makes blocks, and it refused
        # inf (and NaN unless missing values are allowed, as they are here exactly when
        # allow_nan: every caller passes the same flag to both) while it still knew the file's
        # rows: scanning the block again could find nothing.
        return cols.block
    out = np.empty((len(cols), len(features)), dtype=np.float32)
    for j, name in enumerate(features):
        if name not in cols.arrays:
            raise DataError(f"{cols.source}: feature column {name!r} not found")
        a = cols.arrays[name]
        if a.dtype.kind not in "iufb":
            bad = next((i for i, v in enumerate(a) if not _is_number(v)), 0)
            v = a[bad].item() if isinstance(a[bad], np.generic) else a[bad]  # 'x', not np.str_('x')
            raise DataError(f"{cols.source}: column {name!r} is not numeric (row {bad + 1}: {v!r})")
        a = a.astype(np.float64)
        finite = np.isfinite(a) | (np.isnan(a) if allow_nan else False)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            raise value_error(cols.source, name, bad, a[bad])
        big = np.abs(a) > F32_MAX  # NaN compares False
        if big.any():
            bad = int(np.flatnonzero(big)[0])
            raise value_error(cols.source, name, bad, a[bad])
        out[:, j] = a
    return out


def value_error(source: str, name: str, row: int, value: Any) -> DataError:
    """The error for a feature value float32 cannot hold: a non-finite one, or a number
    beyond float32's range (which a float32 block holds as inf).

    Args:
        source: the table, named in the message.
        name: the column.
        row: the 0-based data row.
        value: the table's own value (a file's text, a number), or None when unknown (inf).
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("inf")
    if np.isfinite(number):
        return DataError(f"{source}: column {name!r} has a value beyond float32 range "
                         f"(row {row + 1}: {number:g}; float32 holds at most 3.4e38 in size)")
    return DataError(f"{source}: column {name!r} has a non-finite value "
                     f"(row {row + 1}: {value if value is not None else 'inf'})")


def _is_number(v: Any) -> bool:
    if isinstance(v, str):  # a text column: its numeric-looking cells are not the bad row
        try:
            float(v)
        except ValueError:
            return False
        return True
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool)


DAY_SECONDS = 86400


def date_text(a: np.ndarray) -> np.ndarray:
    """Times as a file shows them: datetimes as ISO text (the date alone when every one is at
    midnight; NaT as "NaT"), numbers and text as they are."""
    if a.dtype.kind != "M":
        return a
    t = a.astype("datetime64[s]")
    seconds = t[~np.isnat(t)].astype(np.int64)
    return np.datetime_as_string(t, unit="D" if (seconds % DAY_SECONDS == 0).all() else "s")


def csv_cells(a: np.ndarray) -> list[Any]:
    """A column's values as CSV cells that read back as the same values: gaps empty, dates in
    ISO 8601, floats with every digit (``repr``)."""
    if a.dtype.kind == "M":
        return ["" if t == "NaT" else t for t in date_text(a).tolist()]
    if a.dtype.kind == "f":
        return ["" if v != v else repr(v) for v in a.tolist()]
    return ["" if v is None or (isinstance(v, float) and v != v) else v for v in a.tolist()]


def write_csv(path: str | Path, cols: Columns) -> Path:
    """Write ``cols`` as a CSV file (a header, then one line per row), atomically: a run's
    ``test.csv``, read back by ``nnfit evaluate`` like the file it came from."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols.names)
    w.writerows(zip(*[csv_cells(a) for a in cols.arrays.values()], strict=True))
    atomic_write_text(path, buf.getvalue())
    return Path(path)
