"""Regression on one or more float targets, optionally trained on standardised targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, DataError
from ..metrics import Metric, RegressionMetrics
from .base import check_target


@dataclass
class RegressionTask:
    """Regression on one or more float targets, optionally trained on standardised targets.

    Args:
        n_targets: number of target columns.
        loss_name: "auto" (= mse), "mse", "l1" or "huber".
        mean, std: target statistics from the training split, or None for no scaling.
    """

    n_targets: int = 1
    loss_name: str = "auto"
    mean: list[float] | None = None
    std: list[float] | None = None
    name: str = "regression"

    def __post_init__(self) -> None:
        if self.loss_name not in ("auto", "mse", "l1", "huber"):
            raise ConfigError(f"loss {self.loss_name!r} does not fit a regression task")
        self._fn = {"auto": F.mse_loss, "mse": F.mse_loss, "l1": F.l1_loss,
                    "huber": F.huber_loss}[self.loss_name]
        self._scale: tuple[Tensor, Tensor] | None = None

    @property
    def out_features(self) -> int:
        return self.n_targets

    def fit_scaling(self, y: np.ndarray) -> None:
        """Take the target mean and standard deviation from the training split."""
        y = y.reshape(len(y), -1).astype(np.float64)
        std, mean, f32 = y.std(axis=0), y.mean(axis=0), np.finfo(np.float32)
        # saved with the model and checked against float32's range when it is loaded again
        if not (np.isfinite(std).all() and np.abs(mean).max() <= f32.max and std.max() <= f32.max):
            raise DataError(f"the target's values reach {np.abs(y).max():.3g}, beyond what float32 holds "
                            f"({f32.max:.3g}) around their mean: rescale the target")
        self.mean = mean.tolist()
        self.std = np.where(std >= f32.tiny, std, 1.0).tolist()  # (nearly) constant: unscaled
        self._scale = None

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        # float64 and cached per device: a target around 1e8 keeps its digits when unscaled.
        if self._scale is None or self._scale[0].device != like.device:
            m = torch.tensor(self.mean, dtype=torch.float64, device=like.device)
            s = torch.tensor(self.std, dtype=torch.float64, device=like.device)
            self._scale = (m, s)
        return self._scale

    def encode_target(self, y: np.ndarray, source: str = "target") -> Tensor:
        """Targets as a float32 (n, k) tensor, standardised when scaling was fitted."""
        y = np.asarray(y)
        if y.dtype.kind not in "iufb":
            raise DataError(f"{source} must be numeric for regression, got {y.dtype} values")
        check_target(y, source)
        y = y.reshape(len(y), -1).astype(np.float64)
        if y.shape[1] != self.n_targets:
            raise DataError(f"{source} has {y.shape[1]} columns, the model predicts {self.n_targets}")
        if self.mean is not None:
            y = (y - np.asarray(self.mean)) / np.asarray(self.std)
        return torch.from_numpy(y.astype(np.float32))

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        """Mean loss of a batch. Shape: out (n,) or (n, k); target (n, k)."""
        if out.ndim == 1:
            out = out.unsqueeze(-1)
        if target.ndim == 1:  # a Dataset/DataLoader yields (n,) targets: (n, 1) vs (n,) broadcasts
            target = target.unsqueeze(-1)
        return self._fn(out, target)

    def unscale(self, t: Tensor) -> Tensor:
        """Outputs or targets back in the original units, in float64 (float32 has 24 bits:
        a value near 1e8 would be rounded to a multiple of 8). Shape: (n,) or (n, k) -> (n, k).
        """
        if t.ndim == 1:
            t = t.unsqueeze(-1)
        if self.mean is None:
            return t.double()
        m, s = self._stats(t)
        return t.double() * s + m

    def metric_inputs(self, out: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        return self.unscale(out), self.unscale(target)

    def make_metrics(self) -> Metric:
        return RegressionMetrics()

    def decode(self, out: Tensor) -> np.ndarray:
        """Predictions in the original units. Shape: (n,) for one target, else (n, k)."""
        pred = self.unscale(out).cpu().double().numpy()
        return pred[:, 0] if self.n_targets == 1 else pred

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "n_targets": self.n_targets, "loss": self.loss_name,
                "mean": self.mean, "std": self.std}
