"""Crash safety: runs killed with SIGKILL at random moments resume to bitwise-equal results,
graceful SIGTERM/SIGINT stops, and what every piece of resume state is for (ablation)."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import nnfit
import nnfit.state
from helpers import TermAt
from nnfit.cli import main
from nnfit.run import committed, read_latest

HERE = Path(__file__).parent
SRC = HERE.parent / "src"


def _write_data(path: Path, rows: int = 1200, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 12))
    y = (x[:, :3] @ np.array([1.0, -2.0, 0.5]) + 0.5 * rng.normal(size=rows)).round().clip(-2, 2)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow([f"f{i}" for i in range(12)] + ["y"])
        w.writerows([*map(lambda r: [f"{v:.5f}" for v in r[:-1]] + [int(r[-1])], np.c_[x, y])])
    return path


# Dropout, AdamW with a per-step schedule, shuffling, a checkpoint every 7 steps (the epoch has
# 60 batches, so most land inside an epoch), early stopping and best-weights tracking on.
TRAIN = ["--target", "y", "--epochs", "6", "--batch-size", "16", "--hidden", "64,64", "--dropout", "0.3",
         "--optimizer", "adamw", "--weight-decay", "0.01", "--lr", "0.003", "--scheduler", "onecycle",
         "--patience", "3", "--seed", "5", "--quiet", "threads=1", "checkpoint_steps=7"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}


def _driver(mode: str, n: int, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HERE / "crash_driver.py"), mode, str(n), "--", *args],
                          cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)


def _cli(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nnfit", *args], cwd=cwd, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _same_run(a: Path, b: Path) -> None:
    """Bitwise-equal final weights, predictions and history (but its timings)."""
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    la, lb = nnfit.load(a, device="cpu"), nnfit.load(b, device="cpu")
    data = a.parent / "data.csv"
    np.testing.assert_array_equal(la.predict_proba(data), lb.predict_proba(data))

    def rows(run: Path) -> list[list[str]]:
        with open(run / "history.csv", newline="") as f:
            lines = list(csv.reader(f))
        keep = [i for i, h in enumerate(lines[0]) if h != "time"]
        return [[r[i] for i in keep] for r in lines]

    assert rows(a) == rows(b)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run of the settings above."""
    d = tmp_path_factory.mktemp("resilience")
    _write_data(d / "data.csv")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        assert main(["train", "data.csv", *TRAIN, "--out", "REF"]) == 0
    return d


def _start_or_resume(run: Path) -> list[str]:
    if committed(run):
        return ["train", "--resume", run.name]
    return ["train", "data.csv", *TRAIN, "--out", run.name, "--overwrite"]


def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(reference: Path) -> None:
    d, rng = reference, random.Random(20261127)
    run = d / "KILLED"
    # Random kill points: inside a file write of a save, right after an optimizer step, and
    # at a random wall-clock moment of a real `nnfit train` process.
    kills = [("wall", 0), ("save", rng.randint(4, 30)), ("step", rng.randint(150, 200)),
             ("save", rng.randint(4, 30)), ("step", rng.randint(260, 330))]
    outcomes = []
    for mode, n in kills:
        args = _start_or_resume(run)
        before = committed(run)[-1] if committed(run) else None
        if mode == "wall":
            proc = _cli(args, d)
            deadline = time.monotonic() + 120
            while committed(run)[-1:] == ([before] if before else []) and proc.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.2))
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
            code = proc.returncode
        else:
            code = _driver(mode, n, args, d).returncode
        outcomes.append((mode, n, code, committed(run)[-1] if committed(run) else None))
    print("kill outcomes (mode, n, exit status, newest checkpoint):", outcomes)
    killed = [o for o in outcomes if o[2] == -signal.SIGKILL]
    assert len(killed) >= 4, outcomes
    # At least one kill left the newest checkpoint inside an epoch, and at least one hit a save.
    assert any(o[3] and "-epoch-" not in o[3] for o in killed), outcomes
    assert any(o[0] == "save" for o in killed), outcomes
    final = _driver("none", 0, _start_or_resume(run), d)
    assert final.returncode == 0, final.stderr
    _same_run(d / "REF", run)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_or_sigint_commit_a_checkpoint_and_exit_143_or_130(reference: Path, sig, code) -> None:
    d, name = reference, signal.Signals(sig).name
    proc = _cli(["train", "data.csv", *TRAIN, "--out", name], d)
    deadline = time.monotonic() + 120
    while not committed(d / name) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert err.startswith(f"nnfit: stopped by {name}") and f"resume with: nnfit train --resume {name}" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    tensors, meta = read_latest(d / name)
    assert meta["step"] > 0
    assert _driver("none", 0, ["train", "--resume", name], d).returncode == 0
    _same_run(d / "REF", d / name)


