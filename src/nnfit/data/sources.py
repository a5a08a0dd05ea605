"""Data sources: the one small interface the loop draws batches from.

A source yields ``(inputs, target)`` pairs where ``inputs`` is a tuple of tensors (the model is
called as ``model(*inputs)``) or a dict of tensors (``model(**inputs)``). Three sources exist today:

* :class:`TensorData` – preloaded tensors, batched by indexing with one permutation per epoch;
  no per-sample Python, no collate. This is the fast path for anything that fits in memory.
* :class:`LoaderData` – a user ``Dataset`` or ``DataLoader``, for data that needs per-sample code,
  including an ``IterableDataset`` (a stream) whose length is not known.
* :class:`StreamData` – batches from a function called once per epoch (a generator function).

A source's length may be unknown (``length`` and ``num_batches`` return None): the trainer
then trains, validates and checkpoints at epoch ends without a total, and refuses what needs
one (per-step checkpoints, per-step schedules) unless the number of batches is given.
A sharded (DDP) source only has to implement the same four members.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ..errors import DataError

Inputs = tuple[Tensor, ...] | dict[str, Tensor]
Batch = tuple[Inputs, Tensor | None]


class DataSource(Protocol):
    """What the trainer needs from data: its size, when known, and batches on a device."""

    @property
    def length(self) -> int | None:
        """Number of samples, or None when not known before reading it all (a stream)."""

    def num_batches(self, batch_size: int, drop_single: bool = False) -> int | None:
        """Batches in one epoch of :meth:`batches`, or None when not known in advance."""

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

    # Every full batch has the same shapes, so a training step may be captured once as a CUDA
    # graph and replayed (nnfit.graphs); a subclass whose batch shapes vary says False.
    fixed_shapes = True

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

    @property
    def length(self) -> int:
        """Number of samples (always known)."""
        return self._n

    def num_batches(self, batch_size: int, drop_single: bool = False) -> int:
        """Batches of :meth:`batches`; ``drop_single`` drops a trailing batch of one sample."""
        return _batch_count(self._n, batch_size, drop_single)

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
        stop = min(n, self.num_batches(batch_size, drop_single) * batch_size)
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
        if perm is None:  # in order: every batch is a view, nothing is copied
            for i in starts:
                xs = [t[i:i + batch_size] for t in tensors]
                yield (dict(zip(names, xs, strict=True)) if names is not None else tuple(xs),
                       None if target is None else target[i:i + batch_size])
            return
        every, k = (tensors if target is None else [*tensors, target]), len(tensors)
        per = _rows_per_gather(every, batch_size)
        for j in range(starts.start, starts.stop, per):
            block = [_gather(t, perm[j:min(j + per, starts.stop)]) for t in every]
            for xs in zip(*[b.split(batch_size) for b in block], strict=True):  # views: one call a tensor
                inputs = xs if target is None else xs[:k]
                yield (dict(zip(names, inputs, strict=True)) if names is not None else inputs,
                       None if target is None else xs[k])


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
        data: a DataLoader, or a Dataset whose items are ``(x, y)``, ``(x1, x2, ..., y)`` or a
            dict with a ``"target"`` key. An ``IterableDataset`` (a stream) is read in its own
            order; without ``__len__`` its length is unknown.
        device: where batches are delivered.
        epoch_batches: the number of batches an epoch yields, for a stream whose length is not
            known (per-step checkpoints and schedules need it); None: ``len()`` of the loader
            or dataset, when it has one.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> src = LoaderData(TensorDataset(torch.zeros(10, 3), torch.arange(10)))
        >>> src.length, src.num_batches(4)
        (10, 3)
    """

    def __init__(self, data: DataLoader | Dataset, device: torch.device | None = None, *,
                 epoch_batches: int | None = None) -> None:
        self.data = data
        self.device = device
        self.epoch_batches = epoch_batches

    @property
    def length(self) -> int | None:
        """Number of samples: ``len()`` of the dataset, or None when it has none (a stream)."""
        ds = self.data.dataset if isinstance(self.data, DataLoader) else self.data
        try:
            return len(ds)  # type: ignore[arg-type]
        except TypeError:
            return None

    def num_batches(self, batch_size: int, drop_single: bool = False) -> int | None:
        """Batches an epoch: ``epoch_batches`` when given, the user's loader's own count, or
        the dataset's length in batches of ``batch_size``; None when none of these is known."""
        if self.epoch_batches is not None:
            return self.epoch_batches
        if isinstance(self.data, DataLoader):
            try:
                return len(self.data)  # the user's loader decides the batching
            except TypeError:  # an IterableDataset without __len__
                return None
        n = self.length
        return None if n is None else _batch_count(n, batch_size, drop_single)

    def to(self, device: torch.device) -> LoaderData:
        return LoaderData(self.data, device, epoch_batches=self.epoch_batches)

    def batches(
        self, batch_size: int, *, shuffle: bool = False,
        generator: torch.Generator | None = None, drop_single: bool = False, start: int = 0,
    ) -> Iterator[Batch]:
        """Batches of the loader. Its iterator (and so its order) is created when this is
        called; ``start`` batches are then read and dropped, so a resumed epoch continues
        with the batch it stopped before. A stream is read in its own order (``shuffle`` does
        not apply)."""
        n, stream = self.length, isinstance(self.data, IterableDataset)
        if isinstance(self.data, DataLoader):
            loader = self.data  # the user's loader decides batching and order
        else:  # drop a trailing batch of one sample, as TensorData does
            loader = DataLoader(self.data, batch_size=batch_size, shuffle=shuffle and not stream,
                                generator=None if stream else generator,
                                drop_last=drop_single and n is not None and n > 1 and n % batch_size == 1)
        it = iter(loader)
        if drop_single and n is None and not isinstance(self.data, DataLoader):
            it = _drop_trailing_single(it)  # the last batch is known only when the stream ends
        for _ in range(start):
            next(it, None)
        return _delivered(it, self.device)

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


