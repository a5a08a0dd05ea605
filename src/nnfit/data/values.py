"""A column's values as the column roles need them: as numbers (numbers written as text too),
as dictionary codes with text levels, or as dates (ISO 8601 text too, UTC offsets applied), with
gaps found in whatever form the source gave them (NaN, None, NaT, pandas' NA)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import DataError
from .columns import F32_MAX, Columns

# Text that stands for "no value" in many exports; not counted against a column being numeric.
GAP_TOKENS = frozenset({"?", "-", "--", ".", "none", "missing", "unknown", "n.a.", "#n/a", "nil"})
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?")


def has_value(cols: Columns, name: str) -> np.ndarray:
    """Which rows of the column hold a value."""
    if name in cols.codes:
        return cols.codes[name][0] >= 0
    a = cols.arrays[name]
    if a.dtype.kind == "f":
        return ~np.isnan(a)
    if a.dtype.kind == "M":
        return ~np.isnat(a)
    if a.dtype.kind == "O":
        return np.fromiter((not is_missing(v) for v in a), dtype=bool, count=len(a))
    return np.ones(len(a), dtype=bool)


def is_missing(v: Any) -> bool:
    """None, NaN, and pandas' NA and NaT (recognised without importing pandas)."""
    return v is None or (isinstance(v, float) and v != v) or type(v).__name__ in ("NAType", "NaTType")


def distinct_count(cols: Columns, name: str) -> int:
    codes, levels = factorize(cols, name)
    return int(len(np.unique(codes[codes >= 0])))


def factorize(cols: Columns, name: str) -> tuple[np.ndarray, list[str]]:
    """Integer codes (-1 where missing) and their levels as text, for any column. Numbers print
    as they read (an integral float as ``3``, a boolean as ``True``), so a level is the same
    whether a CSV or a DataFrame holds it."""
    if name in cols.codes:
        codes, levels = cols.codes[name]
        cols.codes[name] = strip_levels(codes, levels)  # a reader's encoding, spaces and all
        return cols.codes[name]
    a = cols.arrays[name]
    if a.dtype.kind in "iufb":
        v = a.astype(np.float64)
        present = ~np.isnan(v)
        uniq, inv = np.unique(v[present], return_inverse=True)
        codes = np.full(len(v), -1, dtype=np.int64)
        codes[present] = inv
        kind = cols.kind(name)
        if kind == "bool":
            levels = [str(bool(u)) for u in uniq]
        else:
            levels = [str(int(u)) if float(u).is_integer() and abs(u) < 2**53 else repr(float(u))
                      for u in uniq]
        return codes, levels
    if a.dtype.kind == "M":
        a = np.array([None if np.isnat(t) else str(t) for t in a], dtype=object)
    cols.codes[name] = factorize_text(a)  # kept: roles, vocabulary and encoding all use it
    return cols.codes[name]


