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


def medians(t: Tensor, features: list[str], source: str) -> list[float]:
    """Per-column medians of a 2-D float tensor, NaN ignored (the mean of the two middle
    values for an even count, as ``numpy.nanmedian``)."""
    a = t.double().numpy()
    empty = [f for f, ok in zip(features, (~np.isnan(a)).any(axis=0), strict=True) if not ok]
    if empty:
        raise DataError(f"{source}: cannot impute column {empty[0]!r}: it has no values in the "
                        "training split")
    return np.nanmedian(a, axis=0).tolist()


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
