"""What the processes of a ``torchrun`` run do together: sharding, agreeing, gathering.

nnfit has no launcher of its own: ``torchrun --nproc-per-node N -m nnfit train ...`` starts N
processes, :func:`nnfit.runtime.make_runtime` joins them into one process group, and the
trainer wraps the model in ``DistributedDataParallel``. This module holds the rest:

* :class:`Sharded` – any data source as one rank's part of it. Every rank draws the same
  global batches (the same seed gives the same order a one-process run has) and keeps its
  contiguous slice of each; :attr:`Sharded.weight` scales the rank's loss so that the
  gradient DDP averages is the gradient of the global batch's mean loss, also when a batch
  does not split evenly.
* :func:`epoch_loss`, :func:`agree_max` – one all-reduce of a few numbers: the epoch's loss
  sums and whether any rank was asked to stop (a signal). The loop calls them at epoch ends
  and every :data:`AGREE_STEPS` optimizer steps (or at its step checkpoints): never per step.
* :func:`evaluate_sharded` – evaluation that counts every sample once: each rank runs the
  model on every world-size-th batch, one all-reduce gives every rank all outputs, and the
  loss and metrics are computed from them batch by batch as one process would.
* :func:`gather_rank_states` / :func:`restore_rank_states` – each rank's generators and
  running loss, gathered into rank 0's checkpoint and given back on a resume.

Only rank 0 writes files (run directory, checkpoints, plots, logs, progress); the others
compute the same decisions from the same reduced numbers, so early stopping, the best
epoch and the non-finite guard agree without further messages.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

from .data.buckets import metric_batches
from .data.sources import Batch, Inputs, _map, first_input
from .errors import CheckpointError, ConfigError
from .guards import all_finite, check_finite_outputs
from .io.resume import RANK_RNG
from .runtime import Runtime

if TYPE_CHECKING:
    from .tasks import Task
    from .trainer import Trainer

# Optimizer steps between two agreements on a stop (a signal to any rank) when the run has no
# step checkpoints: a 1-number all-reduce costs about 0.1 ms on gloo, against a step of 1 ms or more.
AGREE_STEPS = 50

_LOCAL = [False]  # set by local_only(): evaluate in this process alone


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Evaluate in this process alone inside the block (rank 0's test split and plots after
    training, which the other ranks do not take part in)."""
    before = _LOCAL[0]
    _LOCAL[0] = True
    try:
        yield
    finally:
        _LOCAL[0] = before


def active(runtime: Runtime) -> bool:
    """True when ``runtime``'s ranks evaluate and train together now."""
    return runtime.distributed and not _LOCAL[0]


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def _on_wire(t: Tensor, runtime: Runtime) -> Tensor:
    """``t`` where the backend reduces it: the rank's GPU for nccl, the CPU for gloo."""
    return t.to(runtime.device) if runtime.backend == "nccl" else t


# ------------------------------------------------------------------------------ sharding
def rank_rows(n: int, rank: int, world: int) -> tuple[int, int]:
    """The contiguous rows ``[lo, hi)`` of a batch of ``n`` that ``rank`` of ``world`` keeps:
    sizes differ by at most one, and rank order is row order.

    Example:
        >>> [rank_rows(5, r, 2) for r in range(2)]
        [(0, 2), (2, 5)]
    """
    return n * rank // world, n * (rank + 1) // world