class StreamData:
    """Batches from a function called once per epoch, such as a generator function.

    Args:
        make_batches: called with no arguments at the start of every epoch (and of every
            evaluation); returns an iterable of batches, each as a DataLoader would give it:
            ``(x, y)``, ``(x1, x2, ..., y)``, a dict with a ``"target"`` key, or inputs alone.
        device: where batches are delivered.
        epoch_batches: the number of batches an epoch yields, if known (per-step checkpoints
            and schedules need it); None: unknown.

    Example:
        >>> def batches():
        ...     for i in range(3):
        ...         yield torch.full((4, 2), float(i)), torch.zeros(4)
        >>> src = StreamData(batches)
        >>> src.num_batches(32), [len(t) for _, t in src.batches(32)]
        (None, [4, 4, 4])
    """

    def __init__(self, make_batches: Callable[[], Iterable[Any]], device: torch.device | None = None,
                 *, epoch_batches: int | None = None) -> None:
        self.make_batches = make_batches
        self.device = device
        self.epoch_batches = epoch_batches

    @property
    def length(self) -> None:
        """Unknown: a stream's samples are counted only by reading them."""
        return None

    def num_batches(self, batch_size: int, drop_single: bool = False) -> int | None:
        """``epoch_batches``: the batching is the stream's own."""
        return self.epoch_batches

    def to(self, device: torch.device) -> StreamData:
        return StreamData(self.make_batches, device, epoch_batches=self.epoch_batches)

    def batches(
        self, batch_size: int, *, shuffle: bool = False,
        generator: torch.Generator | None = None, drop_single: bool = False, start: int = 0,
    ) -> Iterator[Batch]:
        """The stream's batches in its own order (``batch_size``, ``shuffle`` and
        ``generator`` do not apply), from batch ``start`` on."""
        it = iter(self.make_batches())
        for _ in range(start):
            next(it, None)
        return _delivered(it, self.device)


# Shuffled rows are gathered this many bytes at a time (whole batches, at least one) and the
# batches handed out as views of the block: one index_select per tensor per block instead of
# an indexing call per tensor per batch. MLP 32-128-128-10 on 90,000 rows, 2-core CPU: the
# gather took ~13 us of a ~165 us step at batch 32 (now ~3 us) and ~50 us of ~1 ms at batch
# 1024 (now ~10 us). Blocks of 64 KB to 4 MB timed alike; 256 KB stays in a core's L2 cache
# beside a small model's weights and optimizer state.
GATHER_BYTES = 1 << 18
# The CPU allocator aligns every tensor to 64 bytes, and MKL may round differently on data
# aligned otherwise: a batch is a view only where it starts on such a boundary, as a fresh
# tensor would, so the numbers stay bit-for-bit those of a per-batch gather.
ALIGN_BYTES = 64


