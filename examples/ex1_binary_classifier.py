"""Exercise 1 of the PyTorch models lesson: a binary classifier with two hidden layers.

Lesson concept: building a model as an ``nn.Module`` (layers in ``__init__``, the computation
in ``forward``) and training it for a two-class problem. The same network is shown twice:

* the built-in ``nnfit.MLP(30, [32, 16], 1)`` (30 inputs, hidden widths 32 and 16, one logit);
* a hand-written ``nn.Module`` with the same two hidden layers.

Both end in one output (a logit), so nnfit trains them with binary cross-entropy on logits;
neither needs a sigmoid layer. Data: scikit-learn's bundled breast-cancer set (no download).

Run: ``.venv/bin/python examples/ex1_binary_classifier.py``
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from torch import nn

import nnfit

SEED = 0
SETTINGS = dict(epochs=30, batch_size=32, lr=1e-3, seed=SEED, device="cpu", quiet=True)


class TumourNet(nn.Module):
    """Two hidden ReLU layers and a single logit for the positive class."""

    def __init__(self, n_features: int, width1: int = 32, width2: int = 16) -> None:
        super().__init__()
        self.hidden1 = nn.Linear(n_features, width1)
        self.hidden2 = nn.Linear(width1, width2)
        self.logit = nn.Linear(width2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.hidden1(x))
        h = torch.relu(self.hidden2(h))
        return self.logit(h)  # raw score: the loss applies the sigmoid itself


def train_and_score(name: str, model: nn.Module, data: tuple) -> float:
    x_train, x_test, y_train, y_test = data
    total, _ = nnfit.count_parameters(model)
    learner = nnfit.fit(model, x_train, y_train, **SETTINGS)
    accuracy = learner.evaluate(x_test, y_test)["accuracy"]
    print(f"{name:<28} {total:>5} parameters  {len(learner.history):>2} epochs  "
          f"test accuracy {accuracy:.3f}")
    return accuracy


def main() -> None:
    x, y = load_breast_cancer(return_X_y=True)
    data = train_test_split(x, y, test_size=0.25, stratify=y, random_state=SEED)
    print(f"breast_cancer: {x.shape[0]} rows, {x.shape[1]} features, "
          f"classes {sorted(set(y.tolist()))}")

    torch.manual_seed(SEED)  # the same initial weights every run
    builtin = nnfit.MLP(30, [32, 16], 1)
    print(builtin)
    acc_builtin = train_and_score("nnfit.MLP(30, [32, 16], 1)", builtin, data)

    torch.manual_seed(SEED)
    custom = TumourNet(30)
    print(custom)
    acc_custom = train_and_score("TumourNet (own nn.Module)", custom, data)

    if min(acc_builtin, acc_custom) < 0.9:
        raise SystemExit("unexpectedly low accuracy")


if __name__ == "__main__":
    main()
