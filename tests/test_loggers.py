"""The --log sinks: JSONL, TensorBoard and MLflow, read back by their own libraries; no host
read between logging intervals; resumed runs without duplicated steps; missing extras."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nnfit
from helpers import count_host_reads
from nnfit.cli import main
from nnfit.errors import ConfigError
from nnfit.io.layout import LOCK_FILE, RUN_LAYOUT
from nnfit.run import committed

ROOT = Path(__file__).resolve().parents[1]
QUICK = {"quiet": True, "device": "cpu", "plots": False, "batch_size": 16, "val_split": 0.25}


def _data(n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(0)
    x = g.normal(size=(n, 4)).astype("float32")
    return x, (x[:, 0] + x[:, 1] > 0).astype("int64")


def _history(run: Path) -> list[dict[str, float]]:
    with open(run / "history.csv") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def _scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _tb_equal(pairs: list[tuple[int, float]], steps: list[int], values: list[float]) -> bool:
    """TensorBoard's scalars hold float32: the steps exactly, the values to float32 precision."""
    return [s for s, _ in pairs] == steps and [v for _, v in pairs] == pytest.approx(values, rel=1e-6)


def _mlflow(run: Path) -> tuple[object, str]:
    import warnings

    from mlflow.tracking import MlflowClient

    run_id = json.loads((run / "mlflow_run.json").read_text())["run_id"]
    with warnings.catch_warnings():  # MLflow's SQLAlchemy layer warns about its own use of it
        warnings.simplefilter("ignore", DeprecationWarning)
        return MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow.db'}"), run_id


def _mlflow_history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _fit(run: Path, **kw) -> nnfit.Learner:
    x, y = _data()
    return nnfit.fit({"name": "mlp", "hidden": [8]}, x, y, run_dir=run, **{**QUICK, **kw})


def test_every_sink_reads_back_with_its_own_library_equal_to_history_csv(tmp_path) -> None:
    run = tmp_path / "r"
    _fit(run, epochs=3, log=("jsonl", "tensorboard", "mlflow"), log_every=2)
    hist = _history(run)
    ends = [5 * e for e in (1, 2, 3)]  # 72 training rows, 16 a batch: 5 steps an epoch
    assert set(p.name for p in run.iterdir()) - {LOCK_FILE} <= {n.rstrip("/") for n in RUN_LAYOUT}

    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in lines if "train_loss" in r]
    assert [r["step"] for r in epochs] == ends
    assert [r["val_loss"] for r in epochs] == [h["val_loss"] for h in hist]
    assert [r["step"] for r in lines if "train_loss_step" in r] == list(range(2, 16, 2))

    tb = _scalars(run)
    for key in ("train_loss", "val_loss", "val_accuracy", "lr", "epoch"):
        assert _tb_equal(tb[key], ends, [h[key] for h in hist]), key
    assert [s for s, _ in tb["train_loss_step"]] == list(range(2, 16, 2))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["lr"].number_value == pytest.approx(1e-3) and hparams["optimizer"].string_value

    client, run_id = _mlflow(run)
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params["lr"] == "0.001" and got.data.params["model.hidden"] == "[8]"
    for key in ("train_loss", "val_loss", "val_accuracy"):
        assert _mlflow_history(client, run_id, key) == [(s, h[key]) for s, h in zip(ends, hist, strict=True)]
    steps = _mlflow_history(client, run_id, "train_loss_step")
    assert [s for s, _ in steps] == list(range(2, 16, 2))
    assert [v for _, v in steps] == pytest.approx([r["train_loss_step"] for r in lines
                                                   if "train_loss_step" in r])
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"history.csv", "model.safetensors", "metrics.json", "tensorboard"} <= names
    assert "checkpoints" not in names and "mlflow.db" not in names


def _count_reads(monkeypatch, run) -> dict[str, int]:
    """Run ``run()`` counting tensor-to-Python reads (tests/helpers.count_host_reads)."""
    return count_host_reads(monkeypatch, run, by_name=True)


