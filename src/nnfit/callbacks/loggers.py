"""Loggers: callbacks that write a fit's metrics where people read them (``history.csv``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import Callback

if TYPE_CHECKING:
    from ..trainer import Trainer


class CSVLogger(Callback):
    """Rewrite ``path`` with the full history after every epoch (atomically).

    Args:
        path: the CSV file to write.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        from ..checkpoint import atomic_write_text

        atomic_write_text(self.path, trainer.state.history.to_csv())
