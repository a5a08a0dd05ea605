"""The loop of a sweep group: K members of one architecture trained as one stacked model.

It is :class:`nnfit.trainer.Trainer`'s loop, per member: the same data order (each member
draws its permutation from its own generator, as its run does), the same dropout masks, the
same optimizer update with its own learning rate, weight decay and schedule, the same
validation, best-epoch tracking and early stopping. A member whose data runs out earlier in an
epoch (a smaller fold), or that stopped early, or whose loss went non-finite, sits out the
steps it has no part in: its parameters and optimizer state are left exactly as they are.

Host syncs: none per step but where a member set changes (a ragged last batch); the per-member
losses are read once per epoch (``# sync``).
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from ..callbacks import History
from ..config import TrainConfig
from ..data import TensorData
from ..errors import Stopped
from ..optim import build_optimizer, build_schedule
from ..state import early_stop_reason, improves
from .optim import StackedOptimizer, hyper
from .stacked import Stacked, member_losses


@dataclass
class Member:
    """One member's side of a group: its data, generators, schedule and progress."""

    name: str
    config: TrainConfig
    task: Any
    train: TensorData
    val: TensorData | None
    data_gen: torch.Generator  # the data order, as its run's ``runtime.generator()``
    drop_gen: torch.Generator  # dropout, as its run's global RNG after the model was built
    monitor: str = "val_loss"
    history: History = field(default_factory=History)
    best: float | None = None
    best_epoch: int = 0
    stop: bool = False
    stop_reason: str = ""
    failed: bool = False
    epoch_rng: Tensor | None = None  # ``data_gen``'s state at the running epoch's start
    dummy: Any = None  # a one-tensor optimizer its schedule steps, for the rate of each step
    schedule: Any = None
    n_batches: int = 0


