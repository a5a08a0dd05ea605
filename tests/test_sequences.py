"""Sequences end to end: every data form, batching by length (its padding measured), splits by
whole sequences, the saved layout and its validation, the CLI with --sequence-id/--time, and
the done-when run: an LSTM learns a label that only the order of the steps holds, where an MLP
on order-blind aggregates stays at chance."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import nnfit
from helpers import TermAt, cli, one_error
from nnfit.config import TrainConfig
from nnfit.data import TensorData
from nnfit.data.buckets import SequenceData, padding_waste, plan_batches
from nnfit.data.sequences import hold_out, write_test
from nnfit.errors import CheckpointError, ConfigError, DataError
from nnfit.graphs import graphs_wanted
from nnfit.runtime import Runtime
from test_validation import tamper_model

SRC = Path(__file__).parent.parent / "src"
QUICK = dict(quiet=True, device="cpu", seed=0)
SEQ = dict(sequence_id="id", time="t")
BIG_ID = 2**24  # ids above it collide in float32: they must be read exactly


def order_table(path: Path, n: int = 600, seed: int = 0) -> Path:
    """A long-format CSV whose label depends only on the order of the steps: each sequence has
    one "A" and one "B" event among "-" steps (and noise ``v``); the label says which came
    first (half the sequences each). Every order-blind aggregate has the same distribution for
    both labels. Rows are shuffled, times have gaps of any size, ids are integers above 2**24."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        steps = int(rng.integers(8, 25))
        a, b = sorted(rng.choice(steps, 2, replace=False))[::1 if i % 2 else -1]  # balanced labels
        times = np.sort(rng.choice(1000, steps, replace=False))
        for k in range(steps):
            event = "A" if k == a else "B" if k == b else "-"
            rows.append([BIG_ID + i, int(times[k]), event, round(float(rng.normal()), 4),
                         "AB" if a < b else "BA"])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "t", "event", "v", "first"])
        w.writerows(rows[k] for k in rng.permutation(len(rows)))
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def ragged(n: int = 120, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Float sequences of 3..15 steps and 2 features; label: first step's feature 0 above the last's."""
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=(int(rng.integers(3, 16)), 2)).astype(np.float32) for _ in range(n)]
    return xs, np.array([int(s[0, 0] > s[-1, 0]) for s in xs])


class Recorder(nn.Module):
    """A user module taking sequences by name (a masked mean of the steps, then Linear);
    records the shapes of its last call's inputs."""

    def __init__(self, features: int, out: int = 1) -> None:
        super().__init__()
        self.fc = nn.Linear(features, out)
        self.seen: dict[str, tuple] = {}

    def forward(self, x, lengths, codes=None):
        self.seen = {"x": tuple(x.shape), "lengths": tuple(lengths.shape),
                     "codes": None if codes is None else tuple(codes.shape)}
        valid = (torch.arange(x.shape[1]) < lengths[:, None]).unsqueeze(-1)
        return self.fc(torch.where(valid, x, 0.0).sum(1) / lengths[:, None])


# ------------------------------------------------------------------------------ batching
@pytest.mark.parametrize("spread", ["uniform 20..200", "lognormal"])
def test_training_batches_waste_at_most_ten_percent_of_cells(spread: str) -> None:
    rng = np.random.default_rng(0)
    n = 5000
    lengths = (rng.integers(20, 201, n) if spread == "uniform 20..200"
               else np.clip(rng.lognormal(4.0, 0.6, n), 2, None).astype(np.int64))
    batches = plan_batches(lengths, 32, shuffle=True, generator=torch.Generator().manual_seed(0))
    waste = padding_waste(lengths, batches)
    per_batch = [padding_waste(lengths, [b]) for b in batches]
    assert waste <= 0.10 and np.median(per_batch) <= 0.10, (waste, np.median(per_batch))
    # what sorting saves: random batches of the same data pad several times more
    assert padding_waste(lengths, plan_batches(lengths, 32)) > 3 * waste
    # every sequence once, every batch full but the last
    assert sorted(np.concatenate(batches).tolist()) == list(range(n))
    assert all(len(b) == 32 for b in batches[:-1]) and len(batches[-1]) == n % 32


def test_batches_are_trimmed_deterministic_and_resume_by_skipping() -> None:
    lengths = np.random.default_rng(1).integers(1, 30, 203)
    data = SequenceData({"x": torch.arange(int(lengths.sum()), dtype=torch.float32)[:, None]}, lengths,
                        torch.arange(203))

    def epoch(start: int = 0) -> list:
        return list(data.batches(16, shuffle=True, generator=torch.Generator().manual_seed(7), start=start))

    full = epoch()
    for inputs, target in full:
        assert inputs["x"].shape[1] == int(lengths[target.numpy()].max())  # its own longest
        assert torch.equal(inputs["lengths"], torch.from_numpy(lengths[target.numpy()]))
    assert sorted(torch.cat([t for _, t in full]).tolist()) == list(range(203))
    again = epoch(start=5)
    assert len(again) == len(full) - 5
    assert all(torch.equal(a[0]["x"], b[0]["x"]) and torch.equal(a[1], b[1])
               for a, b in zip(again, full[5:], strict=True))
    # evaluation keeps the input order, each batch still trimmed
    in_order = list(data.batches(16))
    assert torch.equal(torch.cat([t for _, t in in_order]), torch.arange(203))
    assert [b["x"].shape[1] for b, _ in in_order] == [int(lengths[i:i + 16].max()) for i in range(0, 203, 16)]
    # a last batch of one sequence is dropped when asked (BatchNorm), as TensorData does
    assert sum(len(t) for _, t in data.batches(202, shuffle=True, drop_single=True)) == 202


def test_sequences_are_never_captured_as_a_cuda_graph() -> None:
    trainer = nnfit.Trainer(TrainConfig(device="cpu", quiet=True))
    trainer.runtime = Runtime(torch.device("cuda"))  # judged as on a GPU: no GPU needed here
    assert graphs_wanted(trainer, TensorData(torch.zeros(2, 3, 1), torch.zeros(2)))
    ragged_data = SequenceData({"x": torch.zeros(5, 1)}, np.array([2, 3]), torch.zeros(2))
    assert not graphs_wanted(trainer, ragged_data)


# ------------------------------------------------------------------------------ arrays
def test_padded_bucketed_outputs_equal_each_sequence_alone() -> None:
    xs, y = ragged()
    spec = {"name": "lstm", "hidden": [8, 8], "bidirectional": True, "readout": "mean"}
    learner = nnfit.fit(spec, xs, y, epochs=2, batch_size=16, **QUICK)
    assert learner.preprocessor.layout.to_dict() == {
        "kind": "sequence", "form": "floats", "features": 2, "vocab_size": 0, "cardinalities": [],
        "sequence_id": None, "time": None}
    together = learner.outputs(xs)
    alone = torch.cat([learner.outputs([s]) for s in xs])
    assert together.shape == (len(xs), 1)
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=0)
    # a full-length (N, T, F) array and a tensor read the same way
    block = np.stack([s[:3] for s in xs])
    torch.testing.assert_close(learner.outputs(block), learner.outputs([s[:3] for s in xs]), atol=0, rtol=0)
    torch.testing.assert_close(learner.outputs(torch.from_numpy(block)), learner.outputs(block),
                               atol=0, rtol=0)


