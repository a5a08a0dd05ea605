"""A new user's first hour (issue 8, items 10, 11, 16-19): the README's resume example runs as
written, a per-step schedule is re-planned when a resume changes ``epochs``, weights round-trip
under any name, a resumed run that stopped early says why nothing trains, ``check_finite=False``
never lets a non-finite checkpoint or model be written, messages about checkpoints are true,
and the default setup leaves the benchmark peers out.

CPU only, tiny data; the CLI runs in-process.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import nnfit
from helpers import NanAt
from nnfit.checkpoint import load_checkpoint
from nnfit.cli import main
from nnfit.errors import ConfigError, TrainingError
from nnfit.run import committed

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
QUICK = dict(quiet=True, device="cpu", batch_size=16, seed=0)


def _cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _xy(n: int = 96, d: int = 4, seed: int = 0, noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    return x, (x[:, 0] - x[:, 1] + noise * rng.normal(size=n) > 0).astype(int)


def _csv(path: Path, x: np.ndarray, y: np.ndarray, target: str = "label") -> Path:
    header = ",".join([f"x{i}" for i in range(x.shape[1])] + [target])
    np.savetxt(path, np.c_[x, y], delimiter=",", header=header, comments="", fmt="%.6g")
    return path


def _history(run: Path) -> list[dict[str, str]]:
    lines = (run / "history.csv").read_text().splitlines()
    keys = lines[0].split(",")
    return [dict(zip(keys, line.split(","), strict=True)) for line in lines[1:]]


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


# ------------------------------------------------------------- 16. extending a per-step schedule
def _readme_commands() -> tuple[list[str], list[str]]:
    """The README's `nnfit train data.csv ...` and `nnfit train --resume ...` lines, as argv."""
    block = re.search(r"## On the command line\n\n```bash\n(.*?)```", README.read_text(), re.S).group(1)
    lines = block.replace("\\\n", " ").splitlines()
    first = next(line for line in lines if line.startswith("nnfit train data.csv"))
    resume = next(line for line in lines if line.startswith("nnfit train --resume"))
    return shlex.split(first, comments=True)[1:], shlex.split(resume, comments=True)[1:]


def test_the_readme_resume_example_runs_as_written(tmp_path, monkeypatch, capsys) -> None:
    first, resume = _readme_commands()
    assert "--scheduler" in first and "cosine" in first and "--epochs" in resume
    lr, epochs = float(first[first.index("--lr") + 1]), int(first[first.index("--epochs") + 1])
    more = int(resume[resume.index("--epochs") + 1])
    monkeypatch.chdir(tmp_path)
    _csv(tmp_path / "data.csv", *_xy(n=300, d=6, noise=0.3))
    assert _cli(capsys, *first)[0] == 0
    run = tmp_path / resume[resume.index("--resume") + 1]
    done = len(_history(run))
    status, _, err = _cli(capsys, *resume)
    assert status == 0, err
    hist = _history(run)
    assert done < len(hist) <= more
    # The logged rate after epoch e is the cosine's at progress e/epochs (no warm-up): the
    # first run's over its epochs, the resumed one's over the new total from the resume on.
    for e, row in enumerate(hist, 1):
        total = epochs if e <= done else more
        assert float(row["lr"]) == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * e / total)), rel=1e-6)


