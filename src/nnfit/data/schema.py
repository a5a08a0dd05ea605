"""Column roles: what each column of a table is to the model, decided from the training split.

Every column but the target gets one role:

* ``numeric`` -- numbers (int, float), and text columns whose values are numbers for
  :data:`NUMERIC_TEXT` of the rows or more (``7.25``, ``$7.25``, ``7,250``; other values such as
  ``?`` are gaps). Gaps are filled with the training-split median and, when the column had gaps
  in training, a 0/1 "was missing" feature is added. Every numeric column's median is saved, so
  a gap at predict time in a column that had none in training is filled too. With
  ``numeric_transform="quantile"`` values are first mapped through the training split's
  quantiles to normal scores (robust to skew and outliers); standardisation follows either way.
* ``categorical`` -- text, booleans, pandas ``category`` columns, and any column named in
  ``categorical=``. Values are compared as text with surrounding spaces removed. A vocabulary
  is fitted on the training split: levels seen at least :data:`MIN_COUNT` times (at most
  :data:`MAX_LEVELS`, the most frequent) get their own index; rarer levels and levels never
  seen in training share index 0 ("unknown"); a missing value has index 1 when the training
  split had gaps in the column (else it is "unknown" too). The model embeds each column with
  ``nn.Embedding`` (:mod:`nnfit.models.tabular`). At evaluate and predict time, a column whose
  share of "unknown" rows is far above training's is named in one warning line.
* ``datetime`` -- datetime columns and ISO 8601 text (``2024-03-01``, ``2024-03-01T12:30``; a
  few other values among them are gaps): turned into numeric parts (year, month, day of week,
  day of year, days since 1970, and the hour when the training data has times of day), each
  treated as a numeric feature.
* dropped -- ``drop=``, columns outside ``features=``, and columns that identify rows rather
  than describe them: a text column with a distinct value on (nearly) every row (distinct values
  for :data:`ID_DISTINCT` of the rows or more: names, ticket numbers; a mostly empty column is
  kept), an integer column that counts the rows (row number plus a constant) or that holds a
  distinct integer on every row under an id-like name (``PassengerId``, ``customer_id``), and a
  column with no values in the training split. Those dropped by these rules are named in one
  warning line.

The fitted :class:`TableSchema` is saved with the model (``model.json``, key
``preprocess.table``) and turns any later table into the same two inputs: ``x`` (numeric
features, float32) and ``codes`` (categorical indices, int64).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DataError, warn
from .columns import Columns, names_list
from .impute import missing_values
from .values import (
    as_datetime,
    date_parts,
    distinct_count,
    factorize,
    has_value,
    is_date,
    is_number,
    numeric_values,
    text_share,
)

MIN_COUNT = 5  # a level seen fewer times in training is "unknown": too rare to learn an embedding
MAX_LEVELS = 10_000  # the most frequent levels kept per column: bounds the embedding table
ID_DISTINCT = 0.9  # share of distinct values from which a text column identifies rows
ID_MIN_ROWS = 20  # below this many values no column is judged id-like (too few to tell)
NUMERIC_TEXT = 0.9  # share of numbers (or dates) from which a text column is numeric (datetime)
_ID_NAME = re.compile(r"(^|[^A-Za-z])(id|ID|Id)$|^(id|ID|Id)([^a-z]|$)|[a-z]Id$|[a-z]ID$")
UNKNOWN, MISSING = 0, 1  # the two reserved indices of every categorical column
ROLES = ("numeric", "categorical", "datetime")
DATE_PARTS = ("year", "month", "dayofweek", "dayofyear", "days")


@dataclass
class Column:
    """One feature column of the fitted schema.

    Attributes:
        name: the column.
        role: "numeric", "categorical" or "datetime".
        fill: numeric: the training median; datetime: the median of each part.
        indicator: a "was missing" feature is added (the column had gaps in training).
        levels: categorical: the vocabulary; level ``levels[i]`` has index ``i + 2``.
        missing: categorical: the column had missing values in training (else a missing value
            at predict time is "unknown").
        parts: datetime: the parts made, in order.
        quantiles: numeric with the quantile transform: the training split's quantiles.
        coerce: a numeric or datetime column read from text, whose other values ("?", "n/a")
            are gaps.
        unknown: categorical: the share of training rows whose level is "unknown" (rare), to
            notice new data whose levels the model has not seen.
    """

    name: str
    role: str
    fill: list[float] | None = None
    indicator: bool = False
    levels: list[str] | None = None
    missing: bool = False
    parts: list[str] | None = None
    quantiles: list[float] | None = None
    coerce: bool = False
    unknown: float = 0.0

    @property
    def cardinality(self) -> int:
        """Embedding rows: the levels plus "unknown" and "missing"."""
        return len(self.levels or []) + 2

    def to_dict(self) -> dict[str, Any]:
        keep = {"numeric": ("fill", "indicator", "quantiles"),
                "categorical": ("levels", "missing", "unknown"),
                "datetime": ("fill", "indicator", "parts")}[self.role]
        d = {"name": self.name, "role": self.role}
        d.update({k: getattr(self, k) for k in keep if getattr(self, k) is not None})
        if self.coerce:
            d["coerce"] = True
        return d


@dataclass
class TableSchema:
    """Roles, vocabularies and fills fitted on a table's training split.

    Attributes:
        columns: the feature columns, in the table's order.
        dropped: column name -> why it is not a feature.
        numeric_transform: "standard" or "quantile".
        impute: gaps are filled (else refused, as with ``impute=False``).
    """

    columns: list[Column]
    dropped: dict[str, str] = field(default_factory=dict)
    numeric_transform: str = "standard"
    impute: bool = True

    # ------------------------------------------------------------------ what it makes
    @property
    def categorical(self) -> list[Column]:
        return [c for c in self.columns if c.role == "categorical"]

    @property
    def feature_names(self) -> list[str]:
        """Names of the numeric features ``x`` holds, in order (datetime parts as
        ``col:year``, gap indicators as ``col:missing``, after the values)."""
        names: list[str] = []
        for c in self.columns:
            if c.role == "numeric":
                names.append(c.name)
            elif c.role == "datetime":
                names += [f"{c.name}:{p}" for p in c.parts or []]
        return names + [f"{c.name}:missing" for c in self.columns if c.indicator]

    @property
    def used(self) -> list[str]:
        """The columns a table must hold at predict time."""
        return [c.name for c in self.columns]

    def summary(self) -> str:
        """One line per role: counts, categorical cardinalities, dropped columns and why."""
        counts = {r: [c for c in self.columns if c.role == r] for r in ROLES}
        head = ", ".join(f"{len(v)} {r}" for r, v in counts.items() if v) or "no features"
        lines = [f"columns: {head}"]
        if counts["categorical"]:
            def levels(c: Column) -> str:
                n = len(c.levels or [])
                return f"{n}, the most frequent" if n == MAX_LEVELS else str(n)
            lines.append(f"categorical (levels seen {MIN_COUNT}+ times; others are 'unknown'): " + ", ".join(
                f"{c.name} ({levels(c)})" for c in counts["categorical"]))
        if self.dropped:
            lines.append("dropped: " + "; ".join(f"{n} ({why})" for n, why in self.dropped.items()))
        return "\n".join(lines)

    # ------------------------------------------------------------------ applying it
    def encode(self, cols: Columns, *, source: str | None = None, filled: dict[str, int] | None = None,
               new_levels: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``cols`` as the model's inputs: ``x`` (n, features) float32 and ``codes``
        (n, categorical columns) int64. Other columns (the target, dropped and unknown ones) are
        ignored; the caller warns about unknown ones.

        Args:
            filled: gaps filled are counted into this dict (column -> count) instead of being
                reported in a warning line, for a caller that reports several tables at once.
            new_levels: name, in one warning line, categorical columns whose share of
                "unknown" rows is far above training's (new data, not a training split).

        Raises:
            DataError: a column the schema uses is absent, holds values of the wrong kind, or
                has missing values and the schema does not ``impute``.
        """
        source = source or cols.source
        self.check_present(cols, source)
        n = len(cols)
        values: list[np.ndarray] = []
        gaps: list[np.ndarray] = []
        codes = np.empty((n, len(self.categorical)), dtype=np.int64)
        holes: dict[str, int] = {}
        unseen: list[str] = []
        k = 0
        for c in self.columns:
            if c.role == "categorical":
                codes[:, k], missing = _encode_levels(cols, c)
                share = float(np.mean(codes[:, k] == UNKNOWN)) if n else 0.0
                if new_levels and share > max(0.1, 2 * c.unknown):
                    unseen.append(f"{c.name} ({share:.0%} of rows; {c.unknown:.0%} in training)")
                k += 1
            elif c.role == "numeric":
                v = numeric_values(cols, c.name, source, c.coerce)
                missing = np.isnan(v)
                if missing.any():
                    v = np.where(missing, c.fill[0], v)
                if c.quantiles is not None:
                    v = _quantile_scores(v, c.quantiles)
                values.append(v)
            else:
                parts, missing = date_parts(as_datetime(cols, c.name, source, c.coerce), c.parts or [])
                if missing.any():
                    parts = np.where(missing[:, None], np.asarray(c.fill), parts)
                values += list(parts.T)
            if missing.any():
                holes[c.name] = int(missing.sum())
            if c.indicator:
                gaps.append(missing)
        if holes and not self.impute:
            raise missing_values(source, holes)
        if unseen:
            warn(f"{source}: categorical levels not seen in training (read as 'unknown'): "
                 + ", ".join(unseen))
        if filled is not None:
            for name, count in holes.items():
                filled[name] = filled.get(name, 0) + count
        elif holes:
            warn_filled(source, holes)
        x = np.empty((n, len(values) + len(gaps)), dtype=np.float32)
        for j, v in enumerate(values + gaps):
            x[:, j] = v
        return x, codes

    def count_missing(self, cols: Columns) -> dict[str, int]:
        """Gaps per used column of ``cols`` (columns without any left out), in schema order."""
        counts = {c.name: int((~has_value(cols, c.name)).sum()) for c in self.columns}
        return {k: v for k, v in counts.items() if v}

    def check_present(self, cols: Columns, source: str | None = None) -> None:
        """Refuse a table that lacks a column the model uses (exit 2), naming them all."""
        absent = [n for n in self.used if n not in cols.arrays]
        if absent:
            raise DataError(f"{source or cols.source}: missing feature columns the model uses: "
                            f"{names_list(absent)} (columns given: {names_list(cols.names)})")

    # ------------------------------------------------------------------ saving it
    def to_dict(self) -> dict[str, Any]:
        return {"columns": [c.to_dict() for c in self.columns], "dropped": dict(self.dropped),
                "numeric_transform": self.numeric_transform, "impute": self.impute}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TableSchema:
        return cls([Column(**c) for c in d["columns"]], dict(d["dropped"]), d["numeric_transform"],
                   d["impute"])


