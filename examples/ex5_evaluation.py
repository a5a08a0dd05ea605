"""Exercise 5 of the PyTorch models lesson: evaluation with accuracy, precision and recall.

Lesson concept: evaluating in eval mode without gradients, turning outputs into predicted
classes, and counting how many are right. Beyond accuracy, precision (of the predicted
positives, how many are positive) and recall (of the true positives, how many were found)
come from the same confusion counts. Three routes to the same numbers:

* ``learner.evaluate(x_test, y_test)``: loss and every metric in one call;
* ``nnfit.metrics.ClassificationMetrics``: ``reset``/``update`` per batch/``compute``, fed with
  ``learner.predict_proba`` output, for your own evaluation loops;
* scikit-learn's ``accuracy_score``/``precision_score``/``recall_score`` as the reference,
  plus a few lines of NumPy that count TP/FP/FN by hand.

Binary case: breast_cancer (precision/recall of class 1). Multiclass case: wine (macro
averages over the 3 classes).

Run: ``.venv/bin/python examples/ex5_evaluation.py``
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.metrics import accuracy_score, precision_score, recall_score
from sklearn.model_selection import train_test_split

import nnfit
from nnfit.metrics import ClassificationMetrics

SEED = 0
NAMES = ("accuracy", "precision", "recall")


def metrics_from_probabilities(proba: np.ndarray, target: np.ndarray, batch: int = 32) -> dict:
    """Accumulate ClassificationMetrics batch by batch, as an evaluation loop would."""
    metric = ClassificationMetrics(proba.shape[1])
    for i in range(0, len(proba), batch):
        metric.update(torch.from_numpy(proba[i:i + batch]), torch.from_numpy(target[i:i + batch]))
    return metric.compute()  # the one place results come back to the host


def metrics_by_hand(pred: np.ndarray, target: np.ndarray, num_classes: int) -> dict:
    """Accuracy, and precision/recall per class from TP/FP/FN counts (macro-averaged)."""
    precision, recall = [], []
    for k in range(num_classes):
        tp = np.sum((pred == k) & (target == k))
        fp = np.sum((pred == k) & (target != k))
        fn = np.sum((pred != k) & (target == k))
        precision.append(tp / (tp + fp) if tp + fp else 0.0)
        recall.append(tp / (tp + fn) if tp + fn else 0.0)
    if num_classes == 2:  # binary: report the positive class (index 1) only
        return {"accuracy": np.mean(pred == target), "precision": precision[1], "recall": recall[1]}
    return {"accuracy": np.mean(pred == target), "precision": np.mean(precision),
            "recall": np.mean(recall)}


def compare(title: str, x: np.ndarray, y: np.ndarray, hidden: list[int]) -> None:
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, stratify=y, random_state=SEED)
    learner = nnfit.fit({"name": "mlp", "hidden": hidden}, x_train, y_train,
                        epochs=15, seed=SEED, device="cpu", quiet=True)

    from_evaluate = learner.evaluate(x_test, y_test)
    target = np.array([learner.classes.index(v) for v in y_test])  # labels -> class indices
    from_metric = metrics_from_probabilities(learner.predict_proba(x_test), target)
    pred = learner.predict(x_test)
    binary = len(learner.classes) == 2
    avg = dict(average="binary", pos_label=learner.classes[1]) if binary else dict(average="macro")
    from_sklearn = {"accuracy": accuracy_score(y_test, pred),
                    "precision": precision_score(y_test, pred, zero_division=0, **avg),
                    "recall": recall_score(y_test, pred, zero_division=0, **avg)}
    hand = metrics_by_hand(np.array([learner.classes.index(v) for v in pred]), target,
                           len(learner.classes))

    print(f"{title}: {len(y_test)} test rows, loss {from_evaluate['loss']:.4f}, "
          f"confusion matrix {from_evaluate['confusion_matrix']}")
    print(f"  {'metric':<10} {'evaluate':>9} {'Classif.M':>9} {'sklearn':>9} {'by hand':>9}")
    for name in NAMES:
        row = [from_evaluate[name], from_metric[name], from_sklearn[name], hand[name]]
        print(f"  {name:<10} " + " ".join(f"{v:>9.4f}" for v in row))
        if not all(math.isclose(v, from_sklearn[name], abs_tol=1e-12) for v in row):
            raise SystemExit(f"{title}: {name} disagrees with scikit-learn")
    print("  every route agrees with scikit-learn")


def main() -> None:
    compare("breast_cancer (binary, positive class 1)", *load_breast_cancer(return_X_y=True),
            hidden=[32, 16])
    compare("wine (3 classes, macro average)", *load_wine(return_X_y=True), hidden=[32])


if __name__ == "__main__":
    main()
