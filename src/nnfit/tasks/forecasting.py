"""Forecasting: regression on one series' next values, evaluated beside two baselines.

A forecasting task is a regression task whose encoded targets carry three columns per
forecast row ``i`` (built by :mod:`nnfit.data.forecast`): the value to forecast ``y[i]``,
the naive forecast ``y[i-H]`` (the last value observed ``H`` rows before) and the seasonal
naive forecast ``y[i-k*P]`` (the same season ``k`` periods back, ``k`` the smallest with
``k*P >= H``; NaN where that row is not in the data). The loss reads the first column only;
the metrics compare the model and both baselines against it in the one evaluation pass, on
the device, so every forecasting evaluation says at once whether the network earns its keep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from ..metrics import Metric, RegressionMetrics
from .base import check_target
from .regression import RegressionTask

# The encoded target's columns: the value, the naive and the seasonal-naive forecast.
TARGET_COLUMNS = 3


def seasonal_lag(horizon: int, season: int) -> int:
    """Rows back to the seasonal-naive forecast: the smallest multiple of ``season`` that is
    at least ``horizon`` (a forecast never reads a row later than ``i - horizon``).

    Example:
        >>> seasonal_lag(1, 7), seasonal_lag(7, 7), seasonal_lag(8, 7)
        (7, 7, 14)
    """
    return math.ceil(horizon / season) * season


@dataclass
class ForecastTask(RegressionTask):
    """One series' value ``horizon`` rows ahead, reported beside the naive and seasonal-naive
    baselines.

    Args:
        n_targets: 1 (one series is forecast).
        loss_name: "auto" (= mse), "mse", "l1" or "huber"; applied to the value column only.
        mean, std: target statistics from the training part, or None for no scaling; the
            baseline columns are scaled alike.
        season: the seasonal-naive period P in rows, or None when unknown (its metrics are
            then null).

    Shape:
        - encoded target: (n, 3): value, naive, seasonal naive (NaN where not available).
        - output: (n,) or (n, 1).

    Example:
        >>> task = ForecastTask(season=7)
        >>> t = task.encode_target(np.array([[3.0, 2.0, float("nan")]]))
        >>> float(task.loss(torch.tensor([2.0]), t))
        1.0
    """

    season: int | None = None
    name: str = "forecast"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_targets != 1:
            raise ConfigError(f"forecasting predicts one series, got n_targets={self.n_targets}")
        if self.season is not None and self.season < 1:
            raise ConfigError(f"season must be >= 1 rows, got {self.season}")

    def encode_target(self, y: np.ndarray, source: str = "target") -> Tensor:
        """The (n, 3) value and baseline columns as a float32 tensor, scaled as the value.

        Raises:
            DataError: another shape, or a missing value or baseline (the seasonal column may
                hold NaN: no seasonal forecast for that row).
        """
        y = np.asarray(y)
        if y.ndim != 2 or y.shape[1] != TARGET_COLUMNS or y.dtype.kind not in "iuf":
            raise DataError(f"{source}: forecasting targets are (rows, 3) numbers: the value, the naive "
                            f"and the seasonal-naive forecast, got {y.dtype} {tuple(y.shape)}")
        y = y.astype(np.float64)
        check_target(y[:, :2], source)
        if self.mean is not None:
            y = (y - self.mean[0]) / self.std[0]
        return torch.from_numpy(y.astype(np.float32))

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        """Mean loss of the forecasts against the value column. Shape: out (n,) or (n, 1)."""
        return self._fn(out.reshape(-1, 1), target[:, :1])

    def make_metrics(self) -> Metric:
        return ForecastMetrics(self.season)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "season": self.season}


class ForecastMetrics(Metric):
    """MSE, RMSE, MAE and R² of the forecasts, with the MAE and RMSE of the naive and the
    seasonal-naive forecast on the same rows, accumulated on the device.

    ``seasonal_naive_mae`` and ``seasonal_naive_rmse`` are None when the season is unknown or
    when any evaluated row has no seasonal forecast (too few rows before it in its data):
    a baseline over part of the rows would not compare with the model's.

    Args:
        season: the seasonal period in rows (reported as ``season``), or None.

    Shape:
        - output: (n, 1) forecasts; target: (n, 3) value, naive, seasonal naive (NaN: none).

    Example:
        >>> m = ForecastMetrics(season=2)
        >>> m.update(torch.tensor([[1.0], [2.0]]), torch.tensor([[1.0, 0.0, 1.0], [3.0, 1.0, 2.0]]))
        >>> {k: m.compute()[k] for k in ("mae", "naive_mae", "seasonal_naive_mae")}
        {'mae': 0.5, 'naive_mae': 1.5, 'seasonal_naive_mae': 0.5}
    """

    def __init__(self, season: int | None = None) -> None:
        self.season = season
        self.reset()

    def reset(self) -> None:
        self._model, self._naive, self._seasonal = (RegressionMetrics() for _ in range(3))
        self._gaps: Tensor | None = None  # rows without a seasonal forecast, on the device

    def update(self, output: Tensor, target: Tensor) -> None:
        """Add one batch, without a host sync."""
        y = target[:, :1]
        self._model.update(output.reshape(-1, 1), y)
        self._naive.update(target[:, 1:2], y)
        seasonal = target[:, 2:3]
        gap = torch.isnan(seasonal)
        # A row without one counts as a gap (the baseline is then null) and adds nothing.
        self._seasonal.update(torch.where(gap, y, seasonal), y)
        gaps = gap.sum()
        self._gaps = gaps if self._gaps is None else self._gaps + gaps

    def compute(self) -> dict[str, float | list]:
        """The model's metrics, then ``naive_mae``, ``naive_rmse``, ``seasonal_naive_mae``,
        ``seasonal_naive_rmse`` and ``season``; a few host syncs, once per evaluation.

        Raises:
            ValueError: ``"no samples"`` when nothing was accumulated.
        """
        out: dict[str, Any] = self._model.compute()
        naive = self._naive.compute()
        out.update(naive_mae=naive["mae"], naive_rmse=naive["rmse"])
        seasonal = None
        if self.season is not None and self._gaps is not None and int(self._gaps) == 0:
            seasonal = self._seasonal.compute()
        out.update(seasonal_naive_mae=None if seasonal is None else seasonal["mae"],
                   seasonal_naive_rmse=None if seasonal is None else seasonal["rmse"],
                   season=self.season)
        return out
