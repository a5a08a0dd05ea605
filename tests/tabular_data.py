"""Generated tables with the traits of the first CSVs people train on, and their baselines.

Seeded NumPy only, no downloads. Each generator returns a :class:`Generated`: the pandas
DataFrame, its target column and, for binary tables, each row's true ``P(y=1)``, so a test set's
Bayes rate is known exactly. ``Generated.split`` cuts train/test rows from one draw (same
per-level effects), and ``write`` saves CSV or Parquet (missing cells empty / null).

- :func:`house_prices`: California-housing-like regression (ids, ~1% gaps in
  ``total_bedrooms``, a 5-level ``ocean_proximity`` with real signal, an ISO date with a trend).
- :func:`passengers`: Titanic-like survival (ids, unique names, near-unique tickets and cabins,
  ~20% missing ages, ~77% missing cabins whose missingness carries signal, 2 missing ports).
- :func:`categorical_signal`: the label depends only on a 40-level string column; the numeric
  columns are noise, so they alone cannot beat the base rate.
- :func:`mixed_dtypes`: bool, pandas ``category`` and mixed-object columns for API tests.

The scikit-learn baselines (:func:`logistic_baseline`, :func:`hgb_baseline`) are the usual
notebook pipelines; the accuracy tests and ``benchmarks/tables.py`` both score against them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

OCEAN_LEVELS = ["<1H OCEAN", "INLAND", "NEAR OCEAN", "NEAR BAY", "ISLAND"]
# Additive effect of ocean_proximity on log(value), beyond what longitude/latitude tell.
OCEAN_EFFECT = {"<1H OCEAN": 0.0, "INLAND": -0.35, "NEAR OCEAN": 0.12, "NEAR BAY": 0.18, "ISLAND": 0.6}
# Cities whose vicinity raises prices: (longitude, latitude, log-price premium, radius in degrees).
CITIES = [(-122.3, 37.8, 0.55, 0.45), (-118.25, 34.05, 0.35, 0.5), (-117.15, 32.72, 0.25, 0.3),
          (-121.5, 38.6, 0.1, 0.35), (-119.8, 36.75, 0.0, 0.4)]
# Logistic model of survival (log-odds); ages enter before they are hidden.
PASSENGER_COEF = {"intercept": -1.3, "female": 2.6, "class2": -0.9, "class3": -2.0,
                  "age_per_year": -0.035, "child": 1.2, "family_1_3": 0.35, "family_5_plus": -1.3,
                  "log1p_fare": 0.2, "has_cabin": 0.7, "embarked_C": 0.35, "embarked_Q": 0.1}


@dataclass(frozen=True)
class Generated:
    """A generated table: ``frame``, its ``target`` column and the true P(y=1) per row.

    Attributes:
        frame: the table, dtypes as ``pandas.read_csv`` would give (missing cells NaN).
        target: the target column's name.
        p: true ``P(y=1)`` per row for binary tables (None for regression). For
            :func:`passengers` it includes the ages that are later hidden, so its Bayes rate
            is an upper bound on what the observed columns allow.
    """

    frame: pd.DataFrame
    target: str
    p: np.ndarray | None = None

    def split(self, n_train: int) -> tuple[Generated, Generated]:
        """The first ``n_train`` rows and the rest (ids stay as drawn, like a Kaggle test file)."""
        def part(rows: slice) -> Generated:
            p = None if self.p is None else self.p[rows]
            return Generated(self.frame.iloc[rows].reset_index(drop=True), self.target, p)
        return part(slice(0, n_train)), part(slice(n_train, None))

    def bayes_rate(self) -> float:
        """Expected accuracy of the best possible classifier: mean over rows of max(p, 1 - p)."""
        if self.p is None:
            raise ValueError("a regression table has no Bayes rate")
        return float(np.maximum(self.p, 1 - self.p).mean())

    def write(self, path: str | Path) -> Path:
        """Write the frame to ``path``: Parquet for ``.parquet``, else CSV (gaps empty)."""
        path = Path(path)
        if path.suffix == ".parquet":
            self.frame.to_parquet(path, index=False)
        else:
            self.frame.to_csv(path, index=False)
        return path


def house_prices(n: int = 20_640, *, seed: int = 0) -> Generated:
    """California-housing-like regression on ``median_house_value`` (dollars, capped at 500,001).

    log(value) is a known nonlinear function of income (concave), location (bumps around
    cities, a drop with distance from the coast), ``ocean_proximity`` (:data:`OCEAN_EFFECT`,
    10% of labels drawn at random so the column adds information of its own), house age
    (U-shaped), rooms and bedrooms per household, occupancy and a sale-date trend
    (+2.5%/year), plus noise with standard deviation 0.25.

    Args:
        n: rows. seed: the draw.

    Returns:
        columns ``id`` (1..n, the row number), ``longitude``, ``latitude``,
        ``housing_median_age``, ``total_rooms``, ``total_bedrooms`` (~1% missing),
        ``population``, ``households``, ``median_income``, ``median_house_value``,
        ``ocean_proximity`` (5 strings; ``ISLAND`` rare), ``sale_date`` (ISO text, 2010-2019).
    """
    rng = np.random.default_rng(seed)
    lon, lat = _locations(rng, n)
    inland = lon - _coast_longitude(lat)
    ocean = np.where(inland < 0.15, "NEAR OCEAN", np.where(inland < 1.2, "<1H OCEAN", "INLAND"))
    ocean = np.where((ocean == "NEAR OCEAN") & (np.hypot(lon + 122.3, lat - 37.8) < 0.6), "NEAR BAY", ocean)
    relabel = rng.random(n) < 0.10
    ocean = np.where(relabel, rng.choice(OCEAN_LEVELS[:4], n), ocean).astype(object)
    ocean[rng.random(n) < 0.0006] = "ISLAND"
    age = np.minimum(rng.integers(1, 60, n), 52)
    households = np.maximum(np.round(rng.lognormal(np.log(410), 0.6, n)), 2)
    rooms_per = rng.lognormal(np.log(5.2), 0.25, n)
    beds_per = rng.lognormal(np.log(1.05), 0.1, n)
    occupancy = rng.lognormal(np.log(2.9), 0.3, n)
    coastal = np.exp(-np.clip(inland, 0, None))
    income = np.clip(rng.lognormal(np.log(3.2) + 0.25 * coastal, 0.42, n), 0.5, 15.0)
    days = rng.integers(0, 3652, n)
    log_value = (10.8 + 0.9 * np.log(income) + 0.05 * income
                 + sum(premium * np.exp(-((lon - cx) ** 2 + (lat - cy) ** 2) / r ** 2)
                       for cx, cy, premium, r in CITIES)
                 - 0.2 * np.minimum(np.clip(inland, 0, None), 3.0)
                 + np.vectorize(OCEAN_EFFECT.get)(ocean)
                 + 0.00025 * (age - 25) ** 2 + 0.25 * np.log(rooms_per / 5.2)
                 - 1.0 * (beds_per / rooms_per - 0.2) - 0.15 * np.log(occupancy / 2.9)
                 + 0.025 * days / 365.25 + rng.normal(0, 0.25, n))
    bedrooms = np.round(households * beds_per)
    bedrooms[rng.random(n) < 0.01] = np.nan
    return Generated(pd.DataFrame({
        "id": np.arange(1, n + 1),
        "longitude": lon.round(2), "latitude": lat.round(2),
        "housing_median_age": age.astype(float),
        "total_rooms": np.round(households * rooms_per), "total_bedrooms": bedrooms,
        "population": np.round(households * occupancy), "households": households,
        "median_income": income.round(4),
        "median_house_value": np.clip(np.round(np.exp(log_value), -2), 14_999, 500_001),
        "ocean_proximity": ocean,
        "sale_date": (np.datetime64("2010-01-01") + days).astype(str).astype(object),
    }), "median_house_value")


def _coast_longitude(lat: np.ndarray) -> np.ndarray:
    """The California coast's longitude at ``lat``, piecewise linear from San Diego to Oregon."""
    return np.interp(lat, [32.5, 34.0, 34.5, 36.0, 37.8, 40.4, 42.0],
                     [-117.1, -118.6, -120.6, -121.9, -122.5, -124.4, -124.2])


