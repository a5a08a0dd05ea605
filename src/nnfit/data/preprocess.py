"""The preprocessing fitted on the training split and saved with a model: each input's schema
(features, per-sample shape, dtype) and its standardisation and missing-value fill, checked
and applied to every later input (validation, evaluation, prediction).

The raw inputs it works on come from :mod:`nnfit.data.columns`. Every problem is a
:class:`~nnfit.errors.DataError` naming the input, the column and, where there is one, the
1-based row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError, DataError
from .columns import F32_MAX, Columns, names_list
from .impute import fill_missing, medians, refuse_missing
from .inputs import RawInputs
from .schema import TableSchema, warn_filled
from .sources import Inputs


@dataclass
class InputSchema:
    """What one model input looks like, checked before any forward pass at predict time.

    Attributes:
        name: the input's name ("x" for a single input; branch or argument names otherwise).
        features: column names for a table, or None for a tensor input.
        shape: per-sample shape, e.g. [30] or [1, 8, 8].
        dtype: "float32" or "int64".
        mean, std: standardisation statistics (training split), or None.
        named: False when ``features`` are positional names made up for an array; then
            only the count is checked at predict time.
        fill: per-feature values that replace missing ones (the training split's medians),
            or None when the model was trained without ``impute``.
    """

    name: str
    features: list[str] | None
    shape: list[int]
    dtype: str
    mean: list[float] | None = None
    std: list[float] | None = None
    named: bool = True
    fill: list[float] | None = None


def column_stats(t: Tensor, chunk: int = 1 << 16) -> tuple[list[float], list[float]]:
    """Per-column mean and (population) standard deviation of a 2-D tensor.

    Computed in float64 over row chunks merged with Chan's formula, so a large table is never
    copied whole to float64. A constant column gets std 1 (it is centred, not scaled).
    """
    n = 0
    mean = torch.zeros(t.shape[1], dtype=torch.float64)
    m2 = torch.zeros(t.shape[1], dtype=torch.float64)
    for i in range(0, len(t), chunk):
        block = t[i:i + chunk].double()
        nb = len(block)
        var_b, mean_b = torch.var_mean(block, dim=0, correction=0)
        delta = mean_b - mean
        total = n + nb
        mean += delta * (nb / total)
        m2 += var_b * nb + delta.square() * (n * nb / total)
        n = total
    std = (m2 / max(n, 1)).sqrt()
    return mean.tolist(), torch.where(std > 0, std, torch.ones_like(std)).tolist()


@dataclass
class Preprocessor:
    """Feature schema and standardisation for every model input, fitted on the training split.

    ``style`` says how inputs reach the model: "single" (``model(x)``), "positional"
    (``model(*xs)``) or "named" (``model(**xs)``). ``table`` is the column-role schema of a
    model trained on a table (:mod:`nnfit.data.schema`): it turns a table into the inputs
    ``x`` (numeric features) and, with categorical columns, ``codes`` (named style); None for
    arrays and tensors, and for models saved before column roles existed. ``layout`` is the
    fitted :mod:`~nnfit.data.layouts` of images, sequences or forecasting windows (their
    per-row or per-step features go through ``table`` and ``inputs`` where they have them),
    None for rows of features.
    """

    style: str
    inputs: list[InputSchema] = field(default_factory=list)
    table: TableSchema | None = None
    layout: Any = None

    @classmethod
    def fit_table(cls, cols: Columns, table: TableSchema, *, standardize: bool = True,
                  filled: dict[str, int] | None = None) -> tuple[Preprocessor, Inputs]:
        """Fit the standardisation of ``table``'s numeric features on the training split
        ``cols``; returns the preprocessor and the split's model-ready inputs (``filled``
        counts the gaps filled, see :meth:`TableSchema.encode`)."""
        x, codes = table.encode(cols, filled=filled)
        t = torch.from_numpy(x)
        mean, std = column_stats(t) if standardize and x.shape[1] else (None, None)
        pre = cls.for_table(table, mean, std)
        return pre, pre._model_inputs(t, codes, cols.source)

    @classmethod
    def for_table(cls, table: TableSchema, mean: list[float] | None = None,
                  std: list[float] | None = None) -> Preprocessor:
        """The preprocessor of a fitted ``table`` whose numeric features ``x`` have the
        standardisation statistics ``mean`` and ``std`` (None: not standardised); with
        categorical columns a second input, ``codes`` (named style)."""
        inputs = [InputSchema("x", table.feature_names, [len(table.feature_names)], "float32", mean, std)]
        names = [c.name for c in table.categorical]
        if names:
            inputs.append(InputSchema("codes", names, [len(names)], "int64"))
        return cls("named" if names else "single", inputs, table)

    def encoded_inputs(self, x: np.ndarray, codes: np.ndarray, source: str) -> Inputs:
        """A table already encoded by :meth:`TableSchema.encode` (``x`` float32, ``codes``
        int64) as model inputs: ``x`` standardised, in the model's style."""
        return self._model_inputs(torch.from_numpy(x), codes, source)

    def transform_table(self, cols: Columns, source: str | None = None,
                        filled: dict[str, int] | None = None, new_levels: bool = False) -> Inputs:
        """A table as model inputs, through the fitted column roles (a model with ``table``);
        ``filled`` and ``new_levels`` as for :meth:`TableSchema.encode`."""
        assert self.table is not None
        x, codes = self.table.encode(cols, source=source, filled=filled, new_levels=new_levels)
        return self._model_inputs(torch.from_numpy(x), codes, source or cols.source)

    def _model_inputs(self, x: Tensor, codes: np.ndarray, source: str) -> Inputs:
        s = self.inputs[0]
        if s.mean is not None:
            x = _standardize(x, s, source)
        if self.style == "single":
            return (x.contiguous(),)
        return {"x": x.contiguous(), "codes": torch.from_numpy(codes)}

    @classmethod
    def fit(cls, raw: RawInputs, *, standardize: bool = True, impute: bool = False,
            source: str = "training data") -> Preprocessor:
        """Fit the schema on the training split; ``impute`` records each table feature's median
        (missing values ignored) to fill missing values with, here and at predict time."""
        schemas = []
        for name, (arr, features) in raw.arrays.items():
            t = _as_tensor(arr)
            dtype = "float32" if t.is_floating_point() else "int64"
            named = features is not None
            if features is None and t.ndim == 2:  # arrays: positional names, never checked
                prefix = "x" if raw.style == "single" else f"{name}_"
                features = [f"{prefix}{i}" for i in range(t.shape[1])]
            fill = None
            if impute and t.is_floating_point() and t.ndim == 2:
                fill = medians(t, features, source)
                if bool(torch.isnan(t).any()):  # a copy only when there is something to fill
                    t = fill_missing(t, fill)
            else:
                refuse_missing(t, features, source)
            mean = std = None
            if standardize and t.is_floating_point() and t.ndim == 2:
                mean, std = column_stats(t)
            schemas.append(InputSchema(name, features, list(t.shape[1:]), dtype, mean, std, named, fill))
        return cls(raw.style, schemas)

    def transform(self, raw: RawInputs, source: str = "input",
                  filled: dict[str, int] | None = None) -> tuple[Tensor, ...] | dict[str, Tensor]:
        """Check ``raw`` against the schema and return model-ready tensors. Gaps filled are
        reported in one warning line, or counted into ``filled`` (feature -> count) for a
        caller that reports several splits at once."""
        holes: dict[str, int] = {}
        names = [s.name for s in self.inputs]
        if raw.style == self.style == "named" and sorted(raw.arrays) == sorted(names):
            raw = RawInputs(raw.style, {n: raw.arrays[n] for n in names})  # keywords: any order
        if raw.style != self.style or list(raw.arrays) != names:
            want = ", ".join(s.name for s in self.inputs)
            got = ", ".join(raw.arrays)
            raise DataError(f"{source}: expected inputs [{want}] ({self.style}), got [{got}] ({raw.style})")
        out = {}
        for s in self.inputs:
            arr, features = raw.arrays[s.name]
            t = _as_tensor(arr)
            if t.ndim == 1 and s.shape == [1]:  # 1-D codes, for a model that takes one column
                t = t.unsqueeze(1)  # (built-in models; models saved before codes kept (n,))
            t = _check_shape(s, t, features, source)
            t = t.float() if s.dtype == "float32" else t.long()
            if s.fill is not None:
                gaps = _gaps(t, s)
                if gaps:  # a new tensor: the caller's data is never modified
                    holes.update(gaps)
                    t = fill_missing(t, s.fill)
            else:
                refuse_missing(t, s.features, source)
            if s.mean is not None:
                t = _standardize(t, s, source)
            out[s.name] = t.contiguous()
        if filled is not None:
            for k, v in holes.items():
                filled[k] = filled.get(k, 0) + v
        elif holes:
            warn_filled(source, holes)
        return out if self.style == "named" else tuple(out.values())

    def as_module(self) -> nn.Module:
        """The fitted fill and standardisation of a model's one numeric input, as a module
        (for :meth:`nnfit.Learner.as_module`); a layout's own module where it has one (the
        per-channel normalisation of images).

        Raises:
            ConfigError: several inputs (text categoricals reach a model as a second input of
                codes), a table column that raw numbers cannot give (datetime parts,
                quantile scores, a missing-value indicator), named, or a layout without one.
        """
        if self.layout is not None:
            make = getattr(self.layout, "as_module", None)
            if make is None:
                raise ConfigError(f"as_module: a model of {self.layout.kind} data reads it through its "
                                  "layout: use learner.predict or learner.outputs, which take the raw data")
            return make()
        if self.style != "single":
            cats = [c.name for c in self.table.categorical] if self.table is not None else []
            why = (f"text categorical columns ({names_list(cats)}) reach it as codes" if cats else
                   f"it takes {len(self.inputs)} inputs ({', '.join(s.name for s in self.inputs)})")
            raise ConfigError(f"as_module wraps a model of one numeric input, and {why}: use "
                              "learner.predict or learner.outputs, which take the raw data")
        s, fill = self.inputs[0], self.inputs[0].fill
        if self.table is not None:
            odd = next((c for c in self.table.columns if c.role != "numeric" or c.indicator
                        or c.quantiles is not None), None)
            if odd is not None:
                what = ("datetime parts" if odd.role == "datetime" else "quantile scores"
                        if odd.quantiles is not None else "values plus a missing-value indicator")
                raise ConfigError(f"as_module: column {odd.name!r} becomes {what}, which a tensor of raw "
                                  "numbers cannot give: use learner.predict or learner.outputs")
            fills = [c.fill[0] if c.fill else None for c in self.table.columns]
            fill = fills if self.table.impute and None not in fills else None
        return Standardize(s.mean, s.std, fill, dtype=s.dtype)

    @property
    def imputes(self) -> bool:
        """Whether missing feature values are filled (the model was trained with ``impute``)."""
        if self.table is not None:
            return self.table.impute
        return any(s.fill is not None for s in self.inputs)

    def to_dict(self) -> dict[str, Any]:
        # "fill" only when imputing, so a model trained without it reads in older nnfit too.
        inputs = [{k: v for k, v in asdict(s).items() if k != "fill" or v is not None}
                  for s in self.inputs]
        out = {"style": self.style, "inputs": inputs}
        if self.table is not None:  # only then: a model of arrays reads in older nnfit too
            out["table"] = self.table.to_dict()
        if self.layout is not None:
            out["layout"] = self.layout.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessor:
        from .layouts import from_dict as layout_from_dict

        table = TableSchema.from_dict(d["table"]) if d.get("table") is not None else None
        layout = layout_from_dict(d["layout"]) if d.get("layout") is not None else None
        return cls(d["style"], [InputSchema(**s) for s in d["inputs"]], table, layout)


