"""Every kind of user input (arrays, tensors, frames, tuples and dicts of them) as
:class:`RawInputs`: named arrays that the fitted preprocessing (:mod:`nnfit.data.preprocess`)
checks and transforms."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError
from .columns import F32_MAX, Columns, columns_from_frame, feature_matrix, is_frame


@dataclass
class RawInputs:
    """User inputs normalised to named arrays, before preprocessing.

    Attributes:
        style: "single", "positional" or "named" (how the model is called).
        arrays: input name -> (array or tensor, feature names or None).
    """

    style: str
    arrays: dict[str, tuple[Any, list[str] | None]]

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values()))[0])

    def as_float(self) -> RawInputs:
        """Integer and boolean inputs as float32 features, a 1-D one as one column (as a 1-D
        float input is): for built-in models, which treat every feature as a number."""
        def number(a: Any) -> Any:
            if isinstance(a, Tensor):
                a = a if a.is_floating_point() else a.float()
                return a.unsqueeze(1) if a.ndim == 1 else a
            a = a.astype(np.float32) if a.dtype.kind in "iu" else a
            return a.reshape(-1, 1) if a.ndim == 1 else a

        # "codes" with "x": categorical indices for a built-in model's embeddings, kept integers
        keep = self.style == "named" and list(self.arrays) == ["x", "codes"]
        return RawInputs(self.style, {k: (a if keep and k == "codes" else number(a), f)
                                      for k, (a, f) in self.arrays.items()})

    def take(self, idx: np.ndarray) -> RawInputs:
        """The rows ``idx`` of every input."""
        def rows(a: Any) -> Any:
            return a[torch.as_tensor(idx, dtype=torch.long)] if isinstance(a, Tensor) else np.asarray(a)[idx]
        return RawInputs(self.style, {k: (rows(a), f) for k, (a, f) in self.arrays.items()})


def _single(x: Any, name: str, source: str, allow_nan: bool = False) -> tuple[Any, list[str] | None]:
    if isinstance(x, Columns) or is_frame(x):
        cols = x if isinstance(x, Columns) else columns_from_frame(x, source, allow_missing=allow_nan)
        return feature_matrix(cols, cols.names, allow_nan), cols.names
    if isinstance(x, Tensor):
        check_plain_tensor(x, source)
        # Integer codes keep their shape ((n,) is what nn.Embedding takes); any other 1-D
        # input is one feature per row.
        t = x.unsqueeze(1) if x.ndim == 1 and not is_index(x) else x
        if t.ndim == 0 or len(t) == 0:
            raise DataError(f"{source}: no data rows")
        if t.is_floating_point():  # as for arrays below
            a = t.detach().cpu()
            _check_finite((a if a.dtype in (torch.float32, torch.float64) else a.float()).numpy(),
                          source, allow_nan)
        return t, None
    a = np.asarray(x)
    if a.dtype.kind not in "iufb":
        raise DataError(f"{source}: features must be numeric, got an array of {a.dtype}")
    if a.ndim == 1 and a.dtype.kind not in "iu":  # integer codes keep their shape, as above
        a = a.reshape(-1, 1)
    if a.ndim == 0 or len(a) == 0:
        raise DataError(f"{source}: no data rows")
    if a.dtype.kind == "f":
        _check_finite(a, source, allow_nan)
    if a.dtype == np.uint64 and a.max() > np.iinfo(np.int64).max:  # they reach the model as int64
        row = int(np.argmax(a.reshape(len(a), -1).max(axis=1) > np.iinfo(np.int64).max))
        raise DataError(f"{source}: integer value beyond int64 range at row {row + 1}")
    return a, None


def is_index(t: Tensor) -> bool:
    """Whether ``t`` holds integers (not booleans): codes or indices a user's module receives
    unchanged, as int64."""
    return not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool


def check_plain_tensor(t: Tensor, source: str) -> None:
    """Refuse a tensor that is not a dense, real tensor with data: torch's own errors for
    these come from deep inside (or, for complex values, none: the imaginary part is dropped).

    Raises:
        DataError: a meta-device, sparse, nested or complex tensor, naming ``source``.
    """
    if t.is_meta:
        raise DataError(f"{source}: tensors on the meta device hold no data")
    if t.is_nested:
        raise DataError(f"{source}: a nested tensor (rows of different lengths) is not supported: "
                        "pad it to one shape (torch.nested.to_padded_tensor)")
    if t.layout != torch.strided:
        raise DataError(f"{source}: a sparse tensor ({t.layout}) is not supported: call .to_dense() first")
    if t.is_complex():
        raise DataError(f"{source}: complex values ({t.dtype}) are not supported: pass real numbers "
                        "(torch.view_as_real gives the real and imaginary parts as two)")


def _check_finite(a: np.ndarray, source: str, allow_nan: bool) -> None:
    """Refuse inf, NaN (unless ``allow_nan``) and values float32 cannot hold, naming the first
    bad 1-based row (and 0-based feature index)."""
    bad = ~np.isfinite(a)
    if allow_nan:
        bad &= ~np.isnan(a)
    what = "non-finite value"
    if not bad.any() and a.dtype.itemsize > 4:
        bad = np.abs(a) > F32_MAX  # NaN compares False
        what = "value beyond float32 range"
    if bad.any():
        at = np.argwhere(bad)[0]
        raise DataError(f"{source}: {what} at row {at[0] + 1}"
                        + (f", feature {at[1]}" if a.ndim > 1 else ""))


def raw_inputs(x: Any, source: str = "input", allow_nan: bool = False) -> RawInputs:
    """Normalise an array, tensor, DataFrame, tuple of them or dict of them.

    ``allow_nan`` lets missing values (NaN) through, for a model that imputes them.

    Example:
        >>> raw_inputs((np.zeros((4, 2)), np.zeros((4, 3)))).style
        'positional'
    """
    if isinstance(x, Mapping):
        return RawInputs("named", {str(k): _single(v, str(k), f"{source}[{k!r}]", allow_nan)
                                   for k, v in x.items()})
    if isinstance(x, (tuple, list)) and x and (isinstance(x[0], (Tensor, Columns)) or is_frame(x[0])
                                               or np.asarray(x[0]).ndim >= 1):
        if isinstance(x, list) and not isinstance(x[0], Tensor) and not is_frame(x[0]) \
                and np.asarray(x).dtype.kind in "iufb" and np.asarray(x).ndim == 2:
            return RawInputs("single", {"x": _single(np.asarray(x), "x", source, allow_nan)})
        return RawInputs("positional", {f"input{i}": _single(v, f"input{i}_", f"{source}[{i}]", allow_nan)
                                        for i, v in enumerate(x)})
    return RawInputs("single", {"x": _single(x, "x", source, allow_nan)})
