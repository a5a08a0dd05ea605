"""Column kinds: one column of a file (Arrow) or a DataFrame (pandas) as the NumPy array nnfit
keeps, its kind ("int", "float", "bool", "text", "datetime") and, for text, a dictionary
encoding (int32 codes, -1 where missing, and the levels they index).

What each kind becomes:

* numbers and booleans: their own NumPy dtype, or float64 with NaN where cells are missing
  (the kind still says "int" or "bool");
* text: an object array of ``str``, ``None`` where missing, made as ``levels[codes]`` so each
  distinct value is one Python string however often it occurs;
* dates and timestamps: ``datetime64[ns]`` with NaT where missing (time-zone-aware values as
  UTC); a date beyond what nanoseconds hold (before 1677 or after 2262) stays text.

Arrow arrays are turned into NumPy through their buffers, never through pyarrow's pandas-based
conversion: importing pandas would cost more than reading a small file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Codes = tuple[np.ndarray, list[str]]


def arrow_kind(t: Any) -> str | None:
    """The kind of an Arrow type; None for types nnfit keeps as Python objects (decimals,
    durations, times of day, binary)."""
    import pyarrow.types as pt

    if pt.is_boolean(t):
        return "bool"
    if pt.is_integer(t):
        return "int"
    if pt.is_floating(t) or pt.is_null(t):  # a column with no value at all: numbers, all missing
        return "float"
    if pt.is_string(t) or pt.is_large_string(t) or pt.is_dictionary(t) or _is_string_view(t):
        return "text"
    if pt.is_timestamp(t) or pt.is_date(t):
        return "datetime"
    return None


def _is_string_view(t: Any) -> bool:
    import pyarrow.types as pt

    return bool(getattr(pt, "is_string_view", lambda _: False)(t))


def arrow_column(col: Any, *, python_dates: bool = False,
                 null_texts: Sequence[str] = ()) -> tuple[np.ndarray, str, Codes | None]:
    """One Arrow column (Array or ChunkedArray) as nnfit keeps it.

    Args:
        col: the column.
        python_dates: keep dates and timestamps as Python objects (for a target, which is
            refused later with its row named) instead of ``datetime64[ns]``.
        null_texts: text values that mean a missing cell (see :func:`text_column`).

    Returns:
        (array, kind, codes): ``codes`` is (int32 codes, levels) for text, else None.
    """
    import pyarrow as pa

    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    kind = arrow_kind(col.type)
    if kind == "datetime" and not python_dates:
        values = _datetimes(chunks)
        if values is not None:
            return values, kind, None
        kind, chunks = "text", [c.cast(pa.string()) for c in chunks]  # beyond datetime64[ns]
    if kind == "text":
        return text_column(chunks, null_texts)
    if kind in ("int", "float", "bool"):
        return _numbers(chunks, col.type), kind, None
    values = [v for c in chunks for v in c.to_pylist()]
    return _objects(values), kind or "text", None


def _objects(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)  # never a 2-D array of a list of lists
    out[:] = values
    return out


def missing_of(chunk: Any) -> np.ndarray | None:
    """Where an Arrow array's cells are null, from its validity bitmap; None when none are."""
    if not chunk.null_count:
        return None
    if len(chunk) == chunk.null_count:
        return np.ones(len(chunk), dtype=bool)
    bits = np.frombuffer(chunk.buffers()[0], dtype=np.uint8)
    valid = np.unpackbits(bits, count=chunk.offset + len(chunk), bitorder="little")[chunk.offset:]
    return valid == 0


def numpy_dtype(t: Any) -> np.dtype:
    """The NumPy dtype of a fixed-width Arrow type. Integers and floats are mapped here:
    pyarrow's ``to_pandas_dtype`` imports pandas (about 0.3 s, and a dependency nnfit's
    readers never need); other types still ask it."""
    import pyarrow.types as pt

    if pt.is_floating(t):
        return np.dtype(f"float{t.bit_width}")
    if pt.is_integer(t):
        return np.dtype(f"{'u' if pt.is_unsigned_integer(t) else ''}int{t.bit_width}")
    return np.dtype(t.to_pandas_dtype())


def fixed_values(chunk: Any, dtype: Any) -> np.ndarray:
    """The values buffer of a fixed-width Arrow array as a NumPy view (any value under a null
    cell: whatever the buffer holds there)."""
    dtype = np.dtype(dtype)
    if not len(chunk):
        return np.empty(0, dtype=dtype)
    data = np.frombuffer(chunk.buffers()[1], dtype=dtype)
    return data[chunk.offset:chunk.offset + len(chunk)]