class Standardize(nn.Module):
    """The fitted preprocessing of one numeric input as a module: missing values (NaN) filled
    with the training medians, then ``(x - mean) / std``, as :meth:`Preprocessor.transform`
    computes them (float32; equal bitwise). Unlike ``transform`` it checks nothing (shapes,
    column names, values whose standardised size float32 cannot hold): it goes in front of a
    model, to call or export the two as one.

    Args:
        mean, std: per-feature training statistics, or None (not standardised).
        fill: per-feature values for NaN, or None (NaN passes through).
        dtype: "float32", or "int64" for integer codes (nothing is fitted for them: only cast).

    Shape:
        input (n, features); output the same shape, of ``dtype``.

    Example:
        >>> m = Standardize([1.0, 2.0], [2.0, 4.0], fill=[5.0, 6.0])
        >>> m(torch.tensor([[3.0, float("nan")]]))
        tensor([[1., 1.]])
    """

    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 fill: Sequence[float] | None = None, *, dtype: str = "float32") -> None:
        super().__init__()
        self.dtype = torch.float32 if dtype == "float32" else torch.int64
        # float64 statistics rounded to float32 once, as transform rounds them
        f32 = lambda v: None if v is None else torch.tensor(v, dtype=torch.float64).float()  # noqa: E731
        self.register_buffer("mean", f32(mean))
        self.register_buffer("std", f32(std))
        self.register_buffer("fill", f32(fill))

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(self.dtype)
        if self.fill is not None:
            x = torch.where(torch.isnan(x), self.fill, x)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x

    def extra_repr(self) -> str:
        n = None if self.mean is None else len(self.mean)
        return f"features={n}, fill={self.fill is not None}, dtype={self.dtype}"


