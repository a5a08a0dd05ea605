"""The CPU loop at the step-only ceiling keeps its numbers.

Shuffled in-memory batches are gathered a block of whole batches at a time and handed out as
views (``TensorData._iterate``): the batches, their strides and their alignment are those of a
per-batch gather, and training stays bit-for-bit a hand-written loop, across blocks and for
batches whose bytes are not a multiple of the allocator's alignment.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import nnfit
from nnfit.data import sources
from nnfit.data.sources import TensorData
from nnfit.optim import FusedStepper
from nnfit.tasks import make_task

PLAIN = dict(quiet=True, device="cpu", val_split=0, patience=0, restore_best=False)


class _Gathers(TorchDispatchMode):
    """Counts the row gathers torch runs: ``index_select`` and indexing by a tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in ("index_select", "index"):
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def _per_batch(data: TensorData, batch_size: int, g: torch.Generator, *, drop_single=False, start=0):
    """The batches of one shuffled epoch as a per-batch gather takes them (``t[perm[i:i+B]]``)."""
    n = len(data)
    stop = min(n, data.num_batches(batch_size, drop_single) * batch_size)
    perm = torch.randperm(n, generator=g)
    tensors = list(data.inputs.values()) if isinstance(data.inputs, dict) else list(data.inputs)
    for i in range(start * batch_size, stop, batch_size):
        rows = perm[i:i + batch_size]
        yield [t[rows] for t in tensors], None if data.target is None else data.target[rows]


