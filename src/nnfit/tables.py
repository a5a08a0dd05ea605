"""Tabular input: CSV/Parquet files and DataFrames into checked columns, and the preprocessing
(feature schema + standardisation) that is fitted on the training split and saved with a model.

Files are read with pyarrow (multi-threaded, typed columns). Every problem is a
:class:`~nnfit.errors.DataError` naming the file, the column and, where there is one, the
1-based data row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import DataError

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass
class Columns:
    """Named, equally long 1-D arrays read from one source.

    Attributes:
        source: where they came from (a file name, "DataFrame"), for error messages.
        arrays: column name -> 1-D NumPy array, in file order.
        block: optionally, the numeric columns as one (n, k) float32 array; ``arrays`` then
            holds column views of it (see :mod:`nnfit.ingest`).
        block_names: the columns of ``block``, in order.
    """

    source: str
    arrays: dict[str, np.ndarray]
    block: np.ndarray | None = None
    block_names: list[str] | None = None

    def copy(self) -> Columns:
        """A shallow copy whose column dict can be changed (the arrays are shared)."""
        return Columns(self.source, dict(self.arrays), self.block, self.block_names)

    def take(self, idx: np.ndarray) -> Columns:
        """The rows ``idx`` of every column (the block stays one block)."""
        if self.block is None:
            return Columns(self.source, {k: v[idx] for k, v in self.arrays.items()})
        block = self.block[idx]
        where = {n: j for j, n in enumerate(self.block_names)}
        arrays = {k: (block[:, where[k]] if k in where else v[idx]) for k, v in self.arrays.items()}
        return Columns(self.source, arrays, block, list(self.block_names))

    @property
    def names(self) -> list[str]:
        return list(self.arrays)

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values()))) if self.arrays else 0

    def pop(self, name: str) -> np.ndarray:
        """Remove and return column ``name``."""
        if name not in self.arrays:
            raise DataError(f"{self.source}: column {name!r} not found (columns: {_names(self.names)})")
        return self.arrays.pop(name)


def _names(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def read_columns(path: str | Path) -> Columns:
    """Read a CSV/TSV or Parquet file into :class:`Columns`.

    Raises:
        DataError: missing or empty file, unknown format, a parse error (ragged rows, bad
            encoding), duplicate column names, no data rows, or missing values.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if not p.is_file():
        raise DataError(f"{p}: not a file")
    suffix = p.suffix.lower()
    if suffix not in CSV_SUFFIXES + PARQUET_SUFFIXES:
        raise DataError(f"{p}: unsupported file type {suffix!r} (use .csv, .tsv or .parquet)")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: file is empty")
    import pyarrow as pa

    try:
        if suffix in PARQUET_SUFFIXES:
            import pyarrow.parquet as pq

            table = pq.read_table(p)
        else:
            from pyarrow import csv

            parse = csv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
            read = csv.ReadOptions(autogenerate_column_names=False)
            # Empty cells of text columns are missing values too, not the label "".
            convert = csv.ConvertOptions(strings_can_be_null=True)
            table = csv.read_csv(p, read_options=read, parse_options=parse,
                                 convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OSError,
            UnicodeDecodeError) as e:
        raise DataError(f"{p}: cannot parse: {_one_line(e)}") from None
    return _from_arrow(table, str(p))


def check_unique(names: Sequence[str], source: str) -> None:
    """Raise a DataError naming any column name that appears more than once."""
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"{source}: duplicate column names: {', '.join(dupes)}")


def missing_values(source: str, counts: dict[str, int]) -> DataError:
    """The error for missing cells, with a count per column."""
    listed = ", ".join(f"{n} ({c})" for n, c in counts.items())
    return DataError(f"{source}: missing values in columns: {listed}")


def _from_arrow(table: Any, source: str) -> Columns:
    names = [str(n) for n in table.column_names]
    check_unique(names, source)
    if table.num_rows == 0:
        raise DataError(f"{source}: no data rows")
    missing = {n: table.column(i).null_count for i, n in enumerate(names)
               if table.column(i).null_count}
    arrays: dict[str, np.ndarray] = {}
    for i, n in enumerate(names):
        col = table.column(i)
        arrays[n] = col.to_numpy() if not missing.get(n) else np.asarray(col.to_pylist(), dtype=object)
        if arrays[n].dtype.kind == "f":
            nan = int(np.isnan(arrays[n]).sum())
            if nan:
                missing[n] = missing.get(n, 0) + nan
    if missing:
        raise missing_values(source, missing)
    return Columns(source, arrays)