class _Rates(nnfit.Callback):
    """Records (step, lr, beta1) at each epoch start and after each optimizer step."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, float, float]] = []

    def _record(self, trainer) -> None:
        g = trainer.optimizer.param_groups[0]
        self.seen.append((trainer.state.step, g["lr"], g["betas"][0]))

    def on_epoch_start(self, trainer) -> None:
        self._record(trainer)

    def on_train_batch_end(self, trainer, batch) -> None:
        self._record(trainer)


@pytest.mark.parametrize("schedule", [dict(scheduler="cosine", warmup_epochs=1, min_lr=1e-4),
                                      dict(scheduler="onecycle")], ids=["cosine", "onecycle"])
def test_a_resume_with_more_epochs_follows_the_schedule_over_the_new_total(tmp_path, schedule) -> None:
    x, y = _xy()
    kw = dict(optimizer="adam", lr=0.05, val_split=0, patience=0, **schedule, **QUICK)
    run = tmp_path / "r"
    nnfit.fit({"name": "mlp", "hidden": [8]}, x, y, epochs=3, run_dir=run, **kw)
    for epochs in (5, 8):  # extended twice: each time over the newest total
        resumed, fresh = _Rates(), _Rates()
        nnfit.fit({"name": "mlp", "hidden": [8]}, x, y, epochs=epochs, run_dir=run, resume=run,
                  callbacks=[resumed], **kw)
        nnfit.fit({"name": "mlp", "hidden": [8]}, x, y, epochs=epochs, callbacks=[fresh], **kw)
        # step -> (lr, beta1) for the next step; the resumed run's from its first step on.
        ours, theirs = ({step: rates for step, *rates in r.seen} for r in (resumed, fresh))
        assert min(ours) > 0 and ours == {k: v for k, v in theirs.items() if k >= min(ours)}


# ------------------------------------------------------------------------ 17. weights by name
@pytest.mark.parametrize("name", ["w.safetensors", "w.pt", "w.pth", "w", "w.weights", "W.PTH"])
def test_save_weights_round_trips_under_every_name(tmp_path, name) -> None:
    net, other = (nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)) for _ in range(2))
    nn.init.normal_(net[1].weight)
    nnfit.save_weights(net, tmp_path / name)
    assert (tmp_path / name).read_bytes()[8:9] == b"{"  # safetensors, never a pickle
    nnfit.load_weights(other, tmp_path / name)
    a, b = net.state_dict(), other.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name, zipped", [("real.pt", True), ("real.pth", False), ("real.bin", True)])
def test_a_torch_save_state_dict_still_loads(tmp_path, name, zipped) -> None:
    net, other = nn.Linear(3, 2), nn.Linear(3, 2)
    torch.save(net.state_dict(), tmp_path / name, _use_new_zipfile_serialization=zipped)
    nnfit.load_weights(other, tmp_path / name)
    assert torch.equal(other.weight, net.weight) and torch.equal(other.bias, net.bias)


# ------------------------------------------------------------- 18. resuming a run that stopped
def test_resuming_an_early_stopped_run_for_more_epochs_says_how(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    _csv(tmp_path / "d.csv", *_xy(n=120, noise=3.0))  # mostly noise: validation soon stalls
    common = ["--quiet", "--patience", "1", "--batch-size", "16", "--out", "r"]
    assert _cli(capsys, "train", "d.csv", "--target", "label", "--epochs", "30", *common)[0] == 0
    stopped = len(_history(tmp_path / "r"))
    assert stopped < 30
    before = _snapshot(tmp_path / "r")

    status, out, err = _cli(capsys, "train", "--resume", "r", "--epochs", "60", "--quiet")
    lines = err.strip().splitlines()
    assert status == 2 and out == "" and len(lines) == 1, (status, out, err)
    assert lines[0].startswith(f"nnfit: error: nothing to train: the run stopped after epoch {stopped} "
                               "(early stopping: val_loss did not improve for 1 epochs")
    assert "to train on to epoch 60, resume with a patience above 1 (--patience N" in lines[0]
    assert _snapshot(tmp_path / "r") == before  # refused before anything is written

    # The same epochs again (a retry of a finished job): nothing to do, exit 0, nothing trained.
    assert _cli(capsys, "train", "--resume", "r", "--quiet")[0] == 0
    assert len(_history(tmp_path / "r")) == stopped

    status, _, err = _cli(capsys, "train", "--resume", "r", "--epochs", "60", "--patience", "5", "--quiet")
    assert status == 0, err
    assert len(_history(tmp_path / "r")) > stopped


def test_the_api_refuses_the_same_way(tmp_path) -> None:
    x, y = _xy(n=120, noise=3.0)
    kw = dict(run_dir=tmp_path / "r", lr=0.05, **QUICK)
    first = nnfit.fit({"name": "mlp", "hidden": [8]}, x, y, epochs=30, patience=1, **kw)
    assert first.stop_reason.startswith("early stopping")
    with pytest.raises(ConfigError, match=r"^nothing to train: .*patience above \d+"):
        nnfit.fit({"name": "mlp", "hidden": [8]}, x, y, epochs=40, patience=1, resume=tmp_path / "r", **kw)
    more = nnfit.fit({"name": "mlp", "hidden": [8]}, x, y, epochs=40, patience=0, resume=tmp_path / "r", **kw)
    assert len(more.history) == 40  # patience 0: early stopping off


# ------------------------------------------------------------------ 11. check_finite=False
def test_check_finite_false_still_never_writes_a_non_finite_checkpoint(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    _csv(tmp_path / "d.csv", *_xy())
    status, _, err = _cli(capsys, "train", "d.csv", "--target", "label", "--optimizer", "sgd", "--lr", "1e30",
                          "--epochs", "3", "--quiet", "--out", "r", "check_finite=false")
    lines = err.strip().splitlines()
    assert status == 1 and len(lines) == 1, err
    assert re.fullmatch(r"nnfit: error: \S+ is non-finite at step \d+: not checkpointed; "
                        r"no checkpoint was written yet", lines[0]), lines[0]
    assert committed(tmp_path / "r") == [] and not (tmp_path / "r" / "model.safetensors").exists()


def test_check_finite_false_never_writes_a_non_finite_final_model(tmp_path) -> None:
    x, y = _xy()
    # No checkpoint is due (checkpoint_every=0, the NaN loss never improves): only the final
    # model's check stands between the NaN weights and model.safetensors.
    with pytest.raises(TrainingError, match=r"parameter '\S+' of the final model is non-finite: the model "
                                            r"is not written; no checkpoint was written yet$"):
        nnfit.fit({"name": "mlp", "hidden": [8]}, x, y, epochs=2, optimizer="sgd", lr=1e30, val_split=0,
                  check_finite=False, checkpoint_every=0, run_dir=tmp_path / "r", **QUICK)
    assert not (tmp_path / "r" / "model.safetensors").exists()
    # Without a run directory nothing is written, and check_finite=False hands the model back.
    learner = nnfit.fit({"name": "mlp", "hidden": [8]}, x, y, epochs=2, optimizer="sgd", lr=1e30,
                        val_split=0, check_finite=False, **QUICK)
    assert not all(torch.isfinite(p).all() for p in learner.model.parameters())


# ------------------------------------------------------------- 10. true words about checkpoints
def test_a_failure_before_any_checkpoint_does_not_claim_one(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    _csv(tmp_path / "d.csv", *_xy())
    status, _, err = _cli(capsys, "train", "d.csv", "--target", "label", "--optimizer", "sgd", "--lr", "1e30",
                          "--epochs", "3", "--quiet", "--out", "r")
    assert status == 1 and "untouched" not in err, err
    assert err.strip().endswith("training stopped before this step's update; no checkpoint was written yet")
    assert committed(tmp_path / "r") == []


def test_a_failure_names_the_checkpoint_left_to_resume_from(tmp_path) -> None:
    x, y = _xy(n=200)  # 160 training rows: 10 batches an epoch
    with pytest.raises(TrainingError) as e:
        nnfit.fit(NanAt(16), x, y, epochs=3, run_dir=tmp_path / "r", checkpoint_steps=4, **QUICK)
    left = committed(tmp_path / "r")[-1]
    assert left == "step-000000012" and str(e.value).endswith(f"; the last checkpoint ({left}) is untouched")

    # Resumed, and failing before it commits a new checkpoint: the one it resumed from is left.
    nnfit.fit(NanAt(0), x, y, epochs=1, run_dir=tmp_path / "s", **QUICK)
    with pytest.raises(TrainingError) as e:
        nnfit.fit(NanAt(1), x, y, epochs=2, run_dir=tmp_path / "s", resume=tmp_path / "s", **QUICK)
    assert str(e.value).endswith("; the checkpoint resumed from (step 10) is untouched")

    # Without a run directory there are no checkpoints to speak of.
    with pytest.raises(TrainingError) as e:
        nnfit.fit(NanAt(3), x, y, epochs=1, **QUICK)
    assert "checkpoint" not in str(e.value)
    for name in committed(tmp_path / "r"):
        tensors, _ = load_checkpoint(tmp_path / "r" / "checkpoints" / name)
        assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


# ------------------------------------------------------------- 19. the peers stay optional
PEERS = ("lightning", "skorch", "keras")


def test_the_default_setup_leaves_the_benchmark_peers_out() -> None:
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not any(dep.startswith(PEERS) for dep in extras["dev"])
    assert all(any(dep.startswith(p) for dep in extras["bench"]) for p in PEERS)
    script = (ROOT / "scripts" / "setup.sh").read_text()
    assert 'EXTRAS="${EXTRAS:-dev}"' in script and '-e ".[$EXTRAS]"' in script
    if shutil.which("make") is None:
        return
    make = ["make", "-n", "-C", str(ROOT), "VENV=/nonexistent/venv"]  # -n: print, run nothing
    dry = {t: subprocess.run([*make, t], capture_output=True, text=True, check=True).stdout
           for t in ("test", "demo", "bench")}
    assert "bash scripts/setup.sh" in dry["test"] and "bash scripts/setup.sh" in dry["demo"]
    assert "bench" not in dry["test"] + dry["demo"]
    bench = dry["bench"]
    assert bench.index("EXTRAS=dev,bench bash scripts/setup.sh") < bench.index("benchmarks/bench.py")


def test_the_benchmark_skips_a_peer_that_is_not_installed(tmp_path, monkeypatch, capsys) -> None:
    spec = importlib.util.spec_from_file_location("nnfit_bench", ROOT / "benchmarks" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    if importlib.util.find_spec("lightning") is not None:  # installed here: pretend it is not
        monkeypatch.setitem(bench.PEER_MODULES, "lightning", "nnfit_test_no_such_module")
    monkeypatch.setattr(sys, "argv", ["bench.py", "--smoke", "--contenders", "nnfit", "lightning",
                                      "--skip", "cli", "ingest", "tables", "--out", str(tmp_path)])
    bench.main()
    results = json.loads((tmp_path / "smoke-cpu.json").read_text())
    assert results["skipped"] == {"lightning": "not installed"}
    assert set(results["training"]["smoke"]["median"]) == {"nnfit"}
    assert "skipping lightning (not installed)" in capsys.readouterr().out
    assert "Skipped: lightning (not installed)" in (tmp_path / "smoke-cpu.md").read_text()