class Sharded:
    """One rank's part of a data source: the same global batches on every rank, of which
    each keeps its contiguous rows.

    Args:
        source: any :class:`~nnfit.data.DataSource`; its batches are global batches
            (``--batch-size`` is the global batch size).
        rank, world: this process's rank and the number of processes.

    Attributes:
        weight: after each batch, the factor on this rank's mean loss that makes the average
            of the ranks' gradients (what DDP computes) the gradient of the global batch's
            mean loss: ``rows * world / global rows``. A rank left without rows (a last batch
            smaller than the world) trains on one row with weight 0, so every rank takes part
            in every gradient all-reduce.
        rows: this rank's rows in the last batch (0 for such a stand-in row).
    """

    fixed_shapes = False  # a rank's share of the last batch differs: no CUDA graph either

    def __init__(self, source: Any, rank: int, world: int) -> None:
        self.source, self.rank, self.world = source, rank, world
        self.weight, self.rows = 1.0, 0

    def __getattr__(self, name: str) -> Any:
        """What else the source offers (a stream's ``plot_rows``, ``fingerprint``...)."""
        if name == "source":  # not set yet (copying): no recursion
            raise AttributeError(name)
        return getattr(self.source, name)

    @property
    def length(self) -> int | None:
        """The global number of samples (what a one-process run counts)."""
        return self.source.length

    def num_batches(self, batch_size: int, drop_single: bool = False) -> int | None:
        """Global batches an epoch: every rank steps at each of them."""
        return self.source.num_batches(batch_size, drop_single)

    def to(self, device: torch.device) -> Sharded:
        return Sharded(self.source.to(device), self.rank, self.world)

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                drop_single: bool = False, start: int = 0) -> Iterator[Batch]:
        """This rank's rows of each global batch, from global batch ``start`` on; the order
        is drawn when this is called, as the source draws it."""
        it = self.source.batches(batch_size, shuffle=shuffle, generator=generator,
                                 drop_single=drop_single, start=start)
        return self._slices(it)

    def _slices(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        for inputs, target in batches:
            n = len(first_input(inputs))
            lo, hi = rank_rows(n, self.rank, self.world)
            self.rows, self.weight = hi - lo, (hi - lo) * self.world / n
            if hi == lo:  # fewer rows than ranks: a stand-in row of weight 0
                lo, hi = 0, 1
            take = slice(lo, hi)
            yield _map(inputs, lambda t, rows=take: t[rows]), None if target is None else target[take]


def unwrapped(source: Any) -> Any:
    """The source a :class:`Sharded` holds (``source`` itself otherwise): what the run's data
    fingerprint was taken of."""
    return source.source if isinstance(source, Sharded) else source


def lost_peer(error: BaseException) -> bool:
    """Whether a collective failed because another rank's process is gone."""
    text = str(error)
    return any(s in text for s in ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
                                   "NCCL communicator was aborted", "Socket Timeout"))


def shard(source: Any, runtime: Runtime) -> Any:
    """``source`` as this rank's part of it (unchanged in one process)."""
    return Sharded(source, runtime.rank, runtime.world_size) if runtime.distributed else source


def sync_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its BatchNorm layers as ``SyncBatchNorm`` (statistics over the global
    batch), for training under DDP on CUDA. The synced layers hold the very parameters and
    buffers of the model's own (updated in place), which :func:`plain_batchnorm` puts back."""
    from torch.nn.modules.batchnorm import _BatchNorm

    if isinstance(model, _BatchNorm):  # a bare BatchNorm: torch would return a new module
        return model
    _ORIGINAL_BN[id(model)] = [(parent, name, child) for parent in model.modules()
                               for name, child in parent.named_children() if isinstance(child, _BatchNorm)]
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


_ORIGINAL_BN: dict[int, list[tuple[torch.nn.Module, str, torch.nn.Module]]] = {}


def plain_batchnorm(model: torch.nn.Module) -> None:
    """Put back the BatchNorm layers :func:`sync_batchnorm` replaced (a no-op otherwise)."""
    for parent, name, child in _ORIGINAL_BN.pop(id(model), []):
        setattr(parent, name, child)


# ------------------------------------------------------------------------------ agreeing
def check_same(value: int, what: str, runtime: Runtime) -> None:
    """Refuse to go on when the ranks do not hold the same ``value`` (e.g. the checkpoint
    step each rank resumed from).

    Raises:
        ConfigError: naming ``what`` and the values' range.
    """
    low, minus_high = agree_max([-value, value], runtime)
    if -low != minus_high:
        raise ConfigError(f"the {runtime.world_size} processes disagree on {what} ({-low} to {minus_high}): "
                          "do they all see the same run directory and data?")


def agree_max(values: list[float], runtime: Runtime) -> list[float]:
    """The maxima over all ranks of ``values``, in one all-reduce."""
    t = _on_wire(torch.tensor(values, dtype=torch.float64), runtime)
    _dist().all_reduce(t, op=_dist().ReduceOp.MAX)
    return t.tolist()  # sync: once per fit or per agreement


def epoch_loss(trainer: Trainer) -> float:
    """The epoch's mean training loss over all ranks, and whether any rank was signalled to
    stop (kept as the agreed signal), in one all-reduce at the epoch's end."""
    rt = trainer.runtime
    dev = trainer._loss_sum.device
    t = torch.stack([trainer._loss_sum.detach().double().reshape(()),
                     torch.tensor(float(trainer._loss_n), dtype=torch.float64, device=dev),
                     torch.tensor(float(trainer._signal), dtype=torch.float64, device=dev)])
    wire = _on_wire(t, rt)
    _dist().all_reduce(wire)
    total, n, signals = wire.tolist()  # sync: once per epoch
    # the signal's name is the rank's own, or SIGTERM's (a sum of several ranks' numbers names none)
    trainer._agreed = trainer._signal or (int(signals) if int(signals) in (2, 15) else 15 if signals else 0)
    return total / max(1.0, n)


def on_cpu(outputs: Any) -> Any:
    """Outputs (a tensor or a structure of tensors) moved to the CPU."""
    return pytree.tree_map(lambda t: t.cpu() if isinstance(t, Tensor) else t, outputs)


