"""Issue 9's "Done when" for real tables, end to end: ``nnfit train FILE --target COL`` with no
other flag on CSV and Parquet files holding strings, booleans, ISO dates, ids, free text and
gaps; predict on messy new rows; the API on a DataFrame of pandas dtypes with identical reloads;
the one-line exit-2 contract for bad tables; imputation on and off; the quantile transform and
the column-role schema against pandas and scikit-learn oracles; the one ``prepare`` entry;
``inspect``; and a user module taking categorical codes by name.

Tables are small and runs short (2-3 epochs, ``--hidden 8``), so the file stays fast on 2 cores.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import io
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import nnfit
from helpers import cli, one_error
from nnfit.cli import main
from nnfit.data.columns import Columns, columns_from_frame
from nnfit.data.read import read_table
from nnfit.data.schema import MIN_COUNT, MISSING, UNKNOWN, TableSchema, fit_schema
from nnfit.errors import DataError, NnfitWarning

QUICK = ["--epochs", "2", "--hidden", "8", "--device", "cpu"]
API = dict(epochs=2, quiet=True, device="cpu", seed=0)
GAPPY = ["name", "city", "flag", "when", "note", "num"]  # every column but the row number
USED = ["city", "flag", "when", "num"]  # the features the schema keeps, in file order


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a run that lands in runs/ lands here
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("NNFIT_DEBUG", raising=False)


def messy(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """A first CSV: a row number, unique names, a 4-level city, a boolean, ISO dates, free
    text with commas and quotes, a number, and a label that depends on the city and number;
    about 6% of every column but the row number missing."""
    rng = np.random.default_rng(seed)
    city = rng.choice(["Paris", "Lyon", "Nice", "Lille"], n).astype(object)
    num = rng.normal(size=n)
    words = np.array(["red", "fast", "car", "blue", "slow", "train", "old", "new", "big", "small"])
    df = pd.DataFrame({
        "row": np.arange(1, n + 1),
        "name": np.array([f"Person {i:04d}" for i in rng.permutation(n)], dtype=object),
        "city": city,
        "flag": (rng.random(n) < 0.5).astype(object),
        "when": (np.datetime64("2020-01-01") + rng.integers(0, 900, n)).astype(str).astype(object),
        "note": np.array([f'{" ".join(rng.choice(words, 5))}, said "{i}"' for i in range(n)], dtype=object),
        "num": num,
        "label": np.where(np.isin(city, ["Paris", "Nice"]) ^ (num > 1.0), "yes", "no"),
    })
    for c in GAPPY:
        gaps = rng.random(n) < 0.06
        gaps[rng.integers(n)] = True  # at least one gap per column
        df[c] = df[c].where(~gaps) if c == "num" else df[c].astype(object).where(~gaps, None)
    return df


def write(df: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return path


def captured(*argv) -> tuple[int, str, str]:
    """``main(argv)`` with its stdout and stderr, for a fixture shared by several tests."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def warning_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("nnfit: warning: ")]


def filled_counts(line: str) -> dict[str, int]:
    """Column -> count from the "filled missing values (...): a (2), b (1)" warning line."""
    return {k: int(v) for k, v in re.findall(r"(\w+) \((\d+)\)", line.split("): ", 1)[1])}


