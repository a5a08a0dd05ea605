"""Exercise 4 of the PyTorch models lesson: checkpoints during training, and resuming.

Lesson concept: saving a model's ``state_dict`` (weights only) versus a full checkpoint
(weights + optimizer state + epoch + loss history) that lets training continue later. nnfit
writes the files as safetensors + JSON, never pickle:

* ``run_dir=...``: after every epoch a checkpoint directory ``checkpoints/step-...-epoch-N/``
  holds the model, the optimizer, the RNG states, the epoch and the history
  (``state.safetensors`` + ``state.json``, verified by ``manifest.json``); ``resume=run_dir``
  continues from the newest one.
  The proof: N epochs + resume to 2N gives exactly the weights of one uninterrupted 2N run.
* ``nnfit.save_weights`` / ``nnfit.load_weights``: the weights only, into a model you build.
* ``Learner.save`` / ``nnfit.load``: the full model (weights, labels, input scaling, spec),
  ready to predict on raw data.

The same on the command line::

    nnfit train --dataset breast_cancer --hidden 32,16 --epochs 4 --patience 0 --out runs/bc
    nnfit train --resume runs/bc --epochs 8      # continues at epoch 5 from the checkpoint
    nnfit predict runs/bc runs/bc/test.csv --proba

Everything is written inside a temporary directory that is removed at the end.

Run: ``.venv/bin/python examples/ex4_checkpointing.py``
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer

import nnfit
from nnfit.run import read_latest

N = 4  # epochs before the "interruption"
SPEC = {"name": "mlp", "hidden": [32, 16]}  # built inside fit(), after it seeds torch
# patience=0: no early stopping, and restore_best=False: the model keeps its last-epoch
# weights, so the comparison below is about the exact state training ended in.
SETTINGS = dict(seed=0, device="cpu", quiet=True, patience=0, restore_best=False)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def main() -> None:
    x, y = load_breast_cancer(return_X_y=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = tmp / "run"

        # 1. Train N epochs with a run directory: a checkpoint after every epoch.
        first = nnfit.fit(SPEC, x, y, epochs=N, run_dir=run, **SETTINGS)
        print(f"trained {len(first.history)} epochs; run directory holds:")
        for path in sorted(p for p in run.rglob("*") if p.is_file()):
            print(f"  {path.relative_to(run)}")
        tensors, meta = read_latest(run)  # the newest checkpoint that verifies
        groups = sorted({k.split("/")[0] for k in tensors})
        print(f"last checkpoint: epoch {meta['epoch']}, step {meta['step']}, "
              f"tensor groups {groups}, {len(meta['history'])} history rows")

        # 2. Resume from the checkpoint up to 2N epochs (as if the first run had been stopped).
        resumed = nnfit.fit(SPEC, x, y, epochs=2 * N, run_dir=run, resume=run, **SETTINGS)
        # 3. For comparison: one uninterrupted run of 2N epochs.
        straight = nnfit.fit(SPEC, x, y, epochs=2 * N, **SETTINGS)
        identical = same_weights(resumed.model, straight.model)
        print(f"resumed to epoch {resumed.history[-1]['epoch']}: "
              f"weights equal to an uninterrupted {2 * N}-epoch run: {identical}")
        print(f"  val_loss per epoch (resumed):       "
              f"{[round(v, 4) for v in resumed.history['val_loss']]}")
        print(f"  val_loss per epoch (uninterrupted): "
              f"{[round(v, 4) for v in straight.history['val_loss']]}")
        assert identical, "resume did not reproduce the uninterrupted run"

        # 4. Weights only (the state_dict): you rebuild the architecture, then load into it.
        weights = tmp / "weights.safetensors"
        nnfit.save_weights(straight.model, weights)
        rebuilt = nnfit.load_weights(nnfit.MLP(30, [32, 16], 1), weights)
        print(f"save_weights/load_weights into a new nnfit.MLP: "
              f"weights equal {same_weights(rebuilt, straight.model)}")

        # 5. The full model: the architecture spec, labels and input scaling come along.
        saved = straight.save(tmp / "model")
        restored = nnfit.load(saved, device="cpu")
        same_predictions = np.array_equal(restored.predict_proba(x), straight.predict_proba(x))
        print(f"Learner.save/nnfit.load ({', '.join(sorted(p.name for p in saved.iterdir()))}): "
              f"predictions equal {same_predictions}")
        assert same_weights(rebuilt, straight.model) and same_predictions


if __name__ == "__main__":
    main()
