"""Sequences of different lengths as one in-memory source, batched by length.

Sequences are held padded at the end of each row to the longest one, with their lengths. A
batch of randomly chosen sequences would be padded to its longest member, and with lengths
spread from 20 to 200 about 40% of its cells would be padding. Training batches are therefore
cut from sequences of similar length: the epoch's random permutation is cut into chunks of
:data:`CHUNK_BATCHES` batches, each chunk is sorted by length and cut into batches, and the
order of the batches is shuffled. Every batch is trimmed to its own longest sequence. The
batches stay random (a chunk is a random sample of the data) while the padding drops to a few
percent (``tests/test_sequences.py`` measures it).

Evaluation and prediction keep the input order, since outputs come back in the order of the
inputs; each batch is still trimmed to its own longest sequence.

The plan of an epoch is made on the host from a CPU copy of the lengths, when
:meth:`SequenceData.batches` is called: no device sync per step, and the same generator state
gives the same batches, so a resumed epoch replays its order and skips ``start`` batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch import Tensor

from .sources import Batch, TensorData

# Batches sorted together. Larger chunks pad less (their sorted lengths are closer) but make
# batches less random: a chunk of 50 batches of 32 sorts 1,600 sequences, which leaves a
# length spread of 20..200 with ~1% padding, and neighbouring batches share no sequence.
CHUNK_BATCHES = 50


def pad_steps(flat: Tensor, lengths: np.ndarray) -> Tensor:
    """Sequences stored step after step as one padded tensor, zeros after each one's end.

    Args:
        flat: every sequence's steps, one sequence after another: (sum of lengths, ...).
        lengths: (N,) steps per sequence, each at least 1.

    Shape:
        flat (R, *S) -> (N, max(lengths), *S).

    Example:
        >>> pad_steps(torch.arange(5), np.array([2, 3]))
        tensor([[0, 1, 0],
                [2, 3, 4]])
    """
    lengths_t = torch.from_numpy(np.asarray(lengths, dtype=np.int64))
    width = int(lengths_t.max()) if len(lengths_t) else 0
    out = flat.new_zeros((len(lengths_t), width, *flat.shape[1:]))
    # row-major order of the mask is sequence by sequence, step by step: the order of ``flat``
    out[torch.arange(width) < lengths_t.unsqueeze(1)] = flat
    return out


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
    """Padded sequences and their lengths, batched by length (see the module's docstring).

    Args:
        inputs: ``"x"`` (N, T, F) float or (N, T) int64 tokens, padded at the end of each row;
            ``"lengths"`` (N,) int64; ``"codes"`` (N, T, K) int64, when there are categorical
            columns per step. Batches pass them to the model by name:
            ``model(x=..., lengths=..., codes=...)``.
        target: (N, ...) targets, or None.
        lengths: a CPU copy of ``inputs["lengths"]`` (taken from it when not given), from
            which batches are planned on the host.

    Example:
        >>> x = pad_steps(torch.ones(6, 2), np.array([1, 3, 2]))
        >>> data = SequenceData({"x": x, "lengths": torch.tensor([1, 3, 2])})
        >>> [tuple(b["x"].shape) for b, _ in data.batches(2)]
        [(2, 3, 2), (1, 2, 2)]
    """

    # Batches are trimmed to their own longest sequence: their shapes vary, so a training step
    # cannot be captured once as a CUDA graph and replayed (nnfit.graphs).
    fixed_shapes = False

    def __init__(self, inputs: Mapping[str, Tensor], target: Tensor | None = None, *,
                 lengths: np.ndarray | None = None) -> None:
        super().__init__(inputs, target)
        if lengths is None:
            lengths = self.inputs["lengths"].cpu().numpy()
        self.host_lengths = np.asarray(lengths, dtype=np.int64)

    def to(self, device: torch.device) -> SequenceData:
        """Every tensor moved to ``device`` once; the lengths to plan with stay on the host."""
        moved = super().to(device)
        return SequenceData(moved.inputs, moved.target, lengths=self.host_lengths)

    def subset(self, idx: np.ndarray | Tensor) -> SequenceData:
        """The sequences ``idx`` as a new SequenceData."""
        part = super().subset(idx)
        return SequenceData(part.inputs, part.target, lengths=self.host_lengths[np.asarray(idx)])

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
        return self._planned(plan, shuffle)

    def _planned(self, plan: list[np.ndarray], shuffle: bool) -> Iterator[Batch]:
        names, tensors, target = list(self.inputs), list(self.inputs.values()), self.target
        widths = [int(self.host_lengths[b].max()) for b in plan]  # host-side: no device sync
        rows: Tensor | None = None
        if shuffle and plan:  # one index tensor for the epoch, moved once
            rows = torch.from_numpy(np.concatenate(plan)).to(tensors[0].device, non_blocking=True)
        at = int(plan[0][0]) if plan and rows is None else 0
        for b, width in zip(plan, widths, strict=True):
            pick = rows[at:at + len(b)] if rows is not None else slice(at, at + len(b))
            at += len(b)
            xs = [t[pick, :width] if t.ndim > 1 else t[pick] for t in tensors]
            yield dict(zip(names, xs, strict=True)), None if target is None else target[pick]
