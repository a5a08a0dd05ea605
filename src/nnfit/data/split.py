"""Holding rows out: the validation and test splits, stratified by class for classification,
and the k-fold and bootstrap validation splits (TrainConfig.fold, TrainConfig.bootstrap)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError

if TYPE_CHECKING:
    from ..config import TrainConfig


def holds_out(cfg: TrainConfig) -> bool:
    """Whether training data without separate validation data gives up rows to validate on:
    ``val_split > 0``, a ``fold`` or a ``bootstrap``."""
    return cfg.val_split > 0 or cfg.fold is not None or cfg.bootstrap is not None


def holdout(n: int, cfg: TrainConfig, stratify: np.ndarray | None = None, *,
            source: str = "training data") -> tuple[np.ndarray, np.ndarray]:
    """The training and validation rows of ``range(n)`` as ``cfg`` splits them: the one
    function every validation split calls.

    Args:
        n: the number of rows (or sequences, or images).
        cfg: ``fold`` ("k/K"), else ``bootstrap`` ("b/K"), else ``val_split``, drawn by ``seed``.
        stratify: the labels to spread evenly (classification), or None.
        source: what the rows are, for error messages.

    Returns:
        (train, val) index arrays, sorted. Without fold or bootstrap they are exactly
        ``split_indices(n, cfg.val_split, cfg.seed, stratify)`` (runs made before folds existed
        resume on the same rows). A bootstrap's ``train`` has ``n`` rows and repeats some.

    Raises:
        DataError: fewer rows (or rows of a class) than folds; a bootstrap without out-of-bag rows.

    Example:
        >>> from nnfit.config import TrainConfig
        >>> tr, va = holdout(10, TrainConfig(fold="2/5"))
        >>> len(tr), len(va)
        (8, 2)
    """
    if cfg.fold is not None:
        k, folds = (int(v) for v in cfg.fold.split("/"))
        fold = fold_of(n, folds, cfg.seed, stratify, source=source)
        return np.flatnonzero(fold != k - 1), np.flatnonzero(fold == k - 1)
    if cfg.bootstrap is not None:
        return _bootstrap(n, cfg.bootstrap, cfg.seed, source, stratify)
    return split_indices(n, cfg.val_split, cfg.seed, stratify)


def fold_of(n: int, folds: int, seed: int | None, stratify: np.ndarray | None = None, *,
            source: str = "training data") -> np.ndarray:
    """The fold (0 .. folds-1) of each of ``n`` rows, dealt at random by ``seed``.

    Rows are dealt round-robin over the folds, class after class, each class in an order drawn
    by the one generator (as scikit-learn's StratifiedKFold allots them): every class has
    ``floor`` or ``ceil`` of its rows divided by ``folds`` in each fold, and the folds' sizes
    differ by at most one row.

    Raises:
        DataError: ``n < folds``, or a class with fewer rows than folds (one line, naming it).

    Example:
        >>> np.bincount(fold_of(10, 5, seed=0))
        array([2, 2, 2, 2, 2])
    """
    if n < folds:
        raise DataError(f"{source}: {n} rows, fewer than {folds} folds")
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)]
    if stratify is not None:
        y = np.asarray(stratify)
        codes = _group_codes(y)
        groups = [np.flatnonzero(codes == c) for c in range(codes.max() + 1)]
        small = next((g for g in groups if len(g) < folds), None)
        if small is not None:
            raise DataError(f"{source}: class {str(y[small[0]])[:60]!r} has {len(small)} "
                            f"rows, fewer than {folds} folds")
    fold = np.empty(n, dtype=np.int64)
    dealt = 0
    for g in groups:  # the deal goes on where the last class ended: even fold sizes
        fold[rng.permutation(g)] = (dealt + np.arange(len(g))) % folds
        dealt += len(g)
    return fold


def _bootstrap(n: int, part: str, seed: int | None, source: str,
               stratify: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap sample ``b`` of ``part`` ("b/K"): ``n`` draws with replacement by (seed, b),
    sorted, and the out-of-bag rows. With ``stratify`` (classification) each class draws as
    many rows as it has, from its own rows: every class is in every sample (a plain draw
    misses a class of 3 rows in one sample of 20, and its member cannot learn that class)."""
    b = int(part.split("/")[0])
    rng = np.random.default_rng(None if seed is None else (seed, b))
    if stratify is not None and n:
        codes = _group_codes(np.asarray(stratify))
        train = np.sort(np.concatenate([rng.choice(rows, size=len(rows)) for rows in
                                        (np.flatnonzero(codes == c) for c in range(codes.max() + 1))]))
    else:
        train = np.sort(rng.integers(0, n, size=n)) if n else np.arange(0)
    drawn = np.zeros(n, dtype=bool)
    drawn[train] = True
    if drawn.all():
        raise DataError(f"{source}: bootstrap {part} drew every one of its {n} rows, "
                        "leaving no out-of-bag rows to validate on")
    return train, np.flatnonzero(~drawn)


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
