"""Data sources: the one small interface the loop draws batches from.

A source yields ``(inputs, target)`` pairs where ``inputs`` is a tuple of tensors (the model is
called as ``model(*inputs)``) or a dict of tensors (``model(**inputs)``). Two sources exist today:

* :class:`TensorData` – preloaded tensors, batched by indexing with one permutation per epoch;
  no per-sample Python, no collate. This is the fast path for anything that fits in memory.
* :class:`LoaderData` – a user ``Dataset`` or ``DataLoader``, for data that needs per-sample code.

A streaming or sharded (DDP) source only has to implement the same three members.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError

Inputs = tuple[Tensor, ...] | dict[str, Tensor]
Batch = tuple[Inputs, Tensor | None]


class DataSource(Protocol):
    """What the trainer needs from data: a length and batches on a device."""

    def __len__(self) -> int:
        """Number of samples."""

    def batches(
        self, batch_size: int, *, shuffle: bool = False,
        generator: torch.Generator | None = None, drop_single: bool = False, start: int = 0,
    ) -> Iterator[Batch]:
        """``(inputs, target)`` batches from batch ``start`` on; ``target`` is None for
        unlabelled data. The epoch's order is fixed when this is called."""

    def to(self, device: torch.device) -> DataSource:
        """This source with its batches delivered on ``device``."""


def _map(inputs: Inputs, fn: Any) -> Inputs:
    if isinstance(inputs, dict):
        return {k: fn(v) for k, v in inputs.items()}
    return tuple(fn(v) for v in inputs)


def first_input(inputs: Inputs) -> Tensor:
    """The first input tensor (for batch sizes)."""
    return next(iter(inputs.values())) if isinstance(inputs, dict) else inputs[0]


class TensorData:
    """In-memory data as preloaded tensors, batched by indexing.

    Args:
        inputs: one tensor, a tuple of tensors (positional model inputs) or a dict of tensors
            (keyword model inputs); all with the same first dimension.
        target: the training target, or None.

    Shape:
        every tensor: (n, ...), n samples.

    Example:
        >>> d = TensorData(torch.zeros(10, 3), torch.arange(10))
        >>> [len(t) for _, t in d.batches(4)]
        [4, 4, 2]
    """

    def __init__(self, inputs: Tensor | Sequence[Tensor] | Mapping[str, Tensor],
                 target: Tensor | None = None) -> None:
        if isinstance(inputs, Tensor):
            inputs = (inputs,)
        self.inputs: Inputs = dict(inputs) if isinstance(inputs, Mapping) else tuple(inputs)
        self.target = target
        lengths = {len(t) for t in (self.inputs.values() if isinstance(self.inputs, dict)
                                    else self.inputs)}
        if target is not None:
            lengths.add(len(target))
        if len(lengths) != 1:
            raise DataError(f"inputs and target have different numbers of rows: {sorted(lengths)}")
        self._n = lengths.pop()

    def __len__(self) -> int:
        return self._n

    def to(self, device: torch.device) -> TensorData:
        """Move every tensor to ``device`` once, so batches are sliced where they are used."""
        move = lambda t: t.to(device)  # noqa: E731
        return TensorData(_map(self.inputs, move), None if self.target is None else move(self.target))

    def subset(self, idx: np.ndarray | Tensor) -> TensorData:
        """The rows ``idx`` as a new TensorData."""
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        take = lambda t: t[idx_t.to(t.device)]  # noqa: E731
        return TensorData(_map(self.inputs, take), None if self.target is None else take(self.target))

    def batches(
        self, batch_size: int, *, shuffle: bool = False,
        generator: torch.Generator | None = None, drop_single: bool = False, start: int = 0,
    ) -> Iterator[Batch]:
        """Batches in order, or in one random permutation drawn from ``generator``.

        The permutation is drawn when this is called (not at the first batch), so a resume can
        replay an epoch's order from the generator state saved at its start. ``start`` skips
        that many batches; ``drop_single`` drops a trailing batch of one sample (BatchNorm
        cannot train on it).
        """
        n = self._n
        stop = n - 1 if drop_single and n > 1 and n % batch_size == 1 else n
        # Hoisted out of the loop: the tensors to slice and how to hand them to the model.
        names = list(self.inputs) if isinstance(self.inputs, dict) else None
        tensors = list(self.inputs.values()) if names is not None else list(self.inputs)
        perm = None
        if shuffle:  # one permutation per epoch, on the CPU generator (checkpointable), moved once
            perm = torch.randperm(n, generator=generator).to(tensors[0].device, non_blocking=True)
        return self._iterate(names, tensors, perm, range(start * batch_size, stop, batch_size), batch_size)

    def _iterate(self, names: list[str] | None, tensors: list[Tensor], perm: Tensor | None,
                 starts: range, batch_size: int) -> Iterator[Batch]:
        target = self.target
        for i in starts:
            rows = slice(i, i + batch_size) if perm is None else perm[i:i + batch_size]
            xs = [t[rows] for t in tensors]
            yield (dict(zip(names, xs, strict=True)) if names is not None else tuple(xs),
                   None if target is None else target[rows])


