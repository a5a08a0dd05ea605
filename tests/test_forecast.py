"""Forecasting from one time-ordered table (nnfit.data.forecast, nnfit.tasks.ForecastTask):
windows read exactly rows i-H-W+1 ... i-H, the split is by time, every evaluation reports the
naive and seasonal-naive baselines, an LSTM beats the naive forecast on a seasonal series,
later files are forecast with the run's settings, a run resumes exactly, and bad input is one
line with nothing written. CPU, small series."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import nnfit
from helpers import cli, one_error
from nnfit.config import TrainConfig
from nnfit.data import forecast
from nnfit.data.forecast import WindowData, infer_season
from nnfit.errors import CheckpointError, ConfigError, DataError, NnfitWarning
from nnfit.io.validate import LEARNER, validate
from nnfit.tasks import ForecastTask
from nnfit.tasks.forecasting import ForecastMetrics, seasonal_lag
from test_validation import tamper_model

CPU = {"device": "cpu", "quiet": True}
LSTM = {"name": "lstm", "hidden": [32]}


def daily(n: int = 730, seed: int = 0, start: str = "2022-01-01") -> pd.DataFrame:
    """A daily series: level, weekly and yearly seasonality, noise (sd 0.5)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = (10 + 3 * np.sin(2 * np.pi * t / 7) + 2 * np.sin(2 * np.pi * t / 365.25)
         + rng.normal(0, 0.5, n))
    return pd.DataFrame({"date": pd.date_range(start, periods=n, freq="D"), "y": y})


def counting(n: int = 40) -> pd.DataFrame:
    """Features that are the row numbers: time t = 10*row, r = row, y = 100*row."""
    r = np.arange(n, dtype=float)
    return pd.DataFrame({"t": np.arange(n) * 10, "r": r, "y": 100 * r})


def prepared(df: pd.DataFrame, **cfg):
    config = TrainConfig(**{"time": "t", "window": 3, "horizon": 2, "val_split": 0.25, **cfg})
    return forecast.prepare(df, None, target="y", val=None, task="auto", config=config, resumed=None)


# --------------------------------------------------------------------------- the windows
@pytest.mark.parametrize("shuffle", [False, True])
def test_windows_read_exactly_the_rows_before_the_horizon(shuffle: bool) -> None:
    w, h = 3, 2
    p = prepared(counting(), standardize=False, scale_target=False, season=5)
    names = p.preprocessor.table.feature_names
    assert names == ["r", "y"]  # every column but the time column: the past target is an input
    assert isinstance(p.train, WindowData) and isinstance(p.val, WindowData)
    # the series is held once, (rows, features): never copied W times
    assert p.train.inputs["x"].shape == (40 - h, 2) and p.train.inputs["x"] is p.val.inputs["x"]
    seen = []
    for src in (p.train, p.val):
        g = torch.Generator().manual_seed(0)
        for inputs, tgt in src.batches(5, shuffle=shuffle, generator=g):
            x = inputs["x"]
            assert x.shape[1:] == (w, 2)
            i = (tgt[:, 0] / 100).round().long()
            want = i.unsqueeze(1) + torch.arange(-h - w + 1, -h + 1)  # rows i-H-W+1 ... i-H
            assert torch.equal(x[..., 0].long(), want) and torch.equal(x[..., 1], 100 * want.float())
            assert torch.equal(tgt[:, 1], 100 * (i - h).float())  # naive: y[i-H]
            seasonal = tgt[:, 2]  # y[i-5] (5 >= H), none before the first row
            assert torch.equal(seasonal[i >= 5], 100 * (i[i >= 5] - 5).float())
            assert torch.isnan(seasonal[i < 5]).all()
            seen.append(i)
    assert sorted(torch.cat(seen).tolist()) == list(range(w + h - 1, 40))  # every row once


def test_validation_is_strictly_after_training_and_fits_nothing() -> None:
    p = prepared(counting(), scale_target=True)
    rows = [torch.cat([t[:, 0] for _, t in s.batches(64)]) for s in (p.train, p.val)]
    train, val = (r * p.task.std[0] + p.task.mean[0] for r in rows)  # back in units of y
    assert train.max() < val.min()  # every training target before every validation target
    assert len(val) == round(0.25 * 36) == 9  # the last val_split of the 36 forecast rows
    # statistics from the 31 rows before the first validation target only
    assert p.preprocessor.inputs[0].mean[0] == pytest.approx(15.0)
    # the target scaled as its input column (the same rows): the model forecasts the change
    # from its last value (models.rnn naive_feature)
    assert p.task.mean[0] == pytest.approx(100 * np.arange(31).mean())
    assert p.task.std[0] == pytest.approx(p.preprocessor.inputs[0].std[1])
    assert p.preprocessor.layout.naive_feature == 1  # features ["r", "y"]


