"""nnfit: build, train, evaluate, save, load and inspect PyTorch models.

The curated public API. Everything here works on plain ``torch.nn.Module`` objects.

Example:
    >>> import numpy as np, nnfit
    >>> x, y = np.random.rand(100, 4), np.random.rand(100) > 0.5
    >>> learner = nnfit.fit(nnfit.MLP(4, [16], 1), x, y, epochs=3, quiet=True)
    >>> sorted(learner.evaluate(x, y))[:2]
    ['accuracy', 'confusion_matrix']
"""

from __future__ import annotations

__version__ = "0.2.0"

# typing.TYPE_CHECKING without importing typing: some 4 ms before the `nnfit` command can
# install its signal handlers (nnfit.cli), and a Ctrl-C then must not end in a traceback.
TYPE_CHECKING = False

# Loaded on first use (PEP 562), not here: `import nnfit` must not import torch, so that the
# `nnfit` command handles Ctrl-C from its first line on (see nnfit.cli.run) and `--help` is
# instant. Each public name -> the submodule defining it.
_SOURCES = {
    "models": "", "Callback": "callbacks", "CSVLogger": "callbacks", "History": "callbacks",
    "LambdaCallback": "callbacks", "ProgressBar": "callbacks",
    "load_weights": "checkpoint", "save_weights": "checkpoint",
    "DataConfig": "config", "ModelConfig": "config", "RunConfig": "config", "TrainConfig": "config",
    "DataSource": "data", "LoaderData": "data", "StreamData": "data", "TensorData": "data",
    "CheckpointError": "errors", "ConfigError": "errors", "DataError": "errors", "NnfitError": "errors",
    "Learner": "learner", "fit": "learner", "load": "loading",
    "LRFindResult": "lr_range", "lr_find": "lr_range",
    "ClassificationMetrics": "metrics", "Metric": "metrics", "RegressionMetrics": "metrics",
    "MLP": "models", "MultiInput": "models", "ResidualBlock": "models", "ResidualMLP": "models",
    "CNN": "models", "LSTM": "models", "GRU": "models", "build_model": "models",
    "Runtime": "runtime", "make_runtime": "runtime",
    "capture_activations": "summary", "count_parameters": "summary", "parameter_shapes": "summary",
    "summarize": "summary",
    "FitState": "state", "Trainer": "trainer", "CustomTask": "tasks",
}


def __getattr__(name: str) -> Any:
    import importlib
    import importlib.util

    where = _SOURCES.get(name)
    if where is None:  # a submodule, as `nnfit.metrics.ClassificationMetrics` reads it
        if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module 'nnfit' has no attribute {name!r}")
        return importlib.import_module(f"{__name__}.{name}")
    value = importlib.import_module(f"{__name__}.{where or name}")
    if where:
        value = getattr(value, name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SOURCES))


if TYPE_CHECKING:  # what type checkers and IDEs see
    from typing import Any

    from . import models
    from .callbacks import Callback, CSVLogger, History, LambdaCallback, ProgressBar
    from .checkpoint import load_weights, save_weights
    from .config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from .data import DataSource, LoaderData, StreamData, TensorData
    from .errors import CheckpointError, ConfigError, DataError, NnfitError
    from .learner import Learner, fit
    from .loading import load
    from .lr_range import LRFindResult, lr_find
    from .metrics import ClassificationMetrics, Metric, RegressionMetrics
    from .models import CNN, GRU, LSTM, MLP, MultiInput, ResidualBlock, ResidualMLP, build_model
    from .runtime import Runtime, make_runtime
    from .summary import capture_activations, count_parameters, parameter_shapes, summarize
    from .tasks import CustomTask
    from .trainer import FitState, Trainer

__all__ = [
    "__version__", "models",
    "fit", "load", "Learner", "Trainer", "FitState", "History", "lr_find", "LRFindResult",
    "TrainConfig", "ModelConfig", "DataConfig", "RunConfig",
    "MLP", "ResidualMLP", "ResidualBlock", "MultiInput", "CNN", "LSTM", "GRU", "build_model",
    "Callback", "ProgressBar", "CSVLogger", "LambdaCallback",
    "Metric", "ClassificationMetrics", "RegressionMetrics", "CustomTask",
    "DataSource", "TensorData", "LoaderData", "StreamData",
    "save_weights", "load_weights",
    "summarize", "count_parameters", "parameter_shapes", "capture_activations",
    "Runtime", "make_runtime",
    "NnfitError", "ConfigError", "DataError", "CheckpointError",
]