def test_mid_epoch_resume_of_a_dataset_equals_the_uninterrupted_run(tmp_path) -> None:
    from torch.utils.data import TensorDataset

    torch.manual_seed(0)
    x, y = torch.randn(200, 5), torch.randint(0, 3, (200,))
    ds, val = TensorDataset(x[:160], y[:160]), TensorDataset(x[160:], y[160:])
    kw = dict(task="multiclass", val=val, epochs=3, batch_size=16, quiet=True, device="cpu",
              checkpoint_steps=4)

    def model() -> torch.nn.Module:
        torch.manual_seed(1)
        return torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Dropout(0.3), torch.nn.Linear(16, 3))

    full = nnfit.fit(model(), ds, **kw)
    with pytest.raises(nnfit.errors.Stopped):
        nnfit.fit(model(), ds, run_dir=tmp_path / "r", callbacks=[TermAt(15)], **kw)
    assert read_latest(tmp_path / "r")[1]["batch"] == 5  # stopped inside epoch 2
    resumed = nnfit.fit(model(), ds, run_dir=tmp_path / "r", resume=tmp_path / "r", **kw)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- ablation of resume state
SPEC = {"name": "mlp", "hidden": [32, 32], "dropout": 0.3}
API = dict(epochs=5, batch_size=16, optimizer="adamw", lr=0.05, scheduler="step", step_size=2,
           gamma=0.5, patience=4, quiet=True, device="cpu", checkpoint_steps=5, seed=1)
PIECES = ["restore_model", "restore_optimizer", "restore_schedule", "restore_rng",
          "restore_progress", "restore_order", "restore_best"]



def _final_state(learner: nnfit.Learner) -> dict:
    sd = {k: v.clone() for k, v in learner.model.state_dict().items()}
    hist = [{k: v for k, v in r.items() if k != "time"} for r in learner.history]
    return {"weights": sd, "history": hist, "best_epoch": learner.trainer.state.best_epoch}


def _equal(a: dict, b: dict) -> bool:
    return (a["history"] == b["history"] and a["best_epoch"] == b["best_epoch"]
            and all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"]))


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    d = tmp_path_factory.mktemp("ablation")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 6))
    y = (x[:, 0] + x[:, 1] * x[:, 2] + 0.8 * rng.normal(size=300) > 0).astype(int)
    full = nnfit.fit(SPEC, x, y, **API)
    # Stopped by SIGTERM in epoch 4 (15 batches an epoch); the best epoch (1) lies before it.
    with pytest.raises(nnfit.errors.Stopped):
        nnfit.fit(SPEC, x, y, run_dir=d / "run", callbacks=[TermAt(52)], **API)
    return d / "run", x, y, _final_state(full)


def _resume(run, x, y, tmp: Path) -> dict:
    import shutil

    copy = tmp / "copy"
    shutil.copytree(run, copy)
    return _final_state(nnfit.fit(SPEC, x, y, run_dir=copy, resume=copy, **API))


def test_resume_inside_an_epoch_equals_the_uninterrupted_run(ablation, tmp_path) -> None:
    run, x, y, full = ablation
    assert read_latest(run)[1]["batch"] > 0  # the newest checkpoint is inside an epoch
    assert _equal(_resume(run, x, y, tmp_path), full)


@pytest.mark.parametrize("piece", PIECES)
def test_leaving_out_any_piece_of_resume_state_breaks_equality(ablation, tmp_path, monkeypatch,
                                                                 piece) -> None:
    run, x, y, full = ablation
    monkeypatch.setattr(nnfit.state, piece, lambda trainer, *a: None)
    assert not _equal(_resume(run, x, y, tmp_path), full)


