"""Bundled datasets: scikit-learn's small sets that ship inside the package (no download)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .data.columns import Columns
from .registry import Registry


@dataclass(frozen=True)
class Bundled:
    """A bundled dataset: its scikit-learn loader name, target column and task."""

    loader: str
    target: str
    task: str


DATASETS: Registry[Bundled] = Registry("dataset")
DATASETS.register("breast_cancer", Bundled("load_breast_cancer", "diagnosis", "binary"),
                  "569 tumours, 30 features, malignant/benign (binary)")
DATASETS.register("wine", Bundled("load_wine", "cultivar", "multiclass"),
                  "178 wines, 13 features, 3 cultivars (multiclass)")
DATASETS.register("iris", Bundled("load_iris", "species", "multiclass"),
                  "150 flowers, 4 features, 3 species (multiclass)")
DATASETS.register("digits", Bundled("load_digits", "digit", "multiclass"),
                  "1797 8x8 images of digits as 64 pixel features, 10 classes")
DATASETS.register("diabetes", Bundled("load_diabetes", "progression", "regression"),
                  "442 patients, 10 features, disease progression after a year (regression)")


def load_dataset(name: str) -> tuple[Columns, str, str]:
    """A bundled dataset as columns (features then target), its target name and its task.

    Example:
        >>> cols, target, task = load_dataset("iris")
        >>> len(cols), target, task
        (150, 'species', 'multiclass')
    """
    entry = DATASETS.get(name)
    import sklearn.datasets

    loader: Callable = getattr(sklearn.datasets, entry.loader)
    bunch = loader()
    names = [str(n).replace(" ", "_") for n in getattr(bunch, "feature_names", [])]
    x = np.asarray(bunch.data)
    if len(names) != x.shape[1]:
        names = [f"x{i}" for i in range(x.shape[1])]
    arrays = {n: x[:, i] for i, n in enumerate(names)}
    y = np.asarray(bunch.target)
    if entry.task != "regression" and hasattr(bunch, "target_names") and name != "digits":
        y = np.asarray(bunch.target_names)[y].astype(str)  # real labels, to show label mapping
    arrays[entry.target] = y
    return Columns(f"dataset {name}", arrays), entry.target, entry.task