# ------------------------------------------------------------------------------ evaluation
def evaluate_sharded(trainer: Trainer, model: torch.nn.Module, source: Any,
                     batch_size: int) -> tuple[Any, Tensor, list[int]]:
    """Every output and target of ``source``, computed by the ranks together and known to all.

    Rank r runs the model on batches r, r + world, ...; each rank then places its outputs at
    their rows of one zero-filled float64 table, and one all-reduce (a sum with zeros: exact)
    gives every rank the whole table. No sample is padded or counted twice.

    Returns:
        ``(outputs, target, sizes)``: outputs as the model returns them (a tensor, or a
        structure of tensors), targets, both in the order of ``source``'s batches, and the
        sizes of those batches (the loss is averaged over them as one process does).
    """
    rt = trainer.runtime
    mine: list[tuple[int, Any, Tensor]] = []
    sizes: list[int] = []
    shape_of: tuple[Any, Tensor] | None = None
    offset = 0
    for i, (inputs, tgt) in enumerate(metric_batches(source, batch_size)):
        n = len(tgt)
        if i % rt.world_size == rt.rank:
            mine.append((offset, trainer.precision.infer(trainer.forward, model, inputs), tgt))
        elif shape_of is None and i == 0:
            shape_of = (_rows_of(trainer.precision.infer(trainer.forward, model, _head(inputs))), tgt[:1])
        sizes.append(n)
        offset += n
    if not mine and shape_of is None:  # no batch at all: nothing to gather
        raise ConfigError("evaluate: the data is empty")
    out0, tgt0 = (mine[0][1], mine[0][2]) if mine else shape_of
    leaves, spec = pytree.tree_flatten(out0)
    widths = [math.prod(leaf.shape[1:]) for leaf in leaves] + [math.prod(tgt0.shape[1:])]
    table = torch.zeros(offset, sum(widths), dtype=torch.float64, device=rt.device)
    for start, out, tgt in mine:
        parts = [leaf.reshape(len(tgt), -1) for leaf in pytree.tree_leaves(out)] + [tgt.reshape(len(tgt), -1)]
        table[start:start + len(tgt)] = torch.cat([p.double() for p in parts], dim=1)
    wire = _on_wire(table, rt)
    _dist().all_reduce(wire)  # the one collective of an evaluation
    table = wire.to(rt.device)
    cols = table.split(widths, dim=1)
    outs = [c.to(leaf.dtype).reshape(offset, *leaf.shape[1:]) for c, leaf in zip(cols, leaves, strict=False)]
    target = cols[-1].to(tgt0.dtype).reshape(offset, *tgt0.shape[1:])
    return pytree.tree_unflatten(outs, spec), target, sizes


def evaluate_together(trainer: Trainer, model: torch.nn.Module, source: Any, task: Task,
                      finite_outputs: str | None) -> dict[str, Any]:
    """:meth:`Trainer.evaluate` by all ranks of a torchrun run: each runs the model on its share of
    the batches, one all-reduce gives every rank every output, and the loss and metrics
    are then summed batch by batch as one process sums them."""
    outputs, target, sizes = evaluate_sharded(trainer, model, source, trainer.config.eval_batch_size)
    metrics = task.make_metrics()
    loss_sum = torch.zeros((), dtype=torch.float64, device=trainer.runtime.device)
    for out, tgt in batch_slices(outputs, target, sizes):
        loss_sum += task.loss(out, tgt).double() * len(tgt)
        metrics.update(*task.metric_inputs(out, tgt))
    n = sum(sizes)
    ok = bool(all_finite(outputs)) if finite_outputs is not None else True  # sync: once
    if not ok:
        check_finite_outputs(on_cpu(outputs), finite_outputs)
    return {"loss": (loss_sum / n).item(), **metrics.compute()}  # sync: once per evaluation


def _head(inputs: Inputs) -> Inputs:
    return _map(inputs, lambda t: t[:1])


def _rows_of(out: Any) -> Any:
    return pytree.tree_map(lambda t: t[:1] if isinstance(t, Tensor) else t, out)


def batch_slices(outputs: Any, target: Tensor, sizes: list[int]) -> Iterator[tuple[Any, Tensor]]:
    """``(outputs, target)`` of each batch of :func:`evaluate_sharded`'s result, in order."""
    start = 0
    for n in sizes:
        rows = slice(start, start + n)
        yield pytree.tree_map(lambda t, r=rows: t[r], outputs), target[rows]
        start += n


