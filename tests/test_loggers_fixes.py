"""The --log sinks after review: a bad MLflow address refused before anything is written, the
file store supported, sink start-up outside the epochs' time, step metrics sent to MLflow once
per epoch, and a resume that changes the sinks saying so."""

from __future__ import annotations

import csv
import json
import socket
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import nnfit
from nnfit.callbacks.loggers import JSONLLogger
from nnfit.cli import main
from nnfit.errors import NnfitWarning

QUICK = {"quiet": True, "device": "cpu", "plots": False, "batch_size": 16, "val_split": 0.25}
HTTP_ENV = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")


def _data(n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(0)
    x = g.normal(size=(n, 4)).astype("float32")
    return x, (x[:, 0] + x[:, 1] > 0).astype("int64")


def _fit(run: Path, **kw) -> nnfit.Learner:
    x, y = _data()
    return nnfit.fit({"name": "mlp", "hidden": [8]}, x, y, run_dir=run, **{**QUICK, **kw})


def _history(run: Path) -> list[dict[str, float]]:
    with open(run / "history.csv") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def _train(out: Path, *flags: str) -> int:
    return main(["train", "--dataset", "iris", "--epochs", "1", "--quiet", "--no-plots",
                 "--out", str(out), *flags])


@pytest.fixture
def silent_server():
    """An HTTP address that takes the connection and never answers (its backlog holds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def _refused_port() -> str:
    with socket.socket() as s:  # bound then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("uri", ["garbage://", "refused", "silent"])
def test_a_bad_tracking_uri_is_refused_in_one_line_within_seconds_before_anything_is_written(
        tmp_path, monkeypatch, capsys, request, uri) -> None:
    if uri == "refused":
        uri = _refused_port()
    elif uri == "silent":
        uri = request.getfixturevalue("silent_server")
    for name in HTTP_ENV:  # MLflow's defaults: 7 retries, 120 s each
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "r"
    t0 = time.perf_counter()
    assert _train(out, "--log", "jsonl,mlflow") == 2
    assert time.perf_counter() - t0 < 15  # one try of 5 s, not minutes of retries
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"nnfit: error: --log mlflow: MLFLOW_TRACKING_URI {uri!r} does not work: "), err
    assert "\n" not in err and "Traceback" not in err
    assert not out.exists()  # nothing written: a rerun is not refused as "not empty"


@pytest.mark.parametrize("form", ["folder", "file-uri"])
def test_a_file_store_tracking_uri_is_logged_to_and_read_back(tmp_path, monkeypatch, form) -> None:
    from mlflow.tracking import MlflowClient

    store = tmp_path / "mlruns"
    uri = str(store) if form == "folder" else store.as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run = tmp_path / "r"
    _fit(run, epochs=2, log=("mlflow",), log_every=2)
    saved = json.loads((run / "mlflow_run.json").read_text())
    assert saved["tracking_uri"] == uri
    assert not (run / "mlflow.db").exists() and store.is_dir()  # the user's store, not one in the run

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # reading MLflow's file store asks it too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client = MlflowClient(tracking_uri=uri)
        got = client.get_run(saved["run_id"])
        hist = _history(run)
        assert got.info.status == "FINISHED" and got.data.params["lr"] == "0.001"
        assert sorted((m.step, m.value) for m in client.get_metric_history(saved["run_id"], "val_loss")) \
            == [(5, hist[0]["val_loss"]), (10, hist[1]["val_loss"])]
        steps = client.get_metric_history(saved["run_id"], "train_loss_step")
        assert sorted(m.step for m in steps) == [2, 4, 6, 8, 10]
        names = {a.path for a in client.list_artifacts(saved["run_id"])}
    assert {"history.csv", "model.safetensors", "metrics.json"} <= names


def test_sink_start_up_is_not_charged_to_the_first_epoch(tmp_path, monkeypatch) -> None:
    opened = JSONLLogger.open

    def slow_open(self, trainer):  # stands for a SummaryWriter or an MLflow run starting
        time.sleep(0.5)
        opened(self, trainer)

    monkeypatch.setattr(JSONLLogger, "open", slow_open)
    run = tmp_path / "r"
    _fit(run, epochs=2, log=("jsonl",), log_every=2)
    assert _history(run)[0]["time"] < 0.4
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "train_loss_step" in r] == [2, 4, 6, 8, 10]


def test_mlflow_gets_one_batch_of_metrics_per_epoch(tmp_path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    batches: list[list] = []
    log_batch = MlflowClient.log_batch

    def counted(self, run_id, metrics=(), *a, **k):
        if metrics:
            batches.append([(m.key, m.step) for m in metrics])
        return log_batch(self, run_id, metrics, *a, **k)

    monkeypatch.setattr(MlflowClient, "log_batch", counted)
    run = tmp_path / "r"
    _fit(run, epochs=3, log=("mlflow",), log_every=1)
    assert len(batches) == 3  # not one per logged step
    assert [s for k, s in batches[0] if k == "train_loss_step"] == [1, 2, 3, 4, 5]
    assert {s for k, s in batches[0] if k != "train_loss_step"} == {5}


def test_step_losses_held_for_mlflow_are_sent_when_the_fit_is_cut_short(tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    class Interrupt(nnfit.Callback):
        def on_train_batch_end(self, trainer, batch):
            if trainer.state.step == 8:  # in epoch 2, before the sinks see step 8
                raise KeyboardInterrupt

    run = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        _fit(run, epochs=3, log=("mlflow",), log_every=1, callbacks=[Interrupt()])
    run_id = json.loads((run / "mlflow_run.json").read_text())["run_id"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow.db'}")
        assert client.get_run(run_id).info.status == "KILLED"
        steps = sorted(m.step for m in client.get_metric_history(run_id, "train_loss_step"))
    assert steps == [1, 2, 3, 4, 5, 6, 7]


def test_a_resume_with_other_sinks_says_which_stop_and_which_start(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "r"
    _fit(run, epochs=2, log=("jsonl",))
    _fit(run, epochs=3, resume=run, log=("jsonl",))  # the same sinks: no word (warnings are errors)
    with pytest.warns(NnfitWarning) as caught:
        _fit(run, epochs=4, resume=run, log=("tensorboard",))
    assert [str(w.message) for w in caught] == [
        "this resume logs to tensorboard, the run logged to jsonl (--log is chosen per session; "
        "from step 15, epoch 3): not continued: metrics.jsonl; new: tensorboard/; "
        "history.csv holds every epoch"]
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("val_loss")] == [20]
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")  # its first events


def test_the_cli_resume_keeps_the_runs_sinks_unless_told_otherwise(tmp_path, capsys) -> None:
    out = tmp_path / "r"
    assert _train(out, "--log", "jsonl") == 0
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet", "--no-plots"]) == 0
    assert "warning" not in capsys.readouterr().err
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert main(["train", "--resume", str(out), "--epochs", "3", "--quiet", "--no-plots",
                 "--log", "tensorboard"]) == 0
    err = capsys.readouterr().err
    assert "nnfit: warning: this resume logs to tensorboard, the run logged to jsonl" in err