def test_window_data_subset_and_device_move_keep_the_windows() -> None:
    d = WindowData({"x": torch.arange(10.0).unsqueeze(1)}, torch.tensor([2, 5, 9]), 3,
                   torch.arange(3.0).unsqueeze(1))
    sub = d.subset([2, 0]).to(torch.device("cpu"))
    (inputs, tgt), = sub.batches(4)
    assert inputs["x"][..., 0].tolist() == [[7.0, 8.0, 9.0], [0.0, 1.0, 2.0]] and tgt[:, 0].tolist() == [2, 0]
    assert [len(t) for _, t in d.batches(2, start=1)] == [1]


# --------------------------------------------------------------------------- the baselines
def test_seasonal_lag_and_season_inference() -> None:
    assert [seasonal_lag(h, 7) for h in (1, 6, 7, 8, 14, 15)] == [7, 7, 7, 14, 14, 21]

    def every(step: str, n: int = 20) -> np.ndarray:
        return pd.date_range("2024-01-01", periods=n, freq=step).to_numpy()

    got = {s: infer_season(every(s)) for s in ("min", "h", "D", "W", "MS", "QS", "YS")}
    assert got == {"min": 60, "h": 24, "D": 7, "W": 52, "MS": 12, "QS": 4, "YS": None}
    assert infer_season(np.arange(20.0)) is None  # numeric time: not inferred


def test_forecast_metrics_against_numpy_and_null_without_seasonal_rows() -> None:
    rng = np.random.default_rng(0)
    y, naive, seasonal, out = rng.normal(size=(4, 50))
    m = ForecastMetrics(season=7)
    for rows in (slice(0, 20), slice(20, 50)):  # two batches
        t = torch.tensor(np.stack([y[rows], naive[rows], seasonal[rows]], 1))
        m.update(torch.tensor(out[rows]).unsqueeze(1), t)
    r = m.compute()

    def mae(a): return float(np.abs(a - y).mean())
    def rmse(a): return float(np.sqrt(((a - y) ** 2).mean()))
    assert r["mae"] == pytest.approx(mae(out)) and r["rmse"] == pytest.approx(rmse(out))
    assert r["naive_mae"] == pytest.approx(mae(naive)) and r["naive_rmse"] == pytest.approx(rmse(naive))
    assert r["seasonal_naive_mae"] == pytest.approx(mae(seasonal)) and r["season"] == 7
    m.update(torch.zeros(1, 1), torch.tensor([[0.0, 0.0, math.nan]]))  # one row without one
    assert m.compute()["seasonal_naive_mae"] is None and m.compute()["seasonal_naive_rmse"] is None
    unknown = ForecastMetrics(None)
    unknown.update(torch.zeros(1, 1), torch.tensor([[0.0, 1.0, 2.0]]))
    assert unknown.compute()["seasonal_naive_mae"] is None and unknown.compute()["season"] is None


def test_task_loss_reads_the_value_column_only_and_round_trips() -> None:
    task = ForecastTask(season=12)
    task.fit_scaling(np.array([1.0, 3.0]))
    t = task.encode_target(np.array([[3.0, 1.0, math.nan]]))
    assert torch.isnan(t[0, 2]) and t[0, :2].tolist() == [1.0, -1.0]
    assert float(task.loss(torch.tensor([[1.0]]), t)) == 0.0
    with pytest.raises(DataError, match=r"has a missing value \(row 1"):
        task.encode_target(np.array([[3.0, math.nan, 1.0]]))
    again = nnfit.tasks.task_from_dict(json.loads(json.dumps(task.to_dict())))
    assert again == task and again.to_dict()["season"] == 12
    with pytest.raises(ConfigError, match="one series"):
        ForecastTask(n_targets=2)


