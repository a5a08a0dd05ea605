"""Fixes to streaming (issue 13) after its review: validation row groups of unequal sizes,
columns and levels found only outside the preprocessing sample, a validation split missing
classes, Hive-partitioned directories and their schemas, directories read whole, the sweep,
and the messages."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import nnfit
from helpers import cli, one_error
from nnfit.config import TrainConfig
from nnfit.data import stream_csv, stream_fit
from nnfit.data.prepare import prepare
from nnfit.data.stream_files import TableFiles
from nnfit.data.stream_fit import prepare_stream, split_units
from nnfit.errors import DataError, NnfitWarning


def _config(**kw) -> TrainConfig:
    return TrainConfig(**{"quiet": True, "device": "cpu", "threads": 1, **kw})


def _groups(path: Path, table: pa.Table, sizes: list[int]) -> Path:
    """``table`` written as row groups of ``sizes`` rows, in order."""
    with pq.ParquetWriter(path, table.schema) as w:
        start = 0
        for s in sizes:
            w.write_table(table.slice(start, s), row_group_size=s)
            start += s
    return path


def _numbers(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    return pa.table({"a": x[:, 0], "b": x[:, 1], "y": (x[:, 0] > 0).astype(np.int64)})


# ------------------------------------------------------------------------------ 1. validation
def test_validation_takes_the_row_groups_closest_to_val_split_when_sizes_differ(tmp_path) -> None:
    # pandas/pyarrow's default row groups: one large, then the rest
    sizes = [5000, 1000]
    files = TableFiles(_groups(tmp_path / "d.parquet", _numbers(6000), sizes))
    for seed in range(6):  # the large group drawn first must not be taken: 1,000 rows is 0.17
        train, val = split_units(files, _config(val_split=0.2, seed=seed))
        assert (train, val) == ([0], [1]), seed
    sizes = [4000, 4000, 1500]  # 1,500 rows (0.16) beats any 4,000-row group (0.42)
    files = TableFiles(_groups(tmp_path / "e.parquet", _numbers(9500), sizes))
    for seed in range(6):
        assert split_units(files, _config(val_split=0.2, seed=seed))[1] == [2], seed
    # none brings it closer (each overshoots twice over): the one closest, never more
    sizes = [3000, 2000, 2500]
    files = TableFiles(_groups(tmp_path / "f.parquet", _numbers(7500), sizes))
    for seed in range(6):
        assert split_units(files, _config(val_split=0.05, seed=seed))[1] == [1], seed


# ------------------------------------------------------------------------------ 2. the sample
def _late(n: int = 6000) -> pa.Table:
    """Rows in time order, where the last ones hold what the first do not: a column with values
    only from row 4500 on, a level ("app") only in the last 1,000 rows, gaps only late, a word
    among numbers on row 5800, and a column with no value at all."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=n)
    late = np.where(np.arange(n) >= 4500, rng.normal(size=n), np.nan)
    pay = rng.choice(["cash", "card"], n).astype(object)
    pay[-1000:] = rng.choice(["cash", "app"], 1000)
    gappy = rng.normal(size=n)
    gappy[-300::7] = np.nan
    b = np.char.mod("%.3f", rng.normal(size=n)).astype(object)
    b[5800] = "oops"
    y = a + 2 * np.nan_to_num(late) + (pay == "app")
    return pa.table({"a": a, "late": late, "pay": pa.array(pay, pa.string()), "gappy": gappy,
                     "b": pa.array(b, pa.string()), "empty": pa.array([None] * n, pa.string()), "y": y})


