"""Exercise 3 of the PyTorch models lesson: a multi-class classifier (3 classes).

Lesson concept: one output per class (logits), trained with cross-entropy; at prediction time
softmax turns logits into class probabilities and argmax picks the class. Here
``learner.predict_proba`` returns the softmax probabilities (columns in ``learner.classes``
order) and ``learner.predict`` returns the class labels themselves, not indices.

Data: the bundled wine set (178 wines, 13 features, 3 cultivars), loaded through
``nnfit.datasets.load_dataset`` so the labels are the cultivar names.

Run: ``.venv/bin/python examples/ex3_multiclass.py``
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

import nnfit
from nnfit.datasets import load_dataset

SEED = 0


def main() -> None:
    cols, target, task = load_dataset("wine")
    labels = cols.arrays[target]
    features = np.column_stack([v for k, v in cols.arrays.items() if k != target])
    names, counts = np.unique(labels, return_counts=True)
    print(f"wine: {features.shape[0]} rows, {features.shape[1]} features, task {task}, "
          f"classes {dict(zip(names.tolist(), counts.tolist(), strict=True))}")
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.25, stratify=labels, random_state=SEED)

    # A spec instead of a module: nnfit fills in 13 inputs and 3 outputs from the data, and the
    # model is built after fit() seeds torch, so the run is reproducible without manual_seed.
    learner = nnfit.fit({"name": "mlp", "hidden": [32, 16]}, x_train, y_train,
                        epochs=40, lr=3e-3, seed=SEED, device="cpu", quiet=True)
    print(learner.model)
    print(f"task {learner.task.name}, loss cross-entropy over {len(learner.classes)} logits, "
          f"classes {learner.classes}")

    predicted = learner.predict(x_test)
    proba = learner.predict_proba(x_test)
    assert proba.shape == (len(x_test), 3) and np.allclose(proba.sum(axis=1), 1.0)
    accuracy = float(np.mean(predicted == y_test))
    print(f"test accuracy {accuracy:.3f} on {len(y_test)} wines "
          f"(evaluate says {learner.evaluate(x_test, y_test)['accuracy']:.3f})")

    print("first five test wines:")
    print(f"  {'true':<9} {'predicted':<9} top-2 probabilities")
    for i in range(5):
        top = np.argsort(proba[i])[::-1][:2]
        shown = ", ".join(f"{learner.classes[k]} {proba[i, k]:.3f}" for k in top)
        print(f"  {y_test[i]:<9} {predicted[i]:<9} {shown}")
    if accuracy < 0.85:
        raise SystemExit("unexpectedly low accuracy")


if __name__ == "__main__":
    main()