def warn_filled(source: str, holes: dict[str, int]) -> None:
    """The one warning line that lists the gaps filled, per column."""
    warn(f"{source}: filled missing values (numeric: training median, categorical: their own "
         "index): " + ", ".join(f"{k} ({v})" for k, v in holes.items()))


# ---------------------------------------------------------------------------------- fitting
def fit_schema(cols: Columns, rows: np.ndarray | None = None, *, categorical: Sequence[str] = (),
               numeric: Sequence[str] = (), drop: Sequence[str] = (), features: Sequence[str] = (),
               numeric_transform: str = "standard", impute: bool = True,
               source: str | None = None, target: str | None = None, report: bool = True) -> TableSchema:
    """Give every column of ``cols`` (the training split, target removed) a role and fit it.

    Args:
        rows: the training rows' positions in the whole table (sorted), to recognise a column
            that counts rows; None when ``cols`` is the whole table.
        categorical, numeric: columns whose role is forced (e.g. integer-coded categories).
        drop: columns never used.
        features: when given, only these columns are used.
        numeric_transform: "standard" or "quantile".
        impute: fill gaps here and at predict time (else they are refused).
        target: the target's name, refused in the column lists.
        report: warn about the columns dropped and the stray text read as gaps
            (:func:`warn_roles`), and refuse a table left without features; False: the
            caller does, once it has seen more rows (a streamed table's sample).

    Raises:
        DataError: an override names a column that does not exist, names one column in two
            lists, or nothing is left to train on; a column forced numeric holds text.
    """
    source = source or cols.source
    names = cols.names
    _check_named(names, source, target, categorical=categorical, numeric=numeric, drop=drop,
                 features=features)
    clash = sorted(set(categorical) & set(numeric))
    if clash:
        raise DataError(f"{source}: column {clash[0]!r} is named both categorical and numeric")
    dropped = {n: "drop=" for n in drop}
    if features:
        dropped.update({n: "not in features=" for n in names if n not in set(features) and n not in dropped})
    rows = np.arange(len(cols)) if rows is None else np.asarray(rows)
    out: list[Column] = []
    ids: list[str] = []
    strays: dict[str, list[str]] = {}
    for name in names:
        if name in dropped:
            continue
        role, why, words = _role(cols, name, rows, name in categorical, name in numeric, source)
        if role is None:
            dropped[name] = why
            ids.append(f"{name} ({why})")  # drop= and features= were the user's own choice
            continue
        out.append(_fit_column(cols, name, role, numeric_transform, source, coerce=words is not None))
        if words:
            strays[name] = words
    if report:
        warn_roles(source, strays, ids)
        if not out:
            raise no_features(source, dropped)
    return TableSchema(out, dropped, numeric_transform, impute)


