"""Runs and models saved by nnfit 0.1.0 (before column roles) still load, evaluate, predict
and resume with the results that release gave (tests/fixtures/release-0.1.0/README.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import nnfit
from helpers import cli

FIX = Path(__file__).parent / "fixtures" / "release-0.1.0"


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """A copy of the fixtures (resuming writes into a run) as the working directory."""
    for p in FIX.iterdir():
        (shutil.copytree if p.is_dir() else shutil.copy)(p, tmp_path / p.name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _csv(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines()]


def _close(got: list[list[str]], want: list[list[str]]) -> None:
    assert got[0] == want[0] and len(got) == len(want)
    for g, w in zip(got[1:], want[1:], strict=True):
        assert g[0] == w[0]
        np.testing.assert_allclose([float(v) for v in g[1:]], [float(v) for v in w[1:]], rtol=1e-6)


def test_a_cli_run_predicts_and_evaluates_as_before(capsys, here):
    status, _, err = cli(capsys, "predict", "cli-run", "eval.csv", "--proba", "-o", "p.csv")
    assert status == 0 and err == "", err
    _close(_csv(here / "p.csv"), _csv(here / "cli-predict.csv"))
    status, out, _ = cli(capsys, "evaluate", "cli-run", "eval.csv", "--json")
    got = json.loads(out)
    want = json.loads((here / "cli-evaluate.json").read_text())
    assert status == 0 and got.keys() == want.keys()
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-6)


def test_a_cli_run_keeps_its_strict_numeric_reading(capsys, here):
    """No column roles in the old run: a text column is refused as it was."""
    (here / "text.csv").write_text("a,b,c\n1,2,x\n")
    status, _, err = cli(capsys, "predict", "cli-run", "text.csv")
    assert status == 2 and err.strip().endswith("column 'c' is not numeric (row 1: 'x')"), err


def test_a_cli_run_resumes_as_that_release_did(capsys, here):
    status, _, err = cli(capsys, "train", str(here / "train.csv"), "--resume", "cli-run", "--epochs", "3",
                         "--quiet", "--device", "cpu")
    assert status == 0, err
    assert cli(capsys, "predict", "cli-run", "eval.csv", "--proba", "-o", "p.csv")[0] == 0
    _close(_csv(here / "p.csv"), _csv(here / "cli-resumed-predict.csv"))


def test_an_api_model_and_run_load_predict_and_resume_as_before(here):
    x = np.load(here / "api-x.npy")
    model = nnfit.load(here / "api-model", device="cpu")
    np.testing.assert_allclose(model.predict(x), json.loads((here / "api-predict.json").read_text()),
                               rtol=1e-6)
    rng = np.random.default_rng(4)
    xs = rng.normal(size=(50, 4)).astype(np.float32)
    resumed = nnfit.fit({"name": "resmlp", "hidden": [8]}, xs, xs[:, 0] * 2 + 1, epochs=3, quiet=True,
                        device="cpu", run_dir=here / "api-run", resume=here / "api-run")
    want = json.loads((here / "api-resumed-predict.json").read_text())
    np.testing.assert_allclose(resumed.predict(x), want, rtol=1e-6)