def bool_values(chunk: Any) -> np.ndarray:
    """A boolean Arrow array's values (bit-packed) as a NumPy bool array."""
    if not len(chunk):
        return np.empty(0, dtype=bool)
    bits = np.frombuffer(chunk.buffers()[1], dtype=np.uint8)
    return np.unpackbits(bits, count=chunk.offset + len(chunk), bitorder="little")[chunk.offset:].astype(bool)


def chunk_numbers(chunk: Any, dtype: Any = None) -> np.ndarray:
    """A numeric or boolean Arrow array as NumPy: its own dtype (or ``dtype``), NaN in place
    of nulls (then a floating dtype)."""
    import pyarrow.types as pt

    t = chunk.type
    if pt.is_null(t):
        return np.full(len(chunk), np.nan, dtype=dtype or np.float64)
    v = bool_values(chunk) if pt.is_boolean(t) else fixed_values(chunk, numpy_dtype(t))
    missing = missing_of(chunk)
    if missing is None:
        return v if dtype is None else v.astype(dtype, copy=False)
    out = v.astype(dtype if dtype is not None and np.dtype(dtype).kind == "f" else np.float64)
    out[missing] = np.nan
    return out


def _numbers(chunks: list[Any], t: Any) -> np.ndarray:
    import pyarrow.types as pt

    nulls = any(c.null_count for c in chunks) or pt.is_null(t)
    dtype = np.float64 if nulls else None
    parts = [chunk_numbers(c, dtype) for c in chunks]
    if not parts:
        return np.empty(0, dtype=np.float64)
    return parts[0].copy() if len(parts) == 1 else np.concatenate(parts)


def _datetimes(chunks: list[Any]) -> np.ndarray | None:
    """Dates or timestamps as ``datetime64[ns]`` (aware ones as UTC), NaT where missing; None
    when a value lies beyond the nanosecond range."""
    import pyarrow as pa

    parts = []
    for c in chunks:
        try:
            ns = c.cast(pa.timestamp("ns"))  # an aware timestamp is stored as UTC: kept as is
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        v = fixed_values(ns, np.int64).copy()
        missing = missing_of(ns)
        if missing is not None:
            v[missing] = np.iinfo(np.int64).min  # NaT
        parts.append(v)
    out = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    return out.view("datetime64[ns]")


def text_column(chunks: list[Any], null_texts: Sequence[str] = ()) -> tuple[np.ndarray, str, Codes]:
    """Text (or dictionary) Arrow arrays as an object array of str/None with its dictionary
    encoding, hashed in C++ (``dictionary_encode``): levels in order of first appearance.
    Each distinct value becomes one Python string, however often it occurs.

    Args:
        chunks: the column's arrays.
        null_texts: values that mean a missing cell (a CSV's "NA", "null", ...), for a reader
            that left them to be found here, among the distinct values only.
    """
    import pyarrow as pa

    if not chunks:
        return np.empty(0, dtype=object), "text", (np.empty(0, dtype=np.int32), [])
    enc = pa.chunked_array([_as_text(c) for c in chunks]).dictionary_encode()
    dictionary = enc.chunks[0].dictionary  # the chunks share one dictionary
    codes = np.concatenate([_indices(c.indices) for c in enc.chunks])
    if null_texts:
        dictionary, codes = _drop_levels(dictionary, codes, null_texts)
    levels = dictionary.to_pylist()
    if len(levels) == len(codes) and (not len(codes) or codes[-1] == len(codes) - 1):
        return _objects(levels), "text", (codes, levels)  # all distinct: codes 0, 1, 2, ...
    return decode(codes, levels), "text", (codes, levels)


def _drop_levels(dictionary: Any, codes: np.ndarray, texts: Sequence[str]) -> tuple[Any, np.ndarray]:
    """The dictionary without the entries in ``texts``, and the codes with theirs as -1."""
    import pyarrow as pa
    import pyarrow.compute as pc

    data = "".join(texts).encode()
    offsets = np.cumsum([0] + [len(t.encode()) for t in texts], dtype=np.int32)
    value_set = pa.StringArray.from_buffers(len(texts), pa.py_buffer(offsets), pa.py_buffer(data))
    drop = pc.is_in(dictionary, value_set=value_set)
    if not drop.true_count:
        return dictionary, codes
    keep = ~np.unpackbits(np.frombuffer(drop.buffers()[1], dtype=np.uint8), count=drop.offset + len(drop),
                          bitorder="little")[drop.offset:].astype(bool)
    remap = np.full(len(keep) + 1, -1, dtype=np.int32)  # the last entry: code -1 stays -1
    remap[:-1][keep] = np.arange(int(keep.sum()), dtype=np.int32)
    return dictionary.filter(pc.invert(drop)), remap[codes]