def _split_item(item: Any) -> Batch:
    """A DataLoader batch as (inputs, target): the last element of a tuple is the target; a
    dict's "target" (or "y") key is the target and the other keys are keyword inputs."""
    if isinstance(item, Mapping):
        key = "target" if "target" in item else "y" if "y" in item else None
        inputs = {k: v for k, v in item.items() if k != key}
        return inputs, (item[key] if key else None)
    if isinstance(item, (tuple, list)):
        if len(item) == 1:
            return (item[0],), None
        return tuple(item[:-1]), item[-1]
    if isinstance(item, Tensor):
        return (item,), None
    raise DataError(f"a DataLoader batch must be a tuple, list, dict or tensor, got {type(item).__name__}")


class LoaderData:
    """A user ``DataLoader`` (used as is) or ``Dataset`` (wrapped in a DataLoader per epoch).

    Args:
        data: a DataLoader, or a map-style Dataset whose items are ``(x, y)``,
            ``(x1, x2, ..., y)`` or a dict with a ``"target"`` key.
        device: where batches are delivered.
    """

    def __init__(self, data: DataLoader | Dataset, device: torch.device | None = None) -> None:
        self.data = data
        self.device = device

    def __len__(self) -> int:
        ds = self.data.dataset if isinstance(self.data, DataLoader) else self.data
        return len(ds)  # type: ignore[arg-type]

    def to(self, device: torch.device) -> LoaderData:
        return LoaderData(self.data, device)

    def batches(
        self, batch_size: int, *, shuffle: bool = False,
        generator: torch.Generator | None = None, drop_single: bool = False, start: int = 0,
    ) -> Iterator[Batch]:
        """Batches of the loader. Its iterator (and so its order) is created when this is
        called; ``start`` batches are then read and dropped, so a resumed epoch continues
        with the batch it stopped before."""
        if isinstance(self.data, DataLoader):
            loader = self.data  # the user's loader decides batching and order
        else:
            n = len(self)  # drop a trailing batch of one sample, as TensorData does
            loader = DataLoader(self.data, batch_size=batch_size, shuffle=shuffle,
                                generator=generator,
                                drop_last=drop_single and n > 1 and n % batch_size == 1)
        it = iter(loader)
        for _ in range(start):
            next(it, None)
        return self._iterate(it)

    def generators(self) -> list[torch.Generator]:
        """The generators of a user's DataLoader and its samplers: checkpoints save and restore
        them, so a resumed run shuffles as the uninterrupted one would."""
        if not isinstance(self.data, DataLoader):
            return []  # nnfit builds the loader around its own generator
        found: list[torch.Generator] = []
        for owner in (self.data, self.data.sampler, getattr(self.data.batch_sampler, "sampler", None)):
            g = getattr(owner, "generator", None)
            if isinstance(g, torch.Generator) and all(g is not f for f in found):
                found.append(g)
        return found

    def _iterate(self, it: Iterator[Any]) -> Iterator[Batch]:
        non_blocking = self.device is not None and self.device.type == "cuda"
        move = (lambda t: t.to(self.device, non_blocking=non_blocking)) if self.device else (lambda t: t)
        for item in it:
            inputs, target = _split_item(item)
            yield _map(inputs, move), (None if target is None else move(target))


def as_source(data: Any, target: Tensor | None = None) -> DataSource:
    """Wrap tensors, a Dataset, a DataLoader or an existing source as a DataSource."""
    if isinstance(data, (TensorData, LoaderData)):
        return data
    if isinstance(data, (DataLoader, Dataset)):
        return LoaderData(data)
    if isinstance(data, (Tensor, tuple, list, dict)):
        return TensorData(data, target)
    raise DataError(f"cannot use {type(data).__name__} as training data")