def test_token_sequences_fit_a_vocabulary_and_refuse_ids_outside_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, 12, (80, 6))
    learner = nnfit.fit("gru", tokens, tokens[:, 0] > tokens[:, -1], epochs=1, **QUICK)
    assert learner.spec["vocab_size"] == 12 and learner.spec["in_features"] == 0
    learner.save(tmp_path / "m")
    loaded = nnfit.load(tmp_path / "m")
    assert np.array_equal(loaded.predict(tokens), learner.predict(tokens))
    lists = [torch.from_numpy(t[:k]) for t, k in zip(tokens, rng.integers(1, 7, 80), strict=True)]
    assert loaded.predict(lists).shape == (80,)
    late = tokens.copy()
    late[3, 4] = 12
    with pytest.raises(DataError, match=r"^input: token 12 at row 4, step 5 is beyond the vocabulary the "
                                        r"model was trained on \(tokens 0 to 11\)$"):
        loaded.predict(late)
    late[3, 4] = -1
    with pytest.raises(DataError, match=r"^input: a negative token id .* at row 4, step 5$"):
        loaded.predict(late)


def test_user_module_gets_named_inputs() -> None:
    xs, y = ragged(40)
    model = Recorder(2)
    learner = nnfit.fit(model, xs[10:], y[10:], val=(xs[:10], y[:10]), epochs=1, batch_size=8, **QUICK)
    assert "val_loss" in learner.history[-1]
    learner.predict(xs[:3])
    assert model.seen == {"x": (3, max(len(s) for s in xs[:3]), 2), "lengths": (3,), "codes": None}


