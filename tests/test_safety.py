"""Nothing lost, nothing executed: atomic and verified checkpoints, pickle refusal at every
load entry point, damage detection, write faults, numerical faults, resume checks."""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnfit
import nnfit.files
from helpers import NanAt
from nnfit.checkpoint import load_checkpoint, tensors_to_bytes
from nnfit.cli import main
from nnfit.errors import CheckpointError, NnfitWarning, TrainingError
from nnfit.files import write_files
from nnfit.run import committed, read_latest

HERE = Path(__file__).parent
SRC = HERE.parent / "src"
QUICK = dict(quiet=True, device="cpu", batch_size=16, seed=0)


def _data(n: int = 200, d: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    return x, (x[:, 0] - x[:, 1] > 0).astype(int)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished run with mid-epoch and end-of-epoch checkpoints."""
    d = tmp_path_factory.mktemp("safety") / "run"
    x, y = _data()
    nnfit.fit({"name": "mlp", "hidden": [8]}, x, y, epochs=3, run_dir=d, checkpoint_steps=4, **QUICK)
    return d


# ------------------------------------------------------------ a writer killed 20 times
def test_writer_killed_20_times_mid_save_never_loses_the_last_checkpoint(tmp_path) -> None:
    blobs = tmp_path / "blobs"
    expected = []
    for k in range(3):  # three distinct, realistic checkpoints of ~1.5 MB
        torch.manual_seed(k)
        tensors = {"model/w": torch.randn(256, 512), "optimizer/0/exp_avg": torch.randn(256, 512),
                   "rng/torch": torch.get_rng_state()}
        (blobs / str(k)).mkdir(parents=True)
        (blobs / str(k) / "state.safetensors").write_bytes(tensors_to_bytes(tensors))
        (blobs / str(k) / "state.json").write_text(json.dumps({"learner": {}, "optimizer": {}, "k": k}))
        expected.append(tensors)
    run, rng, mid_save = tmp_path / "run", random.Random(7), 0
    for _ in range(20):
        writer = [sys.executable, str(HERE / "crash_writer.py"), str(SRC), str(run), str(blobs)]
        proc = subprocess.Popen(writer, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.02, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        mid_save += any(p.name.startswith(".") for p in (run / "checkpoints").iterdir())
        newest = committed(run)[-1]
        tensors, meta = load_checkpoint(run / "checkpoints" / newest)  # verifies every byte
        k = meta["k"]
        assert int(newest.split("-")[1]) % 3 == k
        assert all(torch.equal(tensors[n], t) for n, t in expected[k].items())
    print(f"{mid_save} of 20 kills landed inside a save")
    assert mid_save >= 10, f"only {mid_save} of 20 kills landed inside a save"
    with pytest.warns(NnfitWarning, match="unfinished checkpoint"):
        read_latest(run)  # and the next start removes what the killed writer left
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------------ crafted pickles
class _Payload:
    """Unpickling this runs `touch MARKER`: proof of code execution if the file appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_pt(path: Path, marker: Path, nested: bool) -> Path:
    obj = ({"state": {0: {"exp_avg": _Payload(marker)}}, "param_groups": []} if nested
           else _Payload(marker))
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("force_env", [False, True])
def test_crafted_pickles_are_refused_everywhere_and_run_nothing(run_dir, tmp_path, monkeypatch,
                                                                  capsys, force_env) -> None:
    if force_env:  # the variable that turns torch.load's protection off when not passed explicitly
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "PWNED"
    raw = pickle.dumps(_Payload(marker))
    model = nnfit.MLP(4, [8], 1)
    # 1. .pt/.pth weights: a top-level payload and one nested in optimizer-like state.
    for nested in (False, True):
        for suffix in (".pt", ".pth"):
            with pytest.raises(CheckpointError, match="refused to load"):
                nnfit.load_weights(model, _evil_pt(tmp_path / f"w{nested}{suffix}", marker, nested))
    # 2. A model directory and a checkpoint whose files were replaced by pickles, with a forged
    # manifest that matches them (a manifest is a checksum, not a signature).
    for target in ("model.safetensors", "model.json"):
        d = tmp_path / f"model-{target}"
        shutil.copytree(run_dir, d)
        files = {n: (d / n).read_bytes() for n in ("model.safetensors", "model.json")}
        files[target] = raw
        write_files(d, "model", files)
        with pytest.raises(CheckpointError):
            nnfit.load(d)
        csv_path = str(tmp_path / "x.csv")
        for cmd in (["evaluate", str(d), csv_path], ["predict", str(d), csv_path], ["inspect", str(d)]):
            assert main(cmd) == 2
    for target in ("state.safetensors", "state.json"):
        d = tmp_path / f"ckpt-{target}"
        shutil.copytree(run_dir, d)
        ck = d / "checkpoints" / committed(d)[-1]
        payload = {n: (ck / n).read_bytes() for n in ("state.safetensors", "state.json")}
        payload[target] = raw
        shutil.rmtree(ck)
        nnfit.files.write_bundle(ck, "checkpoint", payload)
        # 3. A pickled RNG file dropped beside it, as other tools write them: never read.
        (ck / "rng_state.pth").write_bytes(raw)
        (ck / "random_states_0.pkl").write_bytes(raw)
        with pytest.raises(CheckpointError):
            load_checkpoint(ck)
        with pytest.raises(CheckpointError, match=target):
            read_latest(d)  # its manifest verifies: invalid content is refused, not skipped
    capsys.readouterr()
    assert not marker.exists()


def test_source_has_no_unsafe_load_call() -> None:
    unsafe = re.compile(r"pickle\.loads?\(|cloudpickle|dill\.|joblib\.load|marshal\.loads?\(|"
                        r"torch\.jit\.load|allow_pickle\s*=\s*True|weights_only\s*=\s*False")
    problems = []
    for path in (SRC / "nnfit").rglob("*.py"):
        text = path.read_text()
        problems += [f"{path.name}: {m.group(0)}" for m in unsafe.finditer(text)]
        for m in re.finditer(r"torch\.load\((.*)", text):  # the call's line must pass it
            if "weights_only=True" not in m.group(1):
                problems.append(f"{path.name}: torch.load without weights_only=True")
        for m in re.finditer(r"(?:np|numpy)\.load\((.*)", text):
            if "allow_pickle=False" not in m.group(1):
                problems.append(f"{path.name}: np.load without allow_pickle=False")
    assert not problems, problems
    assert "torch.load(" in (SRC / "nnfit" / "checkpoint.py").read_text()  # the scan sees calls


# ------------------------------------------------------------------------ damage detection
def _mutations(data: bytes, rng: random.Random) -> dict[str, bytes]:
    pos = rng.randrange(len(data))
    flipped = bytearray(data)
    flipped[pos] ^= 1 << rng.randrange(8)
    return {"bit flip": bytes(flipped), "truncation": data[: rng.randrange(len(data))],
            "appended bytes": data + b"\0\x01junk"}


@pytest.mark.parametrize("where", ["checkpoint", "model"])
def test_one_flipped_bit_a_truncation_and_appended_bytes_are_each_detected(run_dir, tmp_path,
                                                                          where) -> None:
    rng = random.Random(1)
    src = run_dir / "checkpoints" / committed(run_dir)[-1] if where == "checkpoint" else run_dir
    names = (["state.safetensors", "state.json", "manifest.json"] if where == "checkpoint"
             else ["model.safetensors", "model.json", "manifest.json"])
    for name in names:
        for kind, damaged in _mutations((src / name).read_bytes(), rng).items():
            d = tmp_path / f"{name}-{kind}"
            shutil.copytree(src, d)
            (d / name).write_bytes(damaged)
            with pytest.raises(CheckpointError) as e:
                load_checkpoint(d) if where == "checkpoint" else nnfit.load(d)
            assert name in str(e.value), (kind, str(e.value))


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(file=st.sampled_from(["state.safetensors", "state.json", "manifest.json"]),
       edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255),
                                st.sampled_from(["set", "insert", "delete", "cut"])), min_size=1, max_size=4))
