"""``nnfit train --dataset digits --model cnn``: the bundled 8x8 digits as images, through the
real command with its defaults, scored on the 20% test split the run saves."""

from __future__ import annotations

import csv
import json

import pytest

from nnfit.cli import main

pytestmark = pytest.mark.slow


def test_digits_as_images_reach_0_985_test_accuracy_within_60_s_of_training(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "digits", "--model", "cnn", "--quiet", "--out", "run"]) == 0
    metrics = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    with open(tmp_path / "run" / "history.csv", newline="") as f:
        seconds = sum(float(r["time"]) for r in csv.DictReader(f))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    layout = meta["preprocess"]["layout"]
    with capsys.disabled():
        print(f"\ndigits as images: test accuracy {metrics['accuracy']:.4f}, {seconds:.1f} s of training")
    assert (layout["channels"], layout["height"], layout["width"], layout["augment"]) == (1, 8, 8, "none")
    assert config["lr"] == 3e-3 and config["channels"] == [] and config["batchnorm"] is True
    assert meta["spec"]["channels"] == [32, 64]  # the default for 8x8 images
    assert metrics["accuracy"] >= 0.985
    assert seconds <= 60
    # the saved split reads back as the same 359 images (a pixel table) with the same score
    capsys.readouterr()
    assert main(["evaluate", "run", "run/test.csv", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == metrics["accuracy"]