@pytest.mark.parametrize("x, match", [
    (np.zeros((4, 5)), r"a float array of sequences is \(N, T, F\)"),
    ([np.zeros((3, 2)), np.zeros((0, 2))], "row 2 is an empty sequence"),
    ([np.zeros((3, 2)), np.zeros((4, 3))], "different numbers of features per step"),
    ([np.zeros((3, 2)), np.array([[1.0, np.nan]] * 2)], r"missing, infinite .* at row 2, step 1$"),
])
def test_bad_arrays_are_one_line(x, match) -> None:
    with pytest.raises(DataError, match=match):
        nnfit.fit("lstm", x, np.arange(len(x)) % 2, epochs=1, **QUICK)


def test_layout_names_the_families_that_read_sequences() -> None:
    xs, y = ragged(30)
    with pytest.raises(ConfigError, match="model 'mlp' cannot read sequences: use 'lstm' or 'gru'"):
        nnfit.fit("mlp", xs, y, epochs=1, **QUICK)
    with pytest.raises(ConfigError, match="--sequence-id makes sequences, which model 'mlp' cannot read"):
        nnfit.fit("mlp", "never-read.csv", target="y", epochs=1, **SEQ, **QUICK)


# ------------------------------------------------------------------------------ tables
def _frame(n: int = 60, seed: int = 3):
    """A long-format DataFrame: dates as time, a text categorical per step, rows shuffled."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    parts = []
    for i in range(n):
        k = int(rng.integers(2, 9))
        days = pd.to_timedelta(np.sort(rng.choice(50, k, replace=False)), "D")
        parts.append(pd.DataFrame({
            "id": f"s{i}", "t": pd.Timestamp("2024-01-01") + days,
            "v": rng.normal(size=k), "kind": rng.choice(["a", "b", "c"], k), "y": i % 3}))
    df = pd.concat(parts, ignore_index=True)
    return df.iloc[rng.permutation(len(df))].reset_index(drop=True)


def test_table_steps_use_column_roles_and_predictions_follow_first_appearance() -> None:
    df = _frame()
    model = Recorder(1, 3)  # x: the numeric feature v; codes: the categorical kind
    learner = nnfit.fit(model, df, target="y", val=_frame(20, seed=4), epochs=1, batch_size=8, **SEQ,
                        **QUICK)
    assert "val_loss" in learner.history[-1]
    pre = learner.preprocessor
    assert [c.name for c in pre.table.columns] == ["v", "kind"]  # id, time and target are no features
    assert pre.layout.to_dict()["cardinalities"] == [5]  # a, b, c + unknown + missing
    out, keys = learner.prediction_keys(df)
    first = list(dict.fromkeys(df["id"]))
    assert list(keys) == ["id"] and keys["id"].tolist() == first and out.shape == (60, 3)
    assert model.seen["codes"] == (60, model.seen["x"][1], 1)
    # rows in another order, same sequences: same outputs per id
    again, keys2 = learner.prediction_keys(df.iloc[::-1])
    order = [first.index(i) for i in keys2["id"].tolist()]
    torch.testing.assert_close(again, out[order], atol=1e-6, rtol=0)


def test_gaps_in_steps_are_filled_as_in_tables_or_refused() -> None:
    df = _frame(30)
    df.loc[[3, 7], "v"] = np.nan
    with pytest.warns(nnfit.errors.NnfitWarning, match=r"filled missing values .*: v \(2\)$"):
        learner = nnfit.fit(Recorder(2, 3), df, target="y", epochs=1, **SEQ, **QUICK)
    assert learner.preprocessor.table.feature_names == ["v", "v:missing"]
    with pytest.raises(DataError, match=r"missing values.*v \(2\)"):
        nnfit.fit(Recorder(1, 3), df, target="y", epochs=1, impute=False, **SEQ, **QUICK)


def test_validation_and_test_splits_hold_whole_sequences(tmp_path: Path) -> None:
    path = order_table(tmp_path / "d.csv", n=80)
    cfg = TrainConfig(sequence_id="id", time="t", seed=0)
    train, test, n_test = hold_out(str(path), 0.25, cfg, "first", "auto")
    assert n_test == 20
    ids_train, ids_test = set(train.arrays["id"].tolist()), set(test.arrays["id"].tolist())
    assert not ids_train & ids_test and len(ids_train | ids_test) == 80
    labels = {r["id"]: r["first"] for r in read_rows(path)}
    held = [labels[str(i)] for i in ids_test]
    assert abs(held.count("AB") - held.count("BA")) <= 2  # stratified
    write_test(tmp_path / "test.csv", test, cfg, "first")
    rows = read_rows(tmp_path / "test.csv")
    assert list(rows[0]) == ["id", "t", "event", "v", "first"]  # the table's own columns
    assert len(rows) == len(test) and {int(r["id"]) for r in rows} == ids_test
    # validation: the only feature is the sequence's own number, so no number on both sides
    import pandas as pd

    from nnfit.data.prepare import prepare

    df = pd.read_csv(path).drop(columns=["v", "event"])
    df["seq"] = (df["id"] - BIG_ID).astype(float)
    prep = prepare(df, target="first", config=TrainConfig(val_split=0.3, seed=0, **SEQ))
    assert prep.preprocessor.table.feature_names == ["seq"]
    s = prep.preprocessor.inputs[0]

    def seqs(src) -> set:
        return {round(float(v)) for v in src.inputs["x"][:, 0] * s.std[0] + s.mean[0]}  # stored flat

    tr, va = seqs(prep.train), seqs(prep.val)
    assert not tr & va and tr | va == set(range(80)) and 20 <= len(va) <= 28


@pytest.mark.parametrize("text, match", [
    ("id,t,v,y\na,1,0.5,x\na,2,0.1,x\nb,1,0.3,y\n",
     r"d.csv: sequence 'b' has one row \(row 3\): a sequence needs two time steps or more"),
    ("id,t,v,y\na,1,0.5,x\na,2,0.1,x\nb,5,0.3,y\nb,5,0.3,y\n",
     r"d.csv: sequence 'b' has time 5 twice \(rows 3 and 4\): one row per time step"),
    ("id,t,v,y\na,1,0.5,x\na,2,0.1,z\nb,1,0.3,y\nb,2,0.3,y\n",
     r"d.csv: sequence 'a' has two labels in target column 'y' \('x' and 'z', rows 1 and 2\)"),
    ("id,t,v,y\na,1,0.5,x\na,,0.1,x\nb,1,0.3,y\nb,2,0.3,y\n", r"--time column 't' is missing on row 2"),
    ("id,t,v,y\na,1,0.5,x\n,2,0.1,x\nb,1,0.3,y\nb,2,0.3,y\n",
     r"--sequence-id column 'id' is missing on row 2"),
    ("id,tt,v,y\na,1,0.5,x\na,2,0.1,x\n", r"--time column 't' not found \(columns: id, tt, v, y\)"),
    ("idx,t,v,y\na,1,0.5,x\na,2,0.1,x\n", r"--sequence-id column 'id' not found"),
    ("id,t,v,yy\na,1,0.5,x\na,2,0.1,x\n", r"target column 'y' not found"),
])
def test_bad_tables_are_one_line_exit_2_and_nothing_written(tmp_path: Path, capsys, text: str,
                                                            match: str) -> None:
    (tmp_path / "d.csv").write_text(text)
    line = one_error(capsys, "train", tmp_path / "d.csv", "--target", "y", "--sequence-id", "id", "--time",
                     "t", "--model", "lstm", "--out", tmp_path / "run", "--test-split", "0.25")
    assert re.search(match, line), line
    assert not (tmp_path / "run").exists()


def test_lstm_on_a_plain_table_names_the_flags(tmp_path: Path, capsys) -> None:
    (tmp_path / "d.csv").write_text("a,b,y\n1,2,x\n3,4,z\n5,6,x\n")
    line = one_error(capsys, "train", tmp_path / "d.csv", "--target", "y", "--model", "lstm",
                     "--out", tmp_path / "run")
    assert "--sequence-id COL and --time COL" in line
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ done when
def _aggregates(rows: list[dict[str, str]]):
    """Per-sequence order-blind features: length, event counts, mean/std/min/max and a
    histogram of v."""
    import pandas as pd

    df = pd.DataFrame(rows).astype({"v": float})
    g = df.groupby("id")
    out = pd.DataFrame({"n": g.size(), "a": g["event"].apply(lambda e: (e == "A").sum()),
                        "b": g["event"].apply(lambda e: (e == "B").sum()), "mean": g["v"].mean(),
                        "std": g["v"].std(), "min": g["v"].min(), "max": g["v"].max(),
                        "first": g["first"].first()})
    for i, (lo, hi) in enumerate([(-9, -1), (-1, 0), (0, 1), (1, 9)]):
        out[f"h{i}"] = g["v"].apply(lambda v, lo=lo, hi=hi: ((v >= lo) & (v < hi)).mean())
    return out.reset_index(drop=True)


def test_lstm_learns_order_where_order_blind_aggregates_score_chance(tmp_path: Path, capsys) -> None:
    data = order_table(tmp_path / "data.csv")
    run = tmp_path / "run"
    status, out, err = cli(capsys, "train", data, "--target", "first", "--sequence-id", "id", "--time",
                           "t", "--model", "lstm", "--hidden", "32", "--lr", "0.01", "--epochs", "12",
                           "--batch-size", "32", "--test-split", "0.25", "--out", run, "--quiet")
    assert status == 0, err
    test = json.loads((run / "test_metrics.json").read_text())
    assert test["accuracy"] >= 0.95, test
    # the order-blind baseline on the same split: chance
    test_ids = {r["id"] for r in read_rows(run / "test.csv")}
    rows = read_rows(data)
    blind_train = _aggregates([r for r in rows if r["id"] not in test_ids])
    blind_test = _aggregates([r for r in rows if r["id"] in test_ids])
    mlp = nnfit.fit({"name": "mlp", "hidden": [32]}, blind_train, target="first", epochs=30, **QUICK)
    assert mlp.evaluate(blind_test, target="first")["accuracy"] <= 0.6
    # evaluate and predict reuse the run's --sequence-id/--time: one row per sequence id
    status, out, _ = cli(capsys, "evaluate", run, run / "test.csv", "--json")
    assert status == 0 and json.loads(out)["accuracy"] == pytest.approx(test["accuracy"])
    assert cli(capsys, "predict", run, data, "-o", tmp_path / "p.csv", "--proba")[0] == 0
    pred = read_rows(tmp_path / "p.csv")
    assert list(pred[0]) == ["id", "first", "proba_AB", "proba_BA"]
    assert [r["id"] for r in pred] == list(dict.fromkeys(r["id"] for r in rows))  # first appearance
    labels = {r["id"]: r["first"] for r in rows}
    assert np.mean([labels[r["id"]] == r["first"] for r in pred]) >= 0.95
    # a fresh process reloads the run and predicts the same
    subprocess.run([sys.executable, "-m", "nnfit", "predict", str(run), str(data), "-o",
                    str(tmp_path / "p2.csv"), "--proba"], check=True, capture_output=True, timeout=120,
                   env={**os.environ, "PYTHONPATH": str(SRC)})
    assert (tmp_path / "p2.csv").read_text() == (tmp_path / "p.csv").read_text()
    status, out, _ = cli(capsys, "inspect", run)
    assert status == 0 and "LSTM" in out


def test_resume_on_variable_length_data_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    xs, y = ragged(90)
    spec = {"name": "lstm", "hidden": [8], "dropout": 0.0}
    kw = dict(batch_size=8, checkpoint_steps=3, **QUICK)
    full = nnfit.fit(spec, xs, y, epochs=3, **kw).model.state_dict()
    nnfit.fit(spec, xs, y, epochs=2, run_dir=tmp_path / "a", **kw)
    after = nnfit.fit(spec, xs, y, epochs=3, run_dir=tmp_path / "a", resume=tmp_path / "a", **kw)
    with pytest.raises(nnfit.errors.Stopped):  # stopped inside epoch 2: resumed by skipping batches
        nnfit.fit(spec, xs, y, epochs=3, run_dir=tmp_path / "b", callbacks=[TermAt(13)], **kw)
    inside = nnfit.fit(spec, xs, y, epochs=3, run_dir=tmp_path / "b", resume=tmp_path / "b", **kw)
    for resumed in (after, inside):
        state = resumed.model.state_dict()
        assert list(state) == list(full) and all(torch.equal(state[k], full[k]) for k in full)


# ------------------------------------------------------------------------------ validation
@pytest.fixture(scope="module")
def table_run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("seq")
    nnfit.fit({"name": "lstm", "hidden": [4]}, order_table(d / "data.csv", n=40), target="first", epochs=1,
              run_dir=d / "run", **SEQ, **QUICK)
    return d / "run"


@pytest.mark.parametrize("field, value, match", [
    ("form", "video", r"layout\.form"),
    ("form", "floats", r"layout\.sequence_id: .* for sequences of form 'floats'"),
    ("features", 3, r"layout\.features: 3 but input 'x' has per-step shape \[1\]"),
    ("features", -1, r"layout\.features"),
    ("vocab_size", 5, r"layout\.vocab_size: 5 for sequences of form 'table'"),
    ("cardinalities", [6], r"layout\.cardinalities: \[6\] but the categorical columns have \[5\]"),
    ("cardinalities", [], r"layout\.cardinalities"),
    ("time", "id", r"layout\.time: 'id' is also the sequence id column"),
    ("time", "v", r"layout\.time: 'v' is also a feature column"),
    ("time", None, r"layout\.time: null, but a table's sequences name their id and time columns$"),
    ("extra", 1, r"layout"),
])
def test_tampered_sequence_layouts_are_refused(table_run: Path, tmp_path: Path, field, value, match) -> None:
    run = tmp_path / "run"
    shutil.copytree(table_run, run)

    def change(meta: dict) -> None:
        meta["preprocess"]["layout"][field] = value

    tamper_model(run, meta_fn=change)
    with pytest.raises(CheckpointError, match=match) as e:
        nnfit.load(run)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("change, match", [
    ({"embeddings": [[6, 3]]}, r"spec: embeddings of cardinalities \[6\] do not fit the layout's \[5\]"),
    ({"in_features": 2}, r"spec: in_features 2 does not fit input 'x' of per-sample shape \['T', 1\]"),
    (nnfit.models.MLP(1, [4], 1).spec(), r"spec: a mlp model cannot read sequences \(an lstm or gru can\)"),
])
def test_a_spec_that_does_not_fit_the_layout_is_refused(table_run: Path, tmp_path: Path, capsys,
                                                        change: dict, match: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(table_run, run)
    tamper_model(run, meta_fn=lambda meta: meta["spec"].update(change) if "name" not in change
                 else meta.__setitem__("spec", change))
    line = one_error(capsys, "predict", run, tmp_path / "x.csv", "-o", tmp_path / "p.csv")
    assert re.search(match, line), line
    assert not (tmp_path / "p.csv").exists()


# ------------------------------------------------------------------------------ review fixes
TWIN = 10**18  # ids TWIN + 1024 k and TWIN + 1024 k + 1 are one number in float64


def twin_table(path: Path, n: int = 24, one_row: int | None = None) -> Path:
    """A long-format CSV with integer ids past 2**53 in adjacent pairs (each pair reads as one
    float64); sequence ``one_row`` (an index) has a single row."""
    rng = np.random.default_rng(5)
    rows = []
    for i in range(n):
        steps = 1 if i == one_row else int(rng.integers(3, 7))
        for k in range(steps):
            rows.append([TWIN + 1024 * (i // 2) + i % 2, k, round(float(rng.normal()), 4), "ab"[i % 2]])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "t", "v", "y"])
        w.writerows(rows[k] for k in rng.permutation(len(rows)))
    return path


def test_integer_ids_past_2_53_stay_exact_on_every_path(tmp_path: Path, capsys) -> None:
    import pandas as pd

    data = twin_table(tmp_path / "d.csv")
    ids = [str(i) for i in dict.fromkeys(int(r["id"]) for r in read_rows(data))]
    run = tmp_path / "run"
    status, _, err = cli(capsys, "train", data, "--target", "y", "--sequence-id", "id", "--time", "t",
                         "--model", "lstm", "--hidden", "4", "--epochs", "1", "--test-split", "0.25",
                         "--out", run, "--quiet")
    assert status == 0, err
    held = {r["id"] for r in read_rows(run / "test.csv")}
    assert len(held) == 6 and held <= set(ids)  # 6 of 24 sequences, ids exact
    assert cli(capsys, "evaluate", run, run / "test.csv", "--json")[0] == 0
    assert cli(capsys, "predict", run, data, "-o", tmp_path / "p.csv")[0] == 0
    assert [r["id"] for r in read_rows(tmp_path / "p.csv")] == ids  # 24 rows, printed exactly
    learner = nnfit.load(run)
    df = pd.read_csv(data)
    df.to_parquet(tmp_path / "d.parquet")
    for x in (df, tmp_path / "d.parquet", str(data)):
        out, keys = learner.prediction_keys(x)
        assert [str(i) for i in keys["id"].tolist()] == ids and out.shape == (24, 1)
    assert learner.evaluate(df, target="y")["accuracy"] == learner.evaluate(str(data), target="y")["accuracy"]
    big = df.assign(id=df["id"].astype("uint64") + np.uint64(2**63))  # beyond int64 as well
    assert [str(i) for i in learner.prediction_keys(big)[1]["id"].tolist()] == [
        str(int(i) + 2**63) for i in ids]


def test_a_one_row_sequence_is_scored_at_evaluate_and_predict(tmp_path: Path, capsys) -> None:
    learner = nnfit.fit({"name": "lstm", "hidden": [4]}, str(twin_table(tmp_path / "d.csv")), target="y",
                        epochs=1, **SEQ, **QUICK)
    later = twin_table(tmp_path / "later.csv", n=10, one_row=3)
    learner.save(tmp_path / "m")
    assert cli(capsys, "predict", tmp_path / "m", later, "-o", tmp_path / "p.csv")[0] == 0
    assert len(read_rows(tmp_path / "p.csv")) == 10
    status, out, _ = cli(capsys, "evaluate", tmp_path / "m", later, "--json")
    assert status == 0 and "accuracy" in json.loads(out)
    # its output is the one of the sequence alone
    lonely = [r for r in read_rows(later) if r["id"] == str(TWIN + 1024 + 1)]
    (tmp_path / "one.csv").write_text("id,t,v,y\n" + "".join(f"{r['id']},{r['t']},{r['v']},{r['y']}\n"
                                                             for r in lonely))
    out, keys = learner.prediction_keys(str(later))
    alone, _ = learner.prediction_keys(str(tmp_path / "one.csv"))
    at = keys["id"].tolist().index(TWIN + 1024 + 1)
    assert len(lonely) == 1
    torch.testing.assert_close(out[at:at + 1], alone, atol=1e-6, rtol=0)
    # training still refuses it (tests/test_sequences.py::test_bad_tables_are_one_line...)
    with pytest.raises(DataError, match=r"sequence 1000000000000001025 has one row .* to train on$"):
        nnfit.fit("lstm", str(later), target="y", epochs=1, **SEQ, **QUICK)


class _Threads(nnfit.Callback):
    def on_epoch_start(self, trainer) -> None:
        self.seen = torch.get_num_threads()


def test_recurrent_models_pick_cpu_threads_by_one_layer_per_step() -> None:
    from nnfit.runtime import step_params

    gru = nnfit.models.GRU(16, 1, hidden=[64, 64], bidirectional=True)
    assert step_params(gru) == 3 * 64 * (128 + 64 + 2)  # one direction of the second layer
    assert step_params(nn.LSTM(4, 8, num_layers=2, bidirectional=True)) == 4 * 8 * (16 + 8 + 2)
    mlp = nnfit.models.MLP(32, [128, 128], 10)
    assert step_params(mlp) == sum(p.numel() for p in mlp.parameters())
    x, y = np.random.default_rng(0).normal(size=(40, 3, 16)).astype(np.float32), np.arange(40) % 2
    spec = {"name": "gru", "hidden": [64, 64], "bidirectional": True}
    torch.set_num_threads(2)  # the suite's fixture restores it
    seen = []
    # 106k parameters x 32 is past SMALL_STEP_WORK, yet each op multiplies one layer's 37k
    for batch in (32, 128):
        cb = _Threads()
        nnfit.fit(spec, x, y, epochs=1, batch_size=batch, callbacks=[cb], **QUICK)
        seen.append((cb.seen, torch.get_num_threads()))
    assert seen == [(1, 2), (2, 2)]  # and restored after the fit


class _Widths(Recorder):
    """Records the width (padded steps) of each batch it is called with."""

    def __init__(self, features: int) -> None:
        super().__init__(features)
        self.widths: list[int] = []

    def forward(self, x, lengths, codes=None):
        self.widths.append(x.shape[1])
        return super().forward(x, lengths, codes)


def test_evaluation_batches_by_length_and_prediction_keeps_order() -> None:
    xs, y = ragged(60)
    model = _Widths(2)
    learner = nnfit.fit(model, xs, y, epochs=1, eval_batch_size=8, val_split=0.0, **QUICK)
    lengths = sorted(len(s) for s in xs)
    model.widths = []
    metrics = learner.evaluate(xs, y)
    assert model.widths == [lengths[min(i + 7, 59)] for i in range(0, 60, 8)]
    model.widths = []
    out = learner.outputs(xs)
    assert model.widths == [max(len(s) for s in xs[i:i + 8]) for i in range(0, 60, 8)]
    # the metrics pair each output with its own target: as from the outputs in order
    loss = nn.functional.binary_cross_entropy_with_logits(out[:, 0], torch.from_numpy(y).float())
    assert metrics["loss"] == pytest.approx(float(loss), abs=1e-6)
    assert metrics["accuracy"] == np.mean((out[:, 0].numpy() > 0) == y)
