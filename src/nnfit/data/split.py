"""Holding rows out: the validation and test splits, stratified by class for classification."""

from __future__ import annotations

from typing import Any

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
        inverse = _group_codes(np.asarray(stratify))
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


def stratify_labels(y: np.ndarray, task: Any) -> np.ndarray | None:
    """The labels to stratify a split by: ``y`` for a classification task (by name, a fitted
    Task, or "auto" inferring one), None for regression. The one rule for the validation and
    test splits."""
    from ..tasks import infer_task

    task = task if isinstance(task, str) else task.name
    if task in ("binary", "multiclass") or (task == "auto" and infer_task(np.asarray(y)) != "regression"):
        return y
    return None


def _group_codes(y: np.ndarray) -> np.ndarray:
    """One integer per distinct label, numbered in the order of the labels as text (the order
    every release has drawn the split in, so a resumed run holds out the same rows). Numbers
    are found by np.unique and text by pyarrow's hashing: a million-row split takes
    milliseconds, not a sort of Python strings."""
    if y.dtype.kind in "iufb" and y.ndim == 1:
        uniq, inverse = np.unique(y, return_inverse=True)
        names = [str(u) for u in uniq]
    else:
        import pyarrow as pa

        flat = [str(v) for v in y] if y.ndim != 1 else y
        try:
            arr = pa.array(flat, type=pa.string(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arr = pa.array([str(v) for v in flat], type=pa.string())
        enc = arr.dictionary_encode()
        inverse = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        names = [str(v) for v in enc.dictionary.to_pylist()]
    rank = np.empty(len(names), dtype=np.int64)
    rank[sorted(range(len(names)), key=names.__getitem__)] = np.arange(len(names))
    return rank[inverse]
