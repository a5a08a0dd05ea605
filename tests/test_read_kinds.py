"""The readers' contract with the column-role stage (issue 9): every column's kind, codes for
text, datetimes as ``datetime64[ns]``, missing cells kept per kind (the target's refused with
its row), DataFrames of every dtype, Parquet dictionary/date/timestamp columns, and the fast
CSV path kept for mixed files (numbers, text, dates, gaps).

Both file readers, ``nnfit.data.read.read_table`` (the fast one) and
``nnfit.data.columns.read_columns`` (the general one), must give the same columns.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import nnfit.data.read as ingest
from nnfit.data.columns import Columns, columns_from_frame, read_columns
from nnfit.data.read import read_table
from nnfit.errors import DataError

pd = pytest.importorskip("pandas")

READERS = {"fast": read_table,
           "general": lambda p, exclude=None, **kw: read_columns(p, exclude=exclude, **kw)}

MIXED = ("i,f,b,t,d,ts,y\n"
         "1,0.5,true,red,2020-01-02,2020-01-02 10:00:00,a\n"
         "2,,false,,2021-03-04,,b\n"
         "3,1.5,,blue,,2022-01-01 00:00:00,a\n"
         "4,2.5,true,red,2021-03-05,2022-01-02 00:00:00,b\n")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def assert_codes_match(cols: Columns) -> None:
    """Every text column has int32 codes whose levels give back its strings (None for -1)."""
    for name, (codes, levels) in cols.codes.items():
        assert cols.kinds[name] == "text" and codes.dtype == np.int32, name
        assert all(isinstance(v, str) for v in levels) and len(set(levels)) == len(levels), name
        expected = [None if c < 0 else levels[c] for c in codes]
        assert cols.arrays[name].dtype == object and cols.arrays[name].tolist() == expected, name


def assert_same_columns(fast: Columns, general: Columns) -> None:
    assert fast.names == general.names and fast.kinds == general.kinds
    assert fast.codes.keys() == general.codes.keys()
    for name, (codes, levels) in general.codes.items():
        assert fast.codes[name][1] == levels and np.array_equal(fast.codes[name][0], codes), name
    for name in general.names:
        a, b = fast.arrays[name], general.arrays[name]
        if b.dtype.kind in "iufb":
            np.testing.assert_array_equal(a, b.astype(a.dtype), err_msg=name)
        elif b.dtype.kind == "M":
            assert a.dtype == b.dtype == np.dtype("datetime64[ns]") and np.array_equal(a, b, equal_nan=True)
        else:
            assert a.tolist() == b.tolist(), name


# ------------------------------------------------------------------ kinds, codes, missing cells
@pytest.mark.parametrize("reader", list(READERS))
def test_csv_columns_have_kinds_codes_and_keep_missing_cells_per_kind(tmp_path, reader):
    cols = READERS[reader](write(tmp_path / "m.csv", MIXED), exclude="y", allow_missing=True)
    assert cols.kinds == {"i": "int", "f": "float", "b": "bool", "t": "text", "d": "datetime",
                          "ts": "datetime", "y": "text"}
    assert set(cols.codes) == {"t", "y"}
    assert cols.codes["t"][0].tolist() == [0, -1, 1, 0] and cols.codes["t"][1] == ["red", "blue"]
    assert_codes_match(cols)
    assert cols.arrays["t"].tolist() == ["red", None, "blue", "red"]
    np.testing.assert_array_equal(cols.arrays["f"], [0.5, np.nan, 1.5, 2.5])
    np.testing.assert_array_equal(cols.arrays["b"], [1, 0, np.nan, 1])
    assert cols.arrays["d"].dtype == cols.arrays["ts"].dtype == np.dtype("datetime64[ns]")
    assert cols.arrays["d"].astype(str).tolist()[:3] == ["2020-01-02T00:00:00.000000000",
                                                         "2021-03-04T00:00:00.000000000", "NaT"]
    assert np.isnat(cols.arrays["ts"]).tolist() == [False, True, False, False]
    assert cols.arrays["ts"][0] == np.datetime64("2020-01-02T10:00:00")
    if reader == "fast":  # numbers of every kind in the one float32 block, NaN in its gaps
        assert cols.block.dtype == np.float32 and cols.block_names == ["i", "f", "b"]
        assert np.isnan(cols.block).sum(axis=0).tolist() == [0, 1, 1]


@pytest.mark.parametrize("reader", list(READERS))
def test_a_strict_read_counts_the_missing_cells_of_every_kind(tmp_path, reader):
    with pytest.raises(DataError, match=r"m.csv: missing values in columns: f \(1\), b \(1\), t \(1\), "
                                        r"d \(1\), ts \(1\)$"):
        READERS[reader](write(tmp_path / "m.csv", MIXED), exclude="y")


def _target_sources(tmp_path: Path) -> dict:
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "y": ["x", None, "z", None]})
    write(tmp_path / "t.csv", "a,y\n1,x\n2,\n3,z\n4,\n")
    frame.to_parquet(tmp_path / "t.parquet")
    return {"fast csv": lambda: read_table(tmp_path / "t.csv", exclude="y", allow_missing=True),
            "general csv": lambda: read_columns(tmp_path / "t.csv", exclude="y", allow_missing=True),
            "fast parquet": lambda: read_table(tmp_path / "t.parquet", exclude="y", allow_missing=True),
            "general parquet": lambda: read_columns(tmp_path / "t.parquet", exclude="y", allow_missing=True),
            "frame": lambda: columns_from_frame(frame, "t.csv", exclude="y", allow_missing=True)}


@pytest.mark.parametrize("source", ["fast csv", "general csv", "fast parquet", "general parquet", "frame"])
def test_a_missing_target_is_refused_naming_its_first_row(tmp_path, source):
    with pytest.raises(DataError, match=r"^\S*t\.(csv|parquet): target column 'y' is missing on row 2 "
                                        r"\(2 rows in all\)$"):
        _target_sources(tmp_path)[source]()


@pytest.mark.parametrize("reader", list(READERS))
def test_a_missing_numeric_target_is_refused_in_one_line(tmp_path, reader):
    p = write(tmp_path / "r.csv", "a,price\n" + "".join(f"{i},{i * 10}\n" for i in range(6)) + "7,\n")
    with pytest.raises(DataError, match=r"r.csv: target column 'price' is missing on row 7 \(1 row in all\)"):
        READERS[reader](p, exclude="price", allow_missing=True)


# --------------------------------------------------------------------------------- datetimes
@pytest.mark.parametrize("reader", list(READERS))
def test_iso_dates_are_datetimes_and_other_text_stays_text(tmp_path, reader):
    p = write(tmp_path / "d.csv",
              "day,stamp,zoned,us,bad\n"
              "2020-01-02,2020-01-02 10:30:00,2020-01-02T10:00:00+02:00,01/02/2020,2020-13-45\n"
              "2020-02-29,2020-02-29 00:00:01,2020-01-03T00:00:00Z,02/02/2020,2020-01-01\n")
    cols = READERS[reader](p, allow_missing=True)
    assert cols.kinds == {"day": "datetime", "stamp": "datetime", "zoned": "datetime", "us": "text",
                          "bad": "text"}
    assert cols.arrays["zoned"].tolist() == [np.datetime64("2020-01-02T08:00:00", "ns").item(),
                                             np.datetime64("2020-01-03T00:00:00", "ns").item()]  # as UTC
    assert cols.arrays["stamp"][0] == np.datetime64("2020-01-02T10:30:00")
    assert cols.arrays["bad"].tolist() == ["2020-13-45", "2020-01-01"]
    assert_codes_match(cols)


@pytest.mark.parametrize("reader", list(READERS))
def test_a_date_beyond_nanoseconds_stays_text(tmp_path, reader):
    cols = READERS[reader](write(tmp_path / "old.csv", "born,x\n1500-01-01,1\n2000-01-01,2\n"))
    assert cols.kinds["born"] == "text" and cols.arrays["born"].tolist() == ["1500-01-01", "2000-01-01"]
    assert_codes_match(cols)


# ---------------------------------------------------------------------------------- Parquet
def test_parquet_dictionary_date_and_timestamp_columns(tmp_path):
    table = pa.table({
        "cat": pa.array(["x", "y", None, "x"]).dictionary_encode(),
        "day": pa.array([dt.date(2020, 1, 1), None, dt.date(2020, 1, 3), dt.date(2262, 1, 1)]),
        "zoned": pa.array([0, 3_600_000_000, None, 7_200_000_000], pa.timestamp("us", tz="Europe/Paris")),
        "ms": pa.array([0, 1, 2, None], pa.timestamp("ms")),
        "n": [1.0, None, 3.0, 4.0],
        "y": [0, 1, 0, 1],
    })
    pq.write_table(table, tmp_path / "p.parquet", row_group_size=2)  # two dictionaries per column
    fast = read_table(tmp_path / "p.parquet", exclude="y", allow_missing=True)
    general = read_columns(tmp_path / "p.parquet", exclude="y", allow_missing=True)
    assert_same_columns(fast, general)
    assert fast.kinds == {"cat": "text", "day": "datetime", "zoned": "datetime", "ms": "datetime",
                          "n": "float", "y": "int"}
    assert fast.codes["cat"][0].tolist() == [0, 1, -1, 0] and fast.codes["cat"][1] == ["x", "y"]
    assert_codes_match(fast)
    assert fast.arrays["zoned"].astype(str).tolist() == ["1970-01-01T00:00:00.000000000",
                                                         "1970-01-01T01:00:00.000000000", "NaT",
                                                         "1970-01-01T02:00:00.000000000"]  # UTC
    assert fast.arrays["day"][3] == np.datetime64("2262-01-01") and np.isnat(fast.arrays["day"][1])
    assert fast.block_names == ["n"] and fast.arrays["y"].dtype == np.int64


# ---------------------------------------------------------------------------------- DataFrames
def test_frames_of_every_dtype(tmp_path):
    df = pd.DataFrame({
        "obj": pd.Series(["a", None, np.nan, "b"], dtype=object),
        "string": pd.array(["a", pd.NA, "c", "a"], dtype="string"),
        "str": pd.Series(["a", None, "c", "a"], dtype=pd.StringDtype(na_value=np.nan)),
        "cat": pd.Categorical(["u", "v", None, "u"]),
        "bool": [True, False, True, True],
        "boolean": pd.array([True, None, False, True], dtype="boolean"),
        "int": np.array([1, 2, 3, 4], dtype=np.int32),
        "Int64": pd.array([1, None, 3, 4], dtype="Int64"),
        "Float64": pd.array([1.5, None, 3.0, 4.0], dtype="Float64"),
        "float": [1.0, np.nan, 3.0, 4.0],
        "when": pd.to_datetime(["2020-01-01", None, "2020-01-03", "2020-01-04"]),
        "zoned": pd.to_datetime(["2020-01-01 12:00", None, "2020-06-01 12:00", "2020-01-04 00:00"]
                                ).tz_localize("Europe/Paris"),
        "mixed": pd.Series(["a", 3, None, "b"], dtype=object),
        "y": [0, 1, 0, 1],
    })
    cols = columns_from_frame(df, "frame", allow_missing=True, exclude="y")
    assert cols.kinds == {"obj": "text", "string": "text", "str": "text", "cat": "text", "bool": "bool",
                          "boolean": "bool", "int": "int", "Int64": "int", "Float64": "float",
                          "float": "float", "when": "datetime", "zoned": "datetime", "mixed": "text",
                          "y": "int"}
    for name in ("obj", "string", "str"):
        assert cols.arrays[name].tolist()[:2] == ["a", None], name
    assert set(cols.codes) == {"obj", "string", "str", "cat"}
    assert_codes_match(cols)
    assert cols.arrays["bool"].dtype == bool and cols.arrays["int"].dtype == np.int32
    for name, values in (("boolean", [1, np.nan, 0, 1]), ("Int64", [1, np.nan, 3, 4]),
                         ("Float64", [1.5, np.nan, 3, 4])):
        assert cols.arrays[name].dtype == np.float64
        np.testing.assert_array_equal(cols.arrays[name], values, err_msg=name)
    assert cols.arrays["when"].dtype == cols.arrays["zoned"].dtype == np.dtype("datetime64[ns]")
    assert cols.arrays["zoned"][0] == np.datetime64("2020-01-01T11:00")  # UTC, winter
    assert cols.arrays["zoned"][2] == np.datetime64("2020-06-01T10:00")  # UTC, summer
    assert np.isnat(cols.arrays["when"][1]) and np.isnat(cols.arrays["zoned"][1])
    assert cols.arrays["mixed"].tolist() == ["a", 3, None, "b"] and "mixed" not in cols.codes
    with pytest.raises(DataError, match=r"frame: missing values in columns: obj \(2\), string \(1\), "
                                        r"str \(1\), cat \(1\), boolean \(1\), Int64 \(1\), Float64 \(1\), "
                                        r"float \(1\), when \(1\), zoned \(1\), mixed \(1\)$"):
        columns_from_frame(df, "frame", exclude="y")


def test_a_category_keeps_its_own_codes_and_levels_as_text():
    cat = pd.Categorical(["b", "a", None, "b", 10], categories=["b", "a", "unused", 10])
    cols = columns_from_frame(pd.DataFrame({"c": cat, "y": range(5)}), allow_missing=True)
    codes, levels = cols.codes["c"]
    assert levels == ["b", "a", "unused", "10"]  # the categorical's order, not first appearance
    assert codes.tolist() == [0, 1, -1, 0, 3] and codes.dtype == np.int32
    assert cols.arrays["c"].tolist() == ["b", "a", None, "b", "10"]


# ------------------------------------------------------------------------- the fast CSV path
def mixed_csv(path: Path, rows: int, seed: int = 0) -> Path:
    """20 numeric columns (every fourth of integers), 5 text columns from 3 levels to a
    distinct id per row, a date column, and some cells missing in numbers and text."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list[str]] = {}
    for i in range(20):
        v = rng.integers(0, 1000, rows) if i % 4 == 0 else np.round(rng.normal(size=rows), 4)
        cols[f"n{i}"] = list(v.astype(str))
    for name, levels in (("color", 3), ("city", 100), ("code", 500), ("word", 5000)):
        cols[name] = [f"{name}{j}" for j in rng.integers(0, levels, rows)]
    cols["ident"] = [f"id{j}" for j in rng.permutation(rows)]
    cols["day"] = [str(np.datetime64("2020-01-01") + int(j)) for j in rng.integers(0, 900, rows)]
    for name in ("n1", "n5", "city", "word", "day"):
        for j in rng.choice(rows, rows // 200, replace=False):
            cols[name][j] = ""
    lines = [",".join(cols)] + [",".join(r) for r in zip(*cols.values(), strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_mixed_csv_takes_the_fast_path(tmp_path, monkeypatch):
    p = mixed_csv(tmp_path / "mixed.csv", 20_000)
    general = read_columns(p, allow_missing=True)
    monkeypatch.setattr(ingest, "CHUNK_BYTES", 256 << 10)  # several pieces, parsed on threads

    def no_fallback(*args, **kwargs):
        raise AssertionError("fell back to the general reader")

    monkeypatch.setattr(ingest, "read_columns", no_fallback)
    fast = read_table(p, allow_missing=True)
    assert fast.block.shape == (20_000, 20) and fast.block.flags.c_contiguous
    assert fast.block_names == [f"n{i}" for i in range(20)]
    assert set(fast.codes) == {"color", "city", "code", "word", "ident"} and fast.kinds["day"] == "datetime"
    assert fast.kinds["n0"] == "int" and fast.kinds["n1"] == "float"
    assert_same_columns(fast, general)
    assert_codes_match(fast)
    assert len(fast.codes["ident"][1]) == 20_000 and (fast.codes["city"][0] == -1).sum() == 100


@pytest.mark.parametrize("chunk", [4, 9, 13, 32, 60, 1 << 20])
def test_pieces_of_any_size_read_like_the_general_reader(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(ingest, "CHUNK_BYTES", chunk)
    for name, text in (("end.csv", MIXED), ("open.csv", MIXED.rstrip("\n"))):  # no final line end
        p = write(tmp_path / name, text)
        assert_same_columns(read_table(p, exclude="y", allow_missing=True),
                            read_columns(p, exclude="y", allow_missing=True))
    # 60 bytes after the header: a piece of 60 ends exactly where the file does.
    rows = "".join(f"{i:05d},{i:03d}\n" for i in range(5)) + "12,123456\n"
    p = write(tmp_path / "exact.csv", "a,b\n" + rows)
    assert read_table(p).block[:, 1].tolist() == [*range(5), 123456.0]


def test_values_outgrowing_the_head_are_read_again_wider(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "CHUNK_BYTES", 64 << 10)
    fallback = []
    monkeypatch.setattr(ingest, "read_columns", lambda *a, **k: fallback.append(1))
    head = "".join(f"{i},2020-01-{i % 28 + 1:02d},{i % 7},w{i % 5}\n" for i in range(20_000))  # > 64 KB
    p = write(tmp_path / "w.csv", "n,day,k,t\n" + head + "2.5,2020-01-02 10:00:00,NA,NA\n")
    cols = read_table(p, allow_missing=True)
    assert not fallback and cols.block is not None
    assert cols.kinds == {"n": "float", "day": "datetime", "k": "int", "t": "text"}
    assert cols.block[-1].tolist()[0] == 2.5 and np.isnan(cols.arrays["k"][-1])
    assert cols.arrays["day"][-1] == np.datetime64("2020-01-02T10:00:00")
    assert cols.arrays["t"][-1] is None and "NA" not in cols.codes["t"][1]  # "NA": a missing cell
    with pytest.raises(DataError, match=r"w.csv: missing values in columns: k \(1\), t \(1\)$"):
        read_table(p)


def test_numbers_at_the_float32_limit_are_rounded_like_the_general_reader(tmp_path):
    values = ["0.1", "16777217", "3.4028234e38", "1.17549435e-38", "-2.5e-45", "123456789.123"]
    p = write(tmp_path / "f.csv", "a,b\n" + "".join(f"{v},1\n" for v in values))
    np.testing.assert_array_equal(read_table(p).arrays["a"],
                                  read_columns(p).arrays["a"].astype(np.float32))


def test_reading_files_never_imports_pandas(tmp_path):
    write(tmp_path / "m.csv", MIXED)
    pq.write_table(pa.table({"c": pa.array(["x", None]).dictionary_encode(),
                             "d": pa.array([dt.datetime(2020, 1, 1), None])}), tmp_path / "p.parquet")
    # (pyarrow.parquet.read_table, which the general reader uses for Parquet, imports it.)
    code = ("import sys\nfrom nnfit.data.read import read_table\n"
            "from nnfit.data.columns import read_columns\n"
            f"read_columns({str(tmp_path / 'm.csv')!r}, allow_missing=True)\n"
            f"for p in ({str(tmp_path / 'm.csv')!r}, {str(tmp_path / 'p.parquet')!r}):\n"
            "    read_table(p, allow_missing=True)\n"
            "assert 'pandas' not in sys.modules, 'pandas was imported'\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]


def test_quoted_line_breaks_across_pieces_read_as_pandas_does(tmp_path, monkeypatch):
    """A piece that ends inside a quoted value sends the file to the general reader, which must
    not split that value into rows (pyarrow does, silently, without newlines_in_values)."""
    import pandas as pd

    from nnfit.data import read as reader

    monkeypatch.setattr(reader, "CHUNK_BYTES", 1 << 16)  # pieces end inside quotes; pyarrow blocks: 1 MB
    lines = ["id,txt,v"] + [f'{i},"{"line one" + chr(10) + "part" if i % 3 == 0 else "plain"} {i}",{i * 0.5}'
                            for i in range(80_000)]
    p = tmp_path / "q.csv"
    p.write_text("\n".join(lines) + "\n")
    want = pd.read_csv(p)
    cols = reader.read_table(p, allow_missing=True)
    assert len(cols) == len(want) == 80_000 and cols.kind("id") == "int"
    np.testing.assert_array_equal(cols.arrays["id"], want["id"].to_numpy())
    assert list(cols.arrays["txt"]) == list(want["txt"])
    np.testing.assert_array_equal(cols.arrays["v"], want["v"].to_numpy(np.float32))
