"""Missing values: the error that counts them per column, and the opt-in fill (``impute``)
with each feature's training-split median, which is saved with the model and applied again
at evaluate and predict time.

The median, not the mean: one extreme value (a typo of 1e6 in a column of small numbers) does
not move it, and it always lies within the column's observed range.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError


def missing_values(source: str, counts: dict[str, int]) -> DataError:
    """The error for missing cells, with a count per column."""
    listed = ", ".join(f"{n} ({c})" for n, c in counts.items())
    return DataError(f"{source}: missing values in columns: {listed}")


MEDIAN_ROWS = 10_000  # rows the medians are taken from: all of a smaller table, else evenly spaced


def medians(t: Tensor, features: list[str], source: str) -> list[float]:
    """Per-column medians of a 2-D float tensor, NaN ignored (the mean of the two middle
    values for an even count, as ``numpy.nanmedian``).

    Up to :data:`MEDIAN_ROWS` rows they are exact; a larger table's are those of that many
    evenly spaced rows (a fill value, not a statistic: sorting 500,000 x 200 values in
    float64 would cost seconds and gigabytes). Columns are taken a few at a time in float64.
    """
    a = t.numpy()
    if len(a) > MEDIAN_ROWS:
        a = a[np.linspace(0, len(a) - 1, MEDIAN_ROWS).astype(np.int64)]
    out: list[float] = []
    for j in range(0, a.shape[1], 16):
        block = a[:, j:j + 16].astype(np.float64)
        seen = (~np.isnan(block)).any(axis=0)
        if not seen.all():
            name = features[j + int(np.flatnonzero(~seen)[0])]
            raise DataError(f"{source}: cannot impute column {name!r}: it has no values in the "
                            "training split")
        out += (_median(block) if not np.isnan(block).any() else
                np.nanmedian(block, axis=0).tolist())
    return out


def _median(block: np.ndarray) -> list[float]:
    """Column medians of a float64 block without NaN: ``np.median``'s values, from one
    ``np.partition`` (``np.median``/``nanmedian`` import ``numpy.ma``, ~5 ms a process)."""
    n, k = len(block), len(block) // 2
    part = np.partition(block, [k - 1, k] if n % 2 == 0 else [k], axis=0)
    return (part[k] if n % 2 else (part[k - 1] + part[k]) / 2).tolist()


def fill_missing(t: Tensor, fill: list[float]) -> Tensor:
    """``t`` with each column's NaN replaced by ``fill`` (a new tensor)."""
    return torch.where(torch.isnan(t), torch.tensor(fill, dtype=t.dtype), t)


def refuse_missing(t: Tensor, features: list[str] | None, source: str) -> None:
    """Missing values reaching a model trained without ``impute``, counted per column."""
    if not t.is_floating_point() or not bool(torch.isnan(t).any()):
        return
    if t.ndim != 2 or features is None or len(features) != t.shape[1]:
        raise DataError(f"{source}: missing values (NaN) and the model was not trained to impute them")
    counts = torch.isnan(t).sum(0).tolist()
    raise missing_values(source, {f: c for f, c in zip(features, counts, strict=True) if c})