# ------------------------------------------------------------------------------ checkpoints
def gather_rank_states(trainer: Trainer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Every other rank's generator states and running loss, for rank 0's checkpoint: the
    ``ranks/R/...`` tensors and the ``world_size`` and ``rank_loss_n`` fields. All ranks call
    it together (the loop checkpoints at the same points on every rank); ranks but 0 get
    empty parts back.

    The data-order generator is the same on every rank; dropout draws from each rank's own
    torch generator, which is why these are saved.
    """
    rt, st = trainer.runtime, trainer.state
    own = {f"rng/{k}": v for k, v in trainer._rng_states().items() if k in RANK_RNG}
    if st.batch:
        own["loop/loss_sum"] = trainer._loss_sum.detach().reshape(())
    own["loop/loss_n"] = torch.tensor(trainer._loss_n, dtype=torch.int64)
    names = sorted(own)
    flat = torch.cat([own[k].detach().cpu().contiguous().reshape(-1).view(torch.uint8) for k in names])
    parts = [_on_wire(torch.empty_like(flat), rt) for _ in range(rt.world_size)]
    _dist().all_gather(parts, _on_wire(flat, rt))  # at checkpoints only
    meta: dict[str, Any] = {"world_size": rt.world_size}
    if not rt.is_main:
        return {}, meta
    tensors: dict[str, Tensor] = {}
    counts = []
    for r, part in enumerate(parts[1:], 1):
        theirs = _unpack(part.cpu(), {k: own[k] for k in names})
        counts.append(int(theirs.pop("loop/loss_n")))
        tensors.update({f"ranks/{r}/{k}": v for k, v in theirs.items()})
    if st.batch:
        meta["rank_loss_n"] = counts
    return tensors, meta


def _unpack(flat: Tensor, like: dict[str, Tensor]) -> dict[str, Tensor]:
    out, start = {}, 0
    for k, t in like.items():
        size = t.numel() * t.element_size()
        out[k] = flat[start:start + size].clone().view(t.dtype).reshape(t.shape)  # clone: aligned
        start += size
    return out


def restore_rank_states(trainer: Trainer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Give this rank its own generator states and running loss from a checkpoint that
    :func:`gather_rank_states` filled (rank 0's are the checkpoint's own, already restored).

    A checkpoint of another world size (``--force-resume``): rank 0 takes the running loss of
    every saved rank, the others start the epoch's sums at zero and keep rank 0's generators.
    """
    from . import rng

    rt, st = trainer.runtime, trainer.state
    saved = meta.get("world_size", 1)
    prefix = f"ranks/{rt.rank}/"
    mine = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if saved == rt.world_size and rt.rank > 0:
        states = {k[4:]: v for k, v in mine.items() if k.startswith("rng/")}
        rng.restore({**trainer._rng_states(), **states}, trainer.generator, trainer._loader_rngs,
                    rt.device if rt.is_cuda else None)
        if st.batch:
            trainer._loss_sum = mine["loop/loss_sum"].to(rt.device)
            trainer._loss_n = int(meta["rank_loss_n"][rt.rank - 1])
    elif saved != rt.world_size and st.batch:
        others = [tensors[f"ranks/{r}/loop/loss_sum"] for r in range(1, saved)]
        if rt.is_main:
            for t in others:
                trainer._loss_sum = trainer._loss_sum + t.to(rt.device)
            trainer._loss_n += sum(meta.get("rank_loss_n", ()))
        else:
            trainer._loss_sum = torch.zeros_like(trainer._loss_sum)
            trainer._loss_n = 0
    check_same(st.step, "the checkpoint step they resume from", rt)


def check_world_size(meta: dict[str, Any], runtime: Runtime, force: bool, source: str) -> str | None:
    """Refuse to resume a checkpoint on another number of processes than it was written by,
    unless ``force``; returns the warning to give then (None when the sizes match).

    Raises:
        ConfigError: naming both sizes and how to go on.
    """
    saved = meta.get("world_size", 1)
    if not isinstance(saved, int) or isinstance(saved, bool) or saved < 1:
        raise CheckpointError(f"{source}: world_size: {saved!r} is not a process count")
    if saved == runtime.world_size:
        return None
    how = f"torchrun --nproc-per-node {saved}" if saved > 1 else "one process (no torchrun)"
    if not force:
        plural = "es" if saved > 1 else ""
        raise ConfigError(f"the run was trained by {saved} process{plural} and this resume "
                          f"runs {runtime.world_size}: resume with {how}, or pass --force-resume "
                          "(force_resume=True) to go on with a different data split per process")
    return (f"resuming a run of {saved} process{'es' if saved > 1 else ''} with {runtime.world_size}: "
            "dropout and the rest of this epoch are not those of the uninterrupted run")


__all__ = ["AGREE_STEPS", "Sharded", "agree_max", "epoch_loss", "evaluate_sharded", "gather_rank_states",
           "local_only", "restore_rank_states", "shard"]