def warn_roles(source: str, strays: dict[str, list[str]], ids: list[str]) -> None:
    """The warning lines of a fit: the text found in columns of numbers or dates (column ->
    up to 3 values, read as missing), and the columns dropped for what they hold ("name (why)")."""
    if strays:
        text = "; ".join(f"{n} ({', '.join(repr(w) for w in words)} read as missing)"
                         for n, words in strays.items())
        warn(f"{source}: columns of numbers or dates holding some other text: {text}")
    if ids:
        warn(f"{source}: dropped columns that identify rows or hold no values: {'; '.join(ids)}")


def no_features(source: str, dropped: dict[str, str]) -> DataError:
    """The error for a table whose every column was dropped (column -> why)."""
    why = "; ".join(f"{n}: {w}" for n, w in dropped.items()) or "the table has no feature columns"
    return DataError(f"{source}: no feature columns left to train on ({why})")


def _check_named(names: list[str], source: str, target: str | None = None, **lists: Sequence[str]) -> None:
    for flag, given in lists.items():
        if target is not None and target in given:
            raise DataError(f"{source}: {flag}= names {target!r}, the target column: list only features")
        unknown = [n for n in given if n not in names]
        if unknown:
            raise DataError(f"{source}: {flag}= names columns that do not exist: {names_list(unknown)} "
                            f"(columns: {names_list(names)})")


