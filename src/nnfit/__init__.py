"""nnfit: build, train, evaluate, save, load and inspect PyTorch models.

The curated public API. Everything here works on plain ``torch.nn.Module`` objects.

Example:
    >>> import numpy as np, nnfit
    >>> x, y = np.random.rand(100, 4), np.random.rand(100) > 0.5
    >>> learner = nnfit.fit(nnfit.MLP(4, [16], 1), x, y, epochs=3, quiet=True)
    >>> sorted(learner.evaluate(x, y))[:2]
    ['accuracy', 'confusion_matrix']
"""

__version__ = "0.1.0"

from . import models  # noqa: E402
from .callbacks import Callback, CSVLogger, History, LambdaCallback, ProgressBar  # noqa: E402
from .checkpoint import load_weights, save_weights  # noqa: E402
from .config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from .data import DataSource, LoaderData, TensorData  # noqa: E402
from .errors import CheckpointError, ConfigError, DataError, NnfitError  # noqa: E402
from .learner import Learner, fit, load  # noqa: E402
from .metrics import ClassificationMetrics, Metric, RegressionMetrics  # noqa: E402
from .models import MLP, MultiInput, ResidualBlock, ResidualMLP, build_model  # noqa: E402
from .runtime import Runtime, make_runtime  # noqa: E402
from .summary import capture_activations, count_parameters, parameter_shapes, summarize  # noqa: E402
from .trainer import FitState, Trainer  # noqa: E402

__all__ = [
    "__version__", "models",
    "fit", "load", "Learner", "Trainer", "FitState", "History",
    "TrainConfig", "ModelConfig", "DataConfig", "RunConfig",
    "MLP", "ResidualMLP", "ResidualBlock", "MultiInput", "build_model",
    "Callback", "ProgressBar", "CSVLogger", "LambdaCallback",
    "Metric", "ClassificationMetrics", "RegressionMetrics",
    "DataSource", "TensorData", "LoaderData",
    "save_weights", "load_weights",
    "summarize", "count_parameters", "parameter_shapes", "capture_activations",
    "Runtime", "make_runtime",
    "NnfitError", "ConfigError", "DataError", "CheckpointError",
]