# ------------------------------------------------ resume exactness in the less common setups
def _stop_and_resume(tmp: Path, make_model, data, step: int, **kw) -> tuple[dict, dict]:
    """(uninterrupted, stopped by SIGTERM at ``step`` then resumed) final states."""
    full = nnfit.fit(make_model(), *data, **kw)
    with pytest.raises(nnfit.errors.Stopped):
        nnfit.fit(make_model(), *data, run_dir=tmp / "r", callbacks=[TermAt(step)], **kw)
    return _final_state(full), _final_state(nnfit.fit(make_model(), *data, run_dir=tmp / "r",
                                                      resume=tmp / "r", **kw))


def _xy(n: int = 240) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(n, 5))
    return x, (x[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(int)


def test_multistep_schedule_resumes_exactly(tmp_path) -> None:
    full, resumed = _stop_and_resume(tmp_path, lambda: {"name": "mlp", "hidden": [16]}, _xy(), 17,
                                     epochs=5, batch_size=16, scheduler="multistep", milestones=(2, 3),
                                     quiet=True, device="cpu", checkpoint_steps=4)
    assert _equal(resumed, full)
    assert resumed["history"][-1]["lr"] == pytest.approx(1e-5)


def test_user_dataloader_generator_and_numpy_augmentation_resume_exactly(tmp_path) -> None:
    from torch.utils.data import DataLoader, Dataset

    x, y = _xy()

    class Noisy(Dataset):  # augments with NumPy's and Python's global generators
        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            jitter = np.random.normal(scale=0.1, size=5) + random.random() * 0.01
            return torch.tensor(x[i] + jitter, dtype=torch.float32), int(y[i])

    def data():
        np.random.seed(0)
        random.seed(0)
        return (DataLoader(Noisy(), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(3)),)

    def model():
        torch.manual_seed(2)
        return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 2))

    kw = dict(task="multiclass", epochs=3, quiet=True, device="cpu", checkpoint_steps=5)
    full = nnfit.fit(model(), *data(), **kw)
    with pytest.raises(nnfit.errors.Stopped):
        nnfit.fit(model(), *data(), run_dir=tmp_path / "r", callbacks=[TermAt(22)], **kw)
    resumed = nnfit.fit(model(), *data(), run_dir=tmp_path / "r", resume=tmp_path / "r", **kw)
    assert _equal(_final_state(resumed), _final_state(full))


def test_a_buffer_holding_inf_does_not_block_checkpoints(tmp_path) -> None:
    class Masked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(5, 2)
            self.register_buffer("floor", torch.tensor([float("-inf"), 0.0]))

        def forward(self, inp):
            return torch.maximum(self.fc(inp), self.floor)

    x, y = _xy()
    nnfit.fit(Masked(), x, y, epochs=2, quiet=True, device="cpu", run_dir=tmp_path / "r", checkpoint_steps=3)
    assert committed(tmp_path / "r")


def test_resume_may_extend_early_stopping(tmp_path) -> None:
    x, y = _xy()
    kw = dict(epochs=30, batch_size=16, lr=0.05, quiet=True, device="cpu")
    first = nnfit.fit({"name": "mlp", "hidden": [16]}, x, y, patience=1, run_dir=tmp_path / "r", **kw)
    assert first.stop_reason.startswith("early stopping")
    more = nnfit.fit({"name": "mlp", "hidden": [16]}, x, y, patience=20, run_dir=tmp_path / "r",
                     resume=tmp_path / "r", **kw)
    assert len(more.history) > len(first.history)


def test_the_api_refuses_a_changed_model_spec_on_resume(tmp_path) -> None:
    x, y = _xy()
    kw = dict(epochs=2, quiet=True, device="cpu", run_dir=tmp_path / "r")
    nnfit.fit({"name": "mlp", "hidden": [16], "dropout": 0.2}, x, y, **kw)
    with pytest.raises(nnfit.errors.ConfigError, match="model"):
        nnfit.fit({"name": "mlp", "hidden": [16], "dropout": 0.7}, x, y, resume=tmp_path / "r",
                  **{**kw, "epochs": 3})


def test_checkpoint_names_beyond_their_padding_still_sort(tmp_path) -> None:
    from nnfit.run import checkpoint_name

    for step, epoch in [(999_999_999, 99_999), (1_000_000_000, 100_000), (5, None)]:
        (tmp_path / "checkpoints" / checkpoint_name(step, epoch)).mkdir(parents=True)
    assert committed(tmp_path) == ["step-000000005", "step-999999999-epoch-99999",
                                   "step-1000000000-epoch-100000"]
