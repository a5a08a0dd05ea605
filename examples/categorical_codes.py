"""Categorical codes into your own module: ``nn.Embedding`` on integer inputs.

Lesson concept: ``nn.Embedding`` is a lookup table for discrete inputs. Each category (here a
city, coded 0..11) gets a learned vector, trained with the rest of the model. nnfit passes
integer arrays (NumPy or torch) to your module unchanged: as int64, in the shape given (a 1-D
array of codes stays ``(n,)``, what ``nn.Embedding`` takes), never standardised. Float inputs
are standardised with training-split statistics. Named inputs (a dict) reach ``forward`` as
keyword arguments: ``{"x": floats, "city": codes}`` calls ``forward(x=..., city=...)``.

Run: ``.venv/bin/python examples/categorical_codes.py``
"""

from __future__ import annotations

import tempfile

import numpy as np
import torch
from torch import nn

import nnfit

SEED = 0
N_CITIES = 12
CITY_EFFECT = np.random.default_rng(SEED).normal(scale=2.0, size=N_CITIES)  # the signal in the codes


class PriceNet(nn.Module):
    """A regression net on three numeric features and one city code per row."""

    def __init__(self, n_numeric: int, n_cities: int, dim: int = 4) -> None:
        super().__init__()
        self.city = nn.Embedding(n_cities, dim)  # one learned vector per city
        self.body = nn.Sequential(nn.Linear(n_numeric + dim, 32), nn.ReLU(), nn.Linear(32, 1))
        self.seen: tuple[torch.dtype, tuple[int, ...]] | None = None

    def forward(self, x: torch.Tensor, city: torch.Tensor) -> torch.Tensor:
        # x: (n, 3) float32, standardised; city: (n,) int64 codes, exactly as given
        self.seen = (city.dtype, tuple(city.shape[1:]))
        return self.body(torch.cat([x, self.city(city)], dim=1))


def make_data(n: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Numeric features plus a city code; the target depends on both."""
    x = rng.normal(size=(n, 3))
    city = rng.integers(0, N_CITIES, size=n)  # int64 codes, shape (n,)
    y = x @ np.array([1.0, -0.5, 0.25]) + CITY_EFFECT[city] + rng.normal(scale=0.3, size=n)
    return {"x": x, "city": city}, y


def r2(pred: np.ndarray, y: np.ndarray) -> float:
    return 1.0 - float(((pred - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def main() -> None:
    rng = np.random.default_rng(SEED + 1)
    train, y_train = make_data(2000, rng)
    test, y_test = make_data(500, rng)

    torch.manual_seed(SEED)
    learner = nnfit.fit(PriceNet(3, N_CITIES), train, y_train, task="regression", epochs=30,
                        batch_size=64, lr=3e-3, quiet=True, device="cpu", seed=SEED)
    dtype, per_row = learner.model.seen
    print(f"city codes reached forward as {dtype}, per-row shape {per_row}")
    pred = learner.predict(test)
    print(f"test R^2 with the city embedding: {r2(pred, y_test):.3f}")
    baseline = x_only_r2(train, y_train, test, y_test)
    print(f"test R^2 of a linear fit on the numeric features alone: {baseline:.3f}")

    with tempfile.TemporaryDirectory() as d:
        learner.save(d)
        restored = nnfit.load(d, model=PriceNet(3, N_CITIES), device="cpu")
        same = np.array_equal(restored.predict(test), pred)
    print(f"save -> load -> predict gives the same predictions: {same}")


def x_only_r2(train: dict, y_train: np.ndarray, test: dict, y_test: np.ndarray) -> float:
    """What the numeric features alone explain (least squares): the city codes carry the rest."""
    design = lambda d: np.c_[d["x"], np.ones(len(d["x"]))]  # noqa: E731
    coef, *_ = np.linalg.lstsq(design(train), y_train, rcond=None)
    return r2(design(test) @ coef, y_test)


if __name__ == "__main__":
    main()
