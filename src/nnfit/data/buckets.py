"""Sequences of different lengths as one in-memory source, batched by length.

Sequences are held flat, step after step ((total steps, F) with each one's offset and
length), never padded to the longest: 3,000 sequences of 2 steps and one of 100,000 would pad
to 300 million cells. Each batch is gathered padded on the device, (B, its longest, F), with
one index built there from the batch's offsets and lengths; its width is planned on the host.
Memory is the data itself plus one batch (peak RSS reading ``sq_skew.csv``, such a table, and
drawing an epoch's batches: 1,456 MB padded, 309 MB flat).

A batch of randomly chosen sequences would be padded to its longest member, and with lengths
spread from 20 to 200 about 40% of its cells would be padding. Training batches are therefore
cut from sequences of similar length: the epoch's random permutation is cut into chunks of
:data:`CHUNK_BATCHES` batches, each chunk is sorted by length and cut into batches, and the
order of the batches is shuffled. Every batch is trimmed to its own longest sequence. The
batches stay random (a chunk is a random sample of the data) while the padding drops to a few
percent (``tests/test_sequences.py`` measures it).

Prediction keeps the input order, since outputs come back in the order of the inputs; each
batch is still trimmed to its own longest sequence. Evaluation only sums metrics, which the
order does not change: :func:`metric_batches` cuts its batches from the sequences sorted by
length. 20,000 sequences of 10..200 steps in input order pad 48% of the cells, sorted 15% in
the default batches of 4,096 (1% in batches of 256); ``Learner.evaluate`` with an LSTM (64, 64)
took 6.2-7.0 s instead of 9.5-10.5 s on a busy 2-core CPU.

The plan of an epoch is made on the host from a CPU copy of the lengths, when
:meth:`SequenceData.batches` is called: no device sync per step, and the same generator state
gives the same batches, so a resumed epoch replays its order and skips ``start`` batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError
from .sources import Batch, TensorData

# Batches sorted together. Larger chunks pad less (their sorted lengths are closer) but make
# batches less random: a chunk of 50 batches of 32 sorts 1,600 sequences, which leaves a
# length spread of 20..200 with ~1% padding, and neighbouring batches share no sequence.
CHUNK_BATCHES = 50


def plan_batches(lengths: np.ndarray, batch_size: int, *, shuffle: bool = False,
                 generator: torch.Generator | None = None, drop_single: bool = False) -> list[np.ndarray]:
    """The sequences of each batch of one epoch (see the module's docstring).

    In order (``shuffle=False``): consecutive sequences. Shuffled: every batch but the last
    holds ``batch_size`` sequences of similar length, in random order; the last holds the rest
    (the trainer's checks count an epoch's samples that way). Two draws from ``generator``:
    the permutation, then the order of the batches.

    Args:
        lengths: (N,) steps per sequence.
        batch_size: sequences per batch.
        shuffle: length-bucketed random batches (training), else the input order.
        generator: the CPU generator the random draws come from.
        drop_single: leave out a last batch of one sequence (BatchNorm cannot train on it).

    Example:
        >>> [b.tolist() for b in plan_batches(np.array([5, 2, 7, 3, 4]), 2)]
        [[0, 1], [2, 3], [4]]
    """
    n = len(lengths)
    if not shuffle:
        batches = [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    else:
        perm = torch.randperm(n, generator=generator).numpy()
        full: list[np.ndarray] = []
        rest: list[np.ndarray] = []
        chunk = CHUNK_BATCHES * batch_size  # a multiple of batch_size: only the last chunk has a rest
        for i in range(0, n, chunk):
            part = perm[i:i + chunk]
            part = part[np.argsort(lengths[part], kind="stable")]
            for j in range(0, len(part), batch_size):
                b = part[j:j + batch_size]
                (full if len(b) == batch_size else rest).append(b)
        order = torch.randperm(len(full), generator=generator).tolist()
        batches = [full[k] for k in order] + rest
    if drop_single and n > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


def padding_waste(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """The share of padding in the cells of ``batches`` (each trimmed to its longest)."""
    cells = sum(len(b) * int(lengths[b].max()) for b in batches)
    return 1.0 - sum(int(lengths[b].sum()) for b in batches) / cells if cells else 0.0


class SequenceData(TensorData):
    """Sequences stored flat with their lengths, gathered padded batch by batch and batched by
    length (see the module's docstring).

    Args:
        steps: per-step inputs by name, every sequence's steps one after another: ``"x"``
            (R, F) float or (R,) int64 tokens and, with categorical columns per step,
            ``"codes"`` (R, K) int64.
        lengths: (N,) steps per sequence, each at least 1, summing to R (a host array, from
            which batches are planned).
        target: (N, ...) targets, or None.

    Shape:
        a batch's inputs, passed to the model by name (``model(x=..., lengths=...,
        codes=...)``): ``x`` (B, W, F) or (B, W), ``lengths`` (B,), ``codes`` (B, W, K), zeros
        after each sequence's end; W is the batch's longest sequence.

    Attributes:
        inputs: what is stored, the steps and ``"lengths"`` (N,) int64; the run's data
            fingerprint hashes it.

    Example:
        >>> data = SequenceData({"x": torch.arange(6.0)[:, None]}, np.array([1, 3, 2]))
        >>> [b["x"][..., 0].tolist() for b, _ in data.batches(2)]
        [[[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]], [[4.0, 5.0]]]
    """

    # Batches are trimmed to their own longest sequence: their shapes vary, so a training step
    # cannot be captured once as a CUDA graph and replayed (nnfit.graphs).
    fixed_shapes = False

    # TensorData's own constructor wants every tensor per sample; here the steps are per step.
    def __init__(self, steps: Mapping[str, Tensor], lengths: np.ndarray,
                 target: Tensor | None = None) -> None:
        self.host_lengths = np.asarray(lengths, dtype=np.int64)
        self.host_offsets = np.cumsum(self.host_lengths) - self.host_lengths
        self.steps = dict(steps)
        rows, device = int(self.host_lengths.sum()), self.steps["x"].device
        if any(len(t) != rows for t in self.steps.values()):
            raise DataError(f"{len(self.host_lengths)} sequences of {rows} steps in all, but step inputs "
                            f"of {sorted({len(t) for t in self.steps.values()})} rows")
        self.lengths = torch.from_numpy(self.host_lengths).to(device)
        self.offsets = torch.from_numpy(self.host_offsets).to(device)
        self.inputs = {**self.steps, "lengths": self.lengths}
        self.target = target
        self._n = len(self.host_lengths)
        if target is not None and len(target) != self._n:
            raise DataError(f"{self._n} sequences but {len(target)} targets")

    def to(self, device: torch.device) -> SequenceData:
        """Every tensor moved to ``device`` once; the lengths to plan with stay on the host."""
        return SequenceData({k: t.to(device) for k, t in self.steps.items()}, self.host_lengths,
                            None if self.target is None else self.target.to(device))

    def subset(self, idx: np.ndarray | Tensor) -> SequenceData:
        """The sequences ``idx`` (in that order) as a new SequenceData."""
        idx = np.asarray(idx.cpu() if isinstance(idx, Tensor) else idx, dtype=np.int64)
        lengths = self.host_lengths[idx]
        shift = self.host_offsets[idx] - (np.cumsum(lengths) - lengths)  # old start - new start
        rows = torch.from_numpy(np.arange(int(lengths.sum())) + np.repeat(shift, lengths))
        target = None if self.target is None else self.target[torch.from_numpy(idx).to(self.target.device)]
        return SequenceData({k: t[rows.to(t.device)] for k, t in self.steps.items()}, lengths, target)

    def batches(
        self, batch_size: int, *, shuffle: bool = False,
        generator: torch.Generator | None = None, drop_single: bool = False, start: int = 0,
    ) -> Iterator[Batch]:
        """Batches by length (shuffled) or in order, each trimmed to its longest sequence.

        The plan is drawn from ``generator`` when this is called, so a resume replays an
        epoch from the generator state saved at its start; ``start`` skips that many batches.
        """
        plan = plan_batches(self.host_lengths, batch_size, shuffle=shuffle, generator=generator,
                            drop_single=drop_single)[start:]
        return self._planned(plan)

    def batches_by_length(self, batch_size: int) -> Iterator[Batch]:
        """Batches of consecutive sequences in order of length (shortest first, ties in input
        order): for order-free uses such as metrics, never for outputs given back in order."""
        order = np.argsort(self.host_lengths, kind="stable")
        return self._planned([order[i:i + batch_size] for i in range(0, len(order), batch_size)])

    def _planned(self, plan: list[np.ndarray]) -> Iterator[Batch]:
        if not plan:
            return
        widths = [int(self.host_lengths[b].max()) for b in plan]  # host-side: no device sync
        device, last = self.lengths.device, int(self.host_lengths.sum()) - 1
        # one index tensor for the epoch and one range of steps, moved or made once
        order = torch.from_numpy(np.concatenate(plan)).to(device, non_blocking=True)
        span = torch.arange(max(widths), device=device)
        at = 0
        for b, width in zip(plan, widths, strict=True):
            pick = order[at:at + len(b)]
            at += len(b)
            lengths, steps = self.lengths[pick], span[:width]
            pad = steps >= lengths[:, None]  # (B, W): past each sequence's end
            rows = (self.offsets[pick][:, None] + steps).clamp_(max=last)  # the padding's in range
            xs = {k: t.index_select(0, rows.view(-1)).view(*rows.shape, *t.shape[1:])
                  .masked_fill_(pad.view(*pad.shape, *[1] * (t.ndim - 1)), 0) for k, t in self.steps.items()}
            yield ({"x": xs.pop("x"), "lengths": lengths, **xs},
                   None if self.target is None else self.target[pick])


def metric_batches(source: Any, batch_size: int) -> Iterator[Batch]:
    """The batches an evaluation sums its metrics over, whose order does not matter: a
    :class:`SequenceData`'s by length (a few percent of padding instead of about half), any
    other source's ``source.batches(batch_size)``.

    Example:
        >>> data = SequenceData({"x": torch.ones(6, 1)}, np.array([3, 1, 2]), torch.arange(3))
        >>> [t.tolist() for _, t in metric_batches(data, 2)]
        [[1, 2], [0]]
    """
    if isinstance(source, SequenceData):
        return source.batches_by_length(batch_size)
    return source.batches(batch_size)