def recorded(fn, *args, **kwargs):
    """``fn(...)`` and the NnfitWarning messages it issued (recorded, not raised)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", NnfitWarning)
        out = fn(*args, **kwargs)
    return out, [str(w.message) for w in seen if issubclass(w.category, NnfitWarning)]


def read_csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module", params=["csv", "parquet"])
def trained(request, tmp_path_factory):
    """A messy table written as CSV or Parquet and ``nnfit train FILE --target label`` on it
    with no other flag but speed and place: (data frame, file, run, status, stdout, stderr)."""
    root = tmp_path_factory.mktemp(request.param)
    df = messy()
    data = write(df, root / f"people.{request.param}")
    run = root / "run"
    status, out, err = captured("train", data, "--target", "label", "--out", run,
                                "--epochs", "3", "--hidden", "8", "--device", "cpu")
    return df, data, run, status, out, err


# ------------------------------------------------------------------ 1. train with no flags
def test_train_with_no_flags_names_roles_and_dropped_columns(trained):
    df, data, run, status, out, err = trained
    assert status == 0, err
    assert "Traceback" not in err and "internal error" not in err
    assert "columns: 1 numeric, 2 categorical, 1 datetime" in err.splitlines(), err
    cats = "categorical (levels seen 5+ times; others are 'unknown'): city (4), flag (2)"
    assert cats in err.splitlines(), err
    dropped = next(line for line in err.splitlines() if line.startswith("dropped: "))
    assert dropped.startswith("dropped: row (counts the rows); name (id-like: "), dropped
    assert "; note (id-like: " in dropped
    warned = warning_lines(err)
    assert len(warned) == 2, warned  # one line per kind
    ids = next(w for w in warned if "dropped columns that identify rows or hold no values: " in w)
    assert all(f"{c} (" in ids for c in ("row", "name", "note")) and "city" not in ids
    filled = next(w for w in warned if "filled missing values" in w)
    # every gap of every feature, training and validation rows together, counted per column
    assert filled_counts(filled) == {c: int(df[c].isna().sum()) for c in USED}, filled


def test_train_then_evaluate_predict_and_reload(trained, capsys, tmp_path):
    df, data, run, status, _, err = trained
    assert status == 0, err
    status, out, err = cli(capsys, "evaluate", run, data, "--json")
    assert status == 0 and 0 <= json.loads(out)["accuracy"] <= 1, err
    assert [w for w in warning_lines(err) if "filled missing values" not in w] == []
    status, _, err = cli(capsys, "predict", run, data, "-o", tmp_path / "p.csv", "--proba")
    assert status == 0, err
    assert warning_lines(err) == [w for w in warning_lines(err) if "filled missing values" in w]
    rows = read_csv_rows(tmp_path / "p.csv")
    assert rows[0] == ["label", "proba_no", "proba_yes"] and len(rows) == 1 + len(df)
    learner = nnfit.load(run, device="cpu")
    pred, _ = recorded(learner.predict, str(data))
    assert [r[0] for r in rows[1:]] == [str(v) for v in pred]
    frame_pred, _ = recorded(learner.predict, df)  # the same rows from a DataFrame
    np.testing.assert_array_equal(frame_pred, pred)


# ---------------------------------------------------------------------- 2. what predict takes
def new_rows(n: int = 40) -> pd.DataFrame:
    """Rows to predict: unseen and missing cities, a gap in every used column, an extra column,
    no target and no dropped columns, columns in reverse order."""
    df = messy(n, seed=1).drop(columns=["label", "row", "name", "note"])
    df.loc[[0, 5, 9], "city"] = ["Berlin", "Oslo", "Berlin"]
    for j, c in enumerate(USED):
        df.loc[[j + 1, 20 + j], c] = None
    df["extra"] = np.arange(n) * 0.5
    return df[list(reversed(df.columns))]


def test_predict_takes_unseen_levels_gaps_any_order_and_extra_columns(trained, capsys, tmp_path):
    df, data, run, status, _, err = trained
    assert status == 0, err
    rows = new_rows()
    outputs = []
    for k, order in enumerate([list(rows.columns), ["num", "extra", "when", "city", "flag"]]):
        write(rows[order], tmp_path / f"new{k}.csv")
        status, _, err = cli(capsys, "predict", run, tmp_path / f"new{k}.csv", "-o", tmp_path / f"p{k}.csv")
        assert status == 0, err
        warned = warning_lines(err)
        assert len(warned) == 2 and sum("ignoring columns the model was not trained on: extra" in w
                                        for w in warned) == 1, warned
        outputs.append((tmp_path / f"p{k}.csv").read_text())
        assert len(outputs[-1].splitlines()) == 1 + len(rows)
    assert outputs[0] == outputs[1]
    # the target and the dropped columns present again: ignored, without a warning of their own
    full = rows.assign(label="yes", row=np.arange(len(rows)), name="x", note="y")
    write(full, tmp_path / "full.csv")
    status, _, err = cli(capsys, "predict", run, tmp_path / "full.csv", "-o", tmp_path / "p2.csv")
    assert status == 0 and (tmp_path / "p2.csv").read_text() == outputs[0], err
    assert sum("ignoring columns" in w for w in warning_lines(err)) == 1
    # the API gives the same rows, whatever the column order
    learner = nnfit.load(run, device="cpu")
    a, _ = recorded(learner.predict_proba, rows)
    b, _ = recorded(learner.predict_proba, rows[sorted(rows.columns)])
    assert np.array_equal(a, b) and len(a) == len(rows)


def test_predict_without_a_used_feature_is_one_line(trained, capsys, tmp_path):
    _, _, run, status, _, err = trained
    assert status == 0, err
    write(new_rows().drop(columns=["when"]), tmp_path / "nowhen.csv")
    line = one_error(capsys, "predict", run, tmp_path / "nowhen.csv")
    assert "missing feature columns the model uses: when" in line, line


# --------------------------------------------------------------------------- 3. API, dtypes
def frame_of_dtypes(n: int = 160, seed: int = 0) -> pd.DataFrame:
    """object, category, bool, datetime64 and float columns, with gaps where the dtype holds one."""
    rng = np.random.default_rng(seed)
    shop = pd.Series(rng.choice(["north", "south", "east"], n), dtype=object)
    size = pd.Categorical(rng.choice(["S", "M", "L", "XL"], n), categories=["S", "M", "L", "XL"])
    member = rng.random(n) < 0.4
    day = pd.Series(np.datetime64("2021-01-01") + rng.integers(0, 700, n).astype("timedelta64[D]"))
    amount = rng.normal(size=n)
    y = np.where((shop == "north") | member, "buy", "skip")
    df = pd.DataFrame({"shop": shop, "size": size, "member": member, "day": day, "amount": amount, "y": y})
    df.loc[[3, 40], "shop"] = None
    df.loc[[7, 45], "size"] = np.nan
    df.loc[[11], "day"] = pd.NaT
    df.loc[[13, 30], "amount"] = np.nan
    return df


@pytest.mark.parametrize("model", ["mlp", "resmlp"])
def test_api_dtypes_save_load_and_run_dir_give_identical_outputs(model, tmp_path):
    df = frame_of_dtypes()
    assert [df[c].dtype.kind for c in ("shop", "size", "member", "day")] == ["O", "O", "b", "M"]
    assert isinstance(df["size"].dtype, pd.CategoricalDtype)
    learner, said = recorded(nnfit.fit, model, df, target="y", run_dir=tmp_path / "run", **API)
    assert len(said) == 1 and filled_counts(said[0]) == {"shop": 2, "size": 2, "day": 1, "amount": 2}, said
    table = learner.preprocessor.table
    assert {c.name: c.role for c in table.columns} == {
        "shop": "categorical", "size": "categorical", "member": "categorical", "day": "datetime",
        "amount": "numeric"}
    test = frame_of_dtypes(50, seed=1).drop(columns=["y"])
    pred, _ = recorded(learner.predict, test)
    proba, _ = recorded(learner.predict_proba, test)
    learner.save(tmp_path / "saved")
    for path in (tmp_path / "saved", tmp_path / "run"):
        again = nnfit.load(path, device="cpu")
        assert np.array_equal(recorded(again.predict, test)[0], pred), path
        assert np.array_equal(recorded(again.predict_proba, test)[0], proba), path
        assert torch.equal(recorded(again.outputs, test)[0], recorded(learner.outputs, test)[0])


# -------------------------------------------------------------------------- 4. bad input
def plain(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.integers(0, 5, n),
                         "city": rng.choice(["x", "y", "z"], n), "label": rng.choice(["p", "q"], n)})


@pytest.mark.parametrize("flags, says", [
    (["--categorical", "NOPE"], ["NOPE", "categorical", "do not exist"]),
    (["--drop", "NOPE"], ["NOPE", "drop", "do not exist"]),
    (["--numeric", "NOPE"], ["NOPE", "numeric", "do not exist"]),
    (["--features", "a", "--drop", "a"], ["no feature columns left"]),
    (["--categorical", "b", "--numeric", "b"], ["'b'", "both categorical and numeric"]),
])
def test_bad_role_flags_are_one_line(flags, says, capsys):
    write(plain(), Path("t.csv"))
    line = one_error(capsys, "train", "t.csv", "--target", "label", *flags, *QUICK, "--quiet")
    assert all(s in line for s in says), line
    assert not Path("runs").exists() or not any(Path("runs").iterdir())


def test_a_target_that_is_entirely_missing_names_a_row(capsys):
    write(plain().assign(label=None), Path("t.csv"))
    line = one_error(capsys, "train", "t.csv", "--target", "label", *QUICK, "--quiet")
    assert "target column 'label' is missing on row 1" in line, line


def test_numeric_on_a_text_column_names_the_file_row(capsys):
    df = plain()
    df["code"] = [str(i) for i in range(len(df))]
    df.loc[6, "code"] = "unknown"  # data row 7 of the file, wherever the split puts it
    write(df, Path("t.csv"))
    line = one_error(capsys, "train", "t.csv", "--target", "label", "--numeric", "code", *QUICK, "--quiet")
    assert "column 'code' is not numeric (row 7: 'unknown')" in line, line


def test_a_column_distinct_on_every_row_is_dropped_as_id_like(capsys):
    n = 20_000  # scaled down from a million: the rule is a share of distinct values
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"ticket": [f"T{i:07d}" for i in rng.permutation(n)], "a": rng.normal(size=n),
                       "label": rng.choice(["p", "q"], n)})
    write(df, Path("t.csv"))
    status, _, err = cli(capsys, "train", "t.csv", "--target", "label", "--epochs", "1", "--hidden", "8",
                         "--batch-size", "2048", "--device", "cpu", "--quiet", "--out", "R")
    assert status == 0, err
    assert len(warning_lines(err)) == 1 and re.fullmatch(
        r"nnfit: warning: t.csv: dropped columns that identify rows or hold no values: "
        r"ticket \(id-like: (\d+) distinct values in \1 training rows\)", warning_lines(err)[0]), err
    table = json.loads(Path("R/model.json").read_text())["preprocess"]["table"]
    assert [c["name"] for c in table["columns"]] == ["a"] and "ticket" in table["dropped"]


# ---------------------------------------------------------------------- 5. impute, quantile
def test_no_impute_refuses_gaps_and_impute_is_still_accepted(capsys):
    df = plain()
    df.loc[[2, 9], "a"] = np.nan
    df.loc[[4], "city"] = None
    write(df, Path("t.csv"))
    line = one_error(capsys, "train", "t.csv", "--target", "label", "--no-impute", *QUICK, "--quiet")
    assert line.endswith("t.csv: missing values in columns: a (2), city (1)"), line
    with pytest.raises(DataError, match=r"missing values in columns: .*a \("):
        nnfit.fit("mlp", df, target="label", impute=False, **API)
    status, _, err = cli(capsys, "train", "t.csv", "--target", "label", "--impute", *QUICK, "--quiet",
                         "--out", "R")
    assert status == 0, err


def test_quantile_transform_trains_and_is_saved(capsys):
    df = plain().assign(a=lambda d: np.exp(2 * d["a"]))  # skewed
    write(df, Path("t.csv"))
    status, _, err = cli(capsys, "train", "t.csv", "--target", "label", "--numeric-transform", "quantile",
                         *QUICK, "--quiet", "--out", "R")
    assert status == 0, err
    status, out, _ = cli(capsys, "inspect", "R", "--json")
    table = json.loads(out)["columns"]
    assert table["numeric_transform"] == "quantile"
    assert all(len(c["quantiles"]) > 2 for c in table["columns"] if c["role"] == "numeric")


def test_quantile_transform_matches_scikit_learn():
    from sklearn.preprocessing import QuantileTransformer

    rng = np.random.default_rng(0)
    train = np.concatenate([rng.lognormal(0, 1.5, 1500), np.full(200, 3.0), rng.integers(0, 4, 300)])
    new = np.concatenate([rng.lognormal(0, 1.5, 500), [3.0, 0.0, 1e-3, 1e4]])
    schema = fit_schema(Columns("t", {"v": train}), numeric_transform="quantile")
    oracle = QuantileTransformer(output_distribution="normal", n_quantiles=1000).fit(train[:, None])
    for values in (train, new):
        got = schema.encode(Columns("t", {"v": values}))[0][:, 0].astype(np.float64)
        want = oracle.transform(values[:, None])[:, 0]
        interior = np.abs(want) < 5  # the clipping bounds may differ at the extreme tails
        assert interior.sum() > 0.9 * len(values)
        np.testing.assert_allclose(got[interior], want[interior], rtol=0, atol=1e-6)


# ------------------------------------------------------------------------ 6. schema units
def test_a_row_counter_is_dropped_but_a_shuffled_id_or_a_forced_one_is_kept():
    rng = np.random.default_rng(0)
    n = 50
    cols = Columns("t", {"row": np.arange(1, n + 1), "shuffled": rng.permutation(n) + 1,
                         "v": rng.normal(size=n)})
    with pytest.warns(NnfitWarning, match=r"^t: dropped columns that identify rows or hold no values: "
                      r"row \(counts the rows\)$"):
        schema = fit_schema(cols)
    assert schema.dropped == {"row": "counts the rows"}
    assert [(c.name, c.role) for c in schema.columns] == [("shuffled", "numeric"), ("v", "numeric")]
    # the same distinct integers under an id's name are dropped; any name may be forced back
    named = Columns("t", {"PassengerId": cols.arrays["shuffled"], "v": cols.arrays["v"]})
    with pytest.warns(NnfitWarning, match=r"PassengerId \(id-like: a distinct integer on every row"):
        assert list(fit_schema(named).dropped) == ["PassengerId"]
    assert fit_schema(named, numeric=["PassengerId"]).used == ["PassengerId", "v"]
    rows = np.sort(rng.choice(n, 40, replace=False))  # a training split keeps counting the rows
    with pytest.warns(NnfitWarning, match="row"):
        assert "row" in fit_schema(cols.take(rows), rows).dropped
    forced = fit_schema(cols, numeric=["row"])
    assert [c.name for c in forced.columns] == ["row", "shuffled", "v"] and forced.dropped == {}


def test_rare_and_unseen_levels_are_unknown_and_gaps_missing_when_training_had_them():
    k = MIN_COUNT
    train = ["a"] * k + ["b"] * (k + 2) + ["rare"] * (k - 1)
    gappy = fit_schema(Columns("t", {"c": np.array(train + [None, None], dtype=object)}))
    whole = fit_schema(Columns("t", {"c": np.array(train, dtype=object)}))
    assert gappy.columns[0].levels == ["b", "a"] and gappy.columns[0].missing
    later = Columns("t", {"c": np.array(["a", "b", "rare", "new", None], dtype=object)})
    filled: dict[str, int] = {}
    assert gappy.encode(later, filled=filled)[1][:, 0].tolist() == [3, 2, UNKNOWN, UNKNOWN, MISSING]
    assert whole.encode(later, filled=filled)[1][:, 0].tolist() == [3, 2, UNKNOWN, UNKNOWN, UNKNOWN]
    assert filled == {"c": 2}
    assert gappy.columns[0].cardinality == 4


@pytest.mark.parametrize("times", [False, True])
def test_datetime_parts_equal_pandas(times):
    rng = np.random.default_rng(0)
    seconds = rng.integers(0, 40 * 365 * 86400, 300) if times else rng.integers(0, 40 * 365, 300) * 86400
    stamps = np.datetime64("1990-01-01T00:00:00") + seconds.astype("timedelta64[s]")
    text = np.array([str(s) if times else str(s)[:10] for s in stamps], dtype=object)
    text[5] = None
    for values in (text, stamps.astype("datetime64[ns]")):
        schema = fit_schema(Columns("t", {"d": values, "v": rng.normal(size=300)}))
        assert schema.columns[0].role == "datetime"
        parts = ["year", "month", "dayofweek", "dayofyear", "days"] + (["hour"] if times else [])
        assert schema.columns[0].parts == parts
        x, _ = recorded(schema.encode, Columns("t", {"v": np.zeros(300), "d": values}))[0]
        t = pd.Series(pd.to_datetime(values))
        present = t.notna().to_numpy()
        days = ((t - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)).to_numpy()
        want = {"year": t.dt.year, "month": t.dt.month, "dayofweek": t.dt.day_of_week,
                "dayofyear": t.dt.day_of_year, "days": days, "hour": t.dt.hour}
        names = schema.feature_names
        for p in parts:
            got = x[present, names.index(f"d:{p}")]
            np.testing.assert_allclose(got, np.asarray(want[p], dtype=np.float64)[present], rtol=1e-7)


def test_every_numeric_median_is_saved_and_fills_a_gap_seen_only_at_predict():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=41), rng.normal(size=41)
    b[3] = np.nan
    schema = fit_schema(Columns("t", {"a": a, "b": b}))
    fill = {c.name: (c.fill, c.indicator) for c in schema.columns}
    assert fill == {"a": ([float(np.median(a))], False), "b": ([float(np.nanmedian(b))], True)}
    later = Columns("later", {"b": np.array([np.nan, 1.0]), "a": np.array([2.0, np.nan])})
    with pytest.warns(NnfitWarning, match=r"^later: filled missing values .*: a \(1\), b \(1\)$"):
        x, _ = schema.encode(later)
    assert schema.feature_names == ["a", "b", "b:missing"]
    np.testing.assert_array_equal(x, np.array([[2.0, np.nanmedian(b), 1.0], [np.median(a), 1.0, 0.0]],
                                              dtype=np.float32))


def test_schema_round_trips_through_json():
    rng = np.random.default_rng(0)
    shop = rng.choice(["n", "s", "e"], 60).astype(object)
    shop[[2, 9]] = None
    day = np.datetime64("2021-01-01T00:00", "s") + rng.integers(0, 10**8, 60).astype("timedelta64[s]")
    day[4] = np.datetime64("NaT")
    amount = rng.lognormal(size=60)
    amount[7] = np.nan
    cols = Columns("t", {"shop": shop, "day": day, "amount": amount, "member": rng.random(60) < 0.5,
                         "k": rng.integers(0, 3, 60)})
    schema = fit_schema(cols, numeric_transform="quantile", drop=["member"], categorical=["k"])
    assert [c.role for c in schema.columns] == ["categorical", "datetime", "numeric", "categorical"]
    again = TableSchema.from_dict(json.loads(json.dumps(schema.to_dict())))
    assert again.to_dict() == schema.to_dict() and again.summary() == schema.summary()
    filled: dict[str, int] = {}
    for got, want in zip(again.encode(cols, filled=filled), schema.encode(cols, filled=filled), strict=True):
        assert np.array_equal(got, want)


def test_categorical_ints_have_the_same_levels_from_a_csv_or_a_frame(tmp_path):
    df = pd.DataFrame({"k": [1] * 12 + [2] * 8, "v": np.arange(20) * 0.5})
    write(df, tmp_path / "k.csv")
    levels = [fit_schema(cols, categorical=["k"]).columns[0].levels
              for cols in (read_table(tmp_path / "k.csv"), columns_from_frame(df))]
    assert levels == [["1", "2"], ["1", "2"]]


# --------------------------------------------------------------------- 7. one prepare entry
def test_fit_and_train_each_call_prepare_once(monkeypatch, capsys):
    import nnfit.data.prepare as stage

    learner_module = importlib.import_module("nnfit.learner")
    calls: list[str] = []

    def spy(*args, **kwargs):
        calls.append("prepare")
        return stage.prepare(*args, **kwargs)

    monkeypatch.setattr(learner_module, "prepare", spy)
    df = plain()
    nnfit.fit("mlp", df, target="label", **API)
    assert calls == ["prepare"]
    write(df, Path("t.csv"))
    status, _, err = cli(capsys, "train", "t.csv", "--target", "label", *QUICK, "--quiet", "--out", "R")
    assert status == 0 and calls == ["prepare"] * 2, err


# --------------------------------------------------------------------------- 8. inspect
def test_inspect_shows_the_column_roles(trained, capsys):
    _, _, run, status, _, err = trained
    assert status == 0, err
    status, out, _ = cli(capsys, "inspect", run)
    assert status == 0
    assert "columns: 1 numeric, 2 categorical, 1 datetime" in out
    assert "dropped: row (counts the rows); name (id-like: " in out
    status, out, _ = cli(capsys, "inspect", run, "--json")
    table = json.loads(out)["columns"]
    assert [c["name"] for c in table["columns"]] == USED
    assert set(table["dropped"]) == {"row", "name", "note"}


# ------------------------------------------------------------------- a module of your own
class CodesModule(nn.Module):
    """Embeds the table's categorical codes beside its numeric features: ``forward(x, codes)``."""

    def __init__(self, features: int, cardinalities: list[int]) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.ModuleList(nn.Embedding(c, 3) for c in cardinalities)
        self.out = nn.Linear(features + 3 * len(cardinalities), 2)
        self.seen: list[tuple[torch.dtype, torch.dtype, int]] = []

    def forward(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        self.seen.append((x.dtype, codes.dtype, codes.shape[1]))
        return self.out(torch.cat([x] + [e(codes[:, j]) for j, e in enumerate(self.embed)], dim=1))


def test_a_user_module_takes_categorical_codes_by_name(tmp_path):
    df = frame_of_dtypes().drop(columns=["day"]).assign(amount=lambda d: d["amount"].fillna(0.0))
    # amount (no gaps: no indicator); shop 3 levels + unknown + missing; size 4 + 2; member 2 + 2
    model = CodesModule(1, [5, 6, 4])
    learner, _ = recorded(nnfit.fit, model, df, target="y", **API)
    assert set(model.seen) == {(torch.float32, torch.int64, 3)}
    assert [c.cardinality for c in learner.preprocessor.table.categorical] == [5, 6, 4]
    pred, _ = recorded(learner.predict, df)
    assert len(pred) == len(df) and set(pred) <= {"buy", "skip"}
    learner.save(tmp_path / "m")
    again = nnfit.load(tmp_path / "m", model=CodesModule(1, [5, 6, 4]), device="cpu")
    assert np.array_equal(recorded(again.predict_proba, df)[0], recorded(learner.predict_proba, df)[0])


def test_gaps_filled_in_arrays_are_reported_in_one_line():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    x[[2, 5], 0] = np.nan
    x[7, 2] = np.nan
    with pytest.warns(NnfitWarning) as got:
        learner = nnfit.fit("mlp", x, (x[:, 1] > 0).astype(int), epochs=1, quiet=True, device="cpu")
    assert [str(w.message) for w in got] == [
        "training data: filled missing values (numeric: training median, categorical: their own "
        "index): x0 (2), x2 (1)"]
    with pytest.warns(NnfitWarning, match=r"^input: filled missing values .*: x0 \(2\), x2 \(1\)$"):
        learner.predict(x)


def test_bad_input_after_a_warning_is_still_one_line(capsys, tmp_path, monkeypatch):
    """Warnings about the data (dropped ids) are held while the inputs are checked: a refusal
    is its one error line alone."""
    monkeypatch.chdir(tmp_path)
    rows = ["id,name,a,y"] + [f"{i},n{i},{'' if i == 3 else i % 7},{i % 2}" for i in range(40)]
    Path("t.csv").write_text("\n".join(rows) + "\n")
    line = one_error(capsys, "train", "t.csv", "--target", "y", "--no-impute", "--quiet", "--out", "R")
    assert line == "nnfit: error: t.csv: missing values in columns: a (1)", line


def test_utc_offsets_in_text_dates_give_the_instant_pandas_reads():
    text = np.array(["2024-01-01T00:30:00+01:00", "2024-06-30T23:00:00-02:00", "2024-03-10T12:00:00Z"] * 10,
                    dtype=object)
    utc = pd.to_datetime(pd.Series(text), utc=True).dt.tz_localize(None).to_numpy()
    schema = fit_schema(Columns("t", {"when": text}))
    as_text, _ = schema.encode(Columns("t", {"when": text}))
    as_dates, _ = schema.encode(Columns("t", {"when": utc}))
    assert schema.columns[0].role == "datetime" and "hour" in schema.columns[0].parts
    np.testing.assert_array_equal(as_text, as_dates)


def test_text_none_and_na_markers_are_gaps_as_pandas_reads_them():
    text = np.array(["a", "None", "b", "<NA>", " a "] * 8, dtype=object)
    schema = fit_schema(Columns("t", {"c": text}))
    col = schema.columns[0]
    assert col.levels == ["a", "b"] and col.missing
    with pytest.warns(NnfitWarning, match=r"filled missing values .*: c \(2\)$"):
        _, codes = schema.encode(Columns("t", {"c": np.array(["None", "a", "<NA>"], dtype=object)}))
    assert codes[:, 0].tolist() == [MISSING, 2, MISSING]
