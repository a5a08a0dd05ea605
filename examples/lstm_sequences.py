"""Sequences and ``nn.LSTM``: your own recurrent module, and the built-in LSTM, on sequences of
different lengths.

Lesson concept: ``nn.LSTM`` reads a sequence one step at a time and keeps a state; the state
after the last step summarises the whole sequence. Here the label says whether a random walk
drifts up or down. nnfit pads
a list of variable-length sequences, batches similar lengths together (little padding) and calls
your module as ``forward(x, lengths)``: ``x`` is ``(N, T, F)`` float32, ``lengths`` ``(N,)`` int64.

Run: ``.venv/bin/python examples/lstm_sequences.py``
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import nnfit


class TrendNet(nn.Module):
    """An LSTM whose state at each sequence's own last step feeds a linear head."""

    def __init__(self, features: int = 1, hidden: int = 32) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)  # (N, T, hidden); steps past a sequence's length are padding
        last = out[torch.arange(len(x), device=x.device), lengths - 1]  # each sequence's last step
        return self.head(last)


def make_sequences(n: int, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """Random walks of 10-40 steps drifting up (label 1) or down (label 0)."""
    labels = rng.integers(0, 2, size=n)
    seqs = []
    for label in labels:
        steps = rng.normal(0.3 if label else -0.3, 1.0, size=rng.integers(10, 41))
        seqs.append(np.cumsum(steps).reshape(-1, 1).astype(np.float32))
    return seqs, labels


def main() -> None:
    rng = np.random.default_rng(0)
    x, y = make_sequences(1200, rng)
    x_test, y_test = make_sequences(300, rng)
    torch.manual_seed(0)  # your own module: seed before building it
    learner = nnfit.fit(TrendNet(), x, y, epochs=15, lr=3e-3, quiet=True)
    print(f"TrendNet (nn.LSTM): test accuracy {learner.evaluate(x_test, y_test)['accuracy']:.3f}")
    builtin = nnfit.fit({"name": "lstm", "hidden": [32]}, x, y, epochs=15, lr=3e-3, quiet=True)
    print(f"nnfit.models.LSTM: test accuracy {builtin.evaluate(x_test, y_test)['accuracy']:.3f}")
    print(f"lengths {min(map(len, x))}..{max(map(len, x))}; "
          f"P(up) of the first test sequence: {builtin.predict_proba(x_test[:1])[0, 1]:.3f}")


if __name__ == "__main__":
    main()