def decode(codes: np.ndarray, levels: list[str]) -> np.ndarray:
    """``levels[codes]`` as an object array, None where a code is -1: one pointer per row."""
    lookup = np.empty(len(levels) + 1, dtype=object)  # the last entry stays None, for code -1
    lookup[:-1] = levels
    return lookup[codes]


def _as_text(chunk: Any) -> Any:
    import pyarrow as pa
    import pyarrow.types as pt

    t = chunk.type
    if pt.is_dictionary(t):
        chunk = chunk.cast(t.value_type)  # decoded: each chunk may have its own dictionary
        t = chunk.type
    if not (pt.is_string(t) or pt.is_large_string(t)):
        chunk = chunk.cast(pa.string())  # levels of numbers (a category of ints), views
    return chunk


def _indices(indices: Any) -> np.ndarray:
    codes = fixed_values(indices, np.int32)
    missing = missing_of(indices)
    if missing is None:
        return codes
    codes = codes.copy()
    codes[missing] = -1
    return codes


def missing_mask(values: np.ndarray, codes: Codes | None = None) -> np.ndarray | None:
    """Which rows of a column kept by nnfit are missing (NaN, NaT, None, or code -1); None
    for a dtype that cannot hold a missing value."""
    if codes is not None:
        return codes[0] < 0
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype.kind in "mM":
        return np.isnat(values)
    if values.dtype.kind == "O":
        return np.fromiter((v is None or (isinstance(v, float) and v != v) for v in values),
                           dtype=bool, count=len(values))
    return None


def series_column(s: Any) -> tuple[np.ndarray, str, Codes | None]:
    """One DataFrame column as nnfit keeps it.

    pandas dtypes map to kinds: bool and ``boolean`` -> "bool"; integer and ``Int64``-style
    -> "int"; float and ``Float64`` -> "float" (a nullable one as float64 with NaN for
    ``pd.NA``); ``datetime64`` (aware ones converted to UTC) -> "datetime"; object and string
    dtypes -> "text" (missing as None); ``category`` -> "text" with the categorical's own codes
    and its categories as text levels. Anything else keeps its NumPy form.

    Returns:
        (array, kind, codes) as :func:`arrow_column`.
    """
    import sys

    pd = sys.modules.get("pandas")  # a pandas Series means pandas is imported already
    if pd is None or not isinstance(s, pd.Series):
        a = np.asarray(s.to_numpy() if hasattr(s, "to_numpy") else s)
        return a, dtype_kind(a), None
    dt, types = s.dtype, pd.api.types
    if isinstance(dt, pd.CategoricalDtype):
        codes = np.asarray(s.cat.codes, dtype=np.int32)
        levels = [str(c) for c in dt.categories]
        return decode(codes, levels), "text", (codes, levels)
    for kind, test in (("bool", types.is_bool_dtype), ("int", types.is_integer_dtype),
                       ("float", types.is_float_dtype)):
        if test(dt):
            if isinstance(dt, np.dtype):
                return s.to_numpy(), kind, None
            # A nullable (extension) dtype: pd.NA becomes NaN in float64.
            if not s.isna().any():
                return s.to_numpy(dtype=dt.numpy_dtype), kind, None
            return s.to_numpy(dtype=np.float64, na_value=np.nan), kind, None
    if isinstance(dt, pd.DatetimeTZDtype) or types.is_datetime64_dtype(dt):
        try:
            if isinstance(dt, pd.DatetimeTZDtype):
                s = s.dt.tz_convert("UTC").dt.tz_localize(None)
            return s.to_numpy(dtype="datetime64[ns]"), "datetime", None
        except (ValueError, OverflowError):  # beyond what nanoseconds hold: kept as text
            return _frame_text(s.astype(str).where(s.notna(), None))
    if types.is_object_dtype(dt) or isinstance(dt, pd.StringDtype):
        return _frame_text(s)
    a = np.asarray(s.to_numpy())
    return a, dtype_kind(a), None


def _frame_text(s: Any) -> tuple[np.ndarray, str, Codes | None]:
    """An object or string Series as text: encoded when every value is a string, else kept
    as its objects with missing ones (NaN, pd.NA, NaT) as None."""
    import pyarrow as pa

    try:
        arr = pa.array(s, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # numbers or other objects among the text
        values = s.to_numpy(dtype=object)
        missing = np.asarray(s.isna())
        if missing.any():
            values = values.copy()
            values[missing] = None
        return values, "text", None
    return text_column(arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr])


def dtype_kind(a: np.ndarray) -> str:
    """The kind a NumPy array's dtype implies (object and anything unknown: "text")."""
    return {"i": "int", "u": "int", "f": "float", "b": "bool", "M": "datetime"}.get(a.dtype.kind, "text")