def _role(cols: Columns, name: str, rows: np.ndarray, cat: bool, num: bool,
          source: str) -> tuple[str | None, str, list[str] | None]:
    """The role of a column (None: dropped); for a dropped one, why; for numbers or dates
    read from text, the other values found among them (read as gaps), else None."""
    kind = cols.kind(name)
    a = cols.arrays[name]
    if cat:
        return "categorical", "", None
    if num:
        if kind == "datetime":
            raise DataError(f"{source}: column {name!r} holds dates; it cannot be numeric=")
        numeric_values(cols, name, source)  # refuses text, naming the row
        return "numeric", "", None
    present = has_value(cols, name)
    if not present.any():
        return None, "no values in the training split", None
    if kind == "datetime":
        return "datetime", "", None
    if kind == "bool":
        return "categorical", "", None
    if kind == "int":
        if present.all() and len(a) >= ID_MIN_ROWS and np.array_equal(np.diff(a), np.diff(rows)):
            return None, "counts the rows", None
        if present.all() and len(a) >= ID_MIN_ROWS and _ID_NAME.search(name) and len(np.unique(a)) == len(a):
            return None, "id-like: a distinct integer on every row, named as an id", None
        return "numeric", "", None
    if kind == "float":
        return "numeric", "", None
    for role, test in (("datetime", is_date), ("numeric", is_number)):
        share, words = text_share(cols, name, test)
        if share >= NUMERIC_TEXT:  # ISO dates or numbers as text; "?"-style values are gaps
            return role, "", words
    # Rows, not filled values: a column that is mostly empty (a cabin number) says something by
    # being there, and is kept as a categorical with its own "missing" index.
    distinct, m = distinct_count(cols, name), len(a)
    if m >= ID_MIN_ROWS and distinct >= ID_DISTINCT * m:
        return None, f"id-like: {distinct} distinct values in {m} training rows", None
    return "categorical", "", None