# --------------------------------------------------------------- end to end, through the CLI
def test_lstm_beats_the_naive_forecast_and_reports_both_baselines(tmp_path: Path, capsys) -> None:
    daily().to_csv(tmp_path / "series.csv", index=False)
    run = tmp_path / "run"
    status, out, _ = cli(capsys, "train", tmp_path / "series.csv", "--target", "y", "--time", "date",
                         "--window", 14, "--model", "lstm", "--hidden", 32, "--epochs", 15, "--lr", 3e-3,
                         "--test-split", 0.2, "--out", run, "--quiet", "--device", "cpu")
    assert status == 0 and "naive_mae" in out and "seasonal_naive_mae" in out
    for name in ("metrics.json", "test_metrics.json"):
        m = json.loads((run / name).read_text())
        assert m["season"] == 7 and m["seasonal_naive_mae"] is not None
        assert m["mae"] <= 0.8 * m["naive_mae"], m  # the network earns its keep
    assert {"val_naive_mae", "val_seasonal_naive_mae"} <= set(pd.read_csv(run / "history.csv"))  # each epoch
    test = json.loads((run / "test_metrics.json").read_text())
    # test.csv: the 143 test rows (the last 0.2 of the 716 forecast rows), the W+H-1 before them
    frame = pd.read_csv(run / "test.csv")
    assert len(frame) == 143 + 14 and frame["date"][0] == "2023-07-28" and list(frame) == ["date", "y"]
    status, out, _ = cli(capsys, "evaluate", run, run / "test.csv", "--json")
    assert status == 0 and json.loads(out) == test  # forecasts exactly the test rows

    daily(60, seed=1, start="2025-01-01").to_csv(tmp_path / "later.csv", index=False)
    status, out, _ = cli(capsys, "predict", run, tmp_path / "later.csv", "-o", tmp_path / "p.csv")
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert status == 0 and lines[0] == "date,y" and len(lines) == 1 + 60 - 14
    assert lines[1].startswith("2025-01-15,")  # the time as the file writes it


