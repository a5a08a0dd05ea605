"""Review findings 1, 2, 9 and two of 11, about the run directory:

1. ``--overwrite`` never deletes the new run's own data or config file, touches only what
   nnfit wrote (in ``checkpoints/`` only its bundles), and replaces only an nnfit run.
2. ``predict -o`` never writes over a file of the run it reads (whatever ``--overwrite``).
9. ``--resume`` with ``epochs`` not above where the run got refuses in one line.
11. an unwritable run is named as RUN, not ``RUN/.nnfit.lock``; ``predict -o -`` is stdout.

Every test trains iris for a few epochs in-process (well under a second each).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import nnfit
import nnfit.io.lock
from nnfit.cli import main
from nnfit.errors import ConfigError
from nnfit.io.layout import LOCK_FILE
from nnfit.run import committed

IRIS = ["--dataset", "iris", "--quiet", "--patience", "0"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 3-epoch iris run (with test.csv); tests work on copies of it."""
    d = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", *IRIS, "--epochs", "3", "--out", str(d)]) == 0
    return d


@pytest.fixture
def run(finished, tmp_path, monkeypatch) -> Path:
    """A copy of the finished run as ``ir`` in the (changed) working directory."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(finished, tmp_path / "ir")
    return Path("ir")


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nnfit: error: "), err
    return err[0]


# ------------------------------------------------------------------ 1: --overwrite is safe
@pytest.mark.parametrize("how", ["data in the run", "data linking into the run", "config in a checkpoint"])
def test_overwrite_refuses_to_delete_its_own_data_or_config(run, capsys, how) -> None:
    bundle = committed(run)[-1]
    argv = ["train", "--target", "species", "--epochs", "1", "--quiet", "--out", "ir", "--overwrite"]
    if how == "data in the run":
        culprit, argv = "ir/test.csv", [*argv, "ir/test.csv"]
    elif how == "data linking into the run":
        os.symlink("ir/history.csv", "data.csv")
        shutil.copy(run / "test.csv", run / "history.csv")  # the user's data under a run name
        culprit, argv = "data.csv", [*argv, "data.csv"]
    else:
        culprit = f"ir/checkpoints/{bundle}/my.yaml"
        Path(culprit).write_text("lr: 0.01\n")
        argv = [*argv, "--dataset", "iris", "--config", culprit]
    before = _snapshot(run)
    capsys.readouterr()
    assert main(argv) == 2
    line = _one_error(capsys)
    assert line.startswith(f"nnfit: error: {culprit} is the run file "), line
    assert "overwriting ir would delete it" in line
    assert _snapshot(run) == before and not (run / LOCK_FILE).exists()


def test_fit_overwrite_refuses_to_delete_its_own_data(run) -> None:
    before = _snapshot(run)
    with pytest.raises(ConfigError, match=r"^ir/test\.csv is the run file test\.csv of ir: overwriting"):
        nnfit.fit("mlp", "ir/test.csv", target="species", run_dir=run, overwrite=True, epochs=1, quiet=True)
    assert _snapshot(run) == before


def test_overwrite_keeps_a_users_files_in_checkpoints(run) -> None:
    old = committed(run)
    (run / "checkpoints" / "mymodel.pt").write_bytes(b"mine")
    (run / "checkpoints" / "step-1").mkdir()  # not a name nnfit writes (9 digits)
    assert main(["train", *IRIS, "--epochs", "1", "--hidden", "8", "--out", "ir", "--overwrite"]) == 0
    assert committed(run) == [n for n in committed(run) if n.endswith("-epoch-00001")]
    assert set(committed(run)).isdisjoint(old)
    assert (run / "checkpoints" / "mymodel.pt").read_bytes() == b"mine"
    assert (run / "checkpoints" / "step-1").is_dir()


@pytest.mark.parametrize("api", [False, True])
def test_overwrite_refuses_a_directory_holding_no_nnfit_run(tmp_path, monkeypatch, capsys, api) -> None:
    monkeypatch.chdir(tmp_path)
    proj = tmp_path / "proj"
    (proj / "checkpoints").mkdir(parents=True)
    (proj / "test.csv").write_text("a,b\n1,2\n")
    (proj / "config.json").write_text("{}\n")
    (proj / "manifest.json").write_text('{"name": "my web app"}\n')
    (proj / "checkpoints" / "mymodel.pt").write_bytes(b"mine")
    before = _snapshot(proj)
    capsys.readouterr()
    if api:
        with pytest.raises(ConfigError, match="^proj is not empty and holds no nnfit run"):
            nnfit.fit("mlp", [[0.0], [1.0]] * 5, [0, 1] * 5, run_dir="proj", overwrite=True, quiet=True)
    else:
        assert main(["train", *IRIS, "--epochs", "1", "--out", "proj", "--overwrite"]) == 2
        assert _one_error(capsys) == ("nnfit: error: proj is not empty and holds no nnfit run: overwriting "
                                      "replaces only an earlier run's files; choose a new or empty directory")
    assert _snapshot(proj) == before and not (proj / LOCK_FILE).exists()


def test_overwrite_takes_a_run_whose_writer_died_before_its_manifest(tmp_path, monkeypatch) -> None:
    # A run SIGKILLed between writing config.json and its manifest leaves those two and its
    # lock file (holding its pid): still an nnfit run to overwrite.
    monkeypatch.chdir(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / "config.json").write_text("{}\n")
    (tmp_path / "killed" / LOCK_FILE).write_text(dead)
    assert main(["train", *IRIS, "--epochs", "1", "--out", "killed", "--overwrite"]) == 0
    assert (tmp_path / "killed" / "config.json").read_text() != "{}\n"
    assert len(committed(tmp_path / "killed")) == 1


# ---------------------------------------------------- 2: predict -o never writes into the run
@pytest.mark.parametrize("output", ["ir/model.json", "ir/manifest.json", "./ir/../ir/config.json",
                                    "ir/checkpoints/preds.csv", f"ir/{LOCK_FILE}", "ir/test.csv"])
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_predict_o_refuses_a_file_of_the_run(run, capsys, output, overwrite) -> None:
    before = _snapshot(run)
    capsys.readouterr()
    assert main(["predict", "ir", "ir/test.csv", "-o", output, *overwrite]) == 2
    line = _one_error(capsys)
    assert line.startswith(f"nnfit: error: -o {output} is ") and "would damage the run" in line, line
    assert _snapshot(run) == before
    nnfit.load(run, device="cpu")


def test_predict_o_refuses_a_run_file_reached_through_a_link(run, capsys) -> None:
    os.symlink("ir", "alias")
    assert main(["predict", "ir", "ir/test.csv", "-o", "alias/model.safetensors"]) == 2
    assert "is the run's model.safetensors in ir" in _one_error(capsys)


def test_predict_o_beside_the_run_files_is_fine(run) -> None:
    assert main(["predict", "ir", "ir/test.csv", "-o", "ir/preds.csv"]) == 0
    assert (run / "preds.csv").read_text().startswith("species\n")


# ------------------------------------------------------------ 11: -o - is standard output
def test_predict_o_dash_writes_standard_output(run, capsys) -> None:
    capsys.readouterr()
    assert main(["predict", "ir", "ir/test.csv", "-o", "-"]) == 0
    out = capsys.readouterr().out
    assert not Path("-").exists()
    assert main(["predict", "ir", "ir/test.csv"]) == 0
    assert out.startswith("species\n") and out == capsys.readouterr().out


# ------------------------------------------- 9: a resume that would train nothing is refused
def test_resume_with_epochs_not_above_a_finished_run_is_refused(run, capsys) -> None:
    before = _snapshot(run)
    for epochs in ("2", "1"):
        capsys.readouterr()
        assert main(["train", "--resume", "ir", "--epochs", epochs]) == 2
        assert _one_error(capsys) == (
            f"nnfit: error: nothing to train: the run got to epoch 3 of 3, and epochs {epochs} goes no "
            "further; to train on, resume with epochs above 3 (--epochs N, epochs=N in Python)")
        assert _snapshot(run) == before
    # The run's own epochs: nothing to do, as item 18 decided; more epochs train on.
    assert main(["train", "--resume", "ir", "--quiet"]) == 0
    assert main(["train", "--resume", "ir", "--epochs", "4", "--quiet"]) == 0
    assert committed(run)[-1].endswith("-epoch-00004")


def test_resume_of_an_unfinished_run_with_too_few_epochs_is_refused(run, capsys) -> None:
    # As if killed after epoch 2 of 3: its newest checkpoint is the epoch-2 one.
    for name in committed(run):
        if name.endswith("-epoch-00003"):
            shutil.rmtree(run / "checkpoints" / name)
    assert committed(run)[-1].endswith("-epoch-00002")
    capsys.readouterr()
    assert main(["train", "--resume", "ir", "--epochs", "2"]) == 2
    assert _one_error(capsys).endswith("resume with epochs above 2 (--epochs N, epochs=N in Python); "
                                       "3 finishes it as planned")
    with pytest.raises(ConfigError, match="^nothing to train: the run got to epoch 2 of 3, and epochs 1 "):
        nnfit.fit({"name": "mlp"}, "ir/test.csv", target="species", resume=run, epochs=1, quiet=True)
    assert main(["train", "--resume", "ir", "--quiet"]) == 0  # epochs 3, as planned
    assert committed(run)[-1].endswith("-epoch-00003")


# ---------------------------------------------------- 11: an unwritable run is named as RUN
def test_resuming_an_unwritable_run_names_the_run(run, capsys, monkeypatch) -> None:
    real_open = os.open

    def read_only(path, flags, *args):  # as root, a chmod would not stop the write
        if Path(path).name == LOCK_FILE:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(nnfit.io.lock.os, "open", read_only)
    capsys.readouterr()
    assert main(["train", "--resume", "ir", "--epochs", "4"]) == 2
    assert _one_error(capsys) == "nnfit: error: ir: Permission denied (a run directory must be writable)"


def test_a_run_of_the_python_api_resumed_by_the_cli_says_where_to_resume_it(tmp_path, capsys) -> None:
    """fit(run_dir=...) holds its data in the caller; the CLI cannot go on with it (it used to
    say "model: expected str, got {...}")."""
    import numpy as np

    x = np.random.default_rng(0).normal(size=(60, 3))
    nnfit.fit({"name": "mlp", "hidden": [4]}, x, (x[:, 0] > 0).astype(int), epochs=1, quiet=True,
              device="cpu", run_dir=tmp_path / "api")
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "api"), "--epochs", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "written by the Python API" in err and "fit(" in err, err


def test_a_cli_run_with_stderr_to_a_file_writes_one_line_per_epoch_and_one_error_line(tmp_path) -> None:
    """Piped or redirected, the progress display is off: after the schema summary, a NaN stop is
    exactly one stderr line (rich used to close its live display there with an empty line)."""
    cmd = [sys.executable, "-m", "nnfit", "train", "--dataset", "diabetes", "--epochs", "3",
           "--optimizer", "sgd", "--lr", "1e6", "--out", str(tmp_path / "nan")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    lines = p.stderr.splitlines()
    assert p.returncode == 1 and p.stderr.count("\n") == 2 and lines[0] == "columns: 10 numeric", p.stderr
    assert lines[1].startswith("nnfit: error: non-finite loss"), p.stderr
    ok = subprocess.run([sys.executable, "-m", "nnfit", "train", "--dataset", "iris", "--epochs", "2",
                         "--out", str(tmp_path / "ok")], capture_output=True, text=True, timeout=120)
    lines = ok.stderr.splitlines()
    assert ok.returncode == 0 and lines[0] == "columns: 4 numeric" and lines[1:] == [
        line for line in lines if line.startswith("epoch ")] and ok.stderr.count("\n") == 3, ok.stderr