def columns_from_frame(df: Any, source: str = "DataFrame") -> Columns:
    """Columns of a pandas DataFrame (or any object with ``columns`` and ``__getitem__``)."""
    names = [str(c) for c in df.columns]
    check_unique(names, source)
    if len(df) == 0:
        raise DataError(f"{source}: no data rows")
    arrays = {str(c): np.asarray(df[c].to_numpy()) for c in df.columns}
    missing = {n: int(_isnan(a).sum()) for n, a in arrays.items() if _isnan(a).any()}
    if missing:
        raise missing_values(source, missing)
    return Columns(source, arrays)


def _isnan(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "f":
        return np.isnan(a)
    if a.dtype.kind == "O":
        return np.array([v is None or (isinstance(v, float) and v != v) for v in a], dtype=bool)
    return np.zeros(len(a), dtype=bool)


def is_frame(x: Any) -> bool:
    """Duck-typed DataFrame check that does not import pandas."""
    return hasattr(x, "columns") and hasattr(x, "iloc") and hasattr(x, "to_numpy")


def feature_matrix(cols: Columns, features: Sequence[str]) -> np.ndarray:
    """Stack numeric ``features`` of ``cols`` into an (n, d) float32 matrix.

    Raises:
        DataError: a missing, non-numeric or infinite-valued feature column (naming the first
            bad 1-based row).
    """
    if cols.block is not None and list(features) == cols.block_names:
        # Already one float32 block (read by nnfit.ingest): check it, no copy.
        if not np.isfinite(cols.block).all():
            r, c = np.argwhere(~np.isfinite(cols.block))[0]
            raise DataError(f"{cols.source}: column {features[c]!r} has a non-finite value "
                            f"(row {r + 1}: {cols.block[r, c]})")
        return cols.block
    out = np.empty((len(cols), len(features)), dtype=np.float32)
    for j, name in enumerate(features):
        if name not in cols.arrays:
            raise DataError(f"{cols.source}: feature column {name!r} not found")
        a = cols.arrays[name]
        if a.dtype.kind not in "iufb":
            bad = next((i for i, v in enumerate(a) if not _is_number(v)), 0)
            raise DataError(f"{cols.source}: column {name!r} is not numeric "
                            f"(row {bad + 1}: {a[bad]!r})")
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            bad = int(np.flatnonzero(~np.isfinite(a))[0])
            raise DataError(f"{cols.source}: column {name!r} has a non-finite value "
                            f"(row {bad + 1}: {a[bad]})")
        out[:, j] = a
    return out


def _is_number(v: Any) -> bool:
    if isinstance(v, str):  # a text column: its numeric-looking cells are not the bad row
        try:
            float(v)
        except ValueError:
            return False
        return True
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool)


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
    """

    name: str
    features: list[str] | None
    shape: list[int]
    dtype: str
    mean: list[float] | None = None
    std: list[float] | None = None
    named: bool = True


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
    (``model(*xs)``) or "named" (``model(**xs)``).
    """

    style: str
    inputs: list[InputSchema] = field(default_factory=list)

    @classmethod
    def fit(cls, raw: RawInputs, *, standardize: bool = True) -> Preprocessor:
        schemas = []
        for name, (arr, features) in raw.arrays.items():
            t = _as_tensor(arr)
            mean = std = None
            if standardize and t.is_floating_point() and t.ndim == 2:
                mean, std = column_stats(t)
            dtype = "float32" if t.is_floating_point() else "int64"
            named = features is not None
            if features is None and t.ndim == 2:  # arrays: positional names, never checked
                prefix = "x" if raw.style == "single" else f"{name}_"
                features = [f"{prefix}{i}" for i in range(t.shape[1])]
            schemas.append(InputSchema(name, features, list(t.shape[1:]), dtype, mean, std, named))
        return cls(raw.style, schemas)

    def transform(self, raw: RawInputs, source: str = "input") -> tuple[Tensor, ...] | dict[str, Tensor]:
        """Check ``raw`` against the schema and return model-ready tensors."""
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
            t = _check_shape(s, t, features, source)
            t = t.float() if s.dtype == "float32" else t.long()
            if s.mean is not None:  # one new tensor; the caller's data is never modified
                t = t.sub(torch.tensor(s.mean, dtype=t.dtype)).div_(torch.tensor(s.std, dtype=t.dtype))
            out[s.name] = t.contiguous()
        return out if self.style == "named" else tuple(out.values())

    def to_dict(self) -> dict[str, Any]:
        return {"style": self.style, "inputs": [asdict(s) for s in self.inputs]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessor:
        return cls(d["style"], [InputSchema(**s) for s in d["inputs"]])


def _check_shape(s: InputSchema, t: Tensor, features: list[str] | None, source: str) -> Tensor:
    """``t`` checked against the schema; table columns in another order are put in order."""
    if s.named and s.features is not None and features is not None and features != s.features:
        if sorted(features) != sorted(s.features):
            raise DataError(f"{source}: expected {len(s.features)} features [{_names(s.features)}], "
                            f"got {len(features)} [{_names(features)}]")
        t = t[:, [features.index(f) for f in s.features]]
    if list(t.shape[1:]) != s.shape:
        if s.features is not None and t.ndim == 2:
            raise DataError(f"{source}: expected {len(s.features)} features [{_names(s.features)}], "
                            f"got {t.shape[1]}")
        raise DataError(f"{source}: input {s.name!r} expected per-sample shape {tuple(s.shape)}, "
                        f"got {tuple(t.shape[1:])}")
    return t


def _as_tensor(a: np.ndarray | Tensor) -> Tensor:
    if isinstance(a, Tensor):
        t = a.detach().cpu()
        return t.float() if t.is_floating_point() else t
    a = np.asarray(a)
    if a.dtype.kind in "iub":
        return torch.from_numpy(a.astype(np.float32))
    if a.dtype.kind == "f":
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    raise DataError(f"features must be numeric, got an array of {a.dtype}")


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

    def take(self, idx: np.ndarray) -> RawInputs:
        """The rows ``idx`` of every input."""
        def rows(a: Any) -> Any:
            return a[torch.as_tensor(idx, dtype=torch.long)] if isinstance(a, Tensor) else np.asarray(a)[idx]
        return RawInputs(self.style, {k: (rows(a), f) for k, (a, f) in self.arrays.items()})


def _single(x: Any, name: str, source: str) -> tuple[Any, list[str] | None]:
    if isinstance(x, Columns) or is_frame(x):
        cols = x if isinstance(x, Columns) else columns_from_frame(x, source)
        return feature_matrix(cols, cols.names), cols.names
    if isinstance(x, Tensor):
        t = x.unsqueeze(1) if x.ndim == 1 else x
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):  # as for arrays below
            bad = torch.nonzero(~torch.isfinite(t))[0].tolist()
            raise DataError(f"{source}: non-finite value at row {bad[0] + 1}"
                            + (f", feature {bad[1]}" if len(bad) > 1 else ""))
        return t, None
    a = np.asarray(x)
    if a.dtype.kind not in "iufb":
        raise DataError(f"{source}: features must be numeric, got an array of {a.dtype}")
    if a.ndim == 1:
        a = a.reshape(-1, 1)
    if a.ndim == 0 or len(a) == 0:
        raise DataError(f"{source}: no data rows")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        raise DataError(f"{source}: non-finite value at row {bad[0] + 1}"
                        + (f", feature {bad[1]}" if a.ndim > 1 else ""))
    return a, None


def raw_inputs(x: Any, source: str = "input") -> RawInputs:
    """Normalise an array, tensor, DataFrame, tuple of them or dict of them.

    Example:
        >>> raw_inputs((np.zeros((4, 2)), np.zeros((4, 3)))).style
        'positional'
    """
    if isinstance(x, Mapping):
        return RawInputs("named", {str(k): _single(v, str(k), f"{source}[{k!r}]") for k, v in x.items()})
    if isinstance(x, (tuple, list)) and x and (isinstance(x[0], (Tensor, Columns)) or is_frame(x[0])
                                               or np.asarray(x[0]).ndim >= 1):
        if isinstance(x, list) and not isinstance(x[0], Tensor) and not is_frame(x[0]) \
                and np.asarray(x).dtype.kind in "iufb" and np.asarray(x).ndim == 2:
            return RawInputs("single", {"x": _single(np.asarray(x), "x", source)})
        return RawInputs("positional", {f"input{i}": _single(v, f"input{i}_", f"{source}[{i}]")
                                        for i, v in enumerate(x)})
    return RawInputs("single", {"x": _single(x, "x", source)})
