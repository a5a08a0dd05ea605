"""The data's layout picks and checks the built-in family: `nnfit train FOLDER` builds a cnn and
`--sequence-id`/`--window` an lstm without --model; a family that cannot read the data, or an
nnfit CNN/LSTM built by hand with other sizes than the data's, is one line before training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nnfit
from helpers import cli, one_error
from nnfit.errors import DataError
from test_images import write_folder


def test_an_image_folder_trains_a_cnn_without_model(tmp_path, capsys) -> None:
    root = write_folder(tmp_path / "imgs")
    status, _, err = cli(capsys, "train", root, "--epochs", "1", "--quiet", "--out", tmp_path / "r")
    assert status == 0, err
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["model"] == "cnn" and config["batchnorm"] is True


def test_sequences_and_windows_train_an_lstm_without_model(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    rows = [f"{i},{t},{rng.normal():.4f},{i % 2}" for i in range(40) for t in range(3 + i % 4)]
    (tmp_path / "s.csv").write_text("id,t,v,label\n" + "\n".join(rows) + "\n")
    status, _, err = cli(capsys, "train", tmp_path / "s.csv", "--target", "label", "--sequence-id", "id",
                         "--time", "t", "--epochs", "1", "--quiet", "--out", tmp_path / "r")
    assert status == 0, err
    assert json.loads((tmp_path / "r" / "config.json").read_text())["model"] == "lstm"


def test_mlp_on_an_image_folder_is_refused_before_decoding(tmp_path, capsys) -> None:
    root = write_folder(tmp_path / "imgs")
    line = one_error(capsys, "train", root, "--model", "mlp", "--out", tmp_path / "r")
    assert "cannot read images" in line and "--model cnn" in line
    assert not (tmp_path / "r").exists()


def test_a_hand_built_cnn_or_lstm_must_have_the_datas_sizes(tmp_path) -> None:
    root = write_folder(tmp_path / "imgs")  # greyscale
    with pytest.raises(DataError, match=r"in_channels=3; the data needs in_channels=1"):
        nnfit.fit(nnfit.models.CNN(3, 3), root, epochs=1, quiet=True)
    x, y = np.random.rand(30, 6, 4).astype(np.float32), np.arange(30) % 2
    with pytest.raises(DataError, match=r"in_features=5; the data needs in_features=4"):
        nnfit.fit(nnfit.models.LSTM(5, 1), x, y, epochs=1, quiet=True)
    assert nnfit.fit(nnfit.models.LSTM(4, 1), x, y, epochs=1, quiet=True).predict(x).shape == (30,)


@pytest.mark.parametrize(("script", "expected"), [
    ("conv2d_images.py", ["DigitNet (nn.Conv2d): test accuracy 0.9", "nnfit.models.CNN: test accuracy 0.9",
                          "first test image predicted as '"]),
    ("lstm_sequences.py", ["TrendNet (nn.LSTM): test accuracy", "nnfit.models.LSTM: test accuracy",
                           "lengths 10..40"]),
])
def test_the_conv2d_and_lstm_examples_run(script, expected, tmp_path) -> None:
    path = Path(__file__).resolve().parents[1] / "examples" / script
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert all(e in proc.stdout for e in expected), proc.stdout
    assert proc.stderr == "" and list(tmp_path.iterdir()) == []
    accuracies = [float(line.rsplit(" ", 1)[1]) for line in proc.stdout.splitlines() if "accuracy" in line]
    assert min(accuracies) >= (0.97 if script.startswith("conv") else 0.85), proc.stdout


def test_a_nan_metric_shows_as_a_dash_like_a_null() -> None:
    from nnfit.cli.evaluate import _fmt

    assert [_fmt(v) for v in (float("nan"), None, 0.5, 3)] == ["-", "-", "0.5000", "3"]


def test_predict_never_writes_over_an_image_it_read(tmp_path, capsys) -> None:
    root = write_folder(tmp_path / "imgs")
    assert cli(capsys, "train", root, "--epochs", "1", "--quiet", "--out", tmp_path / "r")[0] == 0
    victim = sorted((root / "0").iterdir())[0]
    before = victim.read_bytes()
    line = one_error(capsys, "predict", tmp_path / "r", root, "-o", victim)
    assert "is the input image" in line and victim.read_bytes() == before
    line = one_error(capsys, "predict", tmp_path / "r", victim, "-o", victim)
    assert victim.read_bytes() == before
    status, _, _ = cli(capsys, "predict", tmp_path / "r", root, "-o", tmp_path / "p.csv")
    assert status == 0 and (tmp_path / "p.csv").read_text().startswith("path,prediction")


def test_evaluation_batches_of_large_images_are_bounded_by_pixels() -> None:
    import torch

    from nnfit.data.augment import EVAL_VALUES, ImageData

    big = ImageData(torch.zeros(300, 3, 224, 224, dtype=torch.uint8), mean=[0.0] * 3, std=[1.0] * 3)
    sizes = [len(x[0]) for x, _ in big.batches(4096)]
    assert sizes[0] == EVAL_VALUES // (3 * 224 * 224) == 111 and sum(sizes) == 300
    assert [len(x[0]) for x, _ in big.batches(32, shuffle=True, generator=torch.Generator())][0] == 32
    small = ImageData(torch.zeros(5000, 1, 8, 8, dtype=torch.uint8), mean=[0.0], std=[1.0])
    assert [len(x[0]) for x, _ in small.batches(4096)] == [4096, 904]


@pytest.mark.parametrize("flag", ["--window", "--horizon", "--season"])
def test_forecast_sizes_past_what_a_run_can_reopen_are_refused_at_train(flag, tmp_path, capsys) -> None:
    from nnfit.io.validate_fields import MAX_WINDOW

    line = one_error(capsys, "train", tmp_path / "x.csv", "--target", "y", "--time", "t", "--window", 3,
                     flag, MAX_WINDOW + 1, "--out", tmp_path / "r")
    assert "1000000" in line and not (tmp_path / "r").exists()


def test_a_convolution_counts_its_weights_at_every_position_for_cpu_threads() -> None:
    from torch import nn

    from nnfit.runtime import SMALL_STEP_WORK, step_params

    cnn = nnfit.models.CNN(1, 10)  # 19k parameters: one thread at batch 32 if counted once
    assert sum(p.numel() for p in cnn.parameters()) * 32 < SMALL_STEP_WORK < step_params(cnn) * 32
    assert step_params(nn.Linear(4, 2)) == 10
