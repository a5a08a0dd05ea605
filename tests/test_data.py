"""Tests for reading tables (nnfit.tables), splitting and batching (nnfit.data) and label
handling (nnfit.tasks): every number checked, every error message asserted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from nnfit.data import LoaderData, TensorData, split_indices
from nnfit.data.columns import Columns, feature_matrix, read_columns
from nnfit.data.inputs import raw_inputs
from nnfit.data.preprocess import Preprocessor
from nnfit.errors import DataError
from nnfit.tasks import LabelMap, infer_task


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ read_columns
def test_read_csv_types_and_order(tmp_path: Path) -> None:
    df = pd.DataFrame({"b": [1.5, -2.0, 3.25], "a": [1, 2, 3], "label": ["x", "y", "x"]})
    df.to_csv(tmp_path / "t.csv", index=False)
    cols = read_columns(tmp_path / "t.csv")
    assert cols.names == ["b", "a", "label"] and len(cols) == 3
    assert cols.source == str(tmp_path / "t.csv")
    np.testing.assert_array_equal(cols.arrays["b"], [1.5, -2.0, 3.25])
    assert cols.arrays["a"].dtype == np.int64
    assert cols.arrays["label"].tolist() == ["x", "y", "x"]


def test_read_tsv(tmp_path: Path) -> None:
    cols = read_columns(write(tmp_path / "t.tsv", "a\tb\n1\t2.5\n3\t-4\n"))
    assert cols.names == ["a", "b"]
    np.testing.assert_array_equal(cols.arrays["b"], [2.5, -4.0])


def test_read_parquet(tmp_path: Path) -> None:
    df = pd.DataFrame({"f": np.arange(4, dtype=np.float32), "flag": [True, False, True, True],
                       "s": list("abcd")})
    df.to_parquet(tmp_path / "t.parquet")
    cols = read_columns(tmp_path / "t.parquet")
    assert cols.names == ["f", "flag", "s"]
    np.testing.assert_array_equal(cols.arrays["f"], [0, 1, 2, 3])
    assert cols.arrays["flag"].dtype == bool and cols.arrays["s"].tolist() == list("abcd")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("empty.csv", "", "file is empty"),
        ("header.csv", "a,b\n", "no data rows"),
        ("ragged.csv", "a,b\n1,2\n3\n", "cannot parse: row 2 has 1 field, the header has 2"),
        ("dupes.csv", "a,b,a,b,c\n1,2,3,4,5\n", "duplicate column names: a, b"),
        ("table.xlsx", "a,b\n1,2\n", "unsupported file type '.xlsx' (use .csv, .tsv or .parquet)"),
    ],
)
def test_read_errors(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = write(tmp_path / name, text)
    with pytest.raises(DataError) as e:
        read_columns(path)
    assert str(e.value).startswith(f"{path}: {message}")


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="^.*nope.csv: file not found$"):
        read_columns(tmp_path / "nope.csv")


def test_missing_values_counted_per_column(tmp_path: Path) -> None:
    # b: two empty cells, a: one, c (text): one empty cell, d: complete; "NaN" counts too.
    path = write(tmp_path / "m.csv", "a,b,c,d\n1,,x,1\n,,y,2\n3,NaN,,3\n4,5,z,4\n")
    with pytest.raises(DataError) as e:
        read_columns(path)
    assert str(e.value) == f"{path}: missing values in columns: a (1), b (3), c (1)"


def test_missing_values_parquet(tmp_path: Path) -> None:
    pd.DataFrame({"a": [1.0, None, np.nan], "s": ["x", None, "y"]}).to_parquet(tmp_path / "m.pq")
    with pytest.raises(DataError, match=r"missing values in columns: a \(2\), s \(1\)$"):
        read_columns(tmp_path / "m.pq")


def test_feature_matrix_numbers_and_errors(tmp_path: Path) -> None:
    cols = read_columns(write(tmp_path / "f.csv", "a,b,s,g\n1,2.5,x,inf\n3,4,7,1\n"))
    np.testing.assert_array_equal(feature_matrix(cols, ["b", "a"]), [[2.5, 1], [4, 3]])
    assert feature_matrix(cols, ["a"]).dtype == np.float32
    with pytest.raises(DataError) as e:
        feature_matrix(cols, ["a", "s"])
    assert str(e.value) == f"{tmp_path / 'f.csv'}: column 's' is not numeric (row 1: 'x')"
    with pytest.raises(DataError) as e:
        feature_matrix(cols, ["g"])
    assert str(e.value) == f"{tmp_path / 'f.csv'}: column 'g' has a non-finite value (row 1: inf)"
    with pytest.raises(DataError, match="feature column 'zz' not found"):
        feature_matrix(cols, ["zz"])


def test_non_numeric_row_is_one_based() -> None:
    cols = Columns("frame", {"v": np.array([1.0, 2.0, "oops", 4.0], dtype=object)})
    with pytest.raises(DataError, match=r"^frame: column 'v' is not numeric \(row 3: 'oops'\)$"):
        feature_matrix(cols, ["v"])


# ------------------------------------------------------------------------------ split_indices
def test_split_sizes_disjoint_cover() -> None:
    kept, held = split_indices(50, 0.2, seed=3)
    assert (len(kept), len(held)) == (40, 10)
    assert np.intersect1d(kept, held).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([kept, held])), np.arange(50))
    assert np.all(np.diff(kept) > 0) and np.all(np.diff(held) > 0)


def test_split_stratified_proportions() -> None:
    y = np.array(["a"] * 30 + ["b"] * 13 + ["c"] * 7)
    kept, held = split_indices(len(y), 0.3, seed=1, stratify=y)
    np.testing.assert_array_equal(np.sort(np.concatenate([kept, held])), np.arange(len(y)))
    for label, count in (("a", 30), ("b", 13), ("c", 7)):
        assert abs(int((y[held] == label).sum()) - 0.3 * count) <= 1


def test_split_deterministic_per_seed() -> None:
    y = np.arange(40) % 3
    first = split_indices(40, 0.25, seed=7, stratify=y)
    again = split_indices(40, 0.25, seed=7, stratify=y)
    other = split_indices(40, 0.25, seed=8, stratify=y)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize("seed", range(12))
def test_split_keeps_every_class(seed: int) -> None:
    # Rare classes round to zero held-out rows; the fallback must not take a singleton class.
    y = np.array(["a", "a", "b"])
    kept, held = split_indices(3, 0.2, seed=seed, stratify=y)
    assert len(held) == 1 and set(y[kept]) == {"a", "b"}
    y = np.array([0] * 9 + [1, 2])
    kept, held = split_indices(len(y), 0.5, seed=seed, stratify=y)
    assert set(y[kept]) == {0, 1, 2}


def test_split_nothing_to_hold_out() -> None:
    kept, held = split_indices(5, 0.0, seed=0)
    np.testing.assert_array_equal(kept, np.arange(5))
    assert held.size == 0


# ------------------------------------------------------------------------------ Preprocessor
def test_statistics_come_from_fitted_rows_only() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(loc=[5.0, -2.0, 0.0], scale=[3.0, 0.5, 1.0], size=(60, 3))
    x[40:] += 100.0  # the "validation" rows differ wildly: any leak shows in the mean
    train = np.arange(40)
    pre = Preprocessor.fit(raw_inputs(x).take(train))
    s = pre.inputs[0]
    x32 = x.astype(np.float32).astype(np.float64)  # features are float32 before the statistics
    np.testing.assert_allclose(s.mean, x32[train].mean(0), rtol=1e-9)
    np.testing.assert_allclose(s.std, x32[train].std(0), rtol=1e-9)
    assert not np.allclose(s.mean, x32.mean(0))
    (z,) = pre.transform(raw_inputs(x[:40]))
    np.testing.assert_allclose(z.mean(0).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(0, unbiased=False).numpy(), 1.0, atol=1e-5)


def test_constant_column_has_unit_std() -> None:
    x = np.c_[np.full(10, 4.0), np.arange(10.0)]
    pre = Preprocessor.fit(raw_inputs(x))
    assert pre.inputs[0].std[0] == 1.0
    (z,) = pre.transform(raw_inputs(x))
    np.testing.assert_array_equal(z[:, 0].numpy(), 0.0)


def test_reordered_frame_columns_are_put_back_in_order() -> None:
    rng = np.random.default_rng(1)
    df = pd.DataFrame(rng.normal(size=(20, 4)), columns=list("abcd"))
    pre = Preprocessor.fit(raw_inputs(df))
    (want,) = pre.transform(raw_inputs(df))
    (got,) = pre.transform(raw_inputs(df[["c", "a", "d", "b"]]))
    assert torch.equal(got, want)


def test_wrong_feature_count_message() -> None:
    df = pd.DataFrame(np.zeros((5, 4)), columns=list("abcd"))
    pre = Preprocessor.fit(raw_inputs(df))
    with pytest.raises(DataError) as e:
        pre.transform(raw_inputs(df.assign(e=1.0)), "new data")
    assert str(e.value) == "new data: expected 4 features [a, b, c, d], got 5 [a, b, c, d, e]; unexpected: e"
    pre = Preprocessor.fit(raw_inputs(np.zeros((5, 4))))
    with pytest.raises(DataError, match=r"^input: expected 4 features \[x0, x1, x2, x3\], got 5"):
        pre.transform(raw_inputs(np.zeros((3, 5))))
    with pytest.raises(DataError, match="expected inputs"):
        pre.transform(raw_inputs({"x": np.zeros((3, 4))}))


def test_int64_tensors_stay_int64_and_unscaled() -> None:
    ids = torch.randint(0, 50, (30, 2))
    num = torch.randn(30, 3) * 4 + 7
    pre = Preprocessor.fit(raw_inputs({"num": num, "ids": ids}))
    assert [(s.name, s.dtype, s.mean is None) for s in pre.inputs] == [
        ("num", "float32", False), ("ids", "int64", True)]
    out = pre.transform(raw_inputs({"num": num, "ids": ids}))
    assert out["ids"].dtype == torch.int64 and torch.equal(out["ids"], ids)
    assert out["num"].dtype == torch.float32
    torch.testing.assert_close(out["num"].mean(0), torch.zeros(3), atol=1e-5, rtol=0)


def test_preprocessor_json_round_trip() -> None:
    rng = np.random.default_rng(2)
    df = pd.DataFrame(rng.normal(size=(15, 3)), columns=["u", "v", "w"])
    pre = Preprocessor.fit(raw_inputs(df))
    back = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert back == pre
    assert torch.equal(back.transform(raw_inputs(df))[0], pre.transform(raw_inputs(df))[0])


def test_non_finite_inputs_rejected() -> None:
    x = np.ones((4, 3))
    x[2, 1] = np.inf
    with pytest.raises(DataError, match="^input: non-finite value at row 3, feature 1$"):
        raw_inputs(x)
    with pytest.raises(DataError, match="^input: non-finite value at row 3, feature 1$"):
        raw_inputs(torch.from_numpy(x))


# ------------------------------------------------------------------------------ TensorData
def test_tensor_batches_in_order() -> None:
    x, y = torch.arange(20.0).reshape(10, 2), torch.arange(10)
    batches = list(TensorData(x, y).batches(4))
    assert [t.tolist() for _, t in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert torch.equal(batches[1][0][0], x[4:8])


def test_tensor_batches_shuffle_is_randperm() -> None:
    x, y = torch.arange(11.0).unsqueeze(1) * 10, torch.arange(11)
    g = torch.Generator().manual_seed(5)
    got = list(TensorData(x, y).batches(3, shuffle=True, generator=g))
    perm = torch.randperm(11, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.cat([t for _, t in got]), perm)
    assert torch.equal(torch.cat([i[0] for i, _ in got]), x[perm])
    assert [len(t) for _, t in got] == [3, 3, 3, 2]


def test_drop_single_trailing_batch() -> None:
    d = TensorData(torch.zeros(9, 2), torch.arange(9))
    assert [len(t) for _, t in d.batches(4, drop_single=True)] == [4, 4]
    assert [len(t) for _, t in d.batches(4)] == [4, 4, 1]
    g = torch.Generator().manual_seed(0)
    assert [len(t) for _, t in d.batches(4, shuffle=True, generator=g, drop_single=True)] == [4, 4]
    assert [len(t) for _, t in d.batches(3, drop_single=True)] == [3, 3, 3]


def test_dict_inputs_batches() -> None:
    d = TensorData({"a": torch.arange(6.0), "b": torch.arange(6) * 2}, torch.arange(6))
    (inputs, target), *_ = d.batches(4)
    assert set(inputs) == {"a", "b"} and inputs["b"].tolist() == [0, 2, 4, 6]
    assert target.tolist() == [0, 1, 2, 3] and len(d) == 6
    sub = d.subset([5, 0])
    assert sub.inputs["a"].tolist() == [5.0, 0.0] and sub.target.tolist() == [5, 0]


def test_tensor_data_length_mismatch() -> None:
    with pytest.raises(DataError, match=r"different numbers of rows: \[4, 5\]"):
        TensorData(torch.zeros(5, 2), torch.zeros(4))


def test_loader_data_over_dataset_and_loader() -> None:
    x, y = torch.arange(14.0).reshape(7, 2), torch.arange(7)
    ds = TensorDataset(x, y)
    src = LoaderData(ds)
    assert src.length == 7 and src.num_batches(3) == 3
    batches = list(src.batches(3))
    assert [t.tolist() for _, t in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    assert torch.equal(batches[0][0][0], x[:3])
    shuffled = list(src.batches(7, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert sorted(shuffled[0][1].tolist()) == list(range(7))
    # A DataLoader keeps its own batching: the batch size asked for is ignored.
    loader = LoaderData(DataLoader(ds, batch_size=2))
    assert loader.length == 7 and loader.num_batches(100) == 4
    assert [t.tolist() for _, t in loader.batches(100)] == [[0, 1], [2, 3], [4, 5], [6]]
    (inputs, target), *_ = LoaderData(TensorDataset(x)).batches(4)
    assert target is None and torch.equal(inputs[0], x[:4])


# ------------------------------------------------------------------------------ tasks, labels
@pytest.mark.parametrize(
    ("y", "task"),
    [
        (np.array(["a", "b", "a"]), "binary"),
        (np.array(["a", "b", "c"], dtype=object), "multiclass"),
        (np.array([True, False, True]), "binary"),
        (np.array([3, 7, 3, 7]), "binary"),
        (np.arange(20) % 20, "multiclass"),
        (np.arange(21), "regression"),
        (np.array([0.5, 1.25, 3.0]), "regression"),
        (np.array([0.0, 1.0, 1.0, 0.0]), "binary"),
        (np.zeros((5, 2)), "regression"),
    ],
)
def test_infer_task(y: np.ndarray, task: str) -> None:
    assert infer_task(y) == task


@pytest.mark.parametrize(
    ("y", "classes", "dtype_kind"),
    [
        (np.array([7, 3, 7, 3, 3]), (3, 7), "i"),
        (np.array(["dog", "cat", "bird", "cat"]), ("bird", "cat", "dog"), "U"),
        (np.array([True, False, False]), (False, True), "b"),
    ],
)
def test_label_map_round_trip(y: np.ndarray, classes: tuple, dtype_kind: str) -> None:
    lm = LabelMap.fit(y)
    assert lm.classes == classes
    assert json.loads(json.dumps(list(lm.classes))) == list(classes)  # plain Python values
    idx = lm.encode(y)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, [classes.index(v) for v in y.tolist()])
    back = lm.decode(idx)
    assert back.dtype.kind == dtype_kind
    np.testing.assert_array_equal(back, y)


def test_label_map_unseen_label_message() -> None:
    lm = LabelMap.fit(np.array(["cat", "dog"]))
    with pytest.raises(DataError) as e:
        lm.encode(np.array(["dog", "fish", "cow", "fish"]), "test target")
    assert str(e.value) == ("test target has labels unseen at training: 'fish', 'cow', first at row 2 "
                            "(known: 'cat', 'dog')")


def test_label_map_matches_text_of_int_labels() -> None:
    lm = LabelMap.fit(np.array([1, 2, 1]))
    np.testing.assert_array_equal(lm.encode(np.array(["2", "1"], dtype=object)), [1, 0])