def _gaps(t: Tensor, s: InputSchema) -> dict[str, int]:
    """Missing values per feature of a 2-D float input (one pass; none in the usual case)."""
    nan = torch.isnan(t)
    if t.ndim != 2 or not bool(nan.any()):
        return {}
    names = s.features or [f"{s.name}_{j}" for j in range(t.shape[1])]
    return {names[j]: int(c) for j, c in enumerate(nan.sum(0).tolist()) if c}


def _standardize(t: Tensor, s: InputSchema, source: str) -> Tensor:
    """``(t - mean) / std`` as a new float32 tensor (the caller's data is never modified).

    Near float32's limit ``t - mean`` can overflow even where the result is small (3e38 minus
    a mean of -1e38): such columns are computed in float64. A value whose standardised size
    float32 cannot hold (far outside the training range: 3e38 in a column of std 1e-3) is
    refused, naming the column, instead of reaching the model as inf.

    Raises:
        DataError: naming the column, the 1-based row and the value.
    """
    mean, std = torch.tensor(s.mean, dtype=torch.float64), torch.tensor(s.std, dtype=torch.float64)
    wide: list[int] = []
    if len(t):  # two reductions decide where float32 is not enough, without a full copy
        reach = torch.maximum((t.amax(0).double() - mean).abs(), (t.amin(0).double() - mean).abs())
        beyond = torch.nonzero(reach / std > F32_MAX).flatten().tolist()
        if beyond:
            j = beyond[0]
            z = (t[:, j].double() - mean[j]) / std[j]
            row = int(torch.nonzero(z.abs() > F32_MAX)[0])
            name = s.features[j] if s.features else f"feature {j}"
            raise DataError(f"{source}: column {name!r} has a value too far from the training data "
                            f"(row {row + 1}: {float(t[row, j]):g}; training mean {s.mean[j]:g}, "
                            f"std {s.std[j]:g}): standardised it is beyond float32 range")
        wide = torch.nonzero(reach > F32_MAX).flatten().tolist()
    out = t.sub(mean.to(t.dtype)).div_(std.to(t.dtype))
    for j in wide:
        out[:, j] = ((t[:, j].double() - mean[j]) / std[j]).to(t.dtype)
    return out


