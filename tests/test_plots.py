"""The plots every run directory holds (nnfit.plots): drawn after training, right files for
the task, real images (decode, size, not blank), odd histories, worst.csv pointing at the
user's rows, --no-plots."""

from __future__ import annotations

import csv
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import nnfit
from nnfit.io.layout import clear_run
from nnfit.plots import PLOT_ORDER, PLOTS_DIR, write_plots
from nnfit.plots.classification import area, roc_points

CLASSIFICATION = ["loss.png", "metric.png", "confusion.png", "roc.png", "pr.png", "calibration.png"]
REGRESSION = ["loss.png", "metric.png", "pred_vs_true.png", "residuals.png"]


def check_png(path, size=None) -> np.ndarray:
    """Decode a PNG and check it is a real picture: the size asked for, pixels that vary,
    and more than background (at least 1% of pixels not white)."""
    image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    if size is not None:
        assert (image.shape[1], image.shape[0]) == size, (path, image.shape)
    assert image.std() > 0, path
    assert (image.min(axis=2) < 250).mean() > 0.01, f"{path} is all background"
    return image


def pngs(run) -> list[str]:
    return sorted(p.name for p in (run / PLOTS_DIR).glob("*.png"))


def worst_rows(run) -> list[dict]:
    with open(run / PLOTS_DIR / "worst.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory):
    """A CSV of 3 classes and a finished run on it."""
    d = tmp_path_factory.mktemp("cls")
    rng = np.random.default_rng(0)
    y = np.arange(150) % 3
    x = rng.normal(size=(150, 3)) + y[:, None]
    data = d / "data.csv"
    with open(data, "w") as f:
        f.write("a,b,c,label\n")
        for i in range(150):
            f.write(f"{x[i, 0]},{x[i, 1]},{x[i, 2]},k{y[i]}\n")
    learner = nnfit.fit({"name": "mlp", "hidden": [16]}, str(data), target="label", epochs=3, quiet=True,
                        run_dir=d / "run", seed=0)
    return d, data, learner


def test_classification_run_holds_its_plots(three_classes):
    d, _, _ = three_classes
    run = d / "run"
    assert pngs(run) == sorted(CLASSIFICATION)
    check_png(run / PLOTS_DIR / "loss.png", (640, 400))
    check_png(run / PLOTS_DIR / "metric.png", (640, 400))
    check_png(run / PLOTS_DIR / "confusion.png", (920, 460))
    for name in ("roc.png", "pr.png"):
        check_png(run / PLOTS_DIR / name, (560, 480))
    check_png(run / PLOTS_DIR / "calibration.png", (560, 560))
    assert [n for n in PLOT_ORDER if n in CLASSIFICATION] == CLASSIFICATION  # the report's order


def test_worst_csv_points_at_the_users_rows(three_classes):
    d, data, learner = three_classes
    with open(data) as f:
        table = list(csv.DictReader(f))
    rows = worst_rows(d / "run")
    assert 0 < len(rows) <= 50 and list(rows[0]) == ["row", "true", "predicted", "loss"]
    losses = [float(r["loss"]) for r in rows]
    assert losses == sorted(losses, reverse=True)
    classes = list(learner.classes)
    for r in rows:
        source = table[int(r["row"])]  # 0-based data row of the CSV the user gave
        assert source["label"] == r["true"]
        x = {k: np.array([float(source[k])]) for k in "abc"}
        p = learner.predict_proba(pd.DataFrame(x))[0]  # the loss is that row's own
        assert math.isclose(float(r["loss"]), -math.log(p[classes.index(r["true"])]), rel_tol=1e-4)
        assert r["predicted"] == classes[int(np.argmax(p))]


def test_regression_run_holds_its_plots(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    y = np.column_stack([x @ [1.0, -2.0, 0.5, 0.0], x[:, 0]]).astype(np.float32)  # two targets
    nnfit.fit({"name": "mlp", "hidden": [8]}, x, y, epochs=2, quiet=True, run_dir=tmp_path / "r", seed=0)
    assert pngs(tmp_path / "r") == sorted(REGRESSION)
    check_png(tmp_path / "r" / PLOTS_DIR / "pred_vs_true.png", (960, 440))
    check_png(tmp_path / "r" / PLOTS_DIR / "residuals.png", (960, 440))
    rows = worst_rows(tmp_path / "r")
    assert list(rows[0]) == ["row", "true_1", "true_2", "predicted_1", "predicted_2", "squared_error"]
    for r in rows[:5]:  # the row's true values, in the target's own units
        assert np.allclose([float(r["true_1"]), float(r["true_2"])], y[int(r["row"])], atol=1e-5)


def test_no_plots_writes_none_and_no_validation_draws_the_history(tmp_path, capsys):
    x, y = np.random.default_rng(2).normal(size=(40, 3)), np.arange(40) % 2
    nnfit.fit({"name": "mlp", "hidden": [4]}, x, y, epochs=1, quiet=True, run_dir=tmp_path / "a", plots=False)
    assert not (tmp_path / "a" / PLOTS_DIR).exists()
    nnfit.fit({"name": "mlp", "hidden": [4]}, x, y, epochs=2, run_dir=tmp_path / "b", val_split=0.0)
    assert pngs(tmp_path / "b") == ["loss.png", "metric.png"]
    assert "no validation data" in capsys.readouterr().err
    assert clear_run(tmp_path / "b") and not (tmp_path / "b" / PLOTS_DIR).exists()  # registered


@pytest.mark.parametrize("records", [
    [{"epoch": 1, "train_loss": 0.7, "val_loss": 0.6, "lr": 0.001}],  # one epoch
    [{"epoch": 1, "train_loss": 0.7, "val_loss": float("nan"), "lr": 0.1},
     {"epoch": 2, "train_loss": float("nan"), "val_loss": float("nan"), "lr": 0.01}],  # NaN
    [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "lr": 0.1 * 0.5 ** e} for e in range(1, 4)]
    # resumed, as history.csv reads back: text, a gap where validation was missing
    + [{"epoch": e, "train_loss": str(1 / e), "val_loss": "", "lr": str(0.05)} for e in range(4, 7)],
    [{"epoch": 1, "train_loss": float("nan"), "val_loss": float("nan")}],  # nothing finite at all
])
def test_odd_histories_still_draw(tmp_path, records):
    assert write_plots(tmp_path, records, "val_loss") == ["loss.png", "metric.png"]
    for name in ("loss.png", "metric.png"):
        check_png(tmp_path / PLOTS_DIR / name, (640, 400))


def test_stale_plots_of_an_earlier_drawing_go(tmp_path):
    (tmp_path / PLOTS_DIR).mkdir()
    (tmp_path / PLOTS_DIR / "roc.png").write_bytes(b"old")
    (tmp_path / PLOTS_DIR / "mine.png").write_bytes(b"a user's")
    write_plots(tmp_path, [{"epoch": 1, "train_loss": 0.5}], "val_loss")
    assert sorted(p.name for p in (tmp_path / PLOTS_DIR).iterdir()) == ["loss.png", "metric.png", "mine.png"]


def test_image_run_shows_its_worst_images(tmp_path):
    rng = np.random.default_rng(3)
    y = np.arange(48) % 2
    x = (rng.integers(0, 60, size=(48, 1, 8, 8)) + 150 * y[:, None, None, None]).astype(np.uint8)
    nnfit.fit({"name": "cnn", "channels": [4, 8]}, x, y, epochs=1, quiet=True, run_dir=tmp_path / "i", seed=0)
    assert "worst.png" in pngs(tmp_path / "i")
    check_png(tmp_path / "i" / PLOTS_DIR / "worst.png")
    assert len(worst_rows(tmp_path / "i")) == 10  # every validation image (0.2 of 48)


def test_custom_loss_and_binary_one_logit_do_not_crash(tmp_path):
    x = np.random.default_rng(4).normal(size=(60, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    nnfit.fit(nnfit.MLP(3, [4], 1), x, y.reshape(-1, 1), loss=lambda o, t: ((o - t) ** 2).mean(), epochs=1,
              quiet=True, run_dir=tmp_path / "c")
    assert pngs(tmp_path / "c") == ["loss.png", "metric.png"] and worst_rows(tmp_path / "c")
    nnfit.fit({"name": "mlp", "hidden": [4]}, x, y.astype(int), epochs=1, quiet=True, run_dir=tmp_path / "b")
    assert pngs(tmp_path / "b") == sorted(CLASSIFICATION)


def test_roc_points_match_scikit_learn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    y, s = rng.integers(0, 2, 200), np.round(rng.random(200), 1)  # ties
    fpr, tpr = roc_points(y, s)
    assert math.isclose(area(fpr, tpr), roc_auc_score(y, s), rel_tol=1e-12)
    assert torch.is_tensor(torch.as_tensor(fpr))