def _locations(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Longitudes/latitudes clustered around :data:`CITIES` (80%) over a uniform background."""
    city = rng.integers(0, len(CITIES), n)
    centre = np.array([c[:2] for c in CITIES])[city]
    spread = np.array([c[3] for c in CITIES])[city, None]
    clustered = centre + rng.normal(0, 1, (n, 2)) * spread
    background = np.column_stack([rng.uniform(-124.3, -114.3, n), rng.uniform(32.5, 42.0, n)])
    lon, lat = np.where((rng.random(n) < 0.8)[:, None], clustered, background).T
    lat = np.clip(lat, 32.5, 42.0)
    coast = _coast_longitude(lat)
    lon = np.minimum(coast + np.abs(lon - coast) + 0.01, -114.3)  # nobody lives in the sea
    return lon, lat


_SYLLABLES = ["an", "ber", "car", "den", "el", "fin", "gar", "hol", "is", "jen", "kel", "lar", "mor",
              "nel", "os", "per", "quin", "ros", "sten", "tor", "ul", "van", "wes", "yor", "zel",
              "bra", "cla", "dro", "fra", "gri"]
_MALE = ["John", "William", "James", "Charles", "George", "Thomas", "Edward", "Henry", "Joseph",
         "Frederick", "Arthur", "Albert", "Richard", "Walter", "Harry", "Alfred", "Ernest", "Karl"]
_FEMALE = ["Mary", "Anna", "Margaret", "Elizabeth", "Helen", "Alice", "Florence", "Ellen", "Emily",
           "Edith", "Bertha", "Clara", "Ida", "Agnes", "Marion", "Kate", "Elin", "Hilda"]


def passengers(n: int = 891, *, seed: int = 0) -> Generated:
    """Titanic-like survival: ``Survived`` drawn from :data:`PASSENGER_COEF`'s logistic model.

    Args:
        n: rows (891 like Kaggle's train.csv; the accuracy tests use ~5,000). seed: the draw.

    Returns:
        Kaggle's columns: ``PassengerId`` (1..n), ``Survived`` (0/1), ``Pclass`` (1-3),
        ``Name`` (unique), ``Sex``, ``Age`` (~20% missing, more in 3rd class), ``SibSp``,
        ``Parch``, ``Ticket`` (near-unique; families share), ``Fare``, ``Cabin`` (~77%
        missing, near-unique), ``Embarked`` (S/C/Q, 2 missing per 891 rows).
    """
    rng = np.random.default_rng(seed)
    pclass = rng.choice([1, 2, 3], n, p=[0.24, 0.21, 0.55])
    female = rng.random(n) < 0.35
    age = np.clip(rng.normal(np.select([pclass == 1, pclass == 2], [38.0, 30.0], 25.0), 13.0), 0.42, 80.0)
    age = np.where(age < 1, age.round(2), np.round(age * 2) / 2)
    sibsp = rng.choice([0, 1, 2, 3, 4, 5, 8], n, p=[0.68, 0.23, 0.035, 0.02, 0.02, 0.01, 0.005])
    parch = np.where(age < 14, rng.choice([1, 2], n), rng.choice([0, 1, 2, 3, 4, 5], n,
                                                              p=[0.84, 0.09, 0.055, 0.005, 0.005, 0.005]))
    family = sibsp + parch
    fare_mean = np.select([pclass == 1, pclass == 2], [60.0, 15.0], 8.5)
    fare = rng.lognormal(np.log(fare_mean), 0.45, n) * (1 + family) ** 0.5
    fare = np.where(rng.random(n) < 0.015, 0.0, fare.round(4))
    has_cabin = rng.random(n) < np.select([pclass == 1, pclass == 2], [0.8, 0.12], 0.05)
    embarked = _embarked(rng, pclass)
    c = PASSENGER_COEF
    logit = (c["intercept"] + c["female"] * female + c["class2"] * (pclass == 2)
             + c["class3"] * (pclass == 3) + c["age_per_year"] * (age - 30) + c["child"] * (age < 10)
             + c["family_1_3"] * ((family >= 1) & (family <= 3)) + c["family_5_plus"] * (family >= 5)
             + c["log1p_fare"] * np.log1p(fare) + c["has_cabin"] * has_cabin
             + c["embarked_C"] * (embarked == "C") + c["embarked_Q"] * (embarked == "Q"))
    p = 1 / (1 + np.exp(-logit))
    survived = (rng.random(n) < p).astype(np.int64)
    shown_age = np.where(rng.random(n) < np.where(pclass == 3, 0.27, 0.12), np.nan, age)
    embarked = embarked.astype(object)
    embarked[rng.choice(n, max(1, round(n * 2 / 891)), replace=False)] = np.nan
    return Generated(pd.DataFrame({
        "PassengerId": np.arange(1, n + 1), "Survived": survived, "Pclass": pclass,
        "Name": _names(rng, female, age), "Sex": np.where(female, "female", "male").astype(object),
        "Age": shown_age, "SibSp": sibsp, "Parch": parch, "Ticket": _tickets(rng, pclass, family),
        "Fare": fare, "Cabin": _cabins(rng, pclass, has_cabin), "Embarked": embarked,
    }), "Survived", p)


def _embarked(rng: np.random.Generator, pclass: np.ndarray) -> np.ndarray:
    """Port per passenger; first class boarded at Cherbourg more often, third at Queenstown."""
    probs = {1: [0.59, 0.39, 0.02], 2: [0.89, 0.09, 0.02], 3: [0.66, 0.14, 0.20]}
    out = np.empty(len(pclass), dtype="<U1")
    for k, pk in probs.items():
        rows = pclass == k
        out[rows] = rng.choice(["S", "C", "Q"], rows.sum(), p=pk)
    return out


def _names(rng: np.random.Generator, female: np.ndarray, age: np.ndarray) -> np.ndarray:
    """``Surname, Title. Given`` free text, made unique by adding middle initials."""
    n = len(female)
    surname = np.array(["".join(rng.choice(_SYLLABLES, rng.integers(2, 4))).capitalize() for _ in range(n)])
    given = np.where(female, rng.choice(_FEMALE, n), rng.choice(_MALE, n))
    married = female & (age >= 18) & (rng.random(n) < 0.6)
    title = np.select([~female & (age < 13), ~female, married], ["Master", "Mr", "Mrs"], "Miss")
    names = pd.Series([f"{s}, {t}. {g}" for s, t, g in zip(surname, title, given, strict=True)])
    while (dup := names.duplicated()).any():
        names[dup] = names[dup] + " " + pd.Series(rng.choice(list("ABCDEFGHJKLMNOPRSTW"), n))[dup] + "."
    return names.to_numpy(dtype=object)


def _tickets(rng: np.random.Generator, pclass: np.ndarray, family: np.ndarray) -> np.ndarray:
    """Ticket numbers in Kaggle's styles; half of those travelling with family share one."""
    n = len(pclass)
    number = rng.integers(1_000, 400_000, n).astype(str)
    prefix = np.where(pclass == 1, rng.choice(["", "PC "], n, p=[0.6, 0.4]),
                      rng.choice(["", "A/5 ", "STON/O2. ", "CA ", "SOTON/OQ "], n,
                                 p=[0.7, 0.1, 0.08, 0.07, 0.05]))
    tickets = np.char.add(prefix, number).astype(object)
    share = (family > 0) & (rng.random(n) < 0.5)
    share[0] = False
    for i in np.flatnonzero(share):
        tickets[i] = tickets[i - 1]
    return tickets


def _cabins(rng: np.random.Generator, pclass: np.ndarray, has_cabin: np.ndarray) -> np.ndarray:
    """Deck letter by class and a room number (some list several rooms); NaN without one."""
    n = len(pclass)
    deck = np.where(pclass == 1, rng.choice(list("ABCDE"), n),
                    np.where(pclass == 2, rng.choice(list("DEF"), n), rng.choice(list("EFG"), n)))
    room = rng.integers(1, 149, n)
    cabins = np.char.add(deck, room.astype(str)).astype(object)
    several = rng.random(n) < 0.1
    cabins[several] = [f"{c} {c[0]}{r + 2}" for c, r in zip(cabins[several], room[several], strict=True)]
    cabins[~has_cabin] = np.nan
    return cabins


def categorical_signal(n: int, *, seed: int = 0, levels: int = 40, noise_columns: int = 5) -> Generated:
    """Binary target set by a ``levels``-level string column ``store``; numeric columns are noise.

    Each level's ``P(y=1)`` is drawn uniformly from [0.05, 0.95] and its frequency from a
    Dirichlet(8) (levels differ in size, none rare at a few thousand rows); the columns
    ``x0..`` are standard normal and independent of everything. So numeric columns alone
    reach only the base rate, and the Bayes rate (:meth:`Generated.bayes_rate`, ~0.72) needs
    the categorical column.
    """
    rng = np.random.default_rng(seed)
    level_p = rng.uniform(0.05, 0.95, levels)
    names = np.array([f"store_{k:02d}" for k in range(levels)], dtype=object)
    level = rng.choice(levels, n, p=rng.dirichlet(np.full(levels, 8.0)))
    p = level_p[level]
    columns = {f"x{j}": rng.standard_normal(n).round(5) for j in range(noise_columns)}
    return Generated(pd.DataFrame({**columns, "store": names[level],
                                   "y": (rng.random(n) < p).astype(np.int64)}), "y", p)


def mixed_dtypes(n: int, *, seed: int = 0) -> Generated:
    """A DataFrame with a ``bool``, a pandas ``category`` and a mixed-object column, all with signal.

    Columns: ``flag`` (bool), ``grade`` (category ``low/mid/high``), ``code`` (object:
    the strings ``"A"``, ``"B"``, the int ``7``, the float ``2.5`` and None), ``x``
    (float) and the binary target ``y``. ``code`` cannot be written to Parquet (pyarrow
    refuses mixed objects): it is for the Python API.
    """
    rng = np.random.default_rng(seed)
    flag = rng.random(n) < 0.4
    grade = rng.choice(["low", "mid", "high"], n, p=[0.3, 0.4, 0.3])
    code_values = np.array(["A", "B", 7, 2.5, None], dtype=object)
    code_index = rng.choice(5, n)
    x = rng.standard_normal(n)
    logit = (1.2 * flag + np.select([grade == "low", grade == "high"], [-1.0, 1.0], 0.0)
             + np.array([0.8, -0.8, 0.4, -0.4, 0.0])[code_index] + 0.5 * x - 0.3)
    p = 1 / (1 + np.exp(-logit))
    return Generated(pd.DataFrame({
        "flag": flag, "grade": pd.Categorical(grade, categories=["low", "mid", "high"]),
        "code": code_values[code_index], "x": x.round(5), "y": (rng.random(n) < p).astype(np.int64),
    }), "y", p)


def _notebook_features(frame: pd.DataFrame, drop: Sequence[str], categorical: Sequence[str]) -> pd.DataFrame:
    """``frame`` less ``drop``, ISO dates as fractional years, ``categorical`` columns as text.

    scikit-learn takes no dates, and its encoders refuse a column mixing str, int and None.
    """
    out = frame.drop(columns=[c for c in drop if c in frame.columns])
    for col in out.columns:
        if col in categorical:
            out[col] = out[col].astype(object).map(str, na_action="ignore").where(out[col].notna(), np.nan)
        elif pd.api.types.is_string_dtype(out[col]) and out[col].astype(str).str.fullmatch(
                r"\d{4}-\d{2}-\d{2}").all():
            dates = pd.to_datetime(out[col])
            out[col] = dates.dt.year + dates.dt.day_of_year / 366
    return out


def _notebook_columns(train: pd.DataFrame, drop: Sequence[str]) -> tuple[list[str], list[str]]:
    """(numeric, categorical) columns by dtype, as a notebook's selector would; dates numeric."""
    x = _notebook_features(train, drop, ())
    numeric = [c for c in x.columns
               if pd.api.types.is_numeric_dtype(x[c]) and not pd.api.types.is_bool_dtype(x[c])]
    return numeric, [c for c in x.columns if c not in numeric]


def logistic_baseline(train: pd.DataFrame, target: str, *, drop: Sequence[str] = ()):
    """Fit the notebook pipeline: median-impute + standardise numerics, one-hot the rest.

    Args:
        train: the training frame (as ``pandas.read_csv`` reads the file).
        target: the label column.
        drop: columns a notebook drops (ids, names, tickets).

    Returns:
        a fitted scikit-learn Pipeline; ``predict(frame)`` takes frames with the same columns.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FunctionTransformer, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric, categorical = _notebook_columns(train, [target, *drop])
    encode = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value="missing"),
                              OneHotEncoder(handle_unknown="ignore")), categorical)])
    features = FunctionTransformer(_notebook_features,
                                   kw_args={"drop": [target, *drop], "categorical": categorical})
    return make_pipeline(features, encode, LogisticRegression(max_iter=2000)).fit(train, train[target])


def hgb_baseline(train: pd.DataFrame, target: str, *, drop: Sequence[str] = ()):
    """Fit scikit-learn's HistGradientBoosting (defaults) with native categorical support.

    Non-numeric columns are ordinal-encoded (unknown and missing levels as NaN, at most 250
    levels: the rarest grouped) and declared categorical; dates become fractional years. A
    float target gets the regressor, any other the classifier.

    Args:
        train: the training frame (as ``pandas.read_csv`` reads the file).
        target: the target column.
        drop: columns a notebook drops (ids, names, tickets).

    Returns:
        a fitted scikit-learn Pipeline.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.pipeline import FunctionTransformer, make_pipeline
    from sklearn.preprocessing import OrdinalEncoder

    numeric, categorical = _notebook_columns(train, [target, *drop])
    encode = ColumnTransformer([
        ("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan,
                               max_categories=250), categorical),
        ("num", "passthrough", numeric)])
    regression = train[target].dtype.kind == "f"
    estimator = (HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier)(
        categorical_features=[True] * len(categorical) + [False] * len(numeric), random_state=0)
    features = FunctionTransformer(_notebook_features,
                                   kw_args={"drop": [target, *drop], "categorical": categorical})
    return make_pipeline(features, encode, estimator).fit(train, train[target])