def _check_shape(s: InputSchema, t: Tensor, features: list[str] | None, source: str) -> Tensor:
    """``t`` checked against the schema; table columns in another order are put in order."""
    if s.named and s.features is not None and features is not None and features != s.features:
        if sorted(features) != sorted(s.features):
            raise DataError(f"{source}: expected {len(s.features)} features [{names_list(s.features)}], got "
                            f"{len(features)} [{names_list(features)}]{_difference(s.features, features)}")
        t = t[:, [features.index(f) for f in s.features]]
    if list(t.shape[1:]) != s.shape:
        if s.features is not None and t.ndim == 2:
            raise DataError(f"{source}: expected {len(s.features)} features [{names_list(s.features)}], "
                            f"got {t.shape[1]}")
        raise DataError(f"{source}: input {s.name!r} expected per-sample shape {tuple(s.shape)}, "
                        f"got {tuple(t.shape[1:])}")
    return t


def _difference(want: Sequence[str], got: Sequence[str]) -> str:
    """"; missing: b; unexpected: z" for two column lists that differ as sets."""
    missing = [f for f in want if f not in set(got)]
    extra = [f for f in got if f not in set(want)]
    parts = ([f"missing: {names_list(missing)}"] if missing else []) + (
        [f"unexpected: {names_list(extra)}"] if extra else [])
    return "; " + "; ".join(parts) if parts else ""


def _as_tensor(a: np.ndarray | Tensor) -> Tensor:
    if isinstance(a, Tensor):
        t = a.detach().cpu()
        return t.float() if t.is_floating_point() else t
    a = np.asarray(a)
    if a.dtype.kind in "iu":  # codes and counts stay integers, as int64 (what nn.Embedding takes)
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
    if a.dtype.kind == "b":
        return torch.from_numpy(a.astype(np.float32))
    if a.dtype.kind == "f":
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    raise DataError(f"features must be numeric, got an array of {a.dtype}")
