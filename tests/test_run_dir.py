"""One writer per run directory, an --overwrite that starts over, temporaries that only their
writer's death frees, write errors that name the file asked for, and umask-following modes.

The lock tests run real ``nnfit train`` processes side by side (each ~2 s, most of it importing
torch): two writers of one directory, a SIGKILLed holder, a resume while another trains, and
two default-named runs started together.
"""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import nnfit
import nnfit.files
from nnfit.cli import main
from nnfit.errors import CheckpointError, ConfigError, DataError
from nnfit.files import atomic_write_bytes, clean_temporaries, write_bundle
from nnfit.io.layout import LOCK_FILE, RUN_LAYOUT, new_run_dir
from nnfit.io.lock import RunDirInUse, hold_run_dir
from nnfit.run import committed

SRC = Path(nnfit.__file__).parent.parent  # the nnfit under test, for scripts that load only nnfit.files
IRIS = ["--dataset", "iris", "--quiet"]
RUN_FILES = {"checkpoints", "config.json", "history.csv", "manifest.json", "metrics.json",
             "model.json", "model.safetensors", "plots", "test.csv", "test_metrics.json"}


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "NNFIT_DEBUG"}


def _spawn(*argv: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nnfit", *argv], cwd=cwd, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def _complete(run: Path) -> None:
    """A finished run: every file, a loadable model, checkpoints, no lock or temporary left."""
    assert {p.name for p in run.iterdir()} == RUN_FILES, sorted(p.name for p in run.iterdir())
    assert committed(run)
    assert not [p for p in run.rglob(".*")], list(run.rglob(".*"))
    learner = nnfit.load(run, device="cpu")
    assert learner.predict(run / "test.csv").shape == (30,)


def _wait_for(cond, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while not cond():
        assert proc.poll() is None, (what, proc.communicate())
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


# ------------------------------------------------------------------ one writer per directory
@pytest.mark.slow
def test_two_trainers_on_one_out_dir_20_times_write_exactly_one_run(tmp_path) -> None:
    for i in range(20):
        pair = [_spawn("train", *IRIS, "--epochs", "5", "--out", f"SAME{i}", cwd=tmp_path)
                for _ in range(2)]
        results = [_finish(p) for p in pair]
        codes = sorted(r[0] for r in results)
        assert codes == [0, 2], (i, results)
        (winner, won), (loser, lost) = sorted(zip(pair, results, strict=True), key=lambda t: t[1][0])
        assert f"run written to SAME{i}" in won[1]
        err = lost[2].strip().splitlines()
        assert err == [f"nnfit: error: SAME{i} is in use by another nnfit process (pid {winner.pid})"], err
        assert lost[1] == ""
        _complete(tmp_path / f"SAME{i}")


def test_a_sigkilled_holder_blocks_nothing_and_a_resume_beside_a_trainer_is_refused(tmp_path) -> None:
    run = tmp_path / "R"
    holder = _spawn("train", *IRIS, "--epochs", "100000", "--patience", "0", "--out", "R", cwd=tmp_path)
    try:
        _wait_for(lambda: len(committed(run)) >= 1, holder, "a first checkpoint")
        assert (run / LOCK_FILE).read_text().strip() == str(holder.pid)
        # A resume of the run being trained: refused by the CLI and the API, nothing written.
        code, out, err = _finish(_spawn("train", "--resume", "R", cwd=tmp_path))
        assert (code, out) == (2, ""), err
        assert err.strip().splitlines() == [
            f"nnfit: error: R is in use by another nnfit process (pid {holder.pid})"]
        x, y = np.zeros((20, 4)), np.arange(20) % 2
        for kw in ({"resume": run}, {"run_dir": run, "resume": run}, {"run_dir": run, "overwrite": True}):
            with pytest.raises(RunDirInUse, match=f"pid {holder.pid}"):
                nnfit.fit("mlp", x, y, quiet=True, epochs=1, **kw)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate(timeout=60)
    assert (run / LOCK_FILE).exists()  # the file stays behind; the lock went with the process
    # The next writer goes ahead at once: a resume that trains one more epoch...
    newest = int(committed(run)[-1].split("-epoch-")[-1]) if "-epoch-" in committed(run)[-1] else 0
    assert main(["train", "--resume", str(run), "--epochs", str(newest + 1)]) == 0
    assert not (run / LOCK_FILE).exists()
    # ... and a fresh run over it.
    assert main(["train", *IRIS, "--epochs", "2", "--out", str(run), "--overwrite"]) == 0
    _complete(run)


def test_two_default_named_runs_started_together_get_their_own_directories(tmp_path) -> None:
    pair = [_spawn("train", *IRIS, "--epochs", "2", cwd=tmp_path) for _ in range(2)]
    results = [_finish(p) for p in pair]
    assert [r[0] for r in results] == [0, 0], results
    written = sorted(re.search(r"run written to (\S+)", r[1]).group(1) for r in results)
    assert written == ["runs/iris-1", "runs/iris-2"]
    for name in written:
        _complete(tmp_path / name)


def test_new_run_dir_takes_the_next_number_and_skips_a_taken_one(tmp_path, monkeypatch) -> None:
    for name in ("wine-1", "wine-3", "wine-x", "other-9"):
        (tmp_path / name).mkdir()
    assert new_run_dir(tmp_path, "wine") == tmp_path / "wine-4"
    real_mkdir = os.mkdir

    def raced(path, mode=0o777):  # another process claims wine-5 between listing and mkdir
        if Path(path).name == "wine-5":
            real_mkdir(path, mode)
        real_mkdir(path, mode)

    monkeypatch.setattr(os, "mkdir", raced)
    assert new_run_dir(tmp_path, "wine") == tmp_path / "wine-6"


def test_the_lock_is_reentrant_in_a_thread_refused_to_another_and_unneeded_by_readers(trained) -> None:
    held, release = threading.Event(), threading.Event()

    def writer() -> None:  # nnfit train holds the lock around fit, which takes it again
        with hold_run_dir(trained), hold_run_dir(trained):
            held.set()
            release.wait(60)

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert held.wait(60)
        with pytest.raises(RunDirInUse) as e:
            nnfit.fit("mlp", np.zeros((20, 4)), np.arange(20) % 2, run_dir=trained, overwrite=True)
        assert str(e.value) == f"{trained} is in use by another thread of this process (pid {os.getpid()})"
        # Readers never take the lock: they work while a writer holds it.
        assert main(["evaluate", str(trained), str(trained / "test.csv"), "--json"]) == 0
        assert main(["predict", str(trained), str(trained / "test.csv"), "-o", str(trained / "p.csv")]) == 0
        assert main(["inspect", str(trained)]) == 0
    finally:
        release.set()
        t.join(60)
    assert not (trained / LOCK_FILE).exists()


def test_a_run_that_fails_while_starting_leaves_no_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", *IRIS, "--task", "binary"]) == 2  # refused inside fit: runs/iris-1 is gone
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError):
        nnfit.fit("mlp", np.zeros((0, 3)), np.zeros(0), run_dir=tmp_path / "a" / "b", quiet=True)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CheckpointError, match="no such run directory"):
        nnfit.fit("mlp", np.zeros((4, 3)), np.arange(4) % 2, run_dir=tmp_path / "r", resume=tmp_path / "r")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ --overwrite