def factorize_text(a: np.ndarray) -> tuple[np.ndarray, list[str]]:
    import pyarrow as pa

    try:
        arr = pa.array(a, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed values (3 and "x"): compared as text
        arr = pa.array([None if is_missing(v) else str(v) for v in a], type=pa.string())
    enc = arr.dictionary_encode()
    codes = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return strip_levels(codes, [str(s) for s in enc.dictionary.to_pylist()])


# What pandas' readers also take for "no value" in text (pyarrow's markers, "NA", "null" and
# the like, are gaps already when a file is read).
NO_VALUE = frozenset({"None", "<NA>"})


def strip_levels(codes: np.ndarray, levels: list[str]) -> tuple[np.ndarray, list[str]]:
    """Levels without surrounding spaces (``", "``-separated exports such as UCI Adult's write
    " Private"), codes merged where two levels then read the same; an empty level and the
    :data:`NO_VALUE` markers are gaps."""
    stripped = ["" if lvl.strip() in NO_VALUE else lvl.strip() for lvl in levels]
    if stripped == levels and "" not in levels:
        return codes, levels
    uniq, inverse = np.unique(np.array(stripped, dtype=object), return_inverse=True)
    kept = [str(u) for u in uniq]
    remap = np.append(inverse, -1)
    if "" in kept:  # spaces only: no value
        gap = kept.index("")
        remap = np.where(remap == gap, -1, remap - (remap > gap))
        kept.pop(gap)
    return remap[np.where(codes < 0, len(levels), codes)], kept


def numeric_values(cols: Columns, name: str, source: str, coerce: bool = False) -> np.ndarray:
    """The column as float64 with NaN for gaps.

    Args:
        coerce: text that is not a number is a gap (a numeric column with a few stray tokens
            such as "?"), instead of an error.

    Raises:
        DataError: text that is not a number (unless ``coerce``), a non-finite number or one
            beyond float32, naming the file's 1-based row.
    """
    from .columns import value_error

    a = cols.arrays[name]
    if a.dtype.kind in "iufb":
        v = a.astype(np.float64)
    elif a.dtype.kind in "OUS":  # text: each distinct value parsed once
        codes, levels = factorize(cols, name)
        parsed = np.array([parse_number(lvl) for lvl in levels] + [np.nan], dtype=np.float64)
        words = np.array([np.isnan(x) and lvl.strip().lower() not in ("nan", "")
                          for x, lvl in zip(parsed, levels, strict=False)] + [False])
        index = np.where(codes < 0, len(levels), codes)
        if words.any() and not coerce:
            i = int(np.flatnonzero(words[index])[0])
            raise DataError(f"{source}: column {name!r} is not numeric (row {cols.row(i)}: "
                            f"{levels[index[i]]!r})")
        v = parsed[index]
    else:
        raise DataError(f"{source}: column {name!r} is not numeric ({a.dtype} values)")
    bad = np.isinf(v) | (np.abs(np.nan_to_num(v)) > F32_MAX)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise value_error(source, name, cols.row(i) - 1, v[i])
    return v


_MONEY = re.compile(r"[$€£]?-?\d{1,3}(,\d{3})+(\.\d+)?|[$€£]-?\d+(\.\d+)?")


def parse_number(text: str) -> float:
    """A number written as text (also ``$7.25``, ``7,250``), or NaN."""
    try:
        return float(text)
    except ValueError:
        t = text.strip()
        return float(t.lstrip("$€£").replace(",", "")) if _MONEY.fullmatch(t) else np.nan


def text_share(cols: Columns, name: str, test: Any) -> tuple[float, list[str]]:
    """The share of a text column's values (gap tokens such as "?" left out) that pass ``test``
    (a number, an ISO date), and the most frequent others (up to 3)."""
    codes, levels = factorize(cols, name)
    counts = np.bincount(codes[codes >= 0], minlength=len(levels))
    ok = np.array([bool(test(lvl)) for lvl in levels], dtype=bool)
    token = np.array([lvl.strip().lower() in GAP_TOKENS for lvl in levels], dtype=bool)
    total = int(counts[~token].sum())
    words = [levels[k] for k in np.argsort(-counts, kind="stable") if not ok[k]][:3]
    return (float(counts[ok].sum()) / total if total else 0.0), words


def is_number(text: str) -> bool:
    return not np.isnan(parse_number(text))


def is_date(text: str) -> bool:
    return ISO_DATE.fullmatch(text.strip()) is not None


def as_datetime(cols: Columns, name: str, source: str, coerce: bool = False) -> np.ndarray:
    """A column of datetimes or ISO text as datetime64[s] (NaT for gaps); each distinct text
    value is parsed once.

    Args:
        coerce: text that is not a date is a gap (a date column with a few stray values),
            instead of an error naming its row.
    """
    a = cols.arrays[name]
    if a.dtype.kind == "M":
        return a.astype("datetime64[s]")
    codes, levels = factorize(cols, name)
    parsed = np.empty(len(levels) + 1, dtype="datetime64[s]")
    parsed[-1] = np.datetime64("NaT")
    bad = np.zeros(len(levels) + 1, dtype=bool)
    for k, text in enumerate(levels):
        try:
            parsed[k] = parse_utc(text)
        except ValueError:
            parsed[k], bad[k] = np.datetime64("NaT"), text.strip().lower() not in GAP_TOKENS
    index = np.where(codes < 0, len(levels), codes)
    if bad.any() and not coerce:
        i = int(np.flatnonzero(bad[index])[0]) if bad[index].any() else None
        if i is not None:
            raise DataError(f"{source}: column {name!r} holds dates, but row {cols.row(i)} is not one: "
                            f"{levels[index[i]]!r}")
    return parsed[index]


_OFFSET = re.compile(r"(.*?)(?:Z|([+-])(\d{2}):?(\d{2}))")


def parse_utc(text: str) -> np.datetime64:
    """ISO 8601 text as a datetime64[s]; a UTC offset (``+01:00``, ``Z``) is applied, so the
    instant is the one pyarrow and pandas read from the same text.

    Raises:
        ValueError: not an ISO date or date-time.
    """
    t = text.strip()
    m = _OFFSET.fullmatch(t) if len(t) > 10 else None  # "2024-01-01" alone has no offset
    if m is None:
        return np.datetime64(t.replace(" ", "T"), "s")
    local = np.datetime64(m.group(1).replace(" ", "T"), "s")
    if m.group(2) is None:
        return local
    shift = (int(m.group(3)) * 60 + int(m.group(4))) * 60
    return local - np.timedelta64(shift if m.group(2) == "+" else -shift, "s")


def date_parts(t: np.ndarray, parts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The numeric parts of datetime64[s] values (:func:`as_datetime`), (n, len(parts))
    float64, and which rows are missing (NaT)."""
    missing = np.isnat(t)
    days = t.astype("datetime64[D]")
    filled = np.where(missing, np.datetime64("1970-01-01", "D"), days)
    years = filled.astype("datetime64[Y]")
    make = {
        "year": lambda: years.astype(np.int64) + 1970.0,
        "month": lambda: (filled.astype("datetime64[M]").astype(np.int64) % 12) + 1.0,
        "dayofweek": lambda: (filled.astype(np.int64) + 3) % 7.0,  # 1970-01-01 was a Thursday (3)
        "dayofyear": lambda: (filled - years.astype("datetime64[D]")).astype(np.int64) + 1.0,
        "days": lambda: np.where(missing, 0, t.astype(np.int64)) / 86400.0,
        "hour": lambda: (np.where(missing, 0, t.astype(np.int64)) // 3600 % 24).astype(np.float64),
    }
    out = np.stack([np.asarray(make[p](), dtype=np.float64) for p in parts], axis=1) if parts else (
        np.zeros((len(t), 0)))
    return out, missing
