"""Exercise 2 of the PyTorch models lesson: a training loop with loss tracking and validation.

Lesson concept: the loop ``forward -> loss -> zero_grad/backward -> step`` repeated per batch
and epoch, with the model in train mode for steps and in eval mode (no autograd) for the
validation pass, and the losses recorded every epoch. nnfit runs that loop for you; this script
shows three levels of control over it (progressive disclosure):

1. ``nnfit.fit(..., val=(x_val, y_val))`` and read ``learner.history`` (train_loss, val_loss).
2. The same fit with a custom ``nnfit.Callback`` that records the losses itself.
3. ``nnfit.Trainer`` used directly on tensors you prepared yourself (no preprocessing).

Run: ``.venv/bin/python examples/ex2_training_loop.py``
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

import nnfit
from nnfit.tasks import make_task

SEED = 0
EPOCHS = 8


class LossRecorder(nnfit.Callback):
    """Keeps (epoch, train_loss, val_loss) after every epoch.

    Only the hook it needs is overridden; the others stay no-ops. Setting
    ``trainer.state.stop = True`` here would end training after this epoch.
    """

    def __init__(self) -> None:
        self.rows: list[tuple[int, float, float]] = []

    def on_epoch_end(self, trainer, logs):
        self.rows.append((logs["epoch"], logs["train_loss"], logs["val_loss"]))


def new_model() -> torch.nn.Module:
    """The same initial weights every call: a model passed to fit() is built by you, before
    fit() seeds anything, so seed torch yourself when two runs must start alike."""
    torch.manual_seed(SEED)
    return nnfit.MLP(30, [32, 16], 1)


def print_losses(title: str, rows) -> None:
    print(title)
    print("  epoch  train_loss  val_loss")
    for epoch, train_loss, val_loss in rows:
        print(f"  {epoch:>5}  {train_loss:>10.4f}  {val_loss:>8.4f}")


def main() -> None:
    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=SEED)
    settings = dict(epochs=EPOCHS, lr=1e-3, seed=SEED, device="cpu", quiet=True)

    # 1. fit with explicit validation data; the history has one record per epoch.
    learner = nnfit.fit(new_model(), x_train, y_train,
                        val=(x_val, y_val), **settings)
    h = learner.history
    print_losses("1) nnfit.fit(..., val=...) -> learner.history",
                 zip(h["epoch"], h["train_loss"], h["val_loss"], strict=True))
    print(f"   final val_accuracy {h[-1]['val_accuracy']:.3f}; columns: {', '.join(h.keys())}")

    # 2. the same run with a callback: the loop hands it the same logs dict it records.
    recorder = LossRecorder()
    again = nnfit.fit(new_model(), x_train, y_train, val=(x_val, y_val),
                      callbacks=[recorder], **settings)
    print_losses("2) custom Callback.on_epoch_end", recorder.rows)
    same = [r[1:] for r in recorder.rows] == list(zip(h["train_loss"], h["val_loss"], strict=True))
    print(f"   callback losses equal run 1's history: {same}")
    assert same and len(again.history) == EPOCHS

    # 3. Trainer on plain tensors: scaling and label encoding are now your job.
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    xt = torch.tensor((x_train - mean) / std, dtype=torch.float32)
    xv = torch.tensor((x_val - mean) / std, dtype=torch.float32)
    task = make_task("binary", y_train)  # BCE on one logit; encode_target gives float 0/1
    trainer = nnfit.Trainer(**settings)
    model = new_model()
    history = trainer.fit(model, xt, xv, task=task, target=task.encode_target(y_train),
                          val_target=task.encode_target(y_val))
    print_losses("3) nnfit.Trainer(...).fit(model, x_tensor, x_val_tensor, ...)",
                 zip(history["epoch"], history["train_loss"], history["val_loss"], strict=True))
    scores = trainer.evaluate(model, xv, task=task, target=task.encode_target(y_val))
    print(f"   trainer.evaluate: loss {scores['loss']:.4f}  accuracy {scores['accuracy']:.3f}")
    gap = max(abs(a - b) for a, b in zip(history["val_loss"], h["val_loss"], strict=True))
    print(f"   largest val_loss difference to run 1 (same scaling, same seed): {gap:.2e}")
    assert history[-1]["val_loss"] < history[0]["val_loss"], "validation loss did not improve"


if __name__ == "__main__":
    main()
