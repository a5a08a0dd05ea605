"""Callbacks: the documented hooks users attach to the loop, and the built-in ones.

Every hook is a no-op on :class:`Callback`; subclass it and override only what you need. Hooks
receive the :class:`~nnfit.trainer.Trainer`, whose ``model``, ``optimizer``, ``state`` and
``config`` they may read. ``logs`` is the one dict the loop shares with callbacks at epoch end.
The per-batch hook is only dispatched to callbacks that override it, so an unused hook costs
nothing in the hot loop.
"""

from .base import Callback, History, LambdaCallback
from .loggers import CSVLogger
from .progress import ProgressBar

__all__ = ["CSVLogger", "Callback", "History", "LambdaCallback", "ProgressBar"]