@pytest.fixture
def old_run(tmp_path, monkeypatch) -> Path:
    """A finished 8-epoch run (hidden 8) holding a user's notes and the user's own temporary."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", *IRIS, "--epochs", "8", "--hidden", "8", "--patience", "0", "--out", "OLD"]) == 0
    (tmp_path / "OLD" / "notes.txt").write_text("mine")
    (tmp_path / "OLD" / ".x.tmp").write_text("mine too")
    return tmp_path / "OLD"


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_overwrite_starts_over_and_keeps_only_the_users_files(old_run) -> None:
    old_ckpts = committed(old_run)
    assert max(int(n.split("-")[1]) for n in old_ckpts) > 6  # past the new run's last step
    old_model = (old_run / "model.safetensors").read_bytes()
    # A new run: other settings, fewer steps, and no test split (so no test.csv of its own).
    assert main(["train", *IRIS, "--epochs", "2", "--patience", "0", "--test-split", "0",
                 "--out", "OLD", "--overwrite"]) == 0
    assert set(committed(old_run)).isdisjoint(old_ckpts)
    assert [n.split("-epoch-")[1] for n in committed(old_run)] == ["00001", "00002"]
    assert (old_run / "model.safetensors").read_bytes() != old_model
    assert not (old_run / "test.csv").exists() and not (old_run / "test_metrics.json").exists()
    assert (old_run / "notes.txt").read_text() == "mine" and (old_run / ".x.tmp").read_text() == "mine too"
    assert json.loads((old_run / "config.json").read_text())["hidden"] == [64, 64]
    # A later resume continues the new run: no diff against the old one's settings.
    assert main(["train", "--resume", "OLD", "--epochs", "3"]) == 0
    assert len((old_run / "history.csv").read_text().splitlines()) == 1 + 3
    assert committed(old_run)[-1].endswith("-epoch-00003")


@pytest.mark.parametrize("bad", [
    ["--target", "no_such_column"],  # refused while reading the data
    ["--task", "binary"],  # iris has 3 classes: refused inside fit, with the lock held
    ["--epochs", "0"],  # refused by the configuration
])
def test_a_failing_overwrite_leaves_the_old_run_intact(old_run, capsys, bad) -> None:
    before = _snapshot(old_run)
    capsys.readouterr()
    assert main(["train", *IRIS, "--epochs", "1", *bad, "--out", "OLD", "--overwrite"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert _snapshot(old_run) == before
    assert not (old_run / LOCK_FILE).exists()


def test_every_name_a_run_writes_is_in_the_layout_registry(old_run, capsys) -> None:
    # A resume that sets a damaged checkpoint aside, so that name is covered too.
    newest = old_run / "checkpoints" / committed(old_run)[-1] / "state.json"
    newest.write_bytes(newest.read_bytes() + b" ")
    assert main(["train", "--resume", "OLD", "--epochs", "9"]) == 0
    assert "skipping checkpoint" in capsys.readouterr().err
    written = {p.name + ("/" if p.is_dir() else "") for p in old_run.iterdir()} - {"notes.txt", ".x.tmp"}
    assert written <= set(RUN_LAYOUT), written - set(RUN_LAYOUT)


def test_fit_overwrite_removes_the_earlier_runs_checkpoints(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3))
    y = (x[:, 0] > 0).astype(int)
    run = tmp_path / "r"
    nnfit.fit("mlp", x, y, epochs=6, patience=0, run_dir=run, quiet=True, batch_size=8)
    nnfit.fit("mlp", x, y, epochs=1, run_dir=run, quiet=True, batch_size=8, overwrite=True)
    assert [n.split("-epoch-")[1] for n in committed(run)] == ["00001"]


# ---------------------------------------------------------------------------- temporaries
_DIE_WRITING = """
import os, sys, types
from pathlib import Path
pkg = types.ModuleType("nnfit"); pkg.__path__ = [os.path.join(sys.argv[1], "nnfit")]
sys.modules["nnfit"] = pkg  # nnfit.files alone: no torch
from nnfit import files
tmp = files._new_temporary(Path(sys.argv[2]), directory=sys.argv[3] == "dir")
print(tmp.name, flush=True)
if sys.argv[4] == "die":
    os.kill(os.getpid(), 9)