class GroupTrainer:
    """Trains the members of one group together.

    Args:
        members: the members, in order (their index is their row in every stacked tensor).
        modules: each member's freshly built module (its standalone run's initialisation).
        device: where training runs.
        checkpoint_fn: called as ``fn(trainer)`` when a checkpoint is due (epoch ends, every
            ``checkpoint_steps`` steps, a signal); None for no checkpoints.
    """

    def __init__(self, members: list[Member], modules: list[Any], device: torch.device,
                 checkpoint_fn: Any = None) -> None:
        self.members, self.modules, self.device = members, modules, device
        self.config = members[0].config
        self.k = len(members)
        first = members[0].train.inputs  # keyword inputs (a table's numbers and codes) or positional
        self.names = list(first) if isinstance(first, dict) else None
        self.model = Stacked(modules, device, self.names)
        self.opt = StackedOptimizer(self.config.optimizer, list(self.model.params.values()))
        self.checkpoint_fn = checkpoint_fn
        self.epoch = 0
        self.batch = 0
        self.step = 0
        self.drop_single = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                               for m in modules[0].modules())
        self.best = {n: p.detach().clone() for n, p in {**self.model.params, **self.model.buffers}.items()}
        self.loss_sum = torch.zeros(self.k, dtype=torch.float32, device=device)
        self.loss_n = torch.zeros(self.k, dtype=torch.float64)
        self._signal = 0
        self.on_epoch: Any = None  # called as fn(trainer) after each epoch (progress lines)
        self._stack_data()
        self._loss = member_losses(members[0].task)
        for m in members:
            m.n_batches = m.train.num_batches(self.config.batch_size, self.drop_single)
            steps = m.n_batches  # accumulate is 1 in a stacked group
            m.monitor = m.config.monitor if m.val is not None or not m.config.monitor.startswith("val_") \
                else "train_loss"
            m.dummy = build_optimizer([torch.zeros(1, requires_grad=True)], replace(m.config, fused=False))
            m.schedule = build_schedule(m.dummy, replace(m.config, monitor=m.monitor), steps)
            m.dummy._opt_called = True  # its steps are the stacked optimizer's: torch need not warn
        self._per_step = any(m.schedule is not None and m.schedule.interval == "step" for m in members)
        self.restored()

    def restored(self) -> None:
        """The rates of the next step, as the members' schedules set them (at the start, after
        a schedule stepped, after a checkpoint was loaded)."""
        self._hyper = hyper([m.dummy.param_groups[0] for m in self.members], self.config.optimizer)

    # ------------------------------------------------------------------ data
    def _stack_data(self) -> None:
        """Every member's training (and validation) tensors stacked (K, n_max, ...), padded
        with zeros past a member's own rows (never drawn)."""
        def stack(sources: list[TensorData]) -> tuple[list[Tensor], Tensor, list[int]]:
            ns = [s.length for s in sources]
            n = max(ns)
            inputs = []
            for i in range(len(self.names) if self.names is not None else len(sources[0].inputs)):
                key = self.names[i] if self.names is not None else i
                inputs.append(_pad_stack([s.inputs[key] for s in sources], n).to(self.device))
            target = _pad_stack([s.target for s in sources], n).to(self.device)
            return inputs, target, ns

        self.x, self.y, self.n = stack([m.train for m in self.members])
        self.has_val = self.members[0].val is not None
        if self.has_val:
            self.vx, self.vy, self.vn = stack([m.val for m in self.members])

    def _gather(self, flat: Tensor) -> tuple[list[Tensor], Tensor]:
        """The batch at ``flat`` ((k, b) row numbers into the members' stacked rows)."""
        k, b = flat.shape
        idx = flat.reshape(-1)
        xs = [t.reshape(-1, *t.shape[2:]).index_select(0, idx).view(k, b, *t.shape[2:]) for t in self.x]
        y = self.y.reshape(-1, *self.y.shape[2:]).index_select(0, idx).view(k, b, *self.y.shape[2:])
        return xs, y

    # ------------------------------------------------------------------ fit
    def fit(self) -> None:
        """Train until every member has run its epochs or stopped."""
        previous = self._catch_signals() if self.checkpoint_fn is not None else {}
        try:
            while self.epoch < self.config.epochs and not all(m.stop for m in self.members):
                self._run_epoch()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def _run_epoch(self) -> None:
        t0 = time.perf_counter()
        flat = self._epoch_orders()
        live = [i for i, m in enumerate(self.members) if not m.stop]
        c = self.config
        last = max(self.members[i].n_batches for i in live)
        for j in range(self.batch, last):
            self._train_step(j, flat, live)
            self.batch = j + 1
            if self.checkpoint_fn is not None and (
                    self._signal
                    or (c.checkpoint_steps and self.step % c.checkpoint_steps == 0 and j + 1 < last)):
                written = self.checkpoint_fn(self)
                if self._signal:
                    raise Stopped(f"stopped by {signal.Signals(self._signal).name} in epoch {self.epoch + 1} "
                                  f"after batch {j + 1} (step {self.step}); checkpoint {written} committed",
                                  self._signal)
        self.batch = 0
        self._end_epoch(live, time.perf_counter() - t0)

    def _epoch_orders(self) -> Tensor:
        """Each live member's permutation of its rows for this epoch: drawn from its generator
        as ``TensorData.batches`` draws it; a resumed epoch draws it again from the state saved
        at its start, then puts the current state back."""
        perms: list[Tensor | None] = []
        for m in self.members:
            if m.stop:
                perms.append(None)
                continue
            if self.batch == 0:
                m.epoch_rng = m.data_gen.get_state()
                perms.append(torch.randperm(m.train.length, generator=m.data_gen))
            else:
                now = m.data_gen.get_state()
                m.data_gen.set_state(m.epoch_rng)
                perms.append(torch.randperm(m.train.length, generator=m.data_gen))
                m.data_gen.set_state(now)
        if self.batch == 0:
            self.loss_sum.zero_()
            self.loss_n.zero_()
        # one (K, n_max) table of row numbers into the flattened stacked rows, built once an
        # epoch: a step slices it (a member that is done or stopped has rows it never reads)
        n_max = self.x[0].shape[1]
        flat = torch.zeros((self.k, n_max), dtype=torch.long)
        for i, perm in enumerate(perms):
            if perm is not None:
                flat[i, :len(perm)] = perm
        flat += torch.arange(self.k).unsqueeze(1) * n_max
        return flat.to(self.device)

    def _train_step(self, j: int, flat: Tensor, live: list[int]) -> None:
        """Batch ``j`` of every live member that has one, then one stacked optimizer step."""
        c, B = self.config, self.config.batch_size
        by_size: dict[int, list[int]] = {}
        for i in live:
            m = self.members[i]
            if j < m.n_batches:
                stop = min(m.train.length, m.n_batches * B)
                by_size.setdefault(min(B, stop - j * B), []).append(i)
        stepping = [i for ms in by_size.values() for i in ms]
        everyone = len(stepping) == self.k
        gens = [m.drop_gen for m in self.members]
        for size, ms in by_size.items():
            whole = len(ms) == self.k
            rows = flat[:, j * B:j * B + size] if whole else flat[ms, j * B:j * B + size]
            xs, y = self._gather(rows)
            masks = self.model.draw_masks(xs, gens, ms) if self.model.dropout else []
            out = self.model.forward(xs, train=True, masks=masks,
                                     members=None if whole else torch.tensor(ms, device=self.device))
            losses = self._loss(out, y)
            losses.sum().backward()
            if whole:
                self.loss_sum.add_(losses.detach() * size)  # on the device: no sync
            else:
                self.loss_sum.index_add_(0, torch.tensor(ms, device=self.device), losses.detach() * size)
            self.loss_n[ms] += size
        if c.grad_clip > 0:
            self._clip(c.grad_clip)
        if self._per_step:
            self.restored()
        active = None if everyone else torch.zeros(self.k, dtype=torch.bool).index_fill_(
            0, torch.tensor(stepping), True)
        self.opt.step(self._hyper["lr"], self._hyper["weight_decay"], self._hyper, active)
        self.opt.zero_grad()
        self.step += 1
        if self._per_step:
            for i in stepping:
                s = self.members[i].schedule
                if s is not None and s.interval == "step":
                    s.scheduler.step()

    def _clip(self, max_norm: float) -> None:
        """``clip_grad_norm_`` per member: each member's gradients scaled by its own norm."""
        grads = [p.grad for p in self.model.params.values() if p.grad is not None]
        sq = torch.stack([g.reshape(g.shape[0], -1).pow(2).sum(1) for g in grads]).sum(0)
        coef = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))

    # ------------------------------------------------------------------ epoch end
    def _end_epoch(self, live: list[int], seconds: float) -> None:
        # as the Trainer: the float32 sum over the float32 count (sync: once per epoch)
        losses = (self.loss_sum.cpu() / self.loss_n.clamp(min=1).to(torch.float32)).tolist()
        vals = self._validate(live) if self.has_val else {}
        for i in live:
            m = self.members[i]
            logs: dict[str, Any] = {"epoch": self.epoch + 1, "train_loss": losses[i]}
            if not math.isfinite(losses[i]) and m.config.check_finite:
                m.stop, m.failed = True, True
                m.stop_reason = f"non-finite mean training loss ({losses[i]}) in epoch {self.epoch + 1}"
                continue
            logs.update({f"val_{k}": v for k, v in vals.get(i, {}).items() if not isinstance(v, list)})
            logs["lr"] = m.dummy.param_groups[0]["lr"]
            if m.schedule is not None and m.schedule.interval == "epoch":
                if m.schedule.needs_metric:
                    m.schedule.scheduler.step(logs[m.monitor])
                else:
                    m.schedule.scheduler.step()
            self._track_best(i, logs)
            logs["time"] = seconds
            m.history.append(logs)
            p = m.config.patience
            if p and m.monitor.startswith("val_") and self.epoch + 1 - m.best_epoch >= p:
                m.stop = True
                m.stop_reason = early_stop_reason(m.monitor, p, m.best, m.best_epoch)
        self.restored()  # the epoch schedules stepped: the next epoch's rates
        self.epoch += 1
        if self.on_epoch is not None:
            self.on_epoch(self)
        if self.checkpoint_fn is not None and (
                self._signal or not self.config.checkpoint_every
                or self.epoch % self.config.checkpoint_every == 0
                or self.epoch == self.config.epochs or all(m.stop for m in self.members)):
            written = self.checkpoint_fn(self)
            if self._signal:
                raise Stopped(f"stopped by {signal.Signals(self._signal).name} after epoch {self.epoch} "
                              f"(step {self.step}); checkpoint {written} committed", self._signal)

    def _track_best(self, i: int, logs: dict[str, Any]) -> None:
        m = self.members[i]
        value = logs[m.monitor]
        if not improves(value, m.best, m.monitor, m.config.min_delta):
            return
        m.best, m.best_epoch = value, self.epoch + 1
        if m.config.restore_best:
            with torch.no_grad():
                for n, t in {**self.model.params, **self.model.buffers}.items():
                    self.best[n][i].copy_(t[i])

    @torch.no_grad()
    def _validate(self, live: list[int]) -> dict[int, dict[str, Any]]:
        """Loss and metrics of each live member on its own validation rows, as
        ``Trainer.evaluate`` computes them (eval mode, float64 loss sum, the task's metrics)."""
        chunk = self.config.eval_batch_size
        metrics = {i: self.members[i].task.make_metrics() for i in live}
        sums = {i: torch.zeros((), dtype=torch.float64, device=self.device) for i in live}
        for s in range(0, max(self.vn[i] for i in live), chunk):
            out = self.model.forward([t[:, s:s + chunk] for t in self.vx], train=False)
            for i in live:
                e = min(s + chunk, self.vn[i])
                if e <= s:
                    continue
                task, o, t = self.members[i].task, out[i, :e - s], self.vy[i, s:e]
                sums[i] += task.loss(o, t).double() * (e - s)
                metrics[i].update(*task.metric_inputs(o, t))
        # sync: once per epoch and member
        return {i: {"loss": float(sums[i] / self.vn[i]), **metrics[i].compute()} for i in live}

    # ------------------------------------------------------------------ results
    def member_weights(self, i: int) -> dict[str, Tensor]:
        """Member ``i``'s final state dict: its best epoch's when it restores the best."""
        from .stacked import member_state

        m = self.members[i]
        use_best = m.config.restore_best and m.best is not None
        source = self.best if use_best else {**self.model.params, **self.model.buffers}
        params = {n: source[n] for n in self.model.params}
        buffers = {n: source[n] for n in self.model.buffers}
        return member_state(params, buffers, i, self.modules[i], self.model.transposed)

    def _catch_signals(self) -> dict[int, Any]:
        from ..runtime import catch_signals

        return catch_signals(self)


def _pad_stack(tensors: list[Tensor], n: int) -> Tensor:
    """``tensors`` (each (n_i, ...)) stacked to (K, n, ...), zero rows past each n_i."""
    out = tensors[0].new_zeros((len(tensors), n, *tensors[0].shape[1:]))
    for i, t in enumerate(tensors):
        out[i, :len(t)] = t
    return out


__all__ = ["GroupTrainer", "Member"]
