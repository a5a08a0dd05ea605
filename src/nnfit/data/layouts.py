"""Data layouts beyond rows of features: images, sequences and forecasting windows.

A table or an array of rows needs no layout: each row is a sample. The other kinds of data
need one more fitted, saved piece that knows how that kind is read, split and turned into
model inputs, here and again at evaluate and predict time:

* ``image`` (:mod:`.images`): a class-folder tree, image files, (N, C, H, W) / (N, H, W)
  arrays or a table of pixel columns, decoded once into one uint8 tensor.
* ``sequence`` (:mod:`.sequences`): (N, T, F) arrays, (N, T) token arrays, lists of
  variable-length sequences, or a long-format table (``sequence_id`` + ``time``).
* ``forecast`` (:mod:`.forecast`): one time-ordered table cut into windows (``time`` +
  ``window`` + ``horizon``).

A layout is saved as ``preprocess.layout`` in ``model.json`` (a dict with ``kind``), checked
by :data:`nnfit.io.validate.LAYOUT` before it is rebuilt. Which layout a fit uses is decided
once, by :func:`layout_kind`, from the data and the settings.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from ..errors import ConfigError
from .columns import IMAGE_SUFFIXES

if TYPE_CHECKING:
    from ..config import TrainConfig
    from ..tasks import Task
    from .sources import DataSource

# kind -> the module that implements it (imported on first use: Pillow only for images)
MODULES = {"image": "images", "sequence": "sequences", "forecast": "forecast"}
IMAGE_MODELS = ("cnn",)
SEQUENCE_MODELS = ("lstm", "gru")


class Layout(Protocol):
    """What a data layout does after training: rebuild later data the way it was fitted.

    ``pre`` is the fitted :class:`~nnfit.data.preprocess.Preprocessor` that holds the layout
    (it imports this module: the layout does not import it back).

    Each implementing module also has ``prepare(x, y, *, target, val, task, config, resumed)``
    returning a :class:`~nnfit.data.prepare.Prepared` whose preprocessor holds the layout,
    and ``from_dict(d)`` rebuilding a saved layout.
    """

    kind: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fitted state, with ``"kind"``."""

    def model_defaults(self, name: str) -> dict[str, Any]:
        """Spec keys a built-in model ``name`` takes from the data (``in_channels``,
        ``in_features``, ``embeddings``...); ConfigError for a family that cannot read it."""

    def inputs(self, pre: Any, x: Any, source: str,
               target: str | None) -> tuple[DataSource, str, dict[str, np.ndarray]]:
        """Unlabelled data as a source, its name for errors, and the columns that identify
        each output row in a prediction file (``path``, the sequence id, the time column)."""

    def labelled(self, pre: Any, task: Task, x: Any, y: Any, target: str | None,
                 source: str) -> tuple[DataSource, str]:
        """Labelled data as a source and its name for errors."""


def module(kind: str) -> Any:
    """The module implementing layout ``kind``."""
    return importlib.import_module(f"{__package__}.{MODULES[kind]}")


def from_dict(d: Mapping[str, Any]) -> Layout:
    """A saved layout (checked already against ``nnfit.io.validate.LAYOUT``)."""
    return module(d["kind"]).from_dict(d)


def is_image_path(x: Any) -> bool:
    """A directory (but one of Parquet files, a table), an image file, or a list of image files."""
    if isinstance(x, (str, Path)):
        from .stream_files import is_parquet_dir

        p = Path(x)
        return (p.is_dir() and not is_parquet_dir(p)) or p.suffix.lower() in IMAGE_SUFFIXES
    return (isinstance(x, (list, tuple)) and len(x) > 0
            and all(isinstance(v, (str, Path)) and Path(v).suffix.lower() in IMAGE_SUFFIXES for v in x))


def is_ragged(x: Any) -> bool:
    """A list of variable-length sequences (arrays or tensors whose first sizes differ)."""
    if not isinstance(x, (list, tuple)) or len(x) < 2 or isinstance(x[0], (str, Path)):
        return False
    lengths = {len(v) for v in x if hasattr(v, "__len__") and hasattr(v, "shape")}
    return len(lengths) > 1 and all(hasattr(v, "shape") for v in x)


def layout_kind(x: Any, config: TrainConfig, model: str | None) -> str | None:
    """The layout a fit of ``x`` with built-in model family ``model`` (None for a user's
    module) uses, or None for rows of features.

    Raises:
        ConfigError: settings that contradict each other, in one line.
    """
    if config.window and config.sequence_id is not None:
        raise ConfigError("--sequence-id together with --window is not supported yet: forecast one "
                          "series per run (drop --sequence-id), or classify whole sequences (drop --window)")
    if config.window:
        if config.time is None:
            raise ConfigError("--window needs --time COL, the column that orders the rows")
        if model is not None and model not in SEQUENCE_MODELS:  # before any data is read
            raise ConfigError(f"--window makes windows of {config.window} rows, which model {model!r} cannot "
                              "read: use --model lstm or gru, or a module of your own")
        return "forecast"
    if config.sequence_id is not None:
        if config.time is None:
            raise ConfigError("--sequence-id needs --time COL, the column that orders each sequence's rows")
        if model is not None and model not in SEQUENCE_MODELS:  # before any data is read
            raise ConfigError(f"--sequence-id makes sequences, which model {model!r} cannot read: use "
                              "--model lstm or gru, or a module of your own")
        return "sequence"
    if config.time is not None:
        raise ConfigError("--time needs --window W, W >= 1 (forecasting from the W rows before each "
                          "forecast; 0 is no forecasting), or --sequence-id COL (sequences)")
    if is_image_path(x) or model in IMAGE_MODELS:
        if model is not None and model not in IMAGE_MODELS:  # before any image is decoded
            raise ConfigError(f"model {model!r} cannot read images: use --model cnn (\"cnn\" in the "
                              "API), or a module of your own")
        return "image"
    if is_ragged(x) or model in SEQUENCE_MODELS:
        return "sequence"
    return None
