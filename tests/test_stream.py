"""Streaming data larger than memory (issue 13): Parquet files, directories of them and CSV
files read by row groups (nnfit.data.stream), checked against the in-memory path, against
uninterrupted runs, and for memory that does not grow with the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import nnfit
from helpers import cli, one_error
from nnfit.config import TrainConfig
from nnfit.data import stream_files
from nnfit.data.prepare import prepare
from nnfit.data.schema import fit_schema
from nnfit.data.stream import numeric_block
from nnfit.data.stream_files import TableFiles
from nnfit.data.stream_fit import prepare_stream, split_units
from nnfit.errors import ConfigError, DataError, NnfitWarning

HERE = Path(__file__).parent
SRC = HERE.parent / "src"


def _frame(n: int, seed: int = 0, gaps: bool = False) -> pa.Table:
    """Five float features (the first is each row's number, to follow rows through a shuffle),
    an int, a text categorical; a binary target."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    if gaps:
        x[rng.random(x.shape) < 0.05] = np.nan
    colour = np.array(["red", "green", "blue", "grey"])[rng.integers(0, 4, n)].astype(object)
    if gaps:
        colour[rng.random(n) < 0.05] = None
    y = ((np.nan_to_num(x[:, 0]) + (colour == "red") - 0.3 * rng.normal(size=n)) > 0.4).astype(np.int64)
    return pa.table({"id": np.arange(n, dtype=np.float32), **{f"f{j}": x[:, j] for j in range(4)},
                     "count": rng.integers(0, 9, n), "colour": colour, "y": y})


def _parquet(path: Path, table: pa.Table, group: int) -> Path:
    pq.write_table(table, path, row_group_size=group)
    return path


def _config(**kw) -> TrainConfig:
    return TrainConfig(**{"quiet": True, "device": "cpu", "threads": 1, **kw})


def _ids(batches, data) -> np.ndarray:
    """The ``id`` column (feature 0, standardised) of every row of ``batches``, as row numbers."""
    s = data.preprocessor.inputs[0]
    x = torch.cat([(b[0]["x"] if isinstance(b[0], dict) else b[0][0])[:, 0] for b in batches]).double()
    return np.rint(x.numpy() * s.std[0] + s.mean[0]).astype(np.int64)


@pytest.fixture
def pieces(monkeypatch):
    """Row groups read in pieces of 150 rows (as a large row group is), and a shuffle buffer
    smaller than a row group: every branch of the shuffle is taken on a small file."""
    monkeypatch.setattr(stream_files, "PIECE_ROWS", 150)


def test_shuffle_draws_every_row_exactly_once_and_mixes_row_groups(tmp_path, pieces) -> None:
    path = _parquet(tmp_path / "d.parquet", _frame(5000), 400)
    data = prepare_stream(path, target="y", config=_config(val_split=0, shuffle_buffer=500))
    assert data.train.length == 5000 and data.train.num_batches(64) == 79
    epoch = list(data.train.batches(64, shuffle=True, generator=torch.Generator().manual_seed(1)))
    ids = _ids(epoch, data)
    assert len(epoch) == 79 and sorted(ids.tolist()) == list(range(5000))  # every row, once
    assert not np.array_equal(ids, np.sort(ids))
    assert len(np.unique(ids[:64] // 400)) >= 2  # the first batch already mixes row groups
    again = _ids(data.train.batches(64, shuffle=True, generator=torch.Generator().manual_seed(1)), data)
    other = _ids(data.train.batches(64, shuffle=True, generator=torch.Generator().manual_seed(2)), data)
    assert np.array_equal(ids, again) and not np.array_equal(ids, other)
    # BatchNorm's drop_single: 4993 rows leave a last batch of one, dropped
    one = prepare_stream(_parquet(tmp_path / "e.parquet", _frame(4993), 400), target="y",
                         config=_config(val_split=0, shuffle_buffer=500))
    kept = list(one.train.batches(64, shuffle=True, generator=torch.Generator(), drop_single=True))
    assert len(kept) == one.train.num_batches(64, True) == 78 and len(_ids(kept, one)) == 4992
    # in order (evaluation): batches across pieces and row groups, every row in file order
    assert np.array_equal(_ids(data.train.batches(1000), data), np.arange(5000))


def test_a_resumed_epoch_replays_its_batches_and_reads_only_what_it_needs(tmp_path, pieces) -> None:
    path = _parquet(tmp_path / "d.parquet", _frame(5000), 400)
    data = prepare_stream(path, target="y", config=_config(val_split=0, shuffle_buffer=500))
    g = torch.Generator().manual_seed(7)
    state = g.get_state()
    full = list(data.train.batches(32, shuffle=True, generator=g))
    read = []
    encode = data.train.encoder.encode
    data.train.encoder.encode = lambda batch, first: read.append(first) or encode(batch, first)
    for start in (1, 40, 77, 150, len(full) - 1):
        read.clear()
        g.set_state(state)
        tail = list(data.train.batches(32, shuffle=True, generator=g, start=start))
        assert len(tail) == len(full) - start
        for (a, ya), (b, yb) in zip(tail, full[start:], strict=True):
            assert torch.equal(a["x"], b["x"]) and torch.equal(a["codes"], b["codes"]) and torch.equal(ya, yb)
        if start >= 150:  # past most of the epoch: far fewer pieces converted than in a whole one
            assert len(read) < 0.7 * 36, (start, len(read))


def test_validation_row_groups_are_disjoint_seeded_and_near_val_split(tmp_path) -> None:
    rng = np.random.default_rng(0)
    sizes = rng.integers(100, 400, 20)
    table = _frame(int(sizes.sum()))
    with pq.ParquetWriter(tmp_path / "d.parquet", table.schema) as w:
        start = 0
        for s in sizes:
            w.write_table(table.slice(start, s))
            start += s
    files = TableFiles(tmp_path / "d.parquet")
    splits = [split_units(files, _config(val_split=0.2, seed=s)) for s in (0, 0, 1)]
    assert splits[0] == splits[1] and splits[0] != splits[2]
    for train, val in splits:
        assert not set(train) & set(val) and sorted(train + val) == list(range(20))
        assert abs(sizes[val].sum() - 0.2 * sizes.sum()) <= sizes.max() / 2
    data = prepare_stream(tmp_path / "d.parquet", target="y", config=_config(val_split=0.2, seed=1))
    assert data.val.units == splits[2][1] and data.train.length + data.val.length == sizes.sum()
    rows = set(data.val_keys["row"].tolist())
    assert rows.isdisjoint(_ids(data.train.batches(4096), data).tolist())
    assert rows == set(_ids(data.val.batches(4096), data).tolist())


@pytest.mark.parametrize("kind", ["parquet", "csv", "numeric"])
def test_preprocessing_equals_the_in_memory_fit(tmp_path, kind) -> None:
    table = _frame(3000, gaps=True)
    if kind == "numeric":  # the fast path: numbers only, gaps filled, missing-value indicators
        table = table.drop(["colour", "count"])
    path = tmp_path / f"d.{'csv' if kind == 'csv' else 'parquet'}"
    if kind == "csv":
        table.to_pandas().to_csv(path, index=False)
    else:
        _parquet(path, table, 500)
    cfg = dict(val_split=0, numeric_transform="standard")
    with pytest.warns(NnfitWarning, match="filled missing values"):
        streamed = prepare_stream(path, target="y", config=_config(**cfg))
    with pytest.warns(NnfitWarning, match="filled missing values"):
        whole = prepare(path, target="y", config=_config(stream=False, **cfg))
    a, b = streamed.preprocessor.to_dict(), whole.preprocessor.to_dict()
    assert a["table"] == b["table"] and a["style"] == b["style"]
    for sa, sb in zip(a["inputs"], b["inputs"], strict=True):
        for k in sa:
            if k in ("mean", "std") and sb[k] is not None:
                np.testing.assert_allclose(sa[k], sb[k], rtol=1e-12)
            else:
                assert sa[k] == sb[k], k
    assert streamed.task.to_dict() == whole.task.to_dict()
    got = list(streamed.train.batches(700))
    for name in ["x", "codes"] if kind != "numeric" else [0]:
        ours = torch.cat([b[0][name] for b in got])
        theirs = whole.train.inputs[name] if kind != "numeric" else whole.train.inputs[0]
        assert ours.dtype == theirs.dtype
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    assert torch.equal(torch.cat([b[1] for b in got]), whole.train.target)


def test_the_numeric_fast_path_equals_the_schema_encoding(tmp_path) -> None:
    path = _parquet(tmp_path / "d.parquet", _frame(2000, gaps=True).drop(["colour"]), 2000)
    files = TableFiles(path)
    names = [n for n in files.names if n != "y"]
    batch = next(files.read(0, names))
    cols = files.columns(batch, names, 0)
    table = fit_schema(cols)
    assert any(c.indicator for c in table.columns)
    fast_filled, slow_filled = {}, {}
    x, codes = numeric_block(table, cols, fast_filled)
    ex, ecodes = table.encode(cols, filled=slow_filled)
    assert x.dtype == ex.dtype and np.array_equal(x, ex) and codes.shape == ecodes.shape
    assert fast_filled == slow_filled and fast_filled


def test_a_streamed_run_evaluates_and_predicts_like_an_in_memory_one(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    table = _frame(3000)
    _parquet(tmp_path / "d.parquet", table, 250)
    table.to_pandas().to_csv(tmp_path / "d.csv", index=False)
    status, _, err = cli(capsys, "train", "d.parquet", "--stream", "--target", "y", "--epochs", "2",
                         "--batch-size", "64", "--hidden", "16", "--out", "R", "--no-plots", "threads=1")
    assert status == 0 and err.startswith("streaming d.parquet (--stream): 3,000 rows in 12 row groups")
    learner = nnfit.load("R", device="cpu")
    # the run's validation metrics (streamed) are the saved model's on those rows, read whole
    _, val = split_units(TableFiles("d.parquet"), TrainConfig())
    rows = np.concatenate([np.arange(u * 250, (u + 1) * 250) for u in val])
    table.take(rows).to_pandas().to_csv(tmp_path / "val.csv", index=False)
    saved = json.loads((tmp_path / "R" / "metrics.json").read_text())
    scored = learner.evaluate("val.csv")
    for k in ("accuracy", "f1", "roc_auc"):
        assert saved[k] == pytest.approx(scored[k], abs=1e-9), k
    status, out, _ = cli(capsys, "evaluate", "R", "d.csv", "--json")
    assert status == 0 and json.loads(out)["accuracy"] == pytest.approx(learner.evaluate("d.csv")["accuracy"])
    status, _, _ = cli(capsys, "predict", "R", "d.csv", "-o", "p.csv", "--proba")
    predicted = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1, usecols=(1, 2))
    np.testing.assert_allclose(predicted, learner.predict_proba("d.csv"), rtol=1e-6)


def test_a_changed_file_is_refused_at_resume(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    table = _frame(1200)
    _parquet(tmp_path / "d.parquet", table, 200)
    train = ["--stream", "--target", "y", "--epochs", "1", "--hidden", "8", "--quiet", "--no-plots"]
    assert cli(capsys, "train", "d.parquet", *train, "--out", "R")[0] == 0
    x = table.column("f1").to_numpy().copy()
    x[700] += 1.0
    _parquet(tmp_path / "d.parquet", table.set_column(2, "f1", pa.array(x)), 200)
    line = one_error(capsys, "train", "--resume", "R", "--epochs", "2")
    assert "training data (sha256" in line


def test_csv_conversion_is_repeatable_and_cleaned_up(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    stale = tmp_path / "nnfit-stream-999999999-abc"  # a killed process's conversion
    stale.mkdir()
    _frame(5000).to_pandas().to_csv(tmp_path / "d.csv", index=False)
    a, b = TableFiles(tmp_path / "d.csv"), TableFiles(tmp_path / "d.csv")
    assert not stale.exists()
    assert a.fingerprint() == b.fingerprint() and a.units == b.units and len(a.units) == 5  # 1024-row groups
    temp = a.paths[0].parent
    assert temp.parent == tmp_path and temp.is_dir()
    del a
    assert not temp.exists()


def test_a_directory_of_parquet_files_streams_as_one_table(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "parts").mkdir()
    table = _frame(1500)
    for i in range(3):
        _parquet(tmp_path / "parts" / f"part-{i}.parquet", table.slice(500 * i, 500), 250)
    status, _, err = cli(capsys, "train", "parts", "--target", "y", "--epochs", "1", "--hidden", "8",
                         "--out", "R", "--no-plots")
    assert status == 0 and "streaming parts (a directory of Parquet files): 1,500 rows in 6 row groups" in err
    assert json.loads((tmp_path / "R" / "model.json").read_text())["spec"]["name"] == "mlp"
    data = prepare_stream("parts", target="y", config=_config())
    assert np.array_equal(_ids(data.val.batches(100), data), data.val.row_ids())


def test_auto_streams_a_large_file_and_says_how_to_turn_it_off(tmp_path, capsys, monkeypatch) -> None:
    path = _parquet(tmp_path / "d.parquet", _frame(1000), 250)
    monkeypatch.setattr("nnfit.data.stream_fit.STREAM_THRESHOLD", 1000)
    data = prepare(path, target="y", config=TrainConfig(device="cpu"))
    err = capsys.readouterr().err
    assert type(data.train).__name__ == "TableStream"
    assert "GiB streaming threshold; --no-stream reads it whole" in err and err.count("\n") == 1
    data = prepare(path, target="y", config=TrainConfig(device="cpu", stream=False))
    assert type(data.train).__name__ == "TensorData" and not capsys.readouterr().err


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> Path:
    """A table, and the same table gone wrong in every way the parameters below name."""
    d = tmp_path_factory.mktemp("bad")
    table = _frame(1200)
    _parquet(d / "d.parquet", table, 300)
    table.to_pandas().to_csv(d / "d.csv", index=False)
    (d / "imgs").mkdir()
    (d / "bad.parquet").write_bytes(b"PAR1 not really")
    _parquet(d / "one.parquet", table.slice(0, 600), 1000)
    (d / "mixed").mkdir()
    _parquet(d / "mixed" / "a.parquet", table, 300)
    _parquet(d / "mixed" / "b.parquet", table.drop(["count"]), 300)
    lines = (d / "d.csv").read_text().splitlines()
    lines[1100] = "1,2"
    (d / "ragged.csv").write_text("\n".join(lines) + "\n")
    y = table.column("y").to_numpy().astype(float)
    y[1000] = np.nan
    _parquet(d / "gap.parquet", table.set_column(7, "y", pa.array(y)), 300)
    f2 = table.column("f2").to_numpy().copy()
    f2[1100] = np.inf
    _parquet(d / "inf.parquet", table.set_column(3, "f2", pa.array(f2)), 300)
    return d


@pytest.mark.parametrize("argv, says", [
    (["--dataset", "iris", "--stream"], "a bundled dataset (--dataset) is in memory already"),
    (["imgs", "--stream", "--target", "y"], "images are decoded into memory"),
    (["d.csv", "--stream", "--target", "y", "--sequence-id", "count", "--time", "f0"], "sequences"),
    (["d.csv", "--stream", "--target", "y", "--window", "3", "--time", "f0"], "forecasting windows"),
    (["d.parquet", "--stream", "--target", "y", "--test-split", "0.2"], "not split into a test file"),
    (["d.parquet", "--stream", "--target", "nope"], "target column 'nope' not found"),
    (["d.parquet", "--stream", "--target", "y", "fold=1/5"], "fold=1/5 does not apply"),
    (["bad.parquet", "--stream", "--target", "y"], "bad.parquet: not a readable Parquet file"),
    (["one.parquet", "--stream", "--target", "y"], "one row group of 600 rows"),
    (["mixed", "--target", "y"], "its columns differ from a.parquet's"),
    (["ragged.csv", "--stream", "--target", "y"], "ragged.csv: cannot parse: row 1100 has 2 fields"),
    (["gap.parquet", "--stream", "--target", "y"], "target column 'y' is missing on row 1001"),
    (["inf.parquet", "--stream", "--target", "y"], "column 'f2' has a non-finite value (row 1101: inf)"),
])
def test_bad_input_is_one_line(bad_files, capsys, monkeypatch, argv, says) -> None:
    monkeypatch.chdir(bad_files)
    assert says in one_error(capsys, "train", *argv, "--quiet")


def test_stream_true_on_data_in_memory_is_refused(tmp_path) -> None:
    x, y = np.random.default_rng(0).normal(size=(40, 3)), np.arange(40) % 2
    spec = {"name": "mlp", "hidden": [4]}
    with pytest.raises(ConfigError, match="arrays and tensors are in memory already"):
        nnfit.fit(spec, x, y, stream=True, quiet=True)
    with pytest.raises(ConfigError, match="a DataLoader is read by its own code"):
        pairs = torch.utils.data.TensorDataset(torch.zeros(4, 3), torch.zeros(4))
        loader = torch.utils.data.DataLoader(pairs)
        nnfit.fit(torch.nn.Linear(3, 1), loader, task="regression", stream=True, quiet=True)
    path = _parquet(tmp_path / "d.parquet", _frame(600), 200)
    with pytest.raises(ConfigError, match=r"validation data of your own \(val=\) does not apply"):
        nnfit.fit(spec, path, target="y", val=path, stream=True, quiet=True)
    with pytest.raises(DataError, match="name the target column"):
        nnfit.fit(spec, path, stream=True, quiet=True)


# ------------------------------------------------------------------------------ processes
def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_kill_and_resume_mid_stream_equals_an_uninterrupted_run(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _parquet(tmp_path / "d.parquet", _frame(2400), 200)
    train = ["d.parquet", "--stream", "--target", "y", "--epochs", "2", "--batch-size", "16",
             "--hidden", "16", "--dropout", "0.2", "--seed", "3", "--quiet", "--no-plots", "threads=1",
             "checkpoint_steps=7", "shuffle_buffer=300", "--scheduler", "cosine"]
    assert cli(capsys, "train", *train, "--out", "REF")[0] == 0
    steps = 2 * -(-len(prepare_stream("d.parquet", target="y", config=_config(seed=3)).train) // 16)
    for kill in (steps // 3, steps * 3 // 4):  # inside epoch 1, then inside epoch 2
        resuming = (tmp_path / "RUN").exists()
        args = ["train", "--resume", "RUN"] if resuming else ["train", *train, "--out", "RUN"]
        p = subprocess.run([sys.executable, str(HERE / "crash_driver.py"), "step", str(kill), "--", *args],
                           env=_env(), capture_output=True, text=True, timeout=300)
        assert p.returncode == -9, p.stderr[-2000:]
    assert cli(capsys, "train", "--resume", "RUN")[0] == 0
    weights = [(tmp_path / run / "model.safetensors").read_bytes() for run in ("RUN", "REF")]
    assert weights[0] == weights[1]
    resumes = json.loads((tmp_path / "RUN" / "resumes.json").read_text())
    assert len(resumes) == 2 and all(r["batch"] for r in resumes)  # each inside an epoch


# The CLI with the plots' rows and the schema's sample scaled down as the files are (both are
# bounds reached at 100k and 262k rows): what is left to grow with the file is the stream's.
WRAP = ("import sys; from nnfit.cli import main; import nnfit.data.stream_fit as f; "
        "f.TableStream.plot_rows = 20_000; f.SAMPLE_ROWS = 50_000; rc = main(sys.argv[1:]); "
        "print('HWM', open('/proc/self/status').read().split('VmHWM:')[1].split()[0], file=sys.stderr); "
        "sys.exit(rc)")


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_file(tmp_path) -> None:
    peaks = []
    rng = np.random.default_rng(0)
    for rows in (300_000, 600_000):
        x = rng.normal(size=(rows, 16)).astype(np.float32)
        table = pa.table({**{f"f{j}": x[:, j] for j in range(16)}, "y": (x[:, 0] > 0).astype(np.int64)})
        path = _parquet(tmp_path / f"d{rows}.parquet", table, 65536)
        del x, table
        p = subprocess.run([sys.executable, "-c", WRAP, "train", str(path), "--stream", "--target", "y",
                            "--epochs", "1", "--batch-size", "4096", "--hidden", "8", "--quiet",
                            "--out", str(tmp_path / f"R{rows}"), "threads=1"],
                           env=_env(), capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        peaks.append(int(p.stderr.rsplit("HWM", 1)[1].split()[0]) / 1024)
    # the 600k-row file holds 19 MB more floats than the 300k one: read whole, the peak would grow
    # by two or three times that
    print("peak RSS (MB) of 300k and 600k rows:", peaks)
    assert peaks[1] - peaks[0] < 8, peaks
