"""DDP through torchrun, with real processes on the gloo backend: training equals one process
with the same global batch, evaluation counts every sample once, only rank 0 writes, a kill
and resume is bitwise, a signal to one rank stops all, and what cannot be resumed is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from nnfit.cli import main as cli_main

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="this torch build has no gloo backend")

DRIVER = Path(__file__).with_name("ddp_driver.py")
FAST = ["--no-plots", "--quiet", "--device", "cpu"]


def _torchrun(cwd: Path, *args: str, procs: int = 2, mode: str = "none", step: int = 0, rank: int = 0,
              timeout: int = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent.parent / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}",
           str(DRIVER), mode, str(step), str(rank), "--", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _one(cwd: Path, *args: str) -> int:
    """The CLI in this process (one process, no torchrun), from ``cwd``."""
    before = os.getcwd()
    os.chdir(cwd)
    try:
        return cli_main([str(a) for a in args])
    finally:
        os.chdir(before)


@pytest.fixture
def table(tmp_path: Path) -> Path:
    """301 rows (odd: no batch or split divides evenly by two ranks), 5 features, 3 classes."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(301, 5)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int) + (x[:, 2] > 1).astype(int)
    rows = zip(x, y, strict=True)
    lines = ["a,b,c,d,e,y"] + [",".join(f"{v:.6f}" for v in row) + f",{t}" for row, t in rows]
    path = tmp_path / "d.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model.safetensors")


def test_two_processes_train_as_one_with_the_same_global_batch(table: Path) -> None:
    work = table.parent
    args = ["train", table, "--target", "y", "--epochs", "3", "--batch-size", "33", "accumulate=2", *FAST]
    assert _one(work, *args, "--out", "one") == 0
    done = _torchrun(work, *args)  # no --out: runs/d-1, named once, by rank 0
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (work / "runs").iterdir()) == ["d-1"]
    one, two = _weights(work / "one"), _weights(work / "runs" / "d-1")
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-5
    h1 = (work / "one" / "history.csv").read_text().splitlines()
    h2 = (work / "runs" / "d-1" / "history.csv").read_text().splitlines()
    assert h1[0] == h2[0] and len(h1) == len(h2) == 4
    for a, b in zip(h1[1:], h2[1:], strict=True):  # every logged value but the time
        va, vb = a.split(",")[:-1], b.split(",")[:-1]
        assert np.allclose(np.array(va, float), np.array(vb, float), rtol=1e-5, atol=1e-6)
    assert "[rank 1]" not in done.stderr  # rank 1 says nothing when all goes well


