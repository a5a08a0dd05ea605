"""``nnfit runs compare``: the table of differing settings and final metrics, the overlay plot
of validation curves, and bad input in one line with exit status 2."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import nnfit
from helpers import cli, one_error


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 3)), np.arange(60) % 2
    for name, lr, epochs in (("a", 0.01, 2), ("b", 0.001, 3)):
        nnfit.fit({"name": "mlp", "hidden": [4]}, x, y, epochs=epochs, lr=lr, quiet=True, run_dir=d / name,
                  plots=False)
    return d


def test_compare_prints_what_differs_and_the_metrics(runs, capsys):
    status, out, err = cli(capsys, "runs", "compare", runs / "a", runs / "b")
    assert status == 0 and err == ""
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 3}
    assert "lr" in lines and "0.01" in lines["lr"] and "0.001" in lines["lr"]
    assert "epochs trained" in lines and "val accuracy" in lines
    assert "seed" not in lines and "batch_size" not in lines  # the same in both: not shown
    assert not list(runs.glob("*.png"))  # nothing written without --out


def test_compare_draws_the_validation_curves(runs, capsys, tmp_path):
    status, out, _ = cli(capsys, "runs", "compare", runs / "a", runs / "b", "--out", tmp_path / "c.png")
    assert status == 0 and "val_loss curves written to" in out
    image = np.asarray(Image.open(tmp_path / "c.png").convert("RGB"), dtype=float)
    assert image.shape == (440, 720, 3) and image.std() > 0 and (image.min(axis=2) < 250).mean() > 0.01


def test_a_single_run_is_fine(runs, capsys):
    status, out, _ = cli(capsys, "runs", "compare", runs / "a")
    assert status == 0 and "val accuracy" in out


def test_bad_input_is_one_line(runs, capsys, tmp_path):
    assert "is not a run directory" in one_error(capsys, "runs", "compare", runs / "a", tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    (bad / "history.csv").write_bytes(b"\xff\xfe\x00garbage")
    assert "history.csv: cannot be read" in one_error(capsys, "runs", "compare", runs / "a", bad)
    (bad / "history.csv").write_text("x,y\n1,2\n")
    assert "no epoch column" in one_error(capsys, "runs", "compare", bad)
    (bad / "config.json").write_text("{not json")
    assert "config.json: cannot be read" in one_error(capsys, "runs", "compare", bad)
    assert ".png" in one_error(capsys, "runs", "compare", runs / "a", "--out", tmp_path / "c.jpg")