def test_bad_series_are_one_line_and_nothing_is_written(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    df = daily(40)
    back = df.copy()
    back.loc[[10, 11], "date"] = back.loc[[11, 10], "date"].to_numpy()
    dup = df.copy()
    dup.loc[11, "date"] = dup.loc[10, "date"]
    cases = {"back": (back, "goes back at row 12 (2022-01-11 after 2022-01-12)"),
             "dup": (dup, "repeats 2022-01-11 (rows 11 and 12)"),
             "short": (df.iloc[:10], "10 rows, too few for --window 14 --horizon 1"),
             "noval": (df.iloc[:15], "1 row(s) to forecast, too few for a validation part")}
    for name, (frame, words) in cases.items():
        frame.to_csv(f"{name}.csv", index=False)
        line = one_error(capsys, "train", f"{name}.csv", "--target", "y", "--time", "date", "--window", 14,
                         "--model", "lstm", "--epochs", 1, "--out", "out")
        assert words in line and f"{name}.csv" in line, line
        assert not Path("out").exists()
    line = one_error(capsys, "train", "back.csv", "--target", "y", "--time", "date", "--window", 14,
                     "--sequence-id", "y", "--model", "lstm")
    assert "--sequence-id together with --window" in line
    df.to_csv("ok.csv", index=False)  # the default mlp is refused before anything is read
    line = one_error(capsys, "train", "ok.csv", "--target", "y", "--time", "date", "--window", 3,
                     "--model", "mlp", "--out", "out")
    assert "model 'mlp' cannot read: use --model lstm or gru" in line and not Path("out").exists()
    assert not Path("runs").exists()


def test_later_files_reuse_the_runs_settings(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    nnfit.fit({"name": "gru", "hidden": [8]}, daily(120), target="y", time="date", window=3, horizon=2,
              epochs=1, run_dir=run, **CPU)
    later = daily(30, seed=2, start="2024-06-01")
    later.loc[28:, "y"] = np.nan  # the future: rows only forecasts read, never as inputs
    later.to_csv(tmp_path / "later.csv", index=False)
    status, _, _ = cli(capsys, "predict", run, tmp_path / "later.csv", "-o", tmp_path / "p.csv")
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert status == 0 and len(rows) == 1 + 30 - 4 and rows[-1].startswith("2024-06-30,")
    # evaluate needs every value; the seasonal baseline needs 7 rows before every forecast
    line = one_error(capsys, "evaluate", run, tmp_path / "later.csv")
    assert "later.csv" in line and "'y'" in line and "row 29" in line
    later.dropna().to_csv(tmp_path / "later.csv", index=False)
    status, out, _ = cli(capsys, "evaluate", run, tmp_path / "later.csv", "--json")
    m = json.loads(out)
    assert status == 0 and m["season"] == 7 and m["seasonal_naive_mae"] is None
    y = later["y"].to_numpy()[:28]
    assert m["naive_mae"] == pytest.approx(np.abs(y[4:] - y[2:-2]).mean(), rel=1e-5)
    later.drop(columns="y").assign(z=1.0).to_csv(tmp_path / "noy.csv", index=False)
    for cmd in ("evaluate", "predict"):
        line = one_error(capsys, cmd, run, tmp_path / "noy.csv")
        assert "target column 'y' not found" in line and "past target is an input" in line


def test_categorical_columns_reach_the_windows_as_codes() -> None:
    df = daily(200)
    df["day"] = df["date"].dt.day_name()
    df["y"] += np.where(df["day"] == "Sunday", 5.0, 0.0)
    learner = nnfit.fit(LSTM, df, target="y", time="date", window=7, epochs=2, **CPU)
    assert learner.spec["embeddings"] == [[9, 5]] and learner.spec["in_features"] == 1  # 7 days + 2
    assert learner.predict(df.iloc[-20:]).shape == (13,)
    layers = {layer.name: layer for layer in learner.summary().layers}  # windows of zeros, codes too
    assert layers["embed.tables.0"].output_shape == "(14, 5)" and layers["head"].output_shape == "(2, 1)"


def test_a_module_of_your_own_gets_windows_by_name() -> None:
    seen = []

    class Last(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 1)

        def forward(self, x):
            seen.append(tuple(x.shape))
            return self.fc(x.flatten(1))

    torch.manual_seed(0)
    learner = nnfit.fit(Last(), counting(), target="y", time="t", window=4, epochs=1, batch_size=8, **CPU)
    assert seen[0] == (8, 4, 2)  # (N, W, features): r and the past y
    assert learner.predict(counting(12)).shape == (12 - 4,)
    with pytest.raises(ConfigError, match="cannot come separately as y"):
        nnfit.fit(Last(), counting(), np.zeros(40), target="y", time="t", window=4, **CPU)


def test_forecasting_run_resumes_exactly(tmp_path: Path) -> None:
    df = daily(150)
    kw = {**CPU, "time": "date", "window": 7, "batch_size": 16}
    spec = {"name": "lstm", "hidden": [8, 8], "dropout": 0.2}
    full = nnfit.fit(spec, df, target="y", epochs=3, run_dir=tmp_path / "A", **kw)
    nnfit.fit(spec, df, target="y", epochs=2, run_dir=tmp_path / "B", **kw)
    resumed = nnfit.fit(spec, df, target="y", epochs=3, run_dir=tmp_path / "B", resume=tmp_path / "B", **kw)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert full.history[-1]["val_mae"] == resumed.history[-1]["val_mae"]
    again = nnfit.load(tmp_path / "B", device="cpu")
    assert np.array_equal(again.predict(df), resumed.predict(df))


def test_tampered_forecast_models_are_refused_in_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    nnfit.fit({"name": "lstm", "hidden": [4]}, daily(60), target="y", time="date", window=3, epochs=1,
              run_dir=run, **CPU)
    meta = json.loads((run / "model.json").read_text())
    validate(meta, LEARNER, "model.json")  # as written: valid

    def with_(fn):
        d = json.loads(json.dumps(meta))
        fn(d)
        return d

    layout = lambda d: d["preprocess"]["layout"]  # noqa: E731
    bad = {"in_features": lambda d: layout(d).update(in_features=5),
           "is also the time column": lambda d: layout(d).update(target="date"),
           "cardinalities": lambda d: layout(d).update(cardinalities=[4]),
           "does not go with a forecast layout": lambda d: d["task"].update(name="regression", n_targets=1)
           or d["task"].pop("season"),
           "season": lambda d: d["task"].update(season=0),
           "window": lambda d: layout(d).update(window=0),
           "cannot read forecasting windows": lambda d: d.update(spec={
               "name": "mlp", "in_features": 1, "hidden": [4], "out_features": 1, "activation": "relu",
               "dropout": 0.0, "batchnorm": False})}
    for words, fn in bad.items():
        with pytest.raises(CheckpointError, match=words):
            validate(with_(fn), LEARNER, "model.json")
    tamper_model(run, meta_fn=lambda d: layout(d).update(in_features=3))
    with pytest.raises(CheckpointError, match="in_features"):
        nnfit.load(run)


def test_every_layout_and_task_field_refuses_what_its_schema_refuses(tmp_path: Path) -> None:
    from nnfit.io.schema import SchemaError, fields_of

    def refused(field, value) -> bool:  # lo - 1 of a bound near 3.4e38 is the bound itself
        try:
            field.check(value, "")
        except SchemaError:
            return True
        return False

    run = tmp_path / "run"
    df = daily(60)
    df["day"] = df["date"].dt.day_name()
    nnfit.fit({"name": "gru", "hidden": [4]}, df, target="y", time="date", window=3, epochs=1, run_dir=run,
              **CPU)
    meta = json.loads((run / "model.json").read_text())
    mine = [(p, f) for p, f in fields_of(meta, LEARNER)
            if p[:1] == ("task",) or p[:2] == ("preprocess", "layout")]
    assert len(mine) > 12
    for path, field in mine:
        for value in filter(lambda v: refused(field, v), field.refused()):
            doc = json.loads(json.dumps(meta))
            at = doc
            for key in path[:-1]:
                at = at[key]
            if path:
                at[path[-1]] = value
            with pytest.raises(CheckpointError) as e:
                validate(doc, LEARNER, "model.json")
            assert "\n" not in str(e.value)
    # legal changes load and forecast (a recurrent model reads windows of any length)
    tamper_model(run, meta_fn=lambda d: d["preprocess"]["layout"].update(window=5, horizon=2))
    assert nnfit.load(run).predict(df).shape == (60 - 6,)


def test_prediction_files_write_the_time_as_the_file_does(tmp_path: Path, capsys) -> None:
    months = pd.DataFrame({"month": [f"{2000 + i // 12}-{i % 12 + 1:02d}" for i in range(48)],
                           "y": np.sin(np.arange(48) / 12 * 2 * np.pi) + np.arange(48) / 48})
    months.to_csv(tmp_path / "m.csv", index=False)
    ticks = pd.DataFrame({"tick": 1_700_000_000 + 60 * np.arange(50), "y": np.cos(np.arange(50.0))})
    ticks.to_csv(tmp_path / "t.csv", index=False)
    for name, time, season, first in (("m", "month", 12, "2000-04"), ("t", "tick", None, "1700000180")):
        run = tmp_path / f"run-{name}"
        status, _, _ = cli(capsys, "train", tmp_path / f"{name}.csv", "--target", "y", "--time", time,
                           "--window", 3, "--model", "gru", "--hidden", 4, "--epochs", 1, "--out", run,
                           "--quiet", "--device", "cpu")
        assert status == 0 and json.loads((run / "metrics.json").read_text())["season"] == season
        status, out, _ = cli(capsys, "predict", run, tmp_path / f"{name}.csv")
        lines = out.splitlines()
        assert status == 0 and lines[0] == f"{time},y" and lines[1].split(",")[0] == first


# ------------------------------------------- beating the baselines: the highway, the naive start
def trending(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """A daily series that rises (0.05 a day) with a weekly season and noise (sd 0.5)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    y = 20 + 0.05 * t + 3 * np.sin(2 * np.pi * t / 7) + rng.normal(0, 0.5, n)
    return pd.DataFrame({"date": pd.date_range("2022-01-01", periods=n, freq="D"), "y": y})


def linear_ar_mae(train: pd.DataFrame, later: pd.DataFrame, w: int) -> float:
    """MAE on ``later`` of a least-squares autoregression on the last ``w`` values (H = 1)."""
    def windows(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.arange(w, len(y))
        return np.stack([np.append(y[i - w:i], 1.0) for i in rows]), y[rows]

    coef = np.linalg.lstsq(*windows(train["y"].to_numpy()), rcond=None)[0]
    x, y = windows(later["y"].to_numpy())
    return float(np.abs(x @ coef - y).mean())


def test_an_untrained_forecaster_is_the_naive_forecast_and_its_layers_read_changes() -> None:
    from nnfit.io.schema import SchemaError, check
    from nnfit.io.validate import SPEC
    from nnfit.io.validate_spec import image_or_sequence_inputs
    from nnfit.models import GRU, build_model, state_shapes

    torch.manual_seed(0)
    model = nnfit.models.LSTM(2, 1, hidden=[8], highway=5, naive_feature=1)
    x = torch.randn(4, 6, 2)
    assert torch.equal(model(x), x[:, -1, 1:])  # ar and head start at zero: the last value
    with torch.no_grad():
        model.head.weight.normal_()
    shift = torch.tensor([0.0, 3.0])  # the recurrent layers read feature 1 relative to its last value
    assert torch.allclose(model(x + shift), model(x) + 3.0, atol=1e-5)
    with torch.no_grad():
        model.ar.weight.normal_()
        model.ar.bias.fill_(0.5)
        out = model(x)
        highway = nn.functional.linear(x[:, -5:].flatten(1), model.ar.weight, model.ar.bias)
        model.ar.weight.zero_()
        model.ar.bias.zero_()
        assert torch.allclose(out, model(x) + highway, atol=1e-5)  # the last 5 steps as they are
    spec = json.loads(json.dumps(model.spec()))
    assert spec["highway"] == 5 and spec["naive_feature"] == 1
    check(spec, SPEC, "spec")
    assert build_model(spec).spec() == spec
    assert set(state_shapes(spec)) == set(model.state_dict()) >= {"ar.weight", "ar.bias"}
    assert "ar.weight" not in GRU(2, 1).state_dict() and GRU(2, 1).spec()["naive_feature"] is None
    for kwargs, words in (({"vocab_size": 5, "embedding_dim": 2, "highway": 3}, "highway reads the float"),
                          ({"naive_feature": 2}, "naive_feature must be an int in [0, 1]")):
        with pytest.raises(ConfigError, match=re.escape(words)):
            nnfit.models.LSTM(0 if "vocab_size" in kwargs else 2, 1, **kwargs)
    with pytest.raises(ValueError, match="highway=5 reads the last steps of full-length input: not with"):
        model(x, lengths=torch.tensor([6, 5, 4, 3]))
    with pytest.raises(ValueError, match="highway=5 reads more steps than the input's 3"):
        model(x[:, :3])
    with pytest.raises(SchemaError, match=r"spec.naive_feature: 2 is not one of the 2 float features"):
        check({**spec, "naive_feature": 2}, SPEC, "spec")
    steps = [{"name": "x", "shape": ["T", 2], "dtype": "float32"},
             {"name": "lengths", "shape": [], "dtype": "int64"}]
    problem = image_or_sequence_inputs(spec, {"style": "named", "inputs": steps})  # a saved model.json
    assert problem.startswith("highway and naive_feature read the last steps of full-length input")


def test_forecasts_follow_a_trend_past_the_training_range() -> None:
    # What an LSTM without them did here: MAE 7.3 beside a naive 1.7 (every forecast about 7
    # too low: a recurrent state saturates above the values it trained on).
    w = 14
    df = trending()
    train, later = df.iloc[:500], df.iloc[500 - w:]  # later: 100 rows, all above the training range
    learner = nnfit.fit(LSTM, train, target="y", time="date", window=w, seed=0, **CPU)
    assert learner.spec["highway"] == w and learner.spec["naive_feature"] == 0  # the layout's default
    m = learner.evaluate(later)
    bias = float((learner.predict(later) - later["y"].to_numpy()[w:]).mean())
    assert m["mae"] <= 0.8 * m["seasonal_naive_mae"] and m["mae"] <= 0.3 * m["naive_mae"], m
    assert m["mae"] <= 1.15 * linear_ar_mae(train, later, w), m  # measured: 0.41 beside 0.40
    assert abs(bias) < 0.15, bias
    # a spec turns both off; an LSTM built by hand without them is not refused as the wrong size
    plain = nnfit.fit({**LSTM, "highway": 0, "naive_feature": None}, train.iloc[:60], target="y",
                      time="date", window=w, epochs=1, **CPU)
    assert plain.spec["highway"] == 0 and "ar.weight" not in plain.model.state_dict()
    nnfit.fit(nnfit.models.LSTM(1, 1, hidden=[4]), train.iloc[:60], target="y", time="date", window=w,
              epochs=1, **CPU)


def test_the_naive_start_needs_the_target_on_the_loss_scale() -> None:
    df = daily(120)
    df["z"] = np.arange(120.0)
    for kw, naive in (({}, 1), ({"standardize": False, "scale_target": False}, 1),
                      ({"scale_target": False}, None), ({"numeric_transform": "quantile"}, None)):
        config = TrainConfig(time="date", window=7, **kw)
        p = forecast.prepare(df[["date", "z", "y"]], None, target="y", val=None, task="auto",
                             config=config, resumed=None)
        assert p.preprocessor.layout.naive_feature == naive, kw  # features ["z", "y"]
        assert p.preprocessor.layout.model_defaults("gru")["naive_feature"] == naive


def test_tampered_highways_are_refused_in_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    nnfit.fit({"name": "lstm", "hidden": [4]}, daily(60), target="y", time="date", window=3, epochs=1,
              run_dir=run, **CPU)
    meta = json.loads((run / "model.json").read_text())
    assert meta["spec"]["highway"] == 3 and meta["preprocess"]["layout"]["naive_feature"] == 0
    for words, fn in (("spec.highway: 4 steps, but a window holds 3", lambda d: d["spec"].update(highway=4)),
                      ("layout.naive_feature: 1 is not the target's feature",
                       lambda d: d["preprocess"]["layout"].update(naive_feature=1))):
        doc = json.loads(json.dumps(meta))
        fn(doc)
        with pytest.raises(CheckpointError, match=re.escape(words)) as e:
            validate(doc, LEARNER, "model.json")
        assert "\n" not in str(e.value)
    old = json.loads(json.dumps(meta))  # written before the highway: still loads, without one
    for part, key in ((old["spec"], "highway"), (old["spec"], "naive_feature"),
                      (old["preprocess"]["layout"], "naive_feature")):
        del part[key]
    validate(old, LEARNER, "model.json")


# ------------------------------------------------------------------------- uneven time steps
def test_uneven_dates_warn_once_in_training_and_later_files(tmp_path: Path, capsys) -> None:
    gap = daily(200).drop(index=range(50, 60))  # ten days missing: one step of 11 days
    words = ("training data: time column 'date' does not step evenly: 1 of 189 steps are not its usual "
             "1 day (the first: 2022-03-02 after 2022-02-19); windows, --horizon and --season count rows")
    with pytest.warns(NnfitWarning) as seen:
        learner = nnfit.fit(LSTM, gap, target="y", time="date", window=7, epochs=1, **CPU)
    assert [str(w.message) for w in seen] == [words + ", not time"]
    daily(60, seed=1, start="2024-01-01").drop(index=[30]).to_csv(tmp_path / "later.csv", index=False)
    with pytest.warns(NnfitWarning, match=r"later.csv: .* 1 of 58 steps .* \(the first: 2024-02-01 after "
                                          r"2024-01-30\)"):
        learner.evaluate(str(tmp_path / "later.csv"))
    months = pd.DataFrame({"m": pd.date_range("2000-01-01", periods=40, freq="MS"), "y": np.arange(40.0)})
    nnfit.fit(LSTM, months, target="y", time="m", window=3, epochs=1, **CPU)  # no warning: months vary
    gap.to_csv(tmp_path / "gap.csv", index=False)  # the CLI's test split reads it once more: one line
    status, _, err = cli(capsys, "train", tmp_path / "gap.csv", "--target", "y", "--time", "date",
                         "--window", 7, "--hidden", 4, "--epochs", 1, "--test-split", 0.2,
                         "--out", tmp_path / "run", "--quiet", "--device", "cpu")
    warned = [line for line in err.splitlines() if "does not step evenly" in line]
    assert status == 0 and len(warned) == 1 and warned[0].startswith("nnfit: warning: "), err


# ------------------------------------------------------------------------------------ messages
def test_times_in_messages_read_as_the_file_shows_them(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    t = pd.to_datetime(["2024-01-28 06:00", "2024-01-28 07:00", "2024-01-28 07:00", "2024-01-01 00:00"])
    steps = pd.DataFrame({"id": ["a", "a", "a", "b"], "t": t, "x": [1.0, 2.0, 3.0, 4.0],
                          "label": ["u", "u", "u", "d"]})
    with pytest.raises(DataError) as e:  # a datetime column, not text: once printed to the nanosecond
        nnfit.fit("lstm", steps, target="label", sequence_id="id", time="t", **CPU)
    assert "has time 2024-01-28T07:00:00 twice (rows 2 and 3)" in str(e.value)
    daily(40).to_csv("s.csv", index=False)
    line = one_error(capsys, "train", "s.csv", "--target", "y", "--time", "date", "--window", 0)
    assert "--time needs --window W, W >= 1" in line and not Path("runs").exists()