def test_distributed_evaluation_counts_every_sample_once(table: Path) -> None:
    work = table.parent
    args = ["train", table, "--target", "y", "--epochs", "2", "eval_batch_size=40", "--out", "run", *FAST]
    assert _one(work, *args) == 0
    out1 = work / "one.json"
    code = subprocess.run([sys.executable, "-m", "nnfit", "evaluate", "run", table.name, "--json"], cwd=work,
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert code.returncode == 0, code.stderr
    out1.write_text(code.stdout)
    for procs in (2, 3):  # 8 batches of 40 (the last 21 rows) over 2 and 3 ranks
        done = _torchrun(work, "evaluate", "run", table.name, "--json", procs=procs)
        assert done.returncode == 0, done.stderr[-3000:]
        one, many = json.loads(out1.read_text()), json.loads(done.stdout)
        assert one.keys() == many.keys()
        assert sum(map(sum, many["confusion_matrix"])) == 301  # every sample once, none padded
        for k, v in one.items():
            assert np.allclose(np.array(v, float), np.array(many[k], float), rtol=0, atol=1e-6), k


@pytest.mark.slow
def test_kill_and_resume_of_two_processes_equals_the_uninterrupted_run(table: Path) -> None:
    work = table.parent
    # dropout: each rank draws its own masks, from generators the checkpoint gathers from both
    args = ["train", table, "--target", "y", "--epochs", "3", "--batch-size", "16", "--dropout", "0.3",
            "checkpoint_steps=4", *FAST]
    ref = _torchrun(work, *args, "--out", "ref")
    assert ref.returncode == 0, ref.stderr[-3000:]
    killed = _torchrun(work, *args, "--out", "cut", mode="kill", step=22, rank=1)
    assert killed.returncode != 0
    assert not (work / "cut" / "model.safetensors").exists()
    resumed = _torchrun(work, "train", "--resume", "cut", *FAST)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name in ("model.safetensors", "history.csv"):
        a, b = (work / "ref" / name).read_bytes(), (work / "cut" / name).read_bytes()
        if name == "history.csv":  # the time column differs
            a, b = (b"\n".join(r.rsplit(b",", 1)[0] for r in x.splitlines()) for x in (a, b))
        assert a == b, name


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_all_with_one_checkpoint(table: Path) -> None:
    work = table.parent
    args = ["train", table, "--target", "y", "--epochs", "3", "--batch-size", "16", "checkpoint_steps=5",
            "checkpoint_every=0", "keep_checkpoints=0", *FAST, "--out", "run"]
    done = _torchrun(work, *args, mode="term", step=7, rank=1)
    assert done.returncode != 0
    names = sorted(p.name for p in (work / "run" / "checkpoints").iterdir())
    # step 5 (a step checkpoint), then the stop agreed at the next one, step 10: one checkpoint
    assert names == ["step-000000005", "step-000000010"], names
    assert "stopped by SIGTERM" in done.stderr
    assert "resume with: torchrun --nproc-per-node 2 -m nnfit train --resume run" in done.stderr
    assert "[rank 1]" not in done.stderr  # rank 0 says it for all
    assert not (work / "run" / "model.safetensors").exists()


def test_resuming_on_another_number_of_processes_is_refused(table: Path, capsys) -> None:
    work = table.parent
    done = _torchrun(work, "train", table, "--target", "y", "--epochs", "1", *FAST, "--out", "run")
    assert done.returncode == 0, done.stderr[-3000:]
    assert _one(work, "train", "--resume", "run", "--epochs", "2", *FAST) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained by 2 processes and this resume runs 1" in err[0], err
    assert _one(work, "train", "--resume", "run", "--epochs", "2", "--force-resume", *FAST) == 0
    assert "resuming a run of 2 processes with 1" in capsys.readouterr().err


def test_nccl_without_cuda_is_one_line(table: Path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: nccl is a valid choice here")
    assert _one(table.parent, "train", table, "--target", "y", "dist_backend=nccl", *FAST) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["nnfit: error: dist_backend nccl needs CUDA, and this machine has no CUDA device: "
                   "use dist_backend gloo (or auto)"]


def test_a_rank_keeps_its_rows_and_its_share_of_the_mean() -> None:
    from nnfit.data import TensorData
    from nnfit.distributed import Sharded

    data = TensorData(torch.arange(7.0).unsqueeze(1), torch.arange(7))
    parts = [Sharded(data, r, 3) for r in range(3)]
    got = [[(t.tolist(), s.weight, s.rows) for _, t in s.batches(5)] for s in parts]
    # batch 1: rows 0-4 as 1 + 2 + 2; batch 2: rows 5-6, of which rank 0 gets none: a stand-in row of weight 0
    assert got[0] == [([0], 3 / 5, 1), ([5], 0.0, 0)]
    assert got[1] == [([1, 2], 6 / 5, 2), ([5], 1.5, 1)]
    assert got[2] == [([3, 4], 6 / 5, 2), ([6], 1.5, 1)]
    # the weighted mean of the ranks' mean losses is the global batch's mean
    assert sum(w * (sum(t) / len(t)) for w, t in ((3 / 5, [0]), (6 / 5, [1, 2]), (6 / 5, [3, 4]))) / 3 == 2.0


def test_batchnorm_is_synced_for_training_and_given_back() -> None:
    from nnfit.distributed import plain_batchnorm, sync_batchnorm

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Sequential(torch.nn.BatchNorm1d(4)),
                                torch.nn.BatchNorm1d(4))
    inner, outer = model[1][0], model[2]
    synced = sync_batchnorm(model)
    assert isinstance(synced[2], torch.nn.SyncBatchNorm) and isinstance(synced[1][0], torch.nn.SyncBatchNorm)
    assert synced[2].running_mean is outer.running_mean and synced[2].weight is outer.weight
    plain_batchnorm(model)
    assert model[1][0] is inner and model[2] is outer


def test_commands_of_rank_0_alone_finish_under_torchrun(table: Path) -> None:
    work = table.parent
    assert _one(work, "train", table, "--target", "y", "--epochs", "1", "--out", "run", *FAST) == 0
    done = _torchrun(work, "predict", "run", table.name, "--out", "p.csv", timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len((work / "p.csv").read_text().splitlines()) == 302
    done = _torchrun(work, "inspect", "run", timeout=120)
    assert done.returncode == 0 and "total params: 4739" in done.stdout.lower(), done.stderr[-3000:]


def test_a_streamed_file_trains_on_two_processes_as_on_one(table: Path) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    work = table.parent
    pq.write_table(pacsv.read_csv(table), work / "d.parquet", row_group_size=50)
    args = ["train", "d.parquet", "--target", "y", "--epochs", "2", "--batch-size", "20", "--stream",
            "--shuffle-buffer", "60", *[a for a in FAST if a != "--quiet"]]
    assert _one(work, *args, "--out", "one") == 0
    done = _torchrun(work, *args, "--out", "two")
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = _weights(work / "one"), _weights(work / "two")
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-5
    assert done.stderr.count("streaming d.parquet") == 1, done.stderr  # said by rank 0 alone
    assert pa is not None


def test_a_multi_process_checkpoint_inside_an_epoch_must_hold_every_ranks_count() -> None:
    from nnfit.io.validate import _ranks

    inside = {"batch": 3, "world_size": 2}
    assert _ranks(inside) == ("rank_loss_n", "missing (a checkpoint of 2 processes inside an epoch holds it)")
    assert _ranks({**inside, "rank_loss_n": [1, 2]})[0] == "rank_loss_n"
    assert _ranks({**inside, "batch": 0, "rank_loss_n": [1]})[0] == "rank_loss_n"  # epoch ends hold none
    assert _ranks({**inside, "rank_loss_n": [16]}) is None and _ranks({"batch": 3}) is None
