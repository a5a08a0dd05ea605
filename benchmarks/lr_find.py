"""Does training at lr-find's suggestion end as well as the best of a learning-rate grid?

On three generated tasks (tabular classification, regression, small images), train once at
each point of a 7-point log-spaced grid from 1e-4 to 1e-1 and once at the rate ``nnfit.lr_find``
suggests under each rule, with the same epochs and seed, and compare the validation loss each
training ends with (the learner's own, best weights restored as ``fit`` does by default), as a
mean over several seeds (the same for every rate; lr-find runs once per seed). A rule passes a
task when its mean loss is within 3% of the grid's best mean. Results go to
``benchmarks/results/lr-find.json`` and ``.md``.

    python benchmarks/lr_find.py            # the three tasks, 5 seeds, every rule (~4 min on 1 core)
    python benchmarks/lr_find.py --smoke    # tiny sizes: checks that it runs
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import nnfit
from nnfit.lr_range import RULES

HERE = Path(__file__).resolve().parent
GRID = [float(v) for v in np.logspace(-4, -1, 7)]
TOLERANCE = 0.03


def tabular_classification(n: int, seed: int) -> tuple:
    """Three classes from a nonlinear function of 10 features (4 of them noise)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10)).astype(np.float32)
    score = np.stack([x[:, 0] * x[:, 1], np.sin(2 * x[:, 2]) + x[:, 3], x[:, 4] ** 2 - x[:, 5]], 1)
    y = (score + 0.3 * rng.normal(size=score.shape)).argmax(1)
    return {"name": "mlp", "hidden": [64, 64]}, x, y


def regression(n: int, seed: int) -> tuple:
    """A smooth nonlinear target of 8 features with noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    y = np.sin(x[:, 0]) * 2 + x[:, 1] * x[:, 2] + np.abs(x[:, 3]) + 0.2 * rng.normal(size=n)
    return {"name": "mlp", "hidden": [64, 64]}, x, y.astype(np.float32)


class SmallCNN(nn.Module):
    """Two 3x3 convolutions, global average pooling and a linear head."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(32, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def images(n: int, seed: int) -> tuple:
    """8x8 greyscale images of four patterns (a horizontal bar, a vertical bar, a diagonal, a
    square) at random places, in noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=0.6, size=(n, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, n)
    for i, (label, r, c) in enumerate(zip(y, rng.integers(1, 6, n), rng.integers(1, 6, n), strict=True)):
        if label == 0:
            x[i, 0, r, c - 1:c + 2] += 1.5
        elif label == 1:
            x[i, 0, r - 1:r + 2, c] += 1.5
        elif label == 2:
            x[i, 0, [r - 1, r, r + 1], [c - 1, c, c + 1]] += 1.5
        else:
            x[i, 0, r - 1:r + 1, c - 1:c + 1] += 1.2
    torch.manual_seed(seed)  # the module's initialisation, as a user would seed it
    return SmallCNN(), x, y


TASKS = {"tabular-classification": tabular_classification, "regression": regression, "images-8px": images}


def final_val_loss(model: object, x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray,
                   lr: float, epochs: int, seed: int) -> float:
    """The validation loss a training at ``lr`` ends with."""
    if isinstance(model, nn.Module):
        model = __import__("copy").deepcopy(model)  # every training starts from the same weights
    learner = nnfit.fit(model, x, y, val=(xv, yv), lr=lr, epochs=epochs, patience=0, seed=seed,
                        device="cpu", quiet=True)
    return float(learner.evaluate(xv, yv)["loss"])


def run_seed(name: str, n: int, epochs: int, seed: int) -> dict:
    """One instance of a task (data, initialisation and shuffling drawn from ``seed``): the
    validation loss at every grid point, and lr-find's suggestion under each rule (found on
    this instance's training data with this seed) with the loss a training at it ends with."""
    model, x, y = TASKS[name](n, seed)
    cut = int(0.8 * n)
    (x, xv), (y, yv) = (x[:cut], x[cut:]), (y[:cut], y[cut:])
    t0 = time.perf_counter()
    grid = [final_val_loss(model, x, y, xv, yv, lr, epochs, seed) for lr in GRID]
    row: dict = {"seed": seed, "grid": grid, "grid_seconds": time.perf_counter() - t0, "rules": {}}
    for rule in RULES:
        t0 = time.perf_counter()
        found = nnfit.lr_find(model, x, y, val_split=0.0, seed=seed, device="cpu", rule=rule)
        find_s = time.perf_counter() - t0
        loss = final_val_loss(model, x, y, xv, yv, found.suggestion, epochs, seed)
        row["rules"][rule] = {"suggestion": found.suggestion, "stop": found.stop, "loss": loss,
                              "vs_seed_best": loss / min(grid) - 1, "lr_find_seconds": find_s}
    rules = " ".join(f"{r} {v['suggestion']:.3g}: {v['loss']:.4f}" for r, v in row["rules"].items())
    print(f"{name:24s} seed {seed} grid " + " ".join(f"{v:.4f}" for v in grid) + f" | {rules}", flush=True)
    return row


