"""nnfit.data.read.read_table: the lean file reader equals the general one, in one float32 block."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import nnfit.data.read as ingest
from nnfit.data.columns import feature_matrix, read_columns
from nnfit.errors import DataError

CSV = "a,b,flag,y\n1,0.5,true,cat\n2,-1.25,false,dog\n3,2e3,true,cat\n4,7,false,bird\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def assert_same(fast, slow) -> None:
    assert fast.names == slow.names
    for name in slow.names:
        a, b = fast.arrays[name], slow.arrays[name]
        if b.dtype.kind in "iufb" and name in (fast.block_names or []):
            np.testing.assert_array_equal(a, b.astype(np.float32))
        else:
            assert a.tolist() == b.tolist(), name


@pytest.fixture(params=[1 << 25, 23])  # one piece, and pieces of a few bytes (many boundaries)
def chunk(request, monkeypatch):
    monkeypatch.setattr(ingest, "CHUNK_BYTES", request.param)
    return request.param


def test_csv_equals_general_reader_with_numeric_block(tmp_path, chunk):
    p = write(tmp_path / "d.csv", CSV)
    fast, slow = ingest.read_table(p, exclude="y"), read_columns(p)
    assert_same(fast, slow)
    assert fast.block.dtype == np.float32 and fast.block_names == ["a", "b", "flag"]
    assert fast.arrays["y"].tolist() == ["cat", "dog", "cat", "bird"]
    x = feature_matrix(fast, ["a", "b", "flag"])
    assert np.shares_memory(x, fast.block)  # no copy for the features


def test_numeric_target_is_kept_out_of_the_block_with_its_type(tmp_path, chunk):
    p = write(tmp_path / "r.csv", "a,b,y\n1,2,10\n3,4,20\n5,6,30\n")
    cols = ingest.read_table(p, exclude="y")
    assert cols.block_names == ["a", "b"]
    assert cols.arrays["y"].dtype.kind == "i" and cols.arrays["y"].tolist() == [10, 20, 30]


def test_no_trailing_newline_tsv_and_row_order(tmp_path, chunk):
    rows = "\n".join(f"{i}\t{i * 0.5}" for i in range(50))
    p = write(tmp_path / "d.tsv", "i\tv\n" + rows)
    cols = ingest.read_table(p)
    assert cols.block[:, 0].tolist() == list(range(50))
    assert cols.block[:, 1].tolist() == [i * 0.5 for i in range(50)]


def test_parquet_equals_general_reader(tmp_path):
    table = pa.table({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5], "y": ["x", "y", "x"]})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=2)
    fast = ingest.read_table(tmp_path / "d.parquet", exclude="y")
    assert_same(fast, read_columns(tmp_path / "d.parquet"))
    assert fast.block.shape == (3, 2)


@pytest.mark.parametrize("text, message", [
    ("a,b\n1,\n,2\n3,nan\n", "missing values in columns: a (1), b (2)"),
    ("a,b\n", "no data rows"),
    ("a,a\n1,2\n", "duplicate column names: a"),
])
def test_problems_are_named_like_the_general_reader(tmp_path, chunk, text, message):
    p = write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ingest.read_table(p)


def test_a_column_that_turns_to_text_later_falls_back(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "CHUNK_BYTES", 4096)
    # Numeric for well past the 64 KB the types are taken from, then text.
    rows = "".join(f"{i},{i % 2}\n" for i in range(20_000))
    p = write(tmp_path / "m.csv", "a,y\n" + rows + "oops,1\n")
    cols = ingest.read_table(p, exclude="y")  # the general reader took over
    assert cols.block is None
    with pytest.raises(DataError, match=r"column 'a' is not numeric \(row 20001: 'oops'\)"):
        feature_matrix(cols, ["a"])


def test_a_line_longer_than_the_buffer(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "CHUNK_BYTES", 8)
    p = write(tmp_path / "w.csv", "long_name_a,long_name_b\n1234567,7654321\n1,2\n")
    cols = ingest.read_table(p)
    assert cols.block.tolist() == [[1234567.0, 7654321.0], [1.0, 2.0]]


def test_take_keeps_one_block(tmp_path):
    cols = ingest.read_table(write(tmp_path / "d.csv", CSV), exclude="y")
    part = cols.take(np.array([3, 1]))
    assert part.block.tolist() == [[4.0, 7.0, 0.0], [2.0, -1.25, 0.0]]
    assert part.arrays["y"].tolist() == ["bird", "dog"]
    assert np.shares_memory(part.arrays["a"], part.block)