sys.stdin.read()  # a live writer, until the test lets it go
"""


def _writer(target: Path, how: str = "file", then: str = "die") -> tuple[subprocess.Popen, str]:
    """A process that creates a temporary for ``target`` the way every nnfit write does, then
    is SIGKILLed (``die``) or stays alive holding it (``live``)."""
    proc = subprocess.Popen([sys.executable, "-c", _DIE_WRITING, str(SRC), str(target), how, then],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    name = proc.stdout.readline().strip()
    if then == "die":
        proc.communicate(timeout=60)  # reaped: its pid is gone
    return proc, name


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("trained")
    assert main(["train", *IRIS, "--epochs", "1", "--out", str(d / "run")]) == 0
    return d / "run"


def test_a_killed_predicts_temporary_is_removed_by_the_next_write_to_that_path(trained, tmp_path) -> None:
    out = tmp_path / "out.csv"
    _, dead = _writer(out)
    _, other = _writer(tmp_path / "other.csv")  # another target's: left for its own next write
    assert re.fullmatch(r"\.out\.csv\.nnfit-\d+-[0-9a-f]{8}\.tmp", dead)
    assert (tmp_path / dead).exists()
    assert main(["predict", str(trained), str(trained / "test.csv"), "-o", str(out)]) == 0
    assert not (tmp_path / dead).exists() and (tmp_path / other).exists()
    assert out.read_text().startswith("species\n")


def test_only_dead_writers_nnfit_temporaries_are_ever_removed(tmp_path) -> None:
    mine = [".x.tmp", ".out.csv.tmp", ".out.csv.a1b2c3.tmp", ".out.csv.nnfit-0-12345678.tmp"]
    for name in mine:
        (tmp_path / name).write_text("user")
    live, live_name = _writer(tmp_path / "out.csv", then="live")
    _, dead_dir = _writer(tmp_path / "step-1", how="dir")
    try:
        atomic_write_bytes(tmp_path / "out.csv", b"new")
        assert clean_temporaries(tmp_path) == [dead_dir]
        assert (tmp_path / live_name).exists()  # a live writer's temporary is never taken
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*mine, live_name, "out.csv"])
    finally:
        live.communicate("", timeout=60)
    assert clean_temporaries(tmp_path) == [live_name]  # once its writer is gone
    assert all((tmp_path / name).read_text() == "user" for name in mine)


def test_a_train_never_removes_a_live_temporary_in_its_run(trained, tmp_path) -> None:
    live, live_name = _writer(trained / "preds.csv", then="live")  # `predict -o RUN/preds.csv`
    try:
        assert main(["train", "--resume", str(trained), "--epochs", "2"]) == 0
        assert (trained / live_name).exists()
    finally:
        live.communicate("", timeout=60)


# ---------------------------------------------------------------------- write errors named
def test_a_full_disk_names_the_requested_file(trained, tmp_path, monkeypatch, capsys) -> None:
    def full(path, data):
        with open(path, "wb") as f:
            f.write(data[:10])
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(nnfit.files, "_write_file", full)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["predict", str(trained), str(trained / "test.csv"), "-o", "out.csv"]) == 2
    assert capsys.readouterr().err == "nnfit: error: out.csv: No space left on device\n"
    with pytest.raises(OSError, match="No space left") as e:
        write_bundle(tmp_path / "bundle", "checkpoint", {"state.json": b"{}"})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "bundle" / "state.json")
    assert list(tmp_path.iterdir()) == []  # no temporary, no half file


def test_a_real_file_size_limit_names_the_requested_file(tmp_path) -> None:
    script = """
