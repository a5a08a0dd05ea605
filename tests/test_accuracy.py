"""Accuracy targets of ``nnfit train`` on the bundled datasets with default settings.

Each test runs the real command (in-process) with nothing but ``--quiet`` and scores the
held-out test split the run wrote (``test.csv`` / ``test_metrics.json``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.metrics import accuracy_score, r2_score

from nnfit.cli import main
from nnfit.data import split_indices
from nnfit.datasets import load_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("NNFIT_DEBUG", raising=False)


def _train(dataset: str, out: Path) -> dict:
    assert main(["train", "--dataset", dataset, "--quiet", "--out", str(out)]) == 0
    return json.loads((out / "test_metrics.json").read_text())


def _column(path: Path, index: int) -> list[str]:
    with open(path, newline="") as f:
        return [row[index] for row in list(csv.reader(f))[1:]]


@pytest.mark.parametrize("dataset", ["breast_cancer", "wine", "digits"])
def test_classification_test_accuracy(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    metrics = _train(dataset, run)

    # test_metrics.json agrees with scikit-learn on the run's own predictions of test.csv.
    assert main(["predict", str(run), str(run / "test.csv"), "-o", "pred.csv"]) == 0
    y_true = _column(run / "test.csv", -1)
    y_pred = _column(tmp_path / "pred.csv", 0)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)

    with capsys.disabled():
        print(f"\n{dataset}: test accuracy {metrics['accuracy']:.4f} on {len(y_true)} rows")
    assert metrics["accuracy"] >= 0.95


def test_diabetes_r2_close_to_linear_regression(tmp_path, capsys):
    run = tmp_path / "run"
    metrics = _train("diabetes", run)

    cols, target, _ = load_dataset("diabetes")
    features = [n for n in cols.names if n != target]
    x = np.column_stack([cols.arrays[n] for n in features])
    y = cols.arrays[target].astype(float)

    # The run's test rows are exactly the split nnfit.cli.train draws (seed 0, not stratified).
    train_idx, test_idx = split_indices(len(y), 0.2, seed=0, stratify=None)
    test = np.loadtxt(run / "test.csv", delimiter=",", skiprows=1)
    np.testing.assert_array_equal(test[:, :-1], x[test_idx])
    np.testing.assert_array_equal(test[:, -1], y[test_idx])

    linear = LinearRegression().fit(x[train_idx], y[train_idx])
    r2_linear = r2_score(y[test_idx], linear.predict(x[test_idx]))
    with capsys.disabled():
        print(f"\ndiabetes: test R2 nnfit {metrics['r2']:.4f}, LinearRegression {r2_linear:.4f}")
    # Within 0.05 of the linear baseline (doing better than it is fine).
    assert metrics["r2"] >= r2_linear - 0.05