def _rows_per_gather(tensors: list[Tensor], batch_size: int) -> int:
    """Rows to gather at once: whole batches of ``tensors`` up to :data:`GATHER_BYTES`; one
    batch where a batch of some tensor is not a whole number of :data:`ALIGN_BYTES`."""
    sizes = [batch_size * math.prod(t.shape[1:]) * t.element_size() for t in tensors]
    if any(s % ALIGN_BYTES for s in sizes):
        return batch_size
    return max(1, GATHER_BYTES // max(1, sum(sizes))) * batch_size


def _gather(t: Tensor, idx: Tensor) -> Tensor:
    """Rows ``idx`` of ``t`` as a new tensor: ``index_select`` (a row copy, 2-3x faster than
    indexing) where ``t`` is contiguous; indexing otherwise, which keeps ``t``'s memory
    format (a channels-last image batch stays channels-last)."""
    return torch.index_select(t, 0, idx) if t.is_contiguous() else t[idx]


def _batch_count(n: int, batch_size: int, drop_single: bool) -> int:
    """Batches of ``batch_size`` over ``n`` samples, less a trailing batch of one sample when
    ``drop_single`` (BatchNorm cannot train on it)."""
    full = math.ceil(n / batch_size)
    return full - 1 if drop_single and n > 1 and n % batch_size == 1 else full


def _delivered(items: Iterator[Any], device: torch.device | None) -> Iterator[Batch]:
    """Loader items as ``(inputs, target)`` batches on ``device``."""
    non_blocking = device is not None and device.type == "cuda"
    move = (lambda t: t.to(device, non_blocking=non_blocking)) if device else (lambda t: t)
    for item in items:
        inputs, target = _split_item(item)
        yield _map(inputs, move), (None if target is None else move(target))


def _drop_trailing_single(items: Iterator[Any]) -> Iterator[Any]:
    """``items`` without a last item of one sample: each is held back until the next arrives."""
    held = next(items, None)
    for item in items:
        yield held
        held = item
    if held is not None and len(first_input(_split_item(held)[0])) > 1:
        yield held


def epoch_samples(source: DataSource, batch_size: int, drop_single: bool) -> tuple[int, int] | None:
    """``(samples per batch, samples per epoch)`` when every batch but the last holds the same
    number (what a resume checks the running epoch's sample count against); None when a
    user's loader batches in a way not known here (a batch sampler, a collate function, an
    iterable dataset)."""
    if isinstance(source, LoaderData) and isinstance(source.data, DataLoader):
        loader = source.data
        default = loader.collate_fn is torch.utils.data.default_collate
        if loader.batch_size is None or not default or not hasattr(loader.sampler, "__len__"):
            return None
        n = len(loader.sampler)
        return loader.batch_size, n // loader.batch_size * loader.batch_size if loader.drop_last else n
    n = source.length
    if n is None:
        return None
    return batch_size, n - 1 if drop_single and n > 1 and n % batch_size == 1 else n


def as_source(data: Any, target: Tensor | None = None) -> DataSource:
    """Wrap tensors, a Dataset, a DataLoader, a function returning batches (such as a
    generator function) or an existing source as a DataSource.

    Raises:
        DataError: a generator object (it can be read only once: every epoch needs a new
            pass), or anything else that is not data.
    """
    if isinstance(data, (TensorData, LoaderData, StreamData)):
        return data
    if isinstance(data, (DataLoader, Dataset)):
        return LoaderData(data)
    if isinstance(data, (Tensor, tuple, list, dict)):
        return TensorData(data, target)
    if isinstance(data, Iterator):
        raise DataError(f"a {type(data).__name__} can be read only once and every epoch reads the data "
                        "again: pass the function that makes it (called once per epoch)")
    if all(hasattr(data, m) for m in ("length", "num_batches", "batches", "to")):
        return data  # a DataSource of the user's own
    if callable(data):
        return StreamData(data)
    raise DataError(f"cannot use {type(data).__name__} as training data")