import os, sys, types
pkg = types.ModuleType("nnfit"); pkg.__path__ = [os.path.join(sys.argv[1], "nnfit")]
sys.modules["nnfit"] = pkg
from nnfit import files
try:
    files.atomic_write_bytes("big.bin", b"x" * 100_000)
except OSError as e:
    print(e.errno, e.filename, e.strerror)
"""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG

    r = subprocess.run([sys.executable, "-B", "-c", script, str(SRC)], cwd=tmp_path, preexec_fn=limit,
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == f"{errno.EFBIG} big.bin File too large", (r.stdout, r.stderr)
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_output_directory_names_the_requested_file(trained, tmp_path, monkeypatch,
                                                                  capsys) -> None:
    monkeypatch.chdir(tmp_path)
    Path("file.txt").write_text("a file, not a directory")
    predict = ["predict", str(trained), str(trained / "test.csv"), "-o"]
    capsys.readouterr()
    assert main([*predict, "file.txt/out.csv"]) == 2
    assert capsys.readouterr().err == "nnfit: error: file.txt/out.csv: Not a directory\n"
    real_open = os.open

    def denied(path, *args, **kw):  # what a directory without write permission says (not to root)
        if ".nnfit-" in str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kw)

    monkeypatch.setattr(os, "open", denied)
    assert main([*predict, "out.csv"]) == 2
    monkeypatch.undo()
    assert capsys.readouterr().err == "nnfit: error: out.csv: Permission denied\n"
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        with hold_run_dir(tmp_path / "file.txt"):
            pass


# -------------------------------------------------------------------------------- the umask
def test_files_and_directories_follow_the_umask(tmp_path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        write_bundle(tmp_path / "bundle", "checkpoint", {"state.json": b"{}"})
        assert main(["train", *IRIS, "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    finally:
        os.umask(old)
    modes = {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777 for p in tmp_path.rglob("*")}
    wrong = {k: oct(m) for k, m in modes.items()
             if m != (0o750 if (tmp_path / k).is_dir() else 0o640)}
    assert not wrong and len(modes) > 15, wrong
