"""Holding rows out: the validation and test splits, stratified by class for classification."""

from __future__ import annotations

import numpy as np


def split_indices(
    n: int, fraction: float, seed: int | None, stratify: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Random (stratified when ``stratify`` is given) split of ``range(n)``.

    Returns:
        (kept, held_out) index arrays, each sorted; ``held_out`` has about ``fraction * n``
        rows, at least one when ``fraction > 0`` and ``n >= 2``. Per class, the held-out count
        is the rounded share, leaving at least one row of each class in ``kept``.

    Example:
        >>> kept, held = split_indices(10, 0.2, seed=0)
        >>> len(kept), len(held)
        (8, 2)
    """
    rng = np.random.default_rng(seed)
    if fraction <= 0 or n < 2:
        return np.arange(n), np.arange(0)
    if stratify is None:
        groups = [np.arange(n)]
    else:
        _, inverse = np.unique(np.asarray(stratify).astype(str), return_inverse=True)
        groups = [np.flatnonzero(inverse == k) for k in range(inverse.max() + 1)]
    held: list[np.ndarray] = []
    for g in groups:
        g = rng.permutation(g)
        k = min(int(round(fraction * len(g))), len(g) - 1)
        held.append(g[:k])
    out = np.concatenate(held) if held else np.arange(0)
    if len(out) == 0:
        # Hold out a row of a class that has several, so every class stays in ``kept``.
        pool = [g for g in groups if len(g) > 1] or [np.arange(n)]
        out = rng.permutation(np.concatenate(pool))[:1]
    mask = np.zeros(n, dtype=bool)
    mask[out] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def stratify_labels(y: np.ndarray, task: str) -> np.ndarray | None:
    """The labels to stratify a split by: ``y`` for a classification task (named, or "auto"
    inferring one), None for regression. The one rule for the validation and test splits."""
    from ..tasks import infer_task

    if task in ("binary", "multiclass") or (task == "auto" and infer_task(np.asarray(y)) != "regression"):
        return y
    return None