def _fit_warnings(fn) -> tuple[object, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    return out, [str(w.message) for w in caught if issubclass(w.category, NnfitWarning)]


def test_what_the_sample_missed_is_refitted_from_the_streaming_pass(tmp_path, monkeypatch, capsys) -> None:
    path = _groups(tmp_path / "d.parquet", _late(), [500] * 12)
    monkeypatch.setattr(stream_fit, "SAMPLE_ROWS", 1500)  # 3 of the 12 row groups
    cfg = dict(val_split=0, seed=4)  # the sample: row groups 0, 1 and 8, none of what comes late
    streamed, said = _fit_warnings(lambda: prepare_stream(path, target="y",
                                                          config=_config(**cfg, quiet=False)))
    message = capsys.readouterr().err
    assert "a seeded sample of 1,500 rows (3 row groups)" in message
    assert "(refitted: late (values outside the sample), pay (1 more level))" in message
    whole, told = _fit_warnings(lambda: prepare(path, target="y", config=_config(stream=False, **cfg)))
    ours, theirs = streamed.preprocessor.to_dict(), whole.preprocessor.to_dict()
    assert ours["table"]["dropped"] == theirs["table"]["dropped"]
    assert ours["table"]["dropped"] == {"empty": "no values in the training split"}
    for c, d in zip(ours["table"]["columns"], theirs["table"]["columns"], strict=True):
        if c["role"] == "categorical":  # the sample's levels first, then the pass's
            assert sorted(c.pop("levels")) == sorted(d.pop("levels"))
        if c["name"] != "late":  # medians are the sample's; late's from all its values
            c.pop("fill", None), d.pop("fill", None)
        assert c == d, c["name"]
    x, y = ours["inputs"][0], theirs["inputs"][0]
    assert x["features"] == y["features"] == ["a", "late", "gappy", "b", "late:missing", "gappy:missing",
                                              "b:missing"]
    exact = [i for i, f in enumerate(x["features"]) if f not in ("gappy", "b")]  # no sample-filled gaps
    np.testing.assert_allclose(np.array(x["mean"])[exact], np.array(y["mean"])[exact], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.array(x["std"])[exact], np.array(y["std"])[exact], rtol=1e-9)
    # every warning the in-memory fit gives, and none saying the training rows lack what they hold
    assert said == told, (said, told)
    assert any("b ('oops' read as missing)" in w for w in said)
    # a column forced numeric that the sample has no value of: fitted from the pass too
    forced, _ = _fit_warnings(lambda: prepare_stream(path, target="y",
                                                     config=_config(**cfg, numeric=["late"], drop=["empty"])))
    assert [c.name for c in forced.preprocessor.table.columns if c.role == "numeric"][:2] == ["a", "late"]


# ------------------------------------------------------------------------------ 3. classes
def test_a_split_without_classes_the_other_has_is_named(tmp_path) -> None:
    told = set()
    # sorted by label: "no" rows, then "yes" ones; the second file's last, small group holds
    # every "yes" row, which validation takes when drawn first
    for name, sizes, yes in (("a", [500] * 12, 2400), ("b", [1000] * 5 + [250], 250)):
        labels = np.where(np.arange(sum(sizes)) >= sum(sizes) - yes, "yes", "no")
        table = _numbers(sum(sizes)).set_column(2, "y", pa.array(labels))
        path = _groups(tmp_path / f"{name}.parquet", table, sizes)
        files, starts = TableFiles(path), np.cumsum([0, *sizes])
        for seed in range(8):
            train, val = split_units(files, _config(val_split=0.2, seed=seed))
            has = [set(labels[np.concatenate([np.arange(starts[u], starts[u + 1]) for u in units])])
                   for units in (train, val)]
            cfg = _config(val_split=0.2, seed=seed)
            _, said = _fit_warnings(lambda: prepare_stream(path, target="y", config=cfg))  # noqa: B023
            expected = [f"the {split} row groups hold no rows of class '{c}', which {other} has (is the file "
                        "sorted by 'y'?): shuffle its rows once, or draw other row groups with another --seed"
                        for split, other, mine, theirs in (("training", "validation", *has),
                                                           ("validation", "training", *has[::-1]))
                        for c in sorted(theirs - mine)]
            assert [w.split(": ", 1)[1] for w in said if "hold no rows of class" in w] == expected, seed
            told.update(e.split(" row groups")[0] for e in expected)
    assert told == {"the validation", "the training"}  # both cases were drawn


# ------------------------------------------------------------------------------ 4-6. directories
def _hive(root: Path) -> pa.Table:
    """A Hive-partitioned directory as Spark writes it (``month=1/part-0.parquet``, ``_SUCCESS``,
    a ``_temporary`` directory), whose parts disagree as Dask's do: ``count`` int64 in one part,
    float64 (with a gap) in the other; ``note`` text in one, all None (type null) in the other.
    Returns the table the directory holds, as it reads whole (the parts in order, unified)."""
    rng = np.random.default_rng(0)
    parts = []
    for month, n in ((1, 700), (2, 500)):
        x = rng.normal(size=n)
        count = rng.integers(0, 9, n)
        part = {"x": x, "count": count if month == 1 else np.where(np.arange(n) == 3, np.nan, count * 1.0),
                "note": pa.array(rng.choice(["a", "b"], n)) if month == 1 else pa.nulls(n),
                "y": (x + month > 1.5).astype(np.int64)}
        (root / f"month={month}").mkdir(parents=True)
        _groups(root / f"month={month}" / "part-0.parquet", pa.table(part), [n // 2, n - n // 2])
        parts.append(pa.table({**part, "month": pa.array([month] * n, pa.int32())}))
    (root / "_SUCCESS").touch()
    (root / "_temporary").mkdir()
    pq.write_table(parts[0].slice(0, 5).drop(["month"]), root / "_temporary" / "part-9.parquet")
    return pa.concat_tables([parts[0].cast(parts[1].schema.set(2, pa.field("note", pa.string()))
                                           .set(1, pa.field("count", pa.float64()))),
                             parts[1].cast(parts[1].schema.set(2, pa.field("note", pa.string())))])


def test_a_hive_partitioned_directory_streams_and_reads_whole(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    expected = _hive(tmp_path / "hive")
    files = TableFiles("hive")
    assert files.names == ["x", "count", "note", "y", "month"] and files.num_rows == 1200
    assert [str(t) for t in files.types] == ["double", "double", "string", "int64", "int32"]
    whole = files.read_all("y", allow_missing=True)
    for name in ("x", "count", "month"):
        np.testing.assert_array_equal(whole.arrays[name], expected.column(name).to_numpy(zero_copy_only=False)
                                      .astype(np.float32))
    assert [v if v is None else str(v) for v in whole.arrays["note"]] == expected.column("note").to_pylist()
    train = ["--target", "y", "--epochs", "1", "--hidden", "8", "--no-plots", "threads=1"]
    status, _, err = cli(capsys, "train", "hive", *train, "--out", "S")
    assert status == 0, err
    assert "streaming hive (a directory of Parquet files): 1,200 rows in 4 row groups" in err
    saved = json.loads((tmp_path / "S" / "model.json").read_text())
    assert saved["spec"]["name"] == "mlp"
    assert [c["name"] for c in saved["preprocess"]["table"]["columns"]] == ["x", "count", "note", "month"]
    # the same directory read whole: --no-stream, evaluate, predict, and the fold's advice
    assert "--no-stream to read the directory whole" in one_error(capsys, "train", "hive", *train, "fold=1/3")
    status, _, err = cli(capsys, "train", "hive", *train, "fold=1/3", "--no-stream", "--out", "W")
    assert status == 0 and "streaming" not in err, err
    learner = nnfit.load("S", device="cpu")
    with pytest.warns(NnfitWarning, match="filled missing values"):  # count's gap, note's Nones
        metrics, labels = learner.evaluate(whole, target="y"), learner.predict(whole)
    status, out, _ = cli(capsys, "evaluate", "S", "hive", "--json")
    assert status == 0 and json.loads(out)["accuracy"] == pytest.approx(metrics["accuracy"])
    status, _, _ = cli(capsys, "predict", "S", "hive", "-o", "p.csv")
    predicted = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1, dtype=np.int64)
    assert status == 0 and np.array_equal(predicted, labels)


def test_directories_whose_files_differ_beyond_types_are_still_refused(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    pq.write_table(pa.table({"a": [1, 2], "y": [0, 1]}), tmp_path / "d" / "p0.parquet")
    pq.write_table(pa.table({"a": ["x", "z"], "y": [0, 1]}), tmp_path / "d" / "p1.parquet")
    assert "its files' columns differ in type" in one_error(capsys, "train", "d", "--target", "y")
    (tmp_path / "e" / "a=1").mkdir(parents=True)
    pq.write_table(pa.table({"a": [1.0, 2.0], "y": [0, 1]}), tmp_path / "e" / "a=1" / "p.parquet")
    assert "column 'a' is both in the files and a partition directory's name" in one_error(
        capsys, "train", "e", "--target", "y")


# ------------------------------------------------------------------------------ 9. messages
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, a disk that is always full")
def test_a_full_disk_during_the_csv_conversion_names_the_temporary_directory(tmp_path, monkeypatch) -> None:
    _numbers(3000).to_pandas().to_csv(tmp_path / "d.csv", index=False)
    full = tmp_path / "full"
    full.mkdir()
    (full / "data.parquet").symlink_to("/dev/full")  # every write: ENOSPC
    monkeypatch.setattr(stream_csv, "_temp_dir", lambda: full)
    with pytest.raises(DataError) as e:
        TableFiles(tmp_path / "d.csv")
    assert str(e.value) == (f"{tmp_path / 'd.csv'}: cannot write its conversion to Parquet in {full} (No "
                            "space left on device): it takes about as much room as the data; free some there "
                            "or set TMPDIR to a directory with room")


def test_a_conversion_removed_while_streaming_names_the_input(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    _numbers(3000).to_pandas().to_csv(tmp_path / "d.csv", index=False)
    files = TableFiles(tmp_path / "d.csv")
    shutil.rmtree(files.paths[0].parent)
    with pytest.raises(DataError, match=r"d\.csv: its conversion to Parquet \(.*data\.parquet\) cannot be "
                                        r"read \(.*\); was the temporary directory removed\? Run again"):
        next(files.read(0, ["a"]))


def test_the_message_says_row_group_once_and_quantiles(tmp_path, capsys, monkeypatch) -> None:
    path = _groups(tmp_path / "d.parquet", _numbers(3000), [1000, 1000, 1000])
    prepare_stream(path, target="y", config=_config(quiet=False, val_split=0.3, numeric_transform="quantile"))
    said = capsys.readouterr().err
    assert "3,000 rows in 3 row groups, 2,000 to train on, 1,000 to validate on (1 row group, whole" in said
    assert "column roles, vocabularies, medians, quantiles and standardisation fitted on all training" in said
    monkeypatch.setattr(stream_fit, "SAMPLE_ROWS", 1000)
    prepare_stream(path, target="y", config=_config(quiet=False, val_split=0.3, numeric_transform="quantile"))
    assert ("vocabularies, medians and quantiles fitted on a seeded sample of 1,000 rows (1 row group)"
            in capsys.readouterr().err)


# ------------------------------------------------------------------------------ 10. the sweep
def test_the_sweep_reads_a_directory_or_a_large_file_whole(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    table = _numbers(1200)
    a = table.column("a").to_numpy().copy()
    a[5] = np.nan  # one gap: one warning line
    table = table.set_column(0, "a", pa.array(a))
    (tmp_path / "parts").mkdir()
    for i in range(3):
        pq.write_table(table.slice(400 * i, 400), tmp_path / "parts" / f"part-{i}.parquet")
    pq.write_table(table, tmp_path / "big.parquet")
    monkeypatch.setattr(stream_fit, "STREAM_THRESHOLD", 1000)  # big.parquet is over it
    for data in ("parts", "big.parquet"):
        status, _, err = cli(capsys, "sweep", data, "--target", "y", "--seeds", "0-1", "--epochs", "1",
                             "--hidden", "4", "--no-plots", "--out", f"S-{data}")
        assert status == 0, err
        assert "streaming" not in err and err.count("filled missing values") == 1, err
        assert (tmp_path / f"S-{data}" / "members" / "seed-1" / "model.safetensors").is_file()
    # in Python too: never streamed
    def streamed(*args, **kwargs):
        raise AssertionError("a sweep streamed its data")

    monkeypatch.setattr("nnfit.data.prepare.prepare_stream", streamed)
    with pytest.warns(NnfitWarning, match="filled missing values"):
        result = nnfit.sweep({"name": "mlp", "hidden": [4]}, "parts", out="P", target="y", seeds=[0, 1],
                             epochs=1, quiet=True, plots=False)
    assert sorted(result.members) == ["seed-0", "seed-1"]


def test_a_column_parquet_stores_as_bytes_streams_as_text(tmp_path) -> None:
    table = _numbers(3000)
    table = table.append_column("s", pa.array([b"x", b"y", b"z"] * 1000, pa.binary()))
    path = _groups(tmp_path / "d.parquet", table, [500] * 6)
    streamed = prepare_stream(path, target="y", config=_config(val_split=0))
    whole = prepare(path, target="y", config=_config(stream=False, val_split=0))
    ours, theirs = streamed.preprocessor.table, whole.preprocessor.table  # medians: float32 vs float64 reads
    assert [(c.name, c.role) for c in ours.columns] == [(c.name, c.role) for c in theirs.columns]
    assert ours.categorical[0].to_dict() == theirs.categorical[0].to_dict()
    assert ours.categorical[0].levels == ["x", "y", "z"]