def _fit_column(cols: Columns, name: str, role: str, transform: str, source: str,
                coerce: bool = False) -> Column:
    if role == "categorical":
        codes, levels = factorize(cols, name)
        counts = np.bincount(codes[codes >= 0], minlength=len(levels))
        order = sorted((i for i in range(len(levels)) if counts[i] >= MIN_COUNT),
                       key=lambda i: (-counts[i], levels[i]))[:MAX_LEVELS]
        col = Column(name, role, levels=[levels[i] for i in order], missing=bool((codes < 0).any()))
        col.unknown = float(np.mean(_encode_levels(cols, col)[0] == UNKNOWN)) if len(codes) else 0.0
        return col
    if role == "numeric":
        v = numeric_values(cols, name, source, coerce)
        missing = np.isnan(v)
        if missing.all():
            raise DataError(f"{source}: column {name!r} has no values in the training split")
        kept = v[~missing].astype(np.float64)
        col = Column(name, role, fill=[float(np.median(kept))], indicator=bool(missing.any()),
                     coerce=coerce)
        if transform == "quantile":
            q = np.quantile(kept, np.linspace(0, 1, min(1000, len(kept))))
            col.quantiles = [float(t) for t in q]
        return col
    t = as_datetime(cols, name, source, coerce)
    hours = t[~np.isnat(t)].astype("datetime64[h]").astype(np.int64) % 24
    parts = list(DATE_PARTS) + (["hour"] if (hours != 0).any() else [])
    values, missing = date_parts(t, parts)  # parsed once, above
    fill = np.median(values[~missing], axis=0) if (~missing).any() else np.zeros(len(parts))
    return Column(name, role, fill=[float(f) for f in fill], indicator=bool(missing.any()), parts=parts,
                  coerce=coerce)


def _encode_levels(cols: Columns, c: Column) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a categorical column under the fitted vocabulary, and which rows are missing."""
    codes, levels = factorize(cols, c.name)
    index = {lvl: i + 2 for i, lvl in enumerate(c.levels or [])}
    lookup = np.array([index.get(lvl, UNKNOWN) for lvl in levels] + [MISSING if c.missing else UNKNOWN],
                      dtype=np.int64)
    missing = codes < 0
    return lookup[np.where(missing, len(levels), codes)], missing


def _quantile_scores(v: np.ndarray, quantiles: list[float]) -> np.ndarray:
    """Values mapped through the training quantiles to normal scores (clipped to +-5.2)."""
    import torch

    q = np.asarray(quantiles)
    r = np.linspace(0, 1, len(q))
    # Ties (a value repeated over many quantiles) map to the middle of their range, as
    # scikit-learn's QuantileTransformer does by interpolating from both ends and averaging.
    u = 0.5 * (np.interp(v, q, r) - np.interp(-v, -q[::-1], -r[::-1]))
    u = np.clip(u, 1e-7, 1 - 1e-7)
    return torch.special.ndtri(torch.from_numpy(u)).numpy()
