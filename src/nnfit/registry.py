"""Closed name -> factory tables: models, optimizers, schedulers, losses, activations, datasets.

Everything a config or a flag can name resolves through a :class:`Registry`. There is no import
of arbitrary dotted paths: a name is either in the table or an error listing what is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name: the object it resolves to and a one-line description."""

    name: str
    target: T
    help: str


class Registry(Generic[T]):
    """A closed table of named entries of one kind.

    Args:
        kind: what the entries are ("optimizer", "model", ...), used in error messages.

    Example:
        >>> acts = Registry("activation")
        >>> _ = acts.register("relu", "ReLU", "max(0, x)")
        >>> acts.get("relu")
        'ReLU'
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, target: T, help: str = "") -> T:
        """Add ``name``; registering the same name twice is a programming error."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = Entry(name, target, help)
        return target

    def get(self, name: str) -> T:
        """Return the entry for ``name``.

        Raises:
            ConfigError: ``name`` is not registered; the message lists the valid names.
        """
        try:
            return self._entries[name].target
        except (KeyError, TypeError):
            raise ConfigError(
                f"unknown {self.kind} {name!r} (choose from: {', '.join(self.names())})"
            ) from None

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def entries(self) -> Iterator[Entry[T]]:
        """Registered entries, in registration order."""
        return iter(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries


def decorator(registry: Registry[Callable], name: str, help: str = "") -> Callable:
    """Register the decorated factory under ``name`` in ``registry``."""

    def wrap(fn: Callable) -> Callable:
        registry.register(name, fn, help)
        return fn

    return wrap
