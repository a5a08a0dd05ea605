"""``nnfit.load``: one entry for everything nnfit writes that predicts: a saved model, a run
directory, a sweep's member, best or ensemble directory (told apart by the manifest's kind,
and each checked whole before anything is built)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from .errors import ConfigError
from .learner import Learner

if TYPE_CHECKING:
    from .sweep.ensemble import Ensemble


def load(path: str | Path, model: nn.Module | None = None, *, device: str = "auto",
         loss: Callable | None = None) -> Learner | Ensemble:
    """Load a model saved by :meth:`Learner.save`, a ``nnfit train`` run directory or a
    sweep's ensemble directory (an :class:`~nnfit.sweep.ensemble.Ensemble`, which predicts and
    evaluates as a Learner does); arguments as :meth:`Learner.load` (``loss``: a custom-loss
    model's function, to evaluate it).

    Raises:
        ConfigError: ``path`` is a sweep's own folder (naming what in it loads).
        CheckpointError: as :meth:`Learner.load`.

    Example:
        >>> learner = nnfit.load("runs/breast_cancer-1")  # doctest: +SKIP
        >>> learner.predict(x)  # doctest: +SKIP
    """
    from .sweep.ensemble import Ensemble, is_ensemble_dir

    p = Path(path)
    if (p / "sweep.json").is_file() and not (p / "manifest.json").exists():
        raise ConfigError(f"{path} is a sweep, not a model: use {p / 'ensemble'}, {p / 'best'} "
                          f"or {p / 'members'}/NAME")
    if is_ensemble_dir(path):  # told apart by its manifest's kind; checked as a model is
        return Ensemble.load(path, model, device=device, loss=loss)
    return Learner.load(path, model, device=device, loss=loss)


__all__ = ["load"]