def run_task(name: str, n: int, epochs: int, seeds: list[int]) -> dict:
    """Score every grid point and every rule by its mean validation loss over ``seeds`` (the
    same seeds for each): one seed's final loss is too noisy a yardstick for a 3% margin."""
    runs = [run_seed(name, n, epochs, seed) for seed in seeds]
    grid = np.mean([r["grid"] for r in runs], axis=0)
    best = int(np.argmin(grid))
    row: dict = {"task": name, "rows": n, "epochs": epochs, "seeds": seeds,
                 "grid_mean": dict(zip(GRID, grid.tolist(), strict=True)), "best_lr": GRID[best],
                 "best_loss": float(grid[best]), "runs": runs, "rules": {}}
    for rule in RULES:
        mean = float(np.mean([r["rules"][rule]["loss"] for r in runs]))
        row["rules"][rule] = {"loss": mean, "ratio": mean / grid[best],
                              "pass": bool(mean <= (1 + TOLERANCE) * grid[best])}
        print(f"{name:24s} {rule:9s} mean loss {mean:.4f} vs grid best {grid[best]:.4f} at {GRID[best]:.2g} "
              f"({mean / grid[best] - 1:+.1%})", flush=True)
    return row


def markdown(rows: list[dict]) -> str:
    seeds = ", ".join(map(str, rows[0]["seeds"]))
    lines = ["# lr-find suggestion vs a 7-point learning-rate grid (1e-4 .. 1e-1)", "",
             f"Each learning rate is scored by the mean over seeds {seeds} (the same seeds for every rate; "
             "a seed draws the task's data, initialisation and shuffling) of the validation loss of the "
             "model `nnfit.fit` returns (best epoch restored, the default; 20 epochs, no early stopping). "
             "lr-find runs once per seed, on that seed's training data; its suggestion is scored by the "
             "mean loss of the trainings at each seed's own suggestion. Pass: within 3% of the grid's "
             "best mean.", "",
             "lr-find runs with its defaults: 200 steps from 1e-7 to 10, stopped when the moving average "
             "of the loss passes 4 times its best; the minimum rule (the default) reads the loss averaged "
             "over one decade of rate centred on each step (no lag), valley and steepest read the moving "
             "average, as fastai does.", "",
             "| task | grid best mean (lr) | rule | mean loss | vs best | pass |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        for rule, v in r["rules"].items():
            lines.append(f"| {r['task']} | {r['best_loss']:.4f} ({r['best_lr']:.2g}) | {rule} | "
                         f"{v['loss']:.4f} | {v['ratio'] - 1:+.1%} | {'yes' if v['pass'] else 'no'} |")
    lines += ["", "Per seed (loss at each grid rate; each rule's suggestion and loss, and its loss against "
              "that seed's own grid best):", ""]
    lines += ["| task | seed | " + " | ".join(f"{lr:.2g}" for lr in GRID) + " | " +
              " | ".join(RULES) + " |", "|---|---|" + "---|" * (len(GRID) + len(RULES))]
    for r in rows:
        for run in r["runs"]:
            rules = " | ".join(f"{v['suggestion']:.3g}: {v['loss']:.4f} ({v['vs_seed_best']:+.1%})"
                               for v in run["rules"].values())
            lines.append(f"| {r['task']} | {run['seed']} | " + " | ".join(f"{v:.4f}" for v in run["grid"])
                         + f" | {rules} |")
        lines.append(f"| {r['task']} | mean | " + " | ".join(f"{v:.4f}" for v in r["grid_mean"].values())
                     + " | " + " | ".join(f"{v['loss']:.4f}" for v in r["rules"].values()) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, nothing written")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1, the same for every rate")
    parser.add_argument("--name", default="lr-find", help="results file name (without suffix)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # small models: a second thread only spins (see nnfit.runtime)
    n, epochs = (200, 2) if args.smoke else (2000, 20)
    t0 = time.perf_counter()
    rows = [run_task(name, n, epochs, list(range(2 if args.smoke else args.seeds))) for name in TASKS]
    if args.smoke:
        return
    out = {"machine": platform.machine(), "python": platform.python_version(), "torch": torch.__version__,
           "nnfit": nnfit.__version__, "tolerance": TOLERANCE, "seconds": time.perf_counter() - t0,
           "tasks": rows}
    (HERE / "results" / f"{args.name}.json").write_text(json.dumps(out, indent=2) + "\n")
    (HERE / "results" / f"{args.name}.md").write_text(markdown(rows))


if __name__ == "__main__":
    main()