def test_the_step_loss_is_read_from_the_device_only_at_the_logging_interval(tmp_path, monkeypatch) -> None:
    x, y = _data()
    seen: list[int] = []

    class Steps(nnfit.Callback):  # which steps the loop reached, to know what was due
        def on_train_batch_end(self, trainer, batch):
            seen.append(trainer.state.step)

    calls = _count_reads(monkeypatch, lambda: nnfit.fit(
        {"name": "mlp", "hidden": [8]}, x, y, run_dir=tmp_path / "r", epochs=2, accumulate=2,
        log=("jsonl",), log_every=3, callbacks=[Steps()], **QUICK))
    due = {s for s in seen if s % 3 == 0 and s > 0}
    assert len(seen) == 10 and len(due) == 2  # 5 batches an epoch, 3 steps each with accumulate=2
    assert calls.get("loggers.py", 0) == len(due), calls
    trainer_reads = calls.get("trainer.py", 0)
    baseline = _count_reads(monkeypatch, lambda: nnfit.fit(
        {"name": "mlp", "hidden": [8]}, x, y, run_dir=tmp_path / "b", epochs=2, accumulate=2, **QUICK))
    assert trainer_reads == baseline.get("trainer.py", 0)  # the loop reads nothing more


def test_a_resumed_run_continues_every_sink_without_duplicated_steps(tmp_path) -> None:
    run = tmp_path / "r"
    log = {"log": ("jsonl", "tensorboard", "mlflow"), "log_every": 2, "keep_checkpoints": 0}
    _fit(run, epochs=3, **log)
    first_id = json.loads((run / "mlflow_run.json").read_text())["run_id"]
    # As if killed after epoch 3's logs but before its checkpoint: resume from epoch 2's.
    shutil.rmtree(run / "checkpoints" / committed(run)[-1])
    _fit(run, epochs=4, resume=run, **log)
    hist = _history(run)
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    ends = [5, 10, 15, 20]

    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in lines if "train_loss_step" in r]
    assert steps == list(range(2, 21, 2))
    assert [(r["step"], r["train_loss"]) for r in lines if "train_loss" in r] == \
        [(s, h["train_loss"]) for s, h in zip(ends, hist, strict=True)]

    tb = _scalars(run)
    assert _tb_equal(tb["val_loss"], ends, [h["val_loss"] for h in hist])
    assert [s for s, _ in tb["train_loss_step"]] == list(range(2, 21, 2))

    client, run_id = _mlflow(run)
    assert run_id == first_id and client.get_run(run_id).info.status == "FINISHED"
    assert _mlflow_history(client, run_id, "train_loss") == \
        [(s, h["train_loss"]) for s, h in zip(ends, hist, strict=True)]
    assert [s for s, _ in _mlflow_history(client, run_id, "train_loss_step")] == list(range(2, 21, 2))


def test_overwrite_removes_every_sinks_files(tmp_path) -> None:
    run = tmp_path / "r"
    _fit(run, epochs=1, log=("jsonl", "tensorboard", "mlflow"))
    (run / "tensorboard" / "mine.txt").write_text("a user's file")
    _fit(run, epochs=1, overwrite=True)
    left = {p.name for p in run.iterdir()}
    assert not left & {"metrics.jsonl", "mlflow.db", "mlflow_run.json", "mlartifacts"}
    assert [p.name for p in (run / "tensorboard").iterdir()] == ["mine.txt"]


@pytest.mark.parametrize("sink,module", [("tensorboard", "torch.utils.tensorboard"),
                                          ("mlflow", "mlflow")])
def test_a_missing_extra_is_named_in_one_line_before_training(tmp_path, monkeypatch, capsys,
                                                               sink, module) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import` of it now fails
    out = tmp_path / "r"
    assert main(["train", "--dataset", "iris", "--epochs", "1", "--quiet", "--log", f"jsonl,{sink}",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"nnfit: error: logging to {sink} needs the {sink} package: "
                   f'pip install "nnfit[{sink}]"')
    assert not (out / "history.csv").exists() and not (out / "metrics.jsonl").exists()


def test_logging_without_a_run_directory_is_refused() -> None:
    x, y = _data()
    with pytest.raises(ConfigError, match=r"^log=\['jsonl'\] writes into the run directory: pass run_dir="):
        nnfit.fit({"name": "mlp"}, x, y, epochs=1, log=("jsonl",), **QUICK)


def test_the_test_setup_installs_the_extras_and_the_demo_setup_does_not() -> None:
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert [d.split(">")[0] for d in extras["all"]] == ["tensorboard", "mlflow"]
    assert extras["tensorboard"] + extras["mlflow"] == extras["all"]
    if shutil.which("make") is None:
        return
    make = ["make", "-n", "-C", str(ROOT), "VENV=/nonexistent/venv"]
    dry = {t: subprocess.run([*make, t], capture_output=True, text=True, check=True).stdout
           for t in ("test", "demo")}
    assert "EXTRAS=dev,all BROWSER=1 bash scripts/setup.sh" in dry["test"]  # + Chromium
    assert "EXTRAS=dev,all" not in dry["demo"] and "BROWSER=1" not in dry["demo"]