def test_mutation_fuzz_of_checkpoint_files_fails_only_with_checkpoint_error(run_dir, tmp_path_factory,
                                                                           file, edits) -> None:
    src = run_dir / "checkpoints" / committed(run_dir)[-1]
    d = tmp_path_factory.mktemp("fuzz") / "ck"
    shutil.copytree(src, d)
    data = bytearray((d / file).read_bytes())
    for where, byte, op in edits:
        i = int(where * len(data)) if data else 0
        if op == "set" and data:
            data[i] = byte
        elif op == "insert":
            data.insert(i, byte)
        elif op == "delete" and data:
            del data[i]
        elif op == "cut":
            del data[i:]
    (d / file).write_bytes(bytes(data))
    changed = bytes(data) != (src / file).read_bytes()
    try:
        tensors, meta = load_checkpoint(d)
    except CheckpointError:
        return
    assert not changed, "a changed checkpoint file loaded without complaint"


# ------------------------------------------------------------------------- resume fallback
def test_resume_falls_back_past_a_damaged_newest_checkpoint(tmp_path) -> None:
    x, y = _data()
    spec = {"name": "mlp", "hidden": [8], "dropout": 0.2}
    full = nnfit.fit(spec, x, y, epochs=4, **QUICK)
    nnfit.fit(spec, x, y, epochs=2, run_dir=tmp_path / "r", checkpoint_steps=3, **QUICK)
    newest = tmp_path / "r" / "checkpoints" / committed(tmp_path / "r")[-1]
    data = bytearray((newest / "state.safetensors").read_bytes())
    data[len(data) // 2] ^= 4
    (newest / "state.safetensors").write_bytes(bytes(data))
    damaged = (rf"skipping checkpoint {newest.name} \(kept as damaged-{newest.name}\): "
               r".*state.safetensors: damaged")
    with pytest.warns(NnfitWarning, match=damaged):
        resumed = nnfit.fit(spec, x, y, epochs=4, run_dir=tmp_path / "r", resume=tmp_path / "r",
                            keep_checkpoints=1, **QUICK)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Set aside, the damaged one no longer counts: rotation keeps the run's own newest checkpoint.
    assert (newest.parent / f"damaged-{newest.name}").is_dir()
    assert committed(tmp_path / "r")[-1].endswith("-epoch-00004")


def test_rotation_keeps_the_newest_n_and_the_best(tmp_path) -> None:
    x, y = _data()
    nnfit.fit({"name": "mlp", "hidden": [8]}, x, y, epochs=6, lr=0.05, run_dir=tmp_path / "r",
              checkpoint_steps=3, keep_checkpoints=2, **QUICK)
    names = committed(tmp_path / "r")
    _, meta = read_latest(tmp_path / "r")
    best = meta["best_checkpoint"]
    assert best in names and names[-1].endswith("-epoch-00006")
    assert len(names) == (2 if best in names[-2:] else 3), names
    assert best.endswith(f"-epoch-{meta['best_epoch']:05d}")


# ---------------------------------------------------------------------------- write faults
def test_a_full_disk_ends_the_run_clearly_and_loses_nothing(tmp_path, monkeypatch, capsys) -> None:
    x, y = _data()
    header = ",".join([f"f{i}" for i in range(4)] + ["y"])
    np.savetxt(tmp_path / "d.csv", np.c_[x, y], delimiter=",", header=header, comments="", fmt="%.6g")
    monkeypatch.chdir(tmp_path)
    args = ["train", "d.csv", "--target", "y", "--epochs", "3", "--quiet", "checkpoint_steps=4"]
    assert main([*args, "--out", "REF"]) == 0
    real, calls = nnfit.files._write_file, [0]

    def full_disk(path, data):
        calls[0] += 1
        if calls[0] >= 12:  # a few checkpoints in, every write fails
            with open(path, "wb") as f:
                f.write(data[: len(data) // 3])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(nnfit.files, "_write_file", full_disk)
    capsys.readouterr()
    assert main([*args, "--out", "R"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nnfit: error: ") and "No space left on device" in err[0]
    monkeypatch.setattr(nnfit.files, "_write_file", real)
    leftovers = [p for p in (tmp_path / "R").rglob(".*") if p.name.endswith(".tmp")]
    assert not leftovers, leftovers  # the failed writes cleaned up after themselves
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_latest(tmp_path / "R")  # the last committed checkpoint verifies, no fallback
    assert main(["train", "--resume", "R"]) == 0
    final = (tmp_path / "R" / "model.safetensors").read_bytes()
    assert final == (tmp_path / "REF" / "model.safetensors").read_bytes()


# ------------------------------------------------------------------------ numerical faults
class _BadGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


class _GradInfAt(NanAt):
    def forward(self, x):
        self.calls += self.training
        out = self.fc(x)
        return _BadGrad.apply(out) if self.training and self.calls == self.n else out


@pytest.mark.parametrize("module, quantity", [(NanAt, "non-finite loss (nan) in epoch 2, step 16"),
                                              (_GradInfAt, "non-finite gradient of 'fc.weight' in epoch 2, "
                                                           "step 16")])
def test_a_non_finite_loss_or_gradient_stops_in_that_step(tmp_path, module, quantity) -> None:
    x, y = _data()  # 160 training rows: 10 batches an epoch
    model = module(16)
    with pytest.raises(TrainingError, match=re.escape(quantity)) as e:
        nnfit.fit(model, x, y, epochs=3, run_dir=tmp_path / "r", checkpoint_steps=4, **QUICK)
    assert "before this step's update" in str(e.value)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the update never ran
    names = committed(tmp_path / "r")
    assert names[-1] == "step-000000012"  # the last good checkpoint, untouched
    for name in names:
        tensors, _ = load_checkpoint(tmp_path / "r" / "checkpoints" / name)
        assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def test_an_overflowing_update_is_named_as_a_parameter(tmp_path) -> None:
    x, y = _data()
    with pytest.raises(TrainingError, match="parameter 'fc1.weight'|parameter 'fc1.bias'|parameter 'out"):
        nnfit.fit({"name": "mlp", "hidden": [8]}, x * 1e30, y, epochs=2, optimizer="sgd", lr=1e30,
                  standardize=False, run_dir=tmp_path / "r", **QUICK)
    for name in committed(tmp_path / "r"):
        tensors, _ = load_checkpoint(tmp_path / "r" / "checkpoints" / name)
        assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def test_non_finite_training_through_the_cli_is_one_line_exit_1(tmp_path, monkeypatch, capsys) -> None:
    x, y = _data()
    np.savetxt(tmp_path / "d.csv", np.c_[x, y], delimiter=",", header="a,b,c,d,y", comments="", fmt="%.6g")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["train", "d.csv", "--target", "y", "--optimizer", "sgd", "--lr", "1e30", "--quiet",
                 "standardize=false", "--epochs", "3"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nnfit: error: ") and "non-finite" in err[0], err


# --------------------------------------------------------------------- resume refusals
def test_resume_with_changed_data_is_refused_unless_forced(tmp_path, monkeypatch, capsys) -> None:
    x, y = _data()
    np.savetxt(tmp_path / "d.csv", np.c_[x, y], delimiter=",", header="a,b,c,d,y", comments="", fmt="%.6g")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "d.csv", "--target", "y", "--epochs", "2", "--quiet", "--out", "r"]) == 0
    x[5, 2] += 1.0
    np.savetxt(tmp_path / "d.csv", np.c_[x, y], delimiter=",", header="a,b,c,d,y", comments="", fmt="%.6g")
    capsys.readouterr()
    assert main(["train", "--resume", "r", "--epochs", "3", "--lr", "0.01"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lr (0.001 -> 0.01)" in err[0] and "training data (sha256" in err[0]
    assert main(["train", "--resume", "r", "--epochs", "3", "--force-resume"]) == 0
    err = capsys.readouterr().err
    assert "nnfit: warning: resuming despite changed settings: training data" in err
    assert len(nnfit.load("r").model.state_dict()) > 0


def test_a_run_from_a_newer_format_is_refused(run_dir, tmp_path, capsys) -> None:
    d = tmp_path / "newer"
    shutil.copytree(run_dir, d)
    files = {n: (d / n).read_bytes() for n in ("model.safetensors", "model.json")}
    (d / "manifest.json").write_bytes(nnfit.files.manifest_bytes("model", files).replace(
        b'"format": 2', b'"format": 3'))
    body = json.loads((d / "manifest.json").read_text())
    body["self_sha256"] = nnfit.files.sha256_bytes(nnfit.files._canonical(body))
    (d / "manifest.json").write_bytes(nnfit.files._render(body))
    with pytest.raises(CheckpointError, match="written by a newer nnfit .format 3"):
        nnfit.load(d)
    capsys.readouterr()
    assert main(["inspect", str(d)]) == 2
    assert "upgrade nnfit" in capsys.readouterr().err