def test_an_epoch_is_gathered_once_per_block_not_once_per_batch(monkeypatch):
    x, y = torch.randn(1000, 16), torch.arange(1000)
    data = TensorData(x, y)
    with _Gathers() as seen:  # 1000 rows x 72 bytes: one block of 1 MB holds the epoch
        batches = list(data.batches(32, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert len(batches) == 32 and seen.calls == ["index_select", "index_select"]
    assert batches[1][0][0].untyped_storage().data_ptr() == batches[0][0][0].untyped_storage().data_ptr()
    monkeypatch.setattr(sources, "GATHER_BYTES", 10 * 32 * 72)  # blocks of 10 batches
    with _Gathers() as seen:
        assert len(list(data.batches(32, shuffle=True, generator=torch.Generator()))) == 32
    assert seen.calls == ["index_select"] * 8  # 4 blocks (10, 10, 10, 2 batches) x 2 tensors


@pytest.mark.parametrize("kind", ["tuple", "dict", "unlabelled", "channels_last", "unaligned"])
@pytest.mark.parametrize(("batch_size", "start", "drop_single"),
                         [(16, 0, False), (7, 3, True), (64, 1, False)])
def test_batches_are_those_of_a_per_batch_gather(monkeypatch, kind, batch_size, start, drop_single):
    monkeypatch.setattr(sources, "GATHER_BYTES", 4096)  # several blocks even on tiny data
    n = 257  # 257 % 16 == 1: drop_single drops a trailing batch of one
    x = torch.randn(n, 5 if kind == "unaligned" else 8)
    data = {"tuple": lambda: TensorData((x, 2 * x), torch.arange(n)),
            "dict": lambda: TensorData({"a": x, "codes": torch.randint(0, 9, (n, 2))}, torch.arange(n)),
            "unlabelled": lambda: TensorData(x),
            "channels_last": lambda: TensorData(torch.randn(n, 3, 4, 4).to(memory_format=torch.channels_last),
                                                torch.arange(n)),
            "unaligned": lambda: TensorData(x, torch.randn(n))}[kind]()
    ours = list(data.batches(batch_size, shuffle=True, generator=torch.Generator().manual_seed(5),
                             drop_single=drop_single, start=start))
    theirs = list(_per_batch(data, batch_size, torch.Generator().manual_seed(5), drop_single=drop_single,
                             start=start))
    assert len(ours) == len(theirs) > 0
    for (inputs, target), (ref_inputs, ref_target) in zip(ours, theirs, strict=True):
        inputs = list(inputs.values()) if isinstance(inputs, dict) else list(inputs)
        for a, b in zip([*inputs, target], [*ref_inputs, ref_target], strict=True):
            if b is None:
                assert a is None
                continue
            assert torch.equal(a, b) and a.dtype == b.dtype and a.stride() == b.stride()
            assert a.data_ptr() % sources.ALIGN_BYTES == 0  # as aligned as a fresh tensor


def _hand_loop(model, x, target, batch_size, *, seed, epochs):
    """The textbook loop with nnfit's seeding and data order written out: a gather per batch."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, fused=True)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            F.cross_entropy(model(x[idx]), target[idx]).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return model


# (features, batch size, threads): 8 x 32 floats, blocks of 3 batches; 5 x 10 floats (200
# bytes a batch) on 2 threads, where MKL's weight gradients of a view 8 bytes off a 16-byte
# boundary differ in the last bits on this machine's CPUs (AVX-512): batches stay fresh tensors.
@pytest.mark.parametrize(("features", "batch_size", "threads"), [(8, 32, 1), (5, 10, 2)])
def test_fit_stays_bitwise_equal_to_a_hand_loop(monkeypatch, features, batch_size, threads):
    monkeypatch.setattr(sources, "GATHER_BYTES", 3 * batch_size * (features * 4 + 8))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, features, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    task = make_task("multiclass", y.numpy())
    target = task.encode_target(y.numpy())
    torch.manual_seed(1)
    ours = nn.Sequential(nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, 3))
    theirs = copy.deepcopy(ours)
    epochs = 2 if threads == 1 else 1  # 2 threads spin on a busy machine: few steps
    nnfit.Trainer(epochs=epochs, batch_size=batch_size, seed=3, lr=1e-2, threads=threads, **PLAIN).fit(
        ours, (x,), task=task, target=target)
    torch.set_num_threads(threads)  # the suite's fixture restores its own count afterwards
    _hand_loop(theirs, x, target, batch_size, seed=3, epochs=epochs)
    for k, v in ours.state_dict().items():
        assert torch.equal(v, theirs.state_dict()[k]), k


class _Ops(TorchDispatchMode):
    """The overloads of the ops torch runs, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def test_the_direct_fused_step_counts_steps_on_the_fast_path_and_equals_optimizer_step():
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    theirs = copy.deepcopy(ours)
    stepper = FusedStepper(torch.optim.Adam(ours.parameters(), lr=1e-2, fused=True))
    opt = torch.optim.Adam(theirs.parameters(), lr=1e-2, fused=True)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    for i in range(4):
        for model in (ours, theirs):
            F.cross_entropy(model(x), y).backward()
        with _Ops() as ops:
            stepper.step()
        opt.step()
        stepper.zero_grad()
        opt.zero_grad(set_to_none=True)
        if i:  # the direct path: the counters take foreach_add_'s tensor overload (per-tensor
            # slow path for a Python 1: 8 of ~150 us a step at batch 32)
            assert "aten._foreach_add_.Tensor" in ops.names and "aten._foreach_add_.Scalar" not in ops.names
    assert stepper._lists is not None
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(p, q)
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(stepper.optimizer.state[p][key], opt.state[q][key]), key


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101, 4096])
def test_medians_without_gaps_are_numpys(n) -> None:
    """Column medians taken by one partition equal np.median's (even counts: the mean of the
    two middle values), and a column with gaps still takes nanmedian's."""
    from nnfit.data.impute import medians

    rng = np.random.default_rng(n)
    t = torch.from_numpy(rng.normal(size=(n, 20)).astype(np.float32))
    t[:, 3] = 1.0
    assert medians(t, [f"c{j}" for j in range(20)], "x") == np.median(t.double().numpy(), axis=0).tolist()
    if n > 2:
        t[0, 17] = float("nan")
        want = np.nanmedian(t.double().numpy(), axis=0).tolist()
        assert medians(t, [f"c{j}" for j in range(20)], "x") == want
